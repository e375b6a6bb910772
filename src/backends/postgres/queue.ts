// PostgreSQL queues: one messages table, the classic SKIP LOCKED queue.
// - push: one call per batch, one statement and one transaction: the bodies travel as one bytea[]
//   in binary (no hex or escaping) and are inserted in order (unnest WITH ORDINALITY). The pusher
//   first takes pg_advisory_xact_lock(space, hashtext(queue)) until commit, so the ids of a queue
//   are handed out in commit order: a reader that has seen id N has seen every message below N
//   (tail --follow reads "id > last seen" and would otherwise skip a slower concurrent push).
// - reserve: reservations whose deadline passed first (they are the oldest deliveries), then the
//   first waiting messages by id, FOR UPDATE SKIP LOCKED, so racing poppers never wait for or take
//   each other's rows; each gets attempts + 1, a visibility deadline in the server's clock and a
//   receipt naming this one reservation. A message whose reservation ran out after --max-attempts
//   deliveries goes to the dead-letter queue instead of out again.
// - settle: only rows still carrying the receipt are touched, so a popper whose reservation
//   expired and was taken over cannot ack or return the new holder's delivery. ack deletes;
//   retry makes the row visible (or buries it once its attempts reach the maximum); release also
//   takes the delivery back. A retry with a delay (pop --retry-delay) leaves the row reserved until
//   then under a receipt no popper holds, so the next reserve after its deadline takes it as an
//   expired reservation (its delivery already counted), and a late settle or extend of the failed
//   delivery changes nothing; a message on its last attempt is buried as by retry.
// - Every statement's cost follows the rows it returns or changes, whatever the planner's
//   statistics say (a queue pushed since the last ANALYZE looks empty to it): two partial indexes
//   split the queue into waiting rows (reserved_by IS NULL, by id) and reservations (by deadline),
//   so reserving never walks the rows others hold, and settling looks each id up in the primary
//   key and then works by ctid, never by a join the planner could turn into "every row of the
//   queue times every id".
//   test/postgres/pop-plans.test.mjs reads the plans of the statements dlq runs to hold this.
// - The dead-letter queue of Q is the queue named Q.dead, rows like any other.
// - Blocked pops and tail --follow LISTEN on the queue's channel; push, retry and release NOTIFY
//   it at commit. A reservation running out wakes nobody, so a blocked pop also sleeps no longer
//   than until the next deadline; a slow poll is only the fallback. Behind a pooler
//   (no LISTEN) they poll instead (poll.ts).
// - A push with a delay (schema version 4) stores rows reserved by 'delayed' (no receipt is that
//   word) with visible_at its due time: the next reserve after it takes them as expired
//   reservations on their first delivery. status counts them apart; --follow leaves them out.
// - A queue is its rows: nothing but a push makes one, and delete is one DELETE of Q and Q.dead.
// - status (schema version 6) reads each queue's size (queue_sizes plus the +n/-n changes that
//   pushes, acks, burials and deletes record), counts only the rows reserved now, and looks at
//   the first waiting message: its cost follows the reservations, not the waiting messages.
// Lock order (no deadlock): a transaction takes the dead-letter queue's advisory lock only after
// every row lock it needs, and whoever holds that advisory lock only inserts, waiting on no row.
import type {Message, Outcome, PushOptions, QueueDriver, QueueStats, ReserveRequest, SettleOptions} from '../types.js'
import {Wakeup} from '../wakeup.js'
import type {Connection, Schema, Statement} from './connection.js'
import {PollBackoff, queuePollCapMs} from './poll.js'

const maxMessageBytes = 1024 * 1024
/** reserved_by of a message pushed with a delay, until its first delivery: no receipt is this word. */
const delayedReceipt = 'delayed'
const fallbackPollMs = 5000
const followPage = 1000

/**
 * The push functions (version 1: push; version 4: push_later, rows due later reserved by nobody;
 * version 6: both record their rows in the queue's size). Ids come back as one array, in the order
 * of the bodies; the queue's advisory lock hands ids out in commit order.
 */
const pushFunction = ({sql: s, lockSpace}: Pick<Schema, 'sql' | 'lockSpace'>, create: 'CREATE' | 'CREATE OR REPLACE', later: boolean, sized: boolean): string =>
  `${create} FUNCTION ${s}.${later ? 'push_later' : 'push'}(p_queue text, p_bodies bytea[], p_channel text${later ? ', p_delay_ms bigint, p_at timestamptz' : ''}) RETURNS bigint[]
  LANGUAGE plpgsql AS $fn$
  DECLARE
    ids bigint[];${later ? `
    due timestamptz := coalesce(p_at, clock_timestamp() + p_delay_ms * interval '1 millisecond');` : ''}
  BEGIN
    PERFORM pg_advisory_xact_lock(${lockSpace('queue')}, hashtext(p_queue));
    WITH pushed AS (${later ? `
      INSERT INTO ${s}.messages (queue, body, visible_at, reserved_by)
        SELECT p_queue, b, CASE WHEN due > clock_timestamp() THEN due ELSE '-infinity' END, CASE WHEN due > clock_timestamp() THEN '${delayedReceipt}' END
        FROM unnest(p_bodies) WITH ORDINALITY AS t (b, n) ORDER BY n` : `
      INSERT INTO ${s}.messages (queue, body)
        SELECT p_queue, b FROM unnest(p_bodies) WITH ORDINALITY AS t (b, n) ORDER BY n`}
        RETURNING id)
      SELECT array_agg(id ORDER BY id) INTO ids FROM pushed;${sized ? `
    PERFORM ${s}.fold(p_queue, coalesce(cardinality(ids), 0));` : ''}
    PERFORM pg_notify(p_channel, '');
    RETURN ids;
  END
  $fn$`

