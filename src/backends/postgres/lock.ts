// PostgreSQL locks and semaphores: leases in a table, the way the Redis driver keeps them in a
// sorted set, with the database's clock as the only clock.
// - A lease is a row (key, owner, fencing token, holder record, expires_at). expires_at is computed
//   with clock_timestamp() on the server, so client clock skew cannot lengthen or shorten it.
// - acquire() is one function call: pg_advisory_xact_lock(space, hashtext(key)) serialises the
//   acquisitions of a key until commit, and under it expired leases are deleted, the live ones
//   counted and, below --limit, a lease inserted. Each statement of a plpgsql function sees what
//   committed before it began, so the count includes every acquisition that held the lock
//   before: --limit N is exact. Deleting (not just skipping) expired leases matters: a renewal
//   racing the acquirer then either finds its row gone, or renewed it first and the acquirer's
//   DELETE, re-checking the row it waited for, keeps it and counts it.
// - Shared (reader) leases (migration 4) are rows with shared = true: a shared request is admitted
//   when no live lease of the key is exclusive and no exclusive request waits (lock_waiters rows
//   with shared = false: writer preference), an exclusive one when no live lease is shared and
//   fewer than its limit are held. Under the same advisory lock, so just as exact. A writer that
//   gives up its place NOTIFYs, waking the readers behind it.
// - Fencing tokens come from one sequence: strictly increasing per key (across the database, in
//   fact), force releases included, and never reused after a rollback.
// - Renewal is a compare-and-set on (key, owner, still unexpired): an expired lease is never
//   revived, since a waiter may have counted it gone. Release is compare-and-delete.
// - Waiters LISTEN on the key's channel and on one of their own, and are woken by the NOTIFY the
//   release sends at commit to the first two in line (migration 7; the readers right behind a
//   woken reader too), or by a timer at the earliest expiry; a slow poll is only the fallback.
//   Their presence is a row with an expiry in lock_waiters, refreshed by each poll, so `lock
//   status` counts them.
//   Holders listen as well, and so notice a force release at once (watchLoss).
//   Behind a pooler (?pooling=transaction or session) there is no LISTEN: waiters poll (poll.ts)
//   at a pace set by the number of waiters acquire() reports, and a holder learns of a force
//   release at its next renewal. Behind a session pooler they disconnect between polls and
//   renewals (Connection.idle), so that neither pins a server connection.
//
// Why not just pg_advisory_lock(key) for the whole run: a session-level advisory lock records no
// holder (no host, pid or command for `lock status`), has no TTL, so `lock acquire --token` could
// not hold it after its process exits, and it lives exactly as long as the connection, which
// would have to stay open for the whole command: a restart or a dropped connection frees the lock
// silently while the command runs on.
import {LockLostError} from '../../errors.js'
import type {AcquireRequest, Holder, Lease, LockDriver, LockState} from '../types.js'
import {Wakeup} from '../wakeup.js'
import type {Connection, Schema, Statement} from './connection.js'
import {lockPollCapMs, lockPollMaxMs, PollBackoff} from './poll.js'

const fallbackPollMs = 2000
const waiterTtlMs = 5000

/**
 * The acquire function: one row back, acquired and the lease; or not, how long until the first
 * lease expires and (from migration 3 on) how many wait for the key, which sets how often a
 * waiter behind a transaction pooler polls (poll.ts).
 */
