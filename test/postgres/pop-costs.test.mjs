// What a PostgreSQL pop costs the server (issue 16): the plans of the statements `dlq queue pop`
// runs, read from the server's own log (auto_explain, actual row counts, the statements inside
// dlq's functions included), must touch about as many rows as the pop takes, whatever the
// planner's statistics say and however many reservations sit in front of the waiting messages.
// A plan, not a time: a slow machine cannot fail these, a plan that reads the whole queue must.
// Also: an existing version 1 schema is migrated, and a pop that loses its server after writing
// messages says what it delivered instead of failing.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {run, spawnDlq, waitFor} from '../support/cli.mjs'
import {planLog, planLogConfig, planNodes, rowsTouched} from '../support/pgplans.mjs'
import {startPostgres} from '../support/postgres.mjs'

const {migrations, schemaOf} = await import('../../dist/backends/postgres/connection.js')
const {openBackend} = await import('../../dist/backends/index.js')

const popBatch = 1000 // what queue pop reserves and settles per statement on PostgreSQL
const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const withSchema = (url, schema) => `${url}?schema=${schema}`
const numbers = (from, to) => Array.from({length: to - from + 1}, (_v, i) => String(from + i))
const lines = (text) => (text === '' ? [] : text.slice(0, -1).split('\n'))

async function push(url, queue, bodies) {
  const r = await cli(url, ['queue', 'push', '--queue', queue], {input: bodies.join('\n') + '\n', timeoutMs: 60_000})
  assert.equal(r.code, 0, r.stderr)
}