/**
 * settle (version 2; version 6 also records what an ack deleted in the queue's size). Each id on
 * its own, in the primary key: a correlated subquery is a subplan run once per id, never joined
 * (the planner could join the other way round: every row of the queue times every id); OFFSET 0
 * keeps x a subquery, else its row_ would be looked up twice (filter and result). Locked, so the
 * ctids stay put until commit, and the statements below read by ctid. The receipt is compared by
 * IS NOT DISTINCT FROM, which the planner cannot read as "reserved_by IS NOT NULL": else it could
 * scan all of messages_deadlines (every reservation) instead of the ctids. p_receipt is never
 * null, so it means "=".
 */
const settleFunction = ({sql: s}: Pick<Schema, 'sql'>, create: 'CREATE' | 'CREATE OR REPLACE', sized: boolean): string =>
  `${create} FUNCTION ${s}.settle(p_queue text, p_ids bigint[], p_receipt text, p_outcome text, p_max_attempts integer, p_channel text, p_dead text, p_dead_channel text) RETURNS void
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    rows_ tid[];
    spent tid[];${sized ? `
    acked bigint;` : ''}
  BEGIN
    SELECT array_agg(x.row_) INTO rows_
      FROM (SELECT (SELECT m.ctid FROM ${s}.messages m WHERE m.queue = p_queue AND m.id = t.id FOR UPDATE) AS row_
            FROM unnest(p_ids) AS t (id) OFFSET 0) x
      WHERE x.row_ IS NOT NULL;
    IF rows_ IS NULL THEN
      RETURN;
    END IF;
    IF p_outcome = 'ack' THEN
      DELETE FROM ${s}.messages m WHERE m.ctid = ANY (rows_) AND m.reserved_by IS NOT DISTINCT FROM p_receipt;${sized ? `
      GET DIAGNOSTICS acked = ROW_COUNT;
      IF acked > 0 THEN
        INSERT INTO ${s}.queue_changes (queue, change) VALUES (p_queue, -acked);
      END IF;` : ''}
      RETURN;
    END IF;
    IF p_outcome = 'retry' THEN
      SELECT array_agg(m.ctid) INTO spent FROM ${s}.messages m
        WHERE m.ctid = ANY (rows_) AND m.reserved_by IS NOT DISTINCT FROM p_receipt AND m.attempts >= p_max_attempts;
      IF spent IS NOT NULL THEN
        PERFORM ${s}.bury(spent, p_dead, p_dead_channel);
      END IF;
    END IF;
    UPDATE ${s}.messages m
      SET visible_at = '-infinity', reserved_by = NULL,
          attempts = CASE WHEN p_outcome = 'release' THEN greatest(m.attempts - 1, 0) ELSE m.attempts END
      WHERE m.ctid = ANY (rows_) AND m.reserved_by IS NOT DISTINCT FROM p_receipt;
    IF FOUND THEN
      PERFORM pg_notify(p_channel, '');
    END IF;
  END
  $fn$`