const acquireFunction = ({sql: s, lockSpace}: Schema, withWaiters: boolean, withShared = false): string =>
  `CREATE FUNCTION ${s}.acquire(p_key text, p_owner text, p_ttl_ms bigint, p_limit integer, p_host text, p_pid integer, p_user text, p_command text, p_waiter_ttl_ms bigint${withShared ? ', p_shared boolean' : ''})
  RETURNS TABLE (acquired boolean, token bigint, acquired_at timestamptz, expires_at timestamptz, retry_ms bigint${withWaiters ? ', waiters bigint' : ''})
  LANGUAGE plpgsql${withShared ? ` ${PLANNER_OFF}` : ''} AS $fn$
  #variable_conflict use_column
  DECLARE
    now_ timestamptz;
    held integer;
    mine ${s}.leases;
  BEGIN
    PERFORM pg_advisory_xact_lock(${lockSpace('lock')}, hashtext(p_key));
    now_ := clock_timestamp();
    DELETE FROM ${s}.leases WHERE key = p_key AND expires_at <= now_;
    DELETE FROM ${s}.lock_waiters WHERE key = p_key AND expires_at <= now_;
    -- Our own earlier attempt, whose reply was lost: it holds already.
    UPDATE ${s}.leases SET expires_at = now_ + p_ttl_ms * interval '1 millisecond'
      WHERE key = p_key AND owner = p_owner RETURNING * INTO mine;
    IF NOT FOUND THEN
      ${withShared ? `IF p_shared THEN
        -- A reader: no exclusive lease, and no exclusive request waiting (writer preference).
        held := CASE WHEN EXISTS (SELECT 1 FROM ${s}.leases WHERE key = p_key AND NOT shared)
            OR EXISTS (SELECT 1 FROM ${s}.lock_waiters WHERE key = p_key AND NOT shared AND owner <> p_owner) THEN p_limit ELSE 0 END;
      ELSE
        -- Exclusive: fewer than p_limit leases, none of them shared.
        SELECT CASE WHEN bool_or(shared) THEN p_limit ELSE count(*) END INTO held FROM ${s}.leases WHERE key = p_key;
      END IF;` : `SELECT count(*) INTO held FROM ${s}.leases WHERE key = p_key;`}
      IF held < p_limit THEN
        INSERT INTO ${s}.leases (key, owner, token, acquired_at, expires_at, ttl_ms, host, pid, username, command${withShared ? ', shared' : ''})
          VALUES (p_key, p_owner, nextval('${s}.fencing_tokens'), now_, now_ + p_ttl_ms * interval '1 millisecond', p_ttl_ms, p_host, p_pid, p_user, p_command${withShared ? ', p_shared' : ''})
          RETURNING * INTO mine;
      END IF;
    END IF;
    IF mine.token IS NOT NULL THEN
      DELETE FROM ${s}.lock_waiters WHERE key = p_key AND owner = p_owner;
      RETURN QUERY SELECT true, mine.token, mine.acquired_at, mine.expires_at, NULL::bigint${withWaiters ? ', NULL::bigint' : ''};
      RETURN;
    END IF;
    -- Not acquired: nothing here needs to survive a crash (pruning, presence), so no WAL flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_waiter_ttl_ms > 0 THEN
      INSERT INTO ${s}.lock_waiters (key, owner, expires_at${withShared ? ', shared' : ''}) VALUES (p_key, p_owner, now_ + p_waiter_ttl_ms * interval '1 millisecond'${withShared ? ', p_shared' : ''})
        ON CONFLICT (key, owner) DO UPDATE SET expires_at = EXCLUDED.expires_at;
    END IF;
    RETURN QUERY SELECT false, NULL::bigint, NULL::timestamptz, NULL::timestamptz,
      (SELECT ceil(extract(epoch FROM min(l.expires_at) - now_) * 1000)::bigint FROM ${s}.leases l WHERE l.key = p_key)${withWaiters ? `,
      (SELECT count(*) FROM ${s}.lock_waiters w WHERE w.key = p_key AND w.expires_at > now_)` : ''};
  END
  $fn$`

/** How many waiters one release wakes at most (a run of readers behind a writer). */
const wakeCap = 64

// The planner settings of migration 3 (connection.ts), for a function created after it.
const PLANNER_OFF = ['enable_seqscan', 'enable_bitmapscan', 'enable_sort', 'enable_hashjoin', 'enable_mergejoin'].map((setting) => `SET ${setting} = off`).join(' ')

/** Version 1 of the lock tables and functions (applied by the migration in connection.ts). */
export const lockSchema = (schema: Schema): string[] => [
  ...lockTables(schema),
  acquireFunction(schema, false),
  ...releaseFunctions(schema),
]

const lockTables = ({sql: s}: Schema): string[] => [
  `CREATE SEQUENCE ${s}.fencing_tokens AS bigint`,
  `CREATE TABLE ${s}.leases (
    key text NOT NULL,
    owner text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ttl_ms bigint NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    username text NOT NULL,
    command text NOT NULL,
    PRIMARY KEY (key, owner)
  )`,
  `CREATE TABLE ${s}.lock_waiters (
    key text NOT NULL,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, owner)
  )`,
]