async function stats(url, queue) {
  const r = await cli(url, ['queue', 'status', '--queue', queue, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).queues[0]
}

describe('postgres: a pop costs what it pops', {concurrency: 1}, () => {
  let server
  let log
  before(async () => {
    // No autovacuum: the statistics are exactly what each test made them.
    server = await startPostgres({config: [...planLogConfig, 'autovacuum=off']})
    log = planLog(server)
  })
  after(() => server?.stop())

  /** Runs the pop, then checks every plan its session ran; returns the popped lines. */
  async function popChecked(url, queue, count, what) {
    const mark = log.mark()
    const r = await cli(url, ['queue', 'pop', '--queue', queue, '--count', String(count)], {timeoutMs: 60_000})
    assert.equal(r.code, 0, r.stderr)
    const onMessages = checkPlans(mark, what)
    assert.ok(onMessages.some((e) => /^\s*DELETE FROM/i.test(e.query)), `${what}: no DELETE among the plans logged`)
    assert.ok(onMessages.some((e) => /FOR UPDATE SKIP LOCKED/i.test(e.query)), `${what}: no reservation among the plans logged`)
    return lines(r.stdout)
  }

  /** Every plan dlq's sessions ran since `mark` that read messages: no sequential scan, a batch of rows at most. */
  function checkPlans(mark, what, bound = popBatch + 10) {
    const onMessages = log.since(mark, 'dlq').filter((e) => [...planNodes(e.plan)].some((n) => n['Relation Name'] === 'messages'))
    for (const entry of onMessages) {
      for (const node of planNodes(entry.plan)) {
        const where = `${what}: ${node['Node Type']}${node['Index Name'] ? ` on ${node['Index Name']}` : ''} in\n${entry.query}\n${JSON.stringify(entry.plan, null, 1).slice(0, 3000)}`
        if (node['Relation Name'] === 'messages') assert.notEqual(node['Node Type'], 'Seq Scan', `a sequential scan of the queue: ${where}`)
        assert.ok(rowsTouched(node) <= bound, `${rowsTouched(node)} rows touched (at most ${bound}): ${where}`)
      }
    }
    return onMessages
  }

  it('statistics taken while the table was nearly empty (then 20,000 pushed): every plan reads about what it pops', async () => {
    const url = withSchema(server.url, 'tiny_stats')
    await push(url, 'warm', ['a', 'b'])
    await server.sql('ANALYZE tiny_stats.messages')
    await push(url, 'q', numbers(1, 20_000))
    assert.deepEqual(await popChecked(url, 'q', 1000, 'first pop'), numbers(1, 1000))
    // Five batches in one session: PL/pgSQL may switch to generic plans after five executions.
    assert.deepEqual(await popChecked(url, 'q', 7000, 'seven batches'), numbers(1001, 8000))
  })

  it('a table never analyzed: the same', async () => {
    const url = withSchema(server.url, 'no_stats')
    await push(url, 'q', numbers(1, 20_000))
    assert.deepEqual(await popChecked(url, 'q', 1000, 'never analyzed'), numbers(1, 1000))
  })

  it('statistics of the full queue: the same', async () => {
    const url = withSchema(server.url, 'full_stats')
    await push(url, 'q', numbers(1, 20_000))
    await server.sql('ANALYZE full_stats.messages')
    assert.deepEqual(await popChecked(url, 'q', 3000, 'analyzed'), numbers(1, 3000))
  })

  it('20,000 reservations in front of the waiting messages are not read; expired ones are delivered first', async () => {
    const url = withSchema(server.url, 'held')
    await push(url, 'q', numbers(1, 25_000))
    // Another popper's reservations, as its reserve() leaves them: held for an hour.
    await server.sql(`UPDATE held.messages SET reserved_by = 'elsewhere', attempts = 1, visible_at = now() + interval '1 hour'
      WHERE queue = 'q' AND id <= (SELECT min(id) + 19999 FROM held.messages WHERE queue = 'q')`)
    assert.deepEqual(await popChecked(url, 'q', 1000, 'behind reservations'), numbers(20_001, 21_000))
    // 300 of them run out: they go first, then the waiting ones.
    await server.sql(`UPDATE held.messages SET visible_at = now() - interval '1 second'
      WHERE queue = 'q' AND id <= (SELECT min(id) + 299 FROM held.messages WHERE queue = 'q')`)
    const got = await popChecked(url, 'q', 1000, 'expired reservations')
    assert.deepEqual(got.slice(0, 300), numbers(1, 300))
    assert.deepEqual(got.slice(300), numbers(21_001, 21_700))
    const left = await stats(url, 'q')
    assert.deepEqual([left.waiting, left.inFlight], [25_000 - 21_700, 19_700])
  })

  it('worker mode behind 20,000 reservations: ack, retry, burial and extend read only their own rows', async () => {
    const url = withSchema(server.url, 'worker')
    await push(url, 'q', numbers(1, 20_050))
    await server.sql(`UPDATE worker.messages SET reserved_by = 'elsewhere', attempts = 1, visible_at = now() + interval '1 hour'
      WHERE queue = 'q' AND id <= (SELECT min(id) + 19999 FROM worker.messages WHERE queue = 'q')`)
    const mark = log.mark()
    // A handler slower than --visibility / 3: its reservation is extended while it runs.
    const ok = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '3', '--visibility', '300ms', '--exec', '--', 'sleep', '0.25'], {timeoutMs: 60_000})
    assert.equal(ok.code, 0, ok.stderr)
    const failed = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '3', '--max-attempts', '2', '--retry-delay', '0', '--exec', '--', 'false'], {timeoutMs: 60_000})
    assert.equal(failed.code, 0, failed.stderr)
    const later = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '1', '--retry-delay', '1h', '--exec', '--', 'false'], {timeoutMs: 60_000})
    assert.equal(later.code, 0, later.stderr)
    const plans = checkPlans(mark, 'worker', 10)
    assert.equal((await stats(url, 'q')).dead, 1) // the first one failed twice
    for (const [what, pattern] of [['ack', /DELETE FROM/], ['extend', /^UPDATE .* SET visible_at = clock_timestamp\(\)/s], ['retry', /SET visible_at = '-infinity'/], ['retry later', /SET visible_at = clock_timestamp\(\) .*' later'/s], ['burial', /DELETE FROM .* WHERE ctid = ANY \(p_rows\)/s]]) {
      assert.ok(plans.some((e) => pattern.test(e.query.trim())), `no ${what} among the plans logged`)
    }
  })

  it('queue status --queue Q reads only Q and Q.dead, never the other queues (a table never analyzed)', async () => {
    const url = withSchema(server.url, 'status_costs')
    await push(url, 'big', numbers(1, 20_000))
    await push(url, 'small', ['a', 'b', 'c'])
    for (const analyzed of [false, true]) {
      if (analyzed) await server.sql('ANALYZE status_costs.messages')
      const mark = log.mark()
      const small = await stats(url, 'small')
      assert.deepEqual([small.waiting, small.inFlight, small.dead, small.oldestAgeMs >= 0], [3, 0, 0, true])
      const plans = checkPlans(mark, `queue status --queue small${analyzed ? ' (analyzed)' : ''}`, 10)
      assert.ok(plans.length > 0, 'the status query was not among the plans logged')
    }
  })

  it('a version 1 schema is migrated: its messages and reservations stay, and its pops read what they pop', async () => {
    const {default: pg} = await import('pg')
    const client = new pg.Client({connectionString: server.url})
    await client.connect()
    const s = schemaOf('legacy')
    try {
      // The schema as a dlq of version 1 left it: its DDL, its version row, messages it pushed,
      // and two of them reserved by a popper of that version.
      await client.query('BEGIN')
      await client.query('CREATE SCHEMA legacy')
      await client.query(`CREATE TABLE legacy.schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL DEFAULT current_user)`)
      for (const statement of migrations(s)[0].statements) await client.query(statement)
      await client.query('INSERT INTO legacy.schema_version (version) VALUES (1)')
      await client.query('COMMIT')
      const bodies = numbers(1, 5000).map((n) => Buffer.from(n))
      await client.query(`SELECT legacy.push('q', $1::bytea[], 'c')`, [bodies])
      const held = await client.query(`SELECT id FROM legacy.reserve('q', 2, 3600000, 'old-popper', 5, 'q.dead', 'd')`)
      assert.equal(held.rows.length, 2)
    } finally {
      await client.end()
    }
    const url = withSchema(server.url, 'legacy')
    // The first use migrates (version 6 counts each queue's rows once, a pass over the table by
    // design); then the pop's own plans are checked.
    const before = await stats(url, 'q')
    assert.deepEqual([before.waiting, before.inFlight], [4998, 2])
    assert.deepEqual(await popChecked(url, 'q', 1000, 'migrated'), numbers(3, 1002))
    assert.equal((await server.sql('SELECT max(version) FROM legacy.schema_version')).trim(), String(migrations(s).at(-1).version))
    const indexes = (await server.sql(`SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'legacy' AND tablename = 'messages'`)).trim()
    assert.equal(indexes, 'messages_deadlines,messages_pkey,messages_waiting')
    const left = await stats(url, 'q')
    assert.deepEqual([left.waiting, left.inFlight], [3998, 2])
  })

  it('queue status --queue Q reads the reservations, not the waiting messages; so does status of every queue', async () => {
    const url = withSchema(server.url, 'status_sizes')
    await push(url, 'q', numbers(1, 20_000))
    await push(url, 'other', numbers(1, 5000))
    const later = await cli(url, ['queue', 'push', '--queue', 'q', '--delay', '1h', 'd1', 'd2'])
    assert.equal(later.code, 0, later.stderr)
    const backend = await openBackend(url)
    try {
      const held = await backend.queues.reserve('q', {count: 3, visibilityMs: 3_600_000, waitMs: 0, maxAttempts: 5, signal: new AbortController().signal})
      assert.equal(held.length, 3)
    } finally {
      await backend.close()
    }
    assert.deepEqual((await popChecked(url, 'q', 10, 'pop')).length, 10)
    let mark = log.mark()
    const one = await stats(url, 'q')
    assert.deepEqual([one.waiting, one.delayed, one.inFlight, one.dead], [19_987, 2, 3, 0])
    assert.ok(checkPlans(mark, 'status --queue q', 50).length > 0, 'no plan of status read messages')
    mark = log.mark()
    const r = await cli(url, ['queue', 'status', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const all = Object.fromEntries(JSON.parse(r.stdout).queues.map((q) => [q.queue, [q.waiting, q.delayed, q.inFlight]]))
    assert.deepEqual(all, {other: [5000, 0, 0], q: [19_987, 2, 3]})
    assert.ok(checkPlans(mark, 'status of every queue', 50).length > 0, 'no plan of status read messages')
  })

  it('the sizes stay exact under concurrent pushes, workers that fail and bury, and status calls', async () => {
    const url = withSchema(server.url, 'sizes_race')
    const count = async (queue) => Number((await server.sql(`SELECT count(*) FROM sizes_race.messages WHERE queue = '${queue}'`)).trim())
    await push(url, 'q', ['0']) // makes the schema
    let pushing = true
    const statuses = (async () => {
      let n = 0
      while (pushing || n === 0) {
        await stats(url, 'q')
        n++
      }
      return n
    })()
    const worker = () => cli(url, ['queue', 'pop', '--queue', 'q', '--exec', '--count', '1000', '--concurrency', '4', '--wait', '3s', '--max-attempts', '2', '--retry-delay', '10ms', '--', 'sh', '-c', 'read m; [ $((m % 7)) -ne 0 ]'], {timeoutMs: 120_000})
    const workers = [worker(), worker()]
    await Promise.all([1, 2, 3].map(() => push(url, 'q', numbers(1, 300))))
    pushing = false
    assert.ok((await statuses) > 0)
    for (const r of await Promise.all(workers)) assert.equal(r.code, 0, r.stderr)
    const left = await stats(url, 'q')
    // 0 and the multiples of 7 up to 300 fail twice and are buried: 1 + 3 × 42.
    assert.deepEqual([left.waiting + left.delayed + left.inFlight, left.dead], [await count('q'), await count('q.dead')])
    assert.deepEqual([left.waiting, left.dead], [0, 127])
  })
  it('lock status of every key is planned below jit_above_cost with 300,000 held keys, and counts each key\'s live waiters', async () => {
    // A subquery per lease counting its waiters was planned at 12.7 a lease: past jit_above_cost
    // (100,000) from about 25,000 held keys, and 200,000 took 957 ms of LLVM before any row.
    const schema = 'many_locks'
    const url = withSchema(server.url, schema)
    const made = await cli(url, ['lock', 'run', '--key', 'made', '--', 'true'])
    assert.equal(made.code, 0, made.stderr)
    await server.sql(`INSERT INTO ${schema}.leases (key, owner, token, acquired_at, expires_at, ttl_ms, host, pid, username, command)
      SELECT 'k' || i, 'o' || i, i, now(), now() + interval '1 hour', 3600000, 'h', 1, 'u', 'c' FROM generate_series(1, 300000) i`)
    await server.sql(`INSERT INTO ${schema}.lock_waiters (key, owner, expires_at) VALUES ('k1', 'w1', now() + interval '1 hour'), ('k1', 'w2', now() + interval '1 hour'), ('k1', 'gone', now() - interval '1 second'), ('k2', 'w3', now() + interval '1 hour')`)
    await server.sql(`ANALYZE ${schema}.leases`)
    const {lockStatements} = await import('../../dist/backends/postgres/lock.js')
    const {allHolders, holdersOfKey} = lockStatements(schemaOf(schema))
    const jitAboveCost = Number(await server.sql('SHOW jit_above_cost'))
    const [{Plan: plan}] = JSON.parse(await server.sql(`EXPLAIN (FORMAT JSON) ${allHolders.text}`))
    assert.ok(plan['Total Cost'] < jitAboveCost, `lock status of every key is planned at ${plan['Total Cost']}, past jit_above_cost ${jitAboveCost}`)
    for (const [key, waiters] of [['k1', 2], ['k2', 1], ['k3', 0]]) {
      const r = await cli(url, ['lock', 'status', '--key', key, '--json'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(JSON.parse(r.stdout).locks[0]?.waiters, waiters, `${key}: ${r.stdout}`)
    }
    assert.ok(holdersOfKey.text.includes('$1'))
  })

  it('no statement of any command is compiled by the server\'s JIT (a disabled plan node costs 10^10, past jit_above_cost)', async () => {
    // dlq's functions turn planner node types off (they would cost 10^10 when used), and with the
    // server's default jit=on a plan that costs more than jit_above_cost is compiled by LLVM: a
    // burial cost 100-300 ms of CPU (seconds on a busy machine, serialized on the dead-letter
    // queue's lock), which left a worker's acks queued behind it past --visibility.
    assert.equal((await server.sql('SELECT pg_jit_available()')).trim(), 't', 'this server has no JIT: the test would show nothing')
    const url = withSchema(server.url, 'no_jit')
    const mark = log.mark()
    await push(url, 'q', numbers(1, 20))
    await push(url, 'q', ['21']) // a second push folds the changes into the size
    const delayed = await cli(url, ['queue', 'push', '--queue', 'q', '--delay', '1h'], {input: 'x\n'})
    assert.equal(delayed.code, 0, delayed.stderr)
    const failed = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '2', '--max-attempts', '1', '--exec', '--', 'false'], {timeoutMs: 60_000})
    assert.equal(failed.code, 0, failed.stderr)
    const retried = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '1', '--max-attempts', '3', '--retry-delay', '1h', '--exec', '--', 'false'], {timeoutMs: 60_000})
    assert.equal(retried.code, 0, retried.stderr)
    const worked = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '2', '--visibility', '300ms', '--exec', '--', 'sleep', '0.25'], {timeoutMs: 60_000})
    assert.equal(worked.code, 0, worked.stderr)
    for (const args of [['queue', 'pop', '--queue', 'q', '--count', '3'], ['queue', 'tail', '--queue', 'q'], ['queue', 'status'], ['queue', 'status', '--queue', 'q'], ['queue', 'redrive', '--queue', 'q'], ['lock', 'run', '--key', 'k', '--', 'true'], ['lock', 'run', '--key', 'k', '--shared', '--', 'true'], ['lock', 'run', '--key', 's', '--limit', '2', '--', 'true'], ['lock', 'status'], ['queue', 'purge', '--queue', 'q', '--force'], ['queue', 'delete', '--queue', 'q', '--force']]) {
      const r = await cli(url, args, {timeoutMs: 60_000})
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
    }
    const entries = log.since(mark, 'dlq')
    assert.ok(entries.some((e) => /DELETE FROM .* WHERE ctid = ANY \(p_rows\)/s.test(e.query)), 'no burial among the plans logged')
    const compiled = entries.filter((e) => e.jit)
    assert.deepEqual(compiled.map((e) => `${e.query.trim().slice(0, 120)} (JIT: ${JSON.stringify(e.jit)})`), [])
  })
})