/** Version 1 of the queue table and functions (applied by the migration in connection.ts). */
export const queueSchema = ({sql: s, lockSpace}: Schema): string[] => [
  `CREATE TABLE ${s}.messages (
    queue text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    body bytea NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts integer NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT '-infinity',
    reserved_by text,
    -- The only index. With a second one on id alone, a generic plan for "the first visible
    -- messages of queue $1 by id" may walk that one and filter by queue: through every message
    -- of every other queue. Every statement here names the queue.
    PRIMARY KEY (queue, id)
  )`,
  // The ids come back as one array, in the order of the bodies.
  pushFunction({sql: s, lockSpace}, 'CREATE', false, false),
  // p_rows: row versions this transaction has locked (FOR UPDATE), so their ctids cannot move.
  `CREATE FUNCTION ${s}.bury(p_rows tid[], p_dead text, p_dead_channel text) RETURNS void
  LANGUAGE plpgsql AS $fn$
  BEGIN
    PERFORM pg_advisory_xact_lock(${lockSpace('queue')}, hashtext(p_dead));
    WITH gone AS (DELETE FROM ${s}.messages WHERE ctid = ANY (p_rows) RETURNING id, body, enqueued_at)
      INSERT INTO ${s}.messages (queue, body, enqueued_at) SELECT p_dead, body, enqueued_at FROM gone ORDER BY id;
    PERFORM pg_notify(p_dead_channel, '');
  END
  $fn$`,
  `CREATE FUNCTION ${s}.reserve(p_queue text, p_count integer, p_visibility_ms bigint, p_receipt text, p_max_attempts integer, p_dead text, p_dead_channel text)
  RETURNS TABLE (id bigint, body bytea, enqueued_at timestamptz, attempts integer)
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    now_ timestamptz := clock_timestamp();
    spent tid[];
    fresh tid[];
  BEGIN
    LOOP
      -- The rows are locked here, so their ctids stay put until commit: the UPDATE below finds
      -- them by ctid (a TID scan), whatever the planner believes about the queue's size.
      SELECT array_agg(d.ctid) FILTER (WHERE d.attempts >= p_max_attempts), array_agg(d.ctid) FILTER (WHERE d.attempts < p_max_attempts)
        INTO spent, fresh
        FROM (SELECT m.ctid, m.attempts FROM ${s}.messages m
              WHERE m.queue = p_queue AND m.visible_at <= now_
              ORDER BY m.id LIMIT p_count FOR UPDATE SKIP LOCKED) d;
      IF spent IS NOT NULL THEN
        PERFORM ${s}.bury(spent, p_dead, p_dead_channel);
      END IF;
      IF fresh IS NOT NULL THEN
        RETURN QUERY UPDATE ${s}.messages m
          SET attempts = m.attempts + 1, visible_at = now_ + p_visibility_ms * interval '1 millisecond', reserved_by = p_receipt
          WHERE m.ctid = ANY (fresh)
          RETURNING m.id, m.body, m.enqueued_at, m.attempts;
        RETURN;
      END IF;
      -- Only spent messages came up: look again past them.
      EXIT WHEN spent IS NULL;
    END LOOP;
  END
  $fn$`,
  `CREATE FUNCTION ${s}.settle(p_queue text, p_ids bigint[], p_receipts text[], p_outcome text, p_max_attempts integer, p_channel text, p_dead text, p_dead_channel text) RETURNS void
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    spent tid[];
  BEGIN
    IF p_outcome = 'ack' THEN
      DELETE FROM ${s}.messages m USING unnest(p_ids, p_receipts) AS t (id, receipt)
        WHERE m.queue = p_queue AND m.id = t.id AND m.reserved_by = t.receipt;
      RETURN;
    END IF;
    IF p_outcome = 'retry' THEN
      SELECT array_agg(x.ctid) INTO spent FROM (
        SELECT m.ctid FROM ${s}.messages m JOIN unnest(p_ids, p_receipts) AS t (id, receipt) ON m.id = t.id AND m.reserved_by = t.receipt
        WHERE m.queue = p_queue AND m.attempts >= p_max_attempts FOR UPDATE OF m) x;
      IF spent IS NOT NULL THEN
        PERFORM ${s}.bury(spent, p_dead, p_dead_channel);
      END IF;
    END IF;
    UPDATE ${s}.messages m
      SET visible_at = '-infinity', reserved_by = NULL,
          attempts = CASE WHEN p_outcome = 'release' THEN greatest(m.attempts - 1, 0) ELSE m.attempts END
      FROM unnest(p_ids, p_receipts) AS t (id, receipt)
      WHERE m.queue = p_queue AND m.id = t.id AND m.reserved_by = t.receipt;
    IF FOUND THEN
      PERFORM pg_notify(p_channel, '');
    END IF;
  END
  $fn$`,
]

/**
 * Version 2: the reads of a pop follow the messages popped, whatever the statistics (issue 16).
 * Reservations leave the waiting index and enter the deadline index, so `reserve` finds the next
 * waiting messages and the expired reservations without passing the rows others hold; settle
 * takes one receipt and looks each id up in the primary key on its own (the version 1 join of
 * unnest(ids, receipts) could be planned as a nested loop over the whole queue). Building the indexes holds
 * off pushes to an existing table for as long as that takes (a second or so per million rows).
 */
export const queueSchemaV2 = ({sql: s}: Schema): string[] => [
  `CREATE INDEX messages_waiting ON ${s}.messages (queue, id) WHERE reserved_by IS NULL`,
  `CREATE INDEX messages_deadlines ON ${s}.messages (queue, visible_at) WHERE reserved_by IS NOT NULL`,
  `CREATE OR REPLACE FUNCTION ${s}.reserve(p_queue text, p_count integer, p_visibility_ms bigint, p_receipt text, p_max_attempts integer, p_dead text, p_dead_channel text)
  RETURNS TABLE (id bigint, body bytea, enqueued_at timestamptz, attempts integer)
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    now_ timestamptz := clock_timestamp();
    spent tid[];
    fresh tid[];
    wanted integer;
  BEGIN
    LOOP
      -- Expired reservations first, from the oldest deadline in messages_deadlines (so reservations
      -- still running are never read), then waiting messages in id order from messages_waiting.
      -- The rows are locked here, so their ctids stay put until commit: the UPDATE below finds
      -- them by ctid (a TID scan), whatever the planner believes about the queue's size.
      SELECT array_agg(d.ctid) FILTER (WHERE d.attempts >= p_max_attempts), array_agg(d.ctid) FILTER (WHERE d.attempts < p_max_attempts)
        INTO spent, fresh
        FROM (SELECT m.ctid, m.attempts FROM ${s}.messages m
              WHERE m.queue = p_queue AND m.reserved_by IS NOT NULL AND m.visible_at <= now_
              ORDER BY m.visible_at LIMIT p_count FOR UPDATE SKIP LOCKED) d;
      wanted := p_count - coalesce(cardinality(spent), 0) - coalesce(cardinality(fresh), 0);
      IF wanted > 0 THEN
        SELECT spent || array_agg(d.ctid) FILTER (WHERE d.attempts >= p_max_attempts), fresh || array_agg(d.ctid) FILTER (WHERE d.attempts < p_max_attempts)
          INTO spent, fresh
          FROM (SELECT m.ctid, m.attempts FROM ${s}.messages m
                WHERE m.queue = p_queue AND m.reserved_by IS NULL AND m.visible_at <= now_
                ORDER BY m.id LIMIT wanted FOR UPDATE SKIP LOCKED) d;
      END IF;
      IF spent IS NOT NULL THEN
        PERFORM ${s}.bury(spent, p_dead, p_dead_channel);
      END IF;
      IF fresh IS NOT NULL THEN
        RETURN QUERY UPDATE ${s}.messages m
          SET attempts = m.attempts + 1, visible_at = now_ + p_visibility_ms * interval '1 millisecond', reserved_by = p_receipt
          WHERE m.ctid = ANY (fresh)
          RETURNING m.id, m.body, m.enqueued_at, m.attempts;
        RETURN;
      END IF;
      -- Only spent messages came up: look again past them.
      EXIT WHEN spent IS NULL;
    END LOOP;
  END
  $fn$`,
  `DROP FUNCTION ${s}.settle(text, bigint[], text[], text, integer, text, text, text)`,
  settleFunction({sql: s}, 'CREATE', false),
]