const releaseFunctions = ({sql: s}: Schema): string[] => [
  // The NOTIFY is delivered at commit, after the row is gone: a woken waiter finds the room.
  // The commit does not wait for its WAL flush: a release lost in a crash only leaves the lease to
  // expire, and the next acquisition's own (flushed) commit makes it durable anyway. That keeps
  // one fsync off every hand-off.
  `CREATE FUNCTION ${s}.release(p_key text, p_owner text, p_channel text) RETURNS boolean
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    live boolean;
  BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM ${s}.leases WHERE key = p_key AND owner = p_owner RETURNING expires_at > clock_timestamp() INTO live;
    IF FOUND THEN
      PERFORM pg_notify(p_channel, '');
    END IF;
    RETURN coalesce(live, false);
  END
  $fn$`,
  `CREATE FUNCTION ${s}.force_release(p_key text, p_channel text) RETURNS integer
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    live integer;
  BEGIN
    WITH gone AS (DELETE FROM ${s}.leases WHERE key = p_key RETURNING expires_at)
      SELECT count(*) FILTER (WHERE expires_at > clock_timestamp()) INTO live FROM gone;
    PERFORM pg_notify(p_channel, '');
    RETURN live;
  END
  $fn$`,
]

/** Version 3: acquire also counts the key's waiters. */
export const lockSchemaV3 = (schema: Schema): string[] => [
  `DROP FUNCTION ${schema.sql}.acquire(text, text, bigint, integer, text, integer, text, text, bigint)`,
  acquireFunction(schema, true),
]

/**
 * Version 5: shared (reader) leases and writer preference. acquire gains p_shared; the version 3
 * signature stays, as an exclusive acquire, for a dlq of before --shared that was already running
 * when the schema was migrated (one started later refuses a schema past its version).
 */
export const lockSchemaV5 = (schema: Schema): string[] => {
  const s = schema.sql
  return [
    `ALTER TABLE ${s}.leases ADD COLUMN shared boolean NOT NULL DEFAULT false`,
    `ALTER TABLE ${s}.lock_waiters ADD COLUMN shared boolean NOT NULL DEFAULT false`,
    acquireFunction(schema, true, true),
    `CREATE OR REPLACE FUNCTION ${s}.acquire(p_key text, p_owner text, p_ttl_ms bigint, p_limit integer, p_host text, p_pid integer, p_user text, p_command text, p_waiter_ttl_ms bigint)
    RETURNS TABLE (acquired boolean, token bigint, acquired_at timestamptz, expires_at timestamptz, retry_ms bigint, waiters bigint)
    LANGUAGE sql AS $fn$ SELECT * FROM ${s}.acquire(p_key, p_owner, p_ttl_ms, p_limit, p_host, p_pid, p_user, p_command, p_waiter_ttl_ms, false) $fn$`,
  ]
}

/**
 * Version 7: a release wakes the first waiters in line, not all of them (issue 16). Waiters get an
 * arrival time (since; a refresh keeps it) and each LISTENs on a channel of its own besides the
 * key's; release NOTIFYs the first two live waiters' channels (the second covers a first that
 * died within its presence) and, after them, the readers right behind a woken reader. Force
 * release and a writer leaving still NOTIFY the key's channel, which holders and waiters share.
 */
export const lockSchemaV7 = ({sql: s}: Schema): string[] => [
  `ALTER TABLE ${s}.lock_waiters ADD COLUMN since timestamptz NOT NULL DEFAULT clock_timestamp()`,
  `CREATE OR REPLACE FUNCTION ${s}.release(p_key text, p_owner text, p_channel text) RETURNS boolean
  LANGUAGE plpgsql AS $fn$
  #variable_conflict use_column
  DECLARE
    live boolean;
    w record;
    woken integer := 0;
    last_shared boolean := false;
  BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM ${s}.leases WHERE key = p_key AND owner = p_owner RETURNING expires_at > clock_timestamp() INTO live;
    IF FOUND THEN
      FOR w IN SELECT lw.owner, lw.shared FROM ${s}.lock_waiters lw
          WHERE lw.key = p_key AND lw.expires_at > clock_timestamp() ORDER BY lw.since, lw.owner LIMIT ${wakeCap} LOOP
        EXIT WHEN woken >= 2 AND NOT (last_shared AND w.shared);
        PERFORM pg_notify(p_channel || '_' || left(md5(w.owner), 8), '');
        woken := woken + 1;
        last_shared := w.shared;
      END LOOP;
    END IF;
    RETURN coalesce(live, false);
  END
  $fn$`,
]