describe('postgres: a pop whose server goes away after it wrote messages', () => {
  let server
  before(async () => {
    server = await startPostgres()
  })
  after(() => server?.stop())

  it('exits 0 and says so: what it wrote is delivered, and comes again once --visibility ends if its ack was lost', async (t) => {
    const url = `${server.url}?connectTimeout=3s` // for the pop only
    const bodies = numbers(1, 3000).map((n) => `${n} ${'x'.repeat(4000)}`) // a batch (4 MB) is far more than a pipe or socket buffers
    await push(server.url, 'q', bodies)
    const pop = spawnDlq(['queue', 'pop', '-b', url, '--queue', 'q', '--count', '3000', '--visibility', '2s'], {t, timeoutMs: 60_000})
    pop.stdout.pause() // dlq blocks writing its first batch
    // Reserved, whether or not its 2 s have run out meanwhile on a busy machine.
    const reserved = async () => Number(await server.sql(`SELECT count(*) FROM dlq.messages WHERE queue = 'q' AND reserved_by IS NOT NULL`))
    await waitFor(async () => pop.exited || (await reserved()) > 0, {timeoutMs: 60_000, what: 'the first batch reserved'})
    assert.equal(pop.exited, false, pop.stderrText())
    await server.halt()
    pop.stdout.resume()
    const r = await pop.result
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(lines(r.stdout), bodies.slice(0, popBatch))
    assert.match(r.stderr, /^dlq: queue pop: 1000 messages written, but the acknowledgement of the last 1000 failed: .*\(they count as delivered, and may be delivered again once --visibility ends\)\n$/)
    // At-least-once: the acknowledgement never landed, so they come again, before the rest.
    await server.start()
    await new Promise((resolve) => setTimeout(resolve, 2200))
    const again = await cli(server.url, ['queue', 'pop', '--queue', 'q', '--count', '3000', '--json'], {timeoutMs: 60_000})
    assert.equal(again.code, 0, again.stderr)
    const messages = lines(again.stdout).map((line) => JSON.parse(line))
    assert.deepEqual(messages.map((m) => m.body), bodies)
    assert.deepEqual([...new Set(messages.map((m) => m.attempts))], [2, 1])
  })

})