/**
 * Version 3: the reads of tail and `queue status --queue` that were plain statements become
 * functions, so that they too run under the planner settings of dlq's functions (connection.ts:
 * SET clauses, no longer session settings, since a pooler shares sessions).
 */
export const queueSchemaV3 = ({sql: s}: Schema): string[] => [
  `CREATE FUNCTION ${s}.peek(p_queue text, p_count integer)
  RETURNS TABLE (id bigint, body bytea, enqueued_at timestamptz, attempts integer)
  LANGUAGE sql AS $fn$
    SELECT m.id, m.body, m.enqueued_at, m.attempts FROM ${s}.messages m
    WHERE m.queue = p_queue AND m.visible_at <= clock_timestamp()
    ORDER BY m.id DESC LIMIT p_count
  $fn$`,
  `CREATE FUNCTION ${s}.after(p_queue text, p_last bigint, p_count integer)
  RETURNS TABLE (id bigint, body bytea, enqueued_at timestamptz, attempts integer)
  LANGUAGE sql AS $fn$
    SELECT m.id, m.body, m.enqueued_at, m.attempts FROM ${s}.messages m
    WHERE m.queue = p_queue AND m.id > p_last AND m.visible_at <= clock_timestamp()
    ORDER BY m.id LIMIT p_count
  $fn$`,
  // One queue and its dead letters, each counted by its own lookup in the primary key: "queue = $1
  // OR queue = $2" was planned as a walk of the whole index through every other queue (issue 16).
  `CREATE FUNCTION ${s}.stats_of_queue(p_queue text, p_dead text)
  RETURNS TABLE (queue text, waiting bigint, in_flight bigint, oldest_ms bigint)
  LANGUAGE sql AS $fn$
    SELECT v.queue, c.waiting, c.in_flight, c.oldest_ms
    FROM (VALUES (p_queue), (p_dead)) AS v(queue)
    CROSS JOIN LATERAL (SELECT ${COUNTS} FROM ${s}.messages m WHERE m.queue = v.queue) AS c
    ORDER BY v.queue
  $fn$`,
]

/**
 * Version 4: messages pushed with a delay (issue 14). Such a row is stored reserved by nobody
 * ('delayed', a word no receipt is) until its due time, on no delivery yet: in the deadline index
 * like a retry that waits, so the next reserve after that time takes it as an expired
 * reservation, and nothing else changes. --follow leaves those rows out; the counts of one queue
 * tell them apart from the messages in flight.
 */
export const queueSchemaV4 = ({sql: s, lockSpace}: Schema): string[] => [
  pushFunction({sql: s, lockSpace}, 'CREATE', true, false),
  `CREATE OR REPLACE FUNCTION ${s}.after(p_queue text, p_last bigint, p_count integer)
  RETURNS TABLE (id bigint, body bytea, enqueued_at timestamptz, attempts integer)
  LANGUAGE sql AS $fn$
    SELECT m.id, m.body, m.enqueued_at, m.attempts FROM ${s}.messages m
    WHERE m.queue = p_queue AND m.id > p_last AND m.visible_at <= clock_timestamp() AND m.reserved_by IS DISTINCT FROM '${delayedReceipt}'
    ORDER BY m.id LIMIT p_count
  $fn$`,
  `DROP FUNCTION ${s}.stats_of_queue(text, text)`,
  `CREATE FUNCTION ${s}.stats_of_queue(p_queue text, p_dead text)
  RETURNS TABLE (queue text, waiting bigint, delayed bigint, in_flight bigint, oldest_ms bigint)
  LANGUAGE sql AS $fn$
    SELECT v.queue, c.waiting, c.delayed, c.in_flight, c.oldest_ms
    FROM (VALUES (p_queue), (p_dead)) AS v(queue)
    CROSS JOIN LATERAL (SELECT ${COUNTS} FROM ${s}.messages m WHERE m.queue = v.queue) AS c
    ORDER BY v.queue
  $fn$`,
]
/** The functions version 4 made or remade: they get the planner settings of connection.ts again. */
export const queueFunctionsV4 = ['push_later', 'after', 'stats_of_queue']