const ACQUIRE = (s: string) => `SELECT * FROM ${s}.acquire($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::boolean)`
const RENEW = (s: string) => `UPDATE ${s}.leases SET expires_at = clock_timestamp() + coalesce($3::bigint, ttl_ms) * interval '1 millisecond'
  WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp()
  RETURNING token, ttl_ms`
const RELEASE = (s: string) => `SELECT ${s}.release($1, $2, $3) AS released`
const FORCE_RELEASE = (s: string) => `SELECT ${s}.force_release($1, $2) AS live`
const HOLDS = (s: string) => `SELECT 1 FROM ${s}.leases WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp()`
// A writer that leaves wakes the readers that waited behind it.
const FORGET_WAITER = (s: string) => `WITH gone AS (DELETE FROM ${s}.lock_waiters WHERE key = $1 AND owner = $2 RETURNING shared)
  SELECT pg_notify($3, '') FROM gone WHERE NOT shared`
// The waiters are counted once per key by one aggregate joined in, not by a subquery per lease:
// that was planned as 12.7 per lease, so `lock status` of every key passed the server's
// jit_above_cost (100,000) from about 25,000 held keys and was JIT-compiled (957 ms of LLVM for
// 200,000 keys, 2.9 s in all; joined: 0.49 s, no JIT up to a million keys).
const HOLDERS = (s: string, where: string) => `SELECT l.key, l.owner, l.token, l.acquired_at, l.expires_at, l.host, l.pid, l.username, l.command, l.shared,
    coalesce(w.waiters, 0) AS waiters
  FROM ${s}.leases l
  LEFT JOIN (SELECT key, count(*) AS waiters FROM ${s}.lock_waiters WHERE ${where.replaceAll('l.', '')} expires_at > clock_timestamp() GROUP BY key) w ON w.key = l.key
  WHERE ${where} l.expires_at > clock_timestamp()
  ORDER BY l.key, l.token`
const HOLDERS_OF_KEY = (s: string) => HOLDERS(s, 'l.key = $1 AND')
const ALL_HOLDERS = (s: string) => HOLDERS(s, '')

/** The lock statements of one schema, named for pg's per-session prepared statements. */
export const lockStatements = (schema: Schema) => {
  const named = (name: string, text: string): Statement => ({name: `dlq_${name}`, text})
  const s = schema.sql
  return {
    acquire: named('acquire', ACQUIRE(s)),
    renew: named('renew', RENEW(s)),
    release: named('release', RELEASE(s)),
    forceRelease: named('force_release', FORCE_RELEASE(s)),
    holds: named('holds', HOLDS(s)),
    forgetWaiter: named('forget_waiter', FORGET_WAITER(s)),
    holdersOfKey: named('holders_of_key', HOLDERS_OF_KEY(s)),
    allHolders: named('all_holders', ALL_HOLDERS(s)),
  }
}

interface AcquireRow {
  acquired: boolean
  token: string | null
  retry_ms: string | null
  waiters?: string | null
}

interface HolderRow {
  key: string
  owner: string
  token: string
  acquired_at: Date
  expires_at: Date
  host: string
  pid: number
  username: string
  command: string
  shared: boolean
  waiters: string
}

export class PostgresLocks implements LockDriver {
  private readonly statements: ReturnType<typeof lockStatements>

  constructor(private readonly connection: Connection) {
    this.statements = lockStatements(connection.schema)
  }