/**
 * Version 6: `queue status` whose cost follows the reservations, not the queue's length (issue 16).
 * A queue's size is queue_sizes.size plus its rows in queue_changes: every statement that inserts
 * or deletes messages records exactly what it did (+n, -n) in the same transaction, so sizes are
 * right under any interleaving (additions commute). A push folds its queue's changes into the size
 * (it holds the queue's advisory lock already), and so does status: the changes never outgrow the
 * acks and burials since the last push. Folders lock the queue_sizes row first: one folder at a
 * time per queue, and whoever holds that row waits on nothing else (a push takes it after its
 * advisory lock, status takes Q's before Q.dead's, nobody the other way round): no deadlock.
 * waiting = size - in flight - delayed; the latter two are counted in messages_deadlines (only
 * the rows reserved now); the oldest waiting message is the first in the waiting index or an
 * expired reservation. The initial sizes are counted once, with pushes and acks held off.
 */
export const queueSchemaV6 = ({sql: s, lockSpace}: Schema): string[] => [
  `CREATE TABLE ${s}.queue_sizes (queue text PRIMARY KEY, size bigint NOT NULL)`,
  `CREATE TABLE ${s}.queue_changes (queue text NOT NULL, change bigint NOT NULL)`,
  `CREATE INDEX queue_changes_queue ON ${s}.queue_changes (queue)`,
  `LOCK TABLE ${s}.messages IN SHARE MODE`,
  `INSERT INTO ${s}.queue_sizes (queue, size) SELECT queue, count(*) FROM ${s}.messages GROUP BY queue`,
  // The size of p_queue with its changes folded in, plus p_add (a push's rows). A queue nobody
  // pushed to and nothing changed gets no row (status of a mistyped name makes nothing).
  `CREATE FUNCTION ${s}.fold(p_queue text, p_add bigint) RETURNS bigint
  LANGUAGE plpgsql AS $fn$
  DECLARE
    size_ bigint;
    folded bigint;
  BEGIN
    IF current_setting('transaction_read_only') = 'on' THEN
      -- A standby (target_session_attrs=any) reads the size without folding: status works there.
      RETURN coalesce((SELECT z.size FROM ${s}.queue_sizes z WHERE z.queue = p_queue), 0)
        + coalesce((SELECT sum(c.change) FROM ${s}.queue_changes c WHERE c.queue = p_queue), 0);
    END IF;
    SELECT z.size INTO size_ FROM ${s}.queue_sizes z WHERE z.queue = p_queue FOR UPDATE;
    IF NOT FOUND THEN
      IF p_add = 0 AND NOT EXISTS (SELECT 1 FROM ${s}.queue_changes c WHERE c.queue = p_queue) THEN
        RETURN 0;
      END IF;
      INSERT INTO ${s}.queue_sizes (queue, size) VALUES (p_queue, 0) ON CONFLICT (queue) DO NOTHING;
      SELECT z.size INTO size_ FROM ${s}.queue_sizes z WHERE z.queue = p_queue FOR UPDATE;
    END IF;
    WITH gone AS (DELETE FROM ${s}.queue_changes c WHERE c.queue = p_queue RETURNING c.change)
      SELECT coalesce(sum(gone.change), 0) INTO folded FROM gone;
    IF folded <> 0 OR p_add <> 0 THEN
      size_ := size_ + folded + p_add;
      UPDATE ${s}.queue_sizes z SET size = size_ WHERE z.queue = p_queue;
    END IF;
    RETURN size_;
  END
  $fn$`,
  pushFunction({sql: s, lockSpace}, 'CREATE OR REPLACE', false, true),
  pushFunction({sql: s, lockSpace}, 'CREATE OR REPLACE', true, true),
  `CREATE OR REPLACE FUNCTION ${s}.bury(p_rows tid[], p_dead text, p_dead_channel text) RETURNS void
  LANGUAGE plpgsql AS $fn$
  BEGIN
    PERFORM pg_advisory_xact_lock(${lockSpace('queue')}, hashtext(p_dead));
    WITH gone AS (DELETE FROM ${s}.messages WHERE ctid = ANY (p_rows) RETURNING queue, id, body, enqueued_at),
      moved AS (INSERT INTO ${s}.messages (queue, body, enqueued_at) SELECT p_dead, body, enqueued_at FROM gone ORDER BY id RETURNING 1)
      INSERT INTO ${s}.queue_changes (queue, change)
        SELECT gone.queue, -count(*) FROM gone GROUP BY gone.queue
        UNION ALL SELECT p_dead, count(*) FROM moved HAVING count(*) > 0;
    PERFORM pg_notify(p_dead_channel, '');
  END
  $fn$`,
  settleFunction({sql: s}, 'CREATE OR REPLACE', true),
  `CREATE FUNCTION ${s}.queue_stats(p_queue text)
  RETURNS TABLE (queue text, waiting bigint, delayed bigint, in_flight bigint, oldest_ms bigint)
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_variable
  DECLARE
    now_ timestamptz := now();
    size_ bigint := ${s}.fold(p_queue, 0);
    later bigint;
    held bigint;
    oldest timestamptz;
  BEGIN
    SELECT count(*) FILTER (WHERE m.reserved_by = '${delayedReceipt}'), count(*) FILTER (WHERE m.reserved_by <> '${delayedReceipt}')
      INTO later, held
      FROM ${s}.messages m WHERE m.queue = p_queue AND m.reserved_by IS NOT NULL AND m.visible_at > now_;
    SELECT least(
        (SELECT m.enqueued_at FROM ${s}.messages m WHERE m.queue = p_queue AND m.reserved_by IS NULL ORDER BY m.id LIMIT 1),
        (SELECT min(m.enqueued_at) FROM ${s}.messages m WHERE m.queue = p_queue AND m.reserved_by IS NOT NULL AND m.visible_at <= now_))
      INTO oldest;
    RETURN QUERY SELECT p_queue, greatest(size_ - later - held, 0), later, held, floor(extract(epoch FROM now_ - oldest) * 1000)::bigint;
  END
  $fn$`,
  `DROP FUNCTION ${s}.stats_of_queue(text, text)`,
  `CREATE FUNCTION ${s}.stats_of_queue(p_queue text, p_dead text)
  RETURNS TABLE (queue text, waiting bigint, delayed bigint, in_flight bigint, oldest_ms bigint)
  LANGUAGE sql AS $fn$
    SELECT * FROM ${s}.queue_stats(p_queue) UNION ALL SELECT * FROM ${s}.queue_stats(p_dead)
  $fn$`,
  // Every queue with messages: those with a size or changes, each counted as above.
  `CREATE FUNCTION ${s}.all_stats()
  RETURNS TABLE (queue text, waiting bigint, delayed bigint, in_flight bigint, oldest_ms bigint)
  LANGUAGE plpgsql AS $fn$
  DECLARE
    q text;
  BEGIN
    FOR q IN SELECT z.queue FROM ${s}.queue_sizes z UNION SELECT DISTINCT c.queue FROM ${s}.queue_changes c ORDER BY 1 LOOP
      RETURN QUERY SELECT x.* FROM ${s}.queue_stats(q) x WHERE x.waiting + x.delayed + x.in_flight > 0;
    END LOOP;
  END
  $fn$`,
]
/** The functions version 6 made or remade: they get the planner settings of connection.ts again. */
export const queueFunctionsV6 = ['fold', 'push', 'push_later', 'bury', 'settle', 'queue_stats', 'stats_of_queue', 'all_stats']

const PUSH = (s: string) => `SELECT ${s}.push($1, $2::bytea[], $3) AS ids`
const RESERVE = (s: string) => `SELECT id, body, enqueued_at, attempts FROM ${s}.reserve($1, $2, $3, $4, $5, $6, $7)`
const SETTLE = (s: string) => `SELECT ${s}.settle($1, $2::bigint[], $3, $4, $5, $6, $7, $8)`
// IS NOT DISTINCT FROM: see settle (the row by its primary key, never a scan of messages_deadlines).
const EXTEND = (s: string) => `UPDATE ${s}.messages SET visible_at = clock_timestamp() + $4::bigint * interval '1 millisecond'
  WHERE queue = $1 AND id = $2 AND reserved_by IS NOT DISTINCT FROM $3::text AND visible_at > clock_timestamp()
  RETURNING id`
// A retry that waits: the row stays reserved until now+delay, under a receipt nobody settles.
// Each id is looked up in the primary key (queue, id = ANY); rows on their last attempt are left
// for settle's retry, which buries them.
const RETRY_LATER = (s: string) => `UPDATE ${s}.messages SET visible_at = clock_timestamp() + $4::bigint * interval '1 millisecond', reserved_by = $3::text || ' later'
  WHERE queue = $1 AND id = ANY ($2::bigint[]) AND reserved_by IS NOT DISTINCT FROM $3::text AND attempts < $5
  RETURNING id`
const NEXT_DEADLINE = (s: string) => `SELECT ceil(extract(epoch FROM min(visible_at) - clock_timestamp()) * 1000)::bigint AS due_ms
  FROM ${s}.messages WHERE queue = $1 AND reserved_by IS NOT NULL AND visible_at > clock_timestamp()`
const PUSH_LATER = (s: string) => `SELECT ${s}.push_later($1, $2::bytea[], $3, $4::bigint, $5::timestamptz) AS ids`
// The rows it deletes are recorded as changes to the queues' sizes (version 6).
const DELETE_QUEUE = (s: string) => `WITH gone AS (DELETE FROM ${s}.messages WHERE queue = $1 OR queue = $2 RETURNING queue),
    noted AS (INSERT INTO ${s}.queue_changes (queue, change) SELECT queue, -count(*) FROM gone GROUP BY queue)
  SELECT count(*) AS deleted FROM gone`