  async acquire(request: AcquireRequest): Promise<Lease | undefined> {
    const {key, owner, ttlMs, limit, holder, signal} = request
    const shared = request.shared === true
    const deadline = Date.now() + request.waitMs
    const waiting = request.waitMs > 0
    let unlisten: (() => void) | undefined
    let acquired = false
    const wakeup = new Wakeup(signal)
    const backoff = new PollBackoff(5, lockPollMaxMs)
    try {
      for (;;) {
        signal.throwIfAborted()
        wakeup.changed = false
        const sent = Date.now() // the lease is counted from before the request: never longer than the server's
        const [row] = await this.connection.query<AcquireRow>(this.statements.acquire, [key, owner, ttlMs, limit, holder.host, holder.pid, holder.user, holder.command, waiting ? waiterTtlMs : 0, shared])
        if (row.acquired) {
          acquired = true
          void this.connection.idle() // a holder asks again only at its renewals (not awaited: the hand-off goes on)
          return {key, owner, fencingToken: row.token!, ttlMs, expiresAt: new Date(sent + ttlMs)}
        }
        const now = Date.now()
        if (now >= deadline) return undefined
        if (request.onWaiting) request.onWaiting((await this.status(key))[0]?.holders ?? [])
        const untilExpiry = row.retry_ms === null ? fallbackPollMs : Number(row.retry_ms) + 1
        if (!this.connection.canListen) {
          // Behind a pooler: poll (poll.ts), each waiter the less often the more wait.
          const pause = backoff.next(lockPollCapMs(Number(row.waiters ?? 1)))
          await this.connection.idle()
          await wakeup.sleep(Math.max(1, Math.min(deadline - now, untilExpiry, pause)))
          continue
        }
        if (!unlisten) {
          // The key's channel (force releases, a writer leaving) and this waiter's own (a
          // release waking the first in line).
          const all = await this.connection.listen(this.connection.schema.channel('lock', key), wakeup.wake)
          const mine = await this.connection.listen(this.connection.schema.waiterChannel(key, owner), wakeup.wake).catch((error) => {
            all()
            throw error
          })
          unlisten = () => {
            all()
            mine()
          }
          continue // try again now that a release cannot slip by unheard
        }
        if (wakeup.changed) continue
        await wakeup.sleep(Math.max(1, Math.min(deadline - now, untilExpiry, fallbackPollMs)))
      }
    } finally {
      wakeup.dispose()
      unlisten?.()
      if (!acquired && waiting) await this.connection.query(this.statements.forgetWaiter, [key, owner, this.connection.schema.channel('lock', key)]).catch(() => {})
    }
  }

  async renew(key: string, owner: string, ttlMs?: number): Promise<Lease> {
    const sent = Date.now()
    const [row] = await this.connection.query<{token: string; ttl_ms: string}>(this.statements.renew, [key, owner, ttlMs ?? null])
    if (!row) throw new LockLostError(key, `no lease with owner ${owner} (it expired, was released, was force-released, or did not reach the standby that took over)`)
    void this.connection.idle()
    const granted = ttlMs ?? Number(row.ttl_ms)
    return {key, owner, fencingToken: row.token, ttlMs: granted, expiresAt: new Date(sent + granted)}
  }

  async release(key: string, owner: string): Promise<boolean> {
    const [row] = await this.connection.query<{released: boolean}>(this.statements.release, [key, owner, this.connection.schema.channel('lock', key)])
    return row.released
  }

  async forceRelease(key: string): Promise<number> {
    const [row] = await this.connection.query<{live: number}>(this.statements.forceRelease, [key, this.connection.schema.channel('lock', key)])
    return row.live
  }

  /**
   * A force release NOTIFYs the key's channel like any release: the holder listens too and, on
   * each notification, checks that its lease is still there, so it learns of the loss at once
   * rather than at its next renewal. When the server cannot be asked, renewals decide.
   */
  watchLoss(lease: Lease, onLost: (why: string) => void): () => void {
    if (!this.connection.canListen) return () => {} // behind a pooler: renewals decide
    let stopped = false
    let unlisten: (() => void) | undefined
    const check = () => {
      if (stopped) return
      this.connection.query(this.statements.holds, [lease.key, lease.owner]).then((rows) => {
        if (!stopped && rows.length === 0) onLost(`no lease with owner ${lease.owner} any more (it was force-released, expired, or did not reach the standby that took over)`)
      }, () => {})
    }
    this.connection.listen(this.connection.schema.channel('lock', lease.key), check).then((off) => {
      unlisten = off
      if (stopped) off()
    }, () => {})
    return () => {
      stopped = true
      unlisten?.()
    }
  }

  async status(key?: string): Promise<LockState[]> {
    const rows = key === undefined
      ? await this.connection.query<HolderRow>(this.statements.allHolders)
      : await this.connection.query<HolderRow>(this.statements.holdersOfKey, [key])
    const states = new Map<string, LockState>()
    for (const row of rows) {
      let state = states.get(row.key)
      if (!state) states.set(row.key, (state = {key: row.key, holders: [], waiters: Number(row.waiters)}))
      const holder: Holder = {
        owner: row.owner, fencingToken: row.token, host: row.host, pid: row.pid, user: row.username, command: row.command,
        acquiredAt: row.acquired_at, expiresAt: row.expires_at, mode: row.shared ? 'shared' : 'exclusive',
      }
      state.holders.push(holder)
    }
    return [...states.values()]
  }
}