const PEEK = (s: string) => `SELECT id, body, enqueued_at, attempts FROM ${s}.peek($1, $2)`
const LAST_ID = (s: string) => `SELECT coalesce(max(id), 0) AS last FROM ${s}.messages WHERE queue = $1`
const AFTER = (s: string) => `SELECT id, body, enqueued_at, attempts FROM ${s}.after($1, $2, ${followPage})`
/** The counts of `queue status`, over the rows a statement groups or selects. */
const COUNTS = `count(*) FILTER (WHERE visible_at <= now()) AS waiting,
    count(*) FILTER (WHERE visible_at > now() AND reserved_by = '${delayedReceipt}') AS delayed,
    count(*) FILTER (WHERE visible_at > now() AND reserved_by IS DISTINCT FROM '${delayedReceipt}') AS in_flight,
    floor(extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE visible_at <= now())) * 1000)::bigint AS oldest_ms`
const ALL_STATS = (s: string) => `SELECT queue, waiting, delayed, in_flight, oldest_ms FROM ${s}.all_stats()`
const STATS_OF_QUEUE = (s: string) => `SELECT queue, waiting, delayed, in_flight, oldest_ms FROM ${s}.stats_of_queue($1, $2)`

/** The queue statements of one schema, named for pg's per-session prepared statements. */
export const queueStatements = (schema: Schema) => {
  const named = (name: string, text: string): Statement => ({name: `dlq_${name}`, text})
  const s = schema.sql
  return {
    push: named('push', PUSH(s)),
    pushLater: named('push_later', PUSH_LATER(s)),
    deleteQueue: named('delete_queue', DELETE_QUEUE(s)),
    reserve: named('reserve', RESERVE(s)),
    settle: named('settle', SETTLE(s)),
    extend: named('extend', EXTEND(s)),
    retryLater: named('retry_later', RETRY_LATER(s)),
    nextDeadline: named('next_deadline', NEXT_DEADLINE(s)),
    peek: named('peek', PEEK(s)),
    lastId: named('last_id', LAST_ID(s)),
    after: named('after', AFTER(s)),
    statsOfQueue: named('stats_of_queue', STATS_OF_QUEUE(s)),
    allStats: named('all_stats', ALL_STATS(s)),
  }
}

/**
 * A bytea[] in PostgreSQL's binary array format: pg sends a Buffer parameter as binary, so the
 * bodies go over the wire as they are, without hex encoding and array-literal escaping.
 */
export function byteaArray(bodies: Buffer[]): Buffer {
  let size = 20
  for (const body of bodies) size += 4 + body.length
  const out = Buffer.allocUnsafe(size)
  out.writeInt32BE(1, 0) // dimensions
  out.writeInt32BE(0, 4) // no NULLs
  out.writeUInt32BE(17, 8) // element type: bytea
  out.writeInt32BE(bodies.length, 12)
  out.writeInt32BE(1, 16) // lower bound
  let at = 20
  for (const body of bodies) {
    out.writeInt32BE(body.length, at)
    body.copy(out, at + 4)
    at += 4 + body.length
  }
  return out
}

interface MessageRow {
  id: string
  body: Buffer
  enqueued_at: Date
  attempts: number
}

interface StatsRow {
  queue: string
  waiting: string
  delayed: string
  in_flight: string
  oldest_ms: string | null
}

const byId = (a: {id: string}, b: {id: string}) => (BigInt(a.id) < BigInt(b.id) ? -1 : BigInt(a.id) > BigInt(b.id) ? 1 : 0)

export class PostgresQueues implements QueueDriver {
  readonly maxMessageBytes = maxMessageBytes
  private readonly reserver = `${Date.now().toString(36)}-${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 10)}`
  private reservations = 0
  private readonly statements: ReturnType<typeof queueStatements>

  constructor(private readonly connection: Connection) {
    this.statements = queueStatements(connection.schema)
  }

  private channel(queue: string): string {
    return this.connection.schema.channel('queue', queue)
  }

  async push(queue: string, bodies: Buffer[], options: PushOptions = {}): Promise<string[]> {
    if (bodies.length === 0) return []
    // A batch is at most a few MiB (the push command's batches): one statement, one commit.
    const [row] = options.delayMs !== undefined || options.at !== undefined
      ? await this.connection.query<{ids: string[]}>(this.statements.pushLater, [queue, byteaArray(bodies), this.channel(queue), Math.ceil(options.delayMs ?? 0), options.at?.toISOString() ?? null], 60_000)
      : await this.connection.query<{ids: string[]}>(this.statements.push, [queue, byteaArray(bodies), this.channel(queue)], 60_000)
    return row.ids
  }

  async deleteQueue(queue: string): Promise<boolean> {
    // A queue is its rows: once they are gone it exists nowhere (a pop never makes one).
    const [row] = await this.connection.query<{deleted: string}>(this.statements.deleteQueue, [queue, `${queue}.dead`], 600_000)
    return Number(row.deleted) > 0
  }

  async reserve(queue: string, request: ReserveRequest): Promise<Message[]> {
    const {signal} = request
    const deadline = Date.now() + request.waitMs
    const dead = `${queue}.dead`
    let unlisten: (() => void) | undefined
    const wakeup = new Wakeup(signal)
    const backoff = new PollBackoff(5, queuePollCapMs)
    try {
      for (;;) {
        signal.throwIfAborted()
        wakeup.changed = false
        const receipt = `${this.reserver}-${++this.reservations}`
        const rows = await this.connection.query<MessageRow>(this.statements.reserve, [queue, request.count, request.visibilityMs, receipt, request.maxAttempts, dead, this.channel(dead)])
        if (rows.length > 0) {
          return rows.sort(byId).map((row) => ({id: row.id, body: row.body, enqueuedAt: row.enqueued_at, attempts: row.attempts, receipt}))
        }
        const now = Date.now()
        if (now >= deadline) return []
        if (!this.connection.canListen) {
          // Behind a pooler: poll (poll.ts); reserve finds expired reservations too.
          await this.connection.idle()
          await wakeup.sleep(Math.max(1, Math.min(deadline - now, backoff.next())))
          continue
        }
        if (!unlisten) {
          unlisten = await this.connection.listen(this.channel(queue), wakeup.wake)
          continue // try again now that a push cannot slip by unheard
        }
        if (wakeup.changed) continue
        const [due] = await this.connection.query<{due_ms: string | null}>(this.statements.nextDeadline, [queue])
        if (wakeup.changed) continue
        const untilDue = due?.due_ms == null ? fallbackPollMs : Number(due.due_ms) + 1
        await wakeup.sleep(Math.max(1, Math.min(deadline - Date.now(), untilDue, fallbackPollMs)))
      }
    } finally {
      wakeup.dispose()
      unlisten?.()
    }
  }

  async settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number, options: SettleOptions = {}): Promise<void> {
    if (messages.length === 0) return
    const delayMs = outcome === 'retry' ? Math.ceil(options.retryDelayMs ?? 0) : 0
    const dead = `${queue}.dead`
    // One statement per reservation: its rows are found by (queue, id) and its one receipt.
    const byReceipt = new Map<string, string[]>()
    for (const message of messages) {
      const ids = byReceipt.get(message.receipt)
      if (ids) ids.push(message.id)
      else byReceipt.set(message.receipt, [message.id])
    }
    for (const [receipt, ids] of byReceipt) {
      // What waits out its delay is no longer under `receipt`: the settle below buries the rest.
      if (delayMs > 0) await this.connection.query(this.statements.retryLater, [queue, ids, receipt, delayMs, maxAttempts])
      await this.connection.query(this.statements.settle, [queue, ids, receipt, outcome, maxAttempts, this.channel(queue), dead, this.channel(dead)])
    }
  }

  async extend(queue: string, message: Message, visibilityMs: number): Promise<boolean> {
    const rows = await this.connection.query(this.statements.extend, [queue, message.id, message.receipt, visibilityMs])
    return rows.length > 0
  }

  async peek(queue: string, count: number): Promise<Message[]> {
    const rows = await this.connection.query<MessageRow>(this.statements.peek, [queue, count])
    return rows.reverse().map((row) => this.message(row))
  }

  private message(row: MessageRow): Message {
    return {id: row.id, body: row.body, enqueuedAt: row.enqueued_at, attempts: row.attempts, receipt: ''}
  }

  async follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void> {
    const wakeup = new Wakeup(signal)
    const backoff = new PollBackoff(5, queuePollCapMs)
    // LISTEN first, then the last id: a push committed in between is both after `last` and heard.
    // Behind a pooler there is nothing to listen to: the loop polls.
    const listening = this.connection.canListen ? this.connection.listen(this.channel(queue), wakeup.wake) : Promise.resolve(() => {})
    const start = this.connection.query<{last: string}>(this.statements.lastId, [queue])
    let unlisten: (() => void) | undefined
    try {
      unlisten = await listening
      let last = (await start)[0].last
      while (!signal.aborted) {
        wakeup.changed = false
        const rows = await this.connection.query<MessageRow>(this.statements.after, [queue, last])
        if (rows.length > 0) {
          last = rows[rows.length - 1].id
          await onMessages(rows.map((row) => this.message(row)))
          backoff.reset()
          if (rows.length === followPage) continue
        }
        if (wakeup.changed || signal.aborted) continue
        if (!this.connection.canListen) await this.connection.idle()
        await wakeup.sleep(this.connection.canListen ? fallbackPollMs : backoff.next())
      }
    } finally {
      wakeup.dispose()
      unlisten?.()
      await start.catch(() => {})
    }
  }

  async stats(queue?: string): Promise<QueueStats[]> {
    const rows = queue === undefined
      ? await this.connection.query<StatsRow>(this.statements.allStats)
      : await this.connection.query<StatsRow>(this.statements.statsOfQueue, [queue, `${queue}.dead`])
    const byName = new Map(rows.map((row) => [row.queue, row]))
    // An emptied queue has no rows left, but it is still the queue its dead letters belong to.
    const present = new Set([...byName.keys()].map((name) => (name.endsWith('.dead') ? name.slice(0, -5) : name)))
    const names = queue === undefined ? [...present].sort() : [queue]
    return names.map((name) => {
      const row = byName.get(name)
      const dead = byName.get(`${name}.dead`)
      return {
        queue: name,
        waiting: Number(row?.waiting ?? 0),
        delayed: Number(row?.delayed ?? 0),
        inFlight: Number(row?.in_flight ?? 0),
        dead: dead ? Number(dead.waiting) + Number(dead.delayed) + Number(dead.in_flight) : 0,
        ...(row?.oldest_ms == null ? {} : {oldestAgeMs: Number(row.oldest_ms)}),
      }
    })
  }
}
