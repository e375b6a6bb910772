// libpq multi-host URLs and a failover (issue 13), against a real primary and a real streaming hot
// standby that the tests start (test/support/postgres.mjs: initdb, then pg_basebackup -R over the
// primary's socket). dlq tries the hosts in order and uses the primary (target_session_attrs
// read-write by default for several hosts); a standby alone is refused with one line; and when the
// primary dies (immediate shutdown, as by a crash) and the standby is promoted (pg_ctl promote),
// dlq's reconnects go round the hosts again and land on the new primary: a `lock run` holder whose
// lease row reached the standby keeps its lock, one whose lease row did not stops with 70, a
// waiting `lock run` and a waiting `queue pop` get what is released or pushed there afterwards, and
// fencing tokens after the failover are above those handed out before it.
// Every wait has a deadline far above what it takes on an idle machine (other tests run at once).
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {locksOn as statusOf, oneErrorLine, runOn as cli, shUntil, spawnOn as spawnCli, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {startPostgres} from '../support/postgres.mjs'

const readText = (file) => readFile(file, 'utf8').then((text) => (text.endsWith('\n') ? text.trim() : undefined), () => undefined)

/** host:port of a test URL (postgres://user:pass@127.0.0.1:PORT/db). */
const hostOf = (url) => /@([^/]+)\//.exec(url)[1]
/** The first URL with the host list of every URL given, in that order, and `query`. */
const multiHost = (urls, query = '') => urls[0].replace(hostOf(urls[0]), urls.map(hostOf).join(',')) + query

/** Until the standby has replayed everything the primary has written so far. */
async function caughtUp(primary, standby) {
  const lsn = (await primary.sql('SELECT pg_current_wal_lsn()')).trim()
  await waitFor(async () => (await standby.sql(`SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn`)).trim() === 't', {what: `the standby to replay up to ${lsn}`, timeoutMs: 30_000, intervalMs: 50})
}

/** A primary and its streaming standby, stopped after the describe block. */
function pair() {
  const servers = {}
  before(async () => {
    servers.primary = await startPostgres()
    servers.standby = await servers.primary.startStandby()
    // dlq's schema, created on the primary, is on the standby before any test reads it there.
    const r = await cli(servers.primary.url, ['queue', 'status'])
    assert.equal(r.code, 0, r.stderr)
    await caughtUp(servers.primary, servers.standby)
  })
  after(async () => {
    await servers.standby?.stop()
    await servers.primary?.stop()
  })
  return servers
}

describe('postgres: multi-host URLs (libpq syntax)', {concurrency: 1}, () => {
  const servers = pair()

  it('standby listed first, then the primary: dlq uses the primary', async () => {
    const {primary, standby} = servers
    const url = multiHost([standby.url, primary.url])
    const key = uniqueName('k')
    const held = await cli(url, ['lock', 'acquire', '--key', key, '--ttl', '60s', '--verbose'])
    assert.equal(held.code, 0, held.stderr)
    assert.match(held.stderr, new RegExp(`${hostOf(standby.url)}: is a standby \\(in recovery\\), not read-write`))
    assert.match(held.stderr, new RegExp(`connected to .*\\(${hostOf(primary.url)}\\)`))
    assert.equal((await primary.sql(`SELECT count(*) FROM dlq.leases WHERE key = '${key}'`)).trim(), '1', 'the lease is on the primary')
    const queue = uniqueName('q')
    assert.equal((await cli(url, ['queue', 'push', '--queue', queue, 'hello'])).code, 0)
    const popped = await cli(primary.url, ['queue', 'pop', '--queue', queue])
    assert.equal(popped.stdout, 'hello\n', 'pushed to the primary')
    // The same with ?host= and ?port= lists, and with target_session_attrs=primary.
    const listed = `postgres:///${primary.database}?user=${primary.user}&password=${primary.password}&host=127.0.0.1,127.0.0.1&port=${standby.port},${primary.port}&target_session_attrs=primary`
    const ran = await cli(listed, ['lock', 'run', '--key', uniqueName('k'), '--', 'printenv', 'DLQ_LOCK_KEY'])
    assert.equal(ran.code, 0, ran.stderr)
  })

  it('only the standby: refused with one line, exit 69 (as a lone standby refuses the first write)', async () => {
    const {standby} = servers
    const key = uniqueName('k')
    // One host: libpq's default `any`; the standby itself refuses dlq's first write.
    const alone = await cli(standby.url, ['lock', 'run', '--key', key, '--', 'true'])
    assert.equal(alone.code, 69)
    assert.match(oneErrorLine(alone, assert), /^dlq: cannot write to postgres:\/\/dlq_test:\*\*\*@.*: cannot execute .* in a read-only transaction \(the server is a read-only standby: use the primary\)$/)
    // Asked for read-write, or listed twice: refused at connect, the same way.
    for (const url of [`${standby.url}?target_session_attrs=read-write`, multiHost([standby.url, standby.url])]) {
      const r = await cli(url, ['queue', 'push', '--queue', uniqueName('q'), 'x'])
      assert.equal(r.code, 69, r.stderr)
      const line = oneErrorLine(r, assert)
      assert.match(line, /^dlq: cannot write to postgres:\/\/dlq_test:\*\*\*@.*: 127\.0\.0\.1:\d+ is a standby \(in recovery\), not read-write.* \(the server is a read-only standby: use the primary\)$/)
      assert.ok(!line.includes(standby.password), 'password masked')
    }
    // target_session_attrs=any takes the standby: reading works there (queue status reads the
    // queues' sizes without folding them).
    const status = await cli(`${standby.url}?target_session_attrs=any`, ['lock', 'status', '--json'])
    assert.equal(status.code, 0, status.stderr)
    const queues = await cli(`${standby.url}?target_session_attrs=any`, ['queue', 'status', '--json'])
    assert.equal(queues.code, 0, queues.stderr)
  })

  it('a host that never answers costs its share of the connect timeout, then the next is tried', async (t) => {
    const {primary} = servers
    // Accepts TCP connections and never says a word, like a server that hangs.
    const silent = createServer(() => {})
    await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve))
    t.after(() => silent.close())
    const dead = primary.url.replace(hostOf(primary.url), `127.0.0.1:${silent.address().port}`)
    // The whole is larger than by default, so that the primary's part of it is never short on a slow machine.
    for (const [query, silentMs] of [['?connectTimeout=8s', 4000], ['?connect_timeout=2&connectTimeout=10s', 2000]]) {
      const url = multiHost([dead, primary.url], query)
      const started = Date.now()
      const r = await cli(url, ['lock', 'run', '--key', uniqueName('k'), '--', 'true'])
      assert.equal(r.code, 0, `${query}: ${r.stderr}`)
      // 4 s (8 s shared by 2 hosts) or 2 s (connect_timeout) at the silent host, then the primary.
      t.diagnostic(`${query}: ${Date.now() - started} ms through a silent host`)
      assert.ok(Date.now() - started >= silentMs, 'the silent host was tried first, for its share')
    }
    // Both silent: exit 69 within the whole (2 × 2 s given only connect_timeout), one line naming both.
    const started = Date.now()
    const r = await cli(multiHost([dead, dead], '?connect_timeout=2'), ['queue', 'push', '--queue', 'q', 'x'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /^dlq: cannot connect to postgres:\/\/dlq_test:\*\*\*@127\.0\.0\.1:\d+,127\.0\.0\.1:\d+\/dlq_test\?connect_timeout=2: /)
    assert.ok(Date.now() - started < 4000 + 5000, `gave up after ${Date.now() - started} ms`)
  })

  it('URL mistakes are exit 64 with one line; the password never shows', async () => {
    const {primary, standby} = servers
    for (const [query, pattern] of [
      ['?target_session_attrs=standby', /bad \?target_session_attrs=: standby in .*\(read-write, primary or any/],
      ['?connect_timeout=5s', /bad \?connect_timeout=: 5s/],
      ['?target_session_atrs=any', /unknown parameter \?target_session_atrs=/],
    ]) {
      const r = await cli(multiHost([standby.url, primary.url], query), ['queue', 'status'])
      assert.equal(r.code, 64, `${query}: ${r.stderr}`)
      const line = oneErrorLine(r, assert)
      assert.match(line, pattern)
      assert.ok(line.includes(`${hostOf(standby.url)},${hostOf(primary.url)}`), `the host list as written: ${line}`)
      assert.ok(!line.includes(primary.password), 'password masked')
    }
    const ports = await cli(`postgres:///db?user=u&host=a,b&port=1,2,3`, ['queue', 'status'])
    assert.equal(ports.code, 64)
    assert.match(oneErrorLine(ports, assert), /3 ports for 2 hosts/)
  })
})

describe('postgres: a failover mid-hold (primary killed, standby promoted)', {concurrency: 1}, () => {
  const servers = pair()

  it('the holder keeps its lock (its lease row was replicated), the waiter gets it on the new primary, tokens go on upwards', async (t) => {
    const {primary, standby} = servers
    // connectTimeout: how long a reconnect may go round the hosts; long enough for a slow promotion.
    const url = multiHost([primary.url, standby.url], '?connectTimeout=30s')
    const dir = await tempDir(t)
    const key = uniqueName('failover')
    const holder = spawnCli(url, ['lock', 'run', '--key', key, '--ttl', '15s', '--', 'sh', '-c', `echo "$DLQ_FENCING_TOKEN" > "$1/token"; ${shUntil('[ -e "$1/go" ]', 90)}`, 'dlq-test-sh', dir], {timeoutMs: 120_000, t})
    const before = await waitFor(() => readText(join(dir, 'token')), {what: 'the holder to start', timeoutMs: 20_000})
    const waiter = spawnCli(url, ['lock', 'run', '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo "$DLQ_FENCING_TOKEN"'], {timeoutMs: 120_000, t})
    await waitFor(async () => (await statusOf(primary.url, key))[0]?.waiters === 1, {what: 'the waiter to wait', timeoutMs: 20_000, intervalMs: 100})
    await caughtUp(primary, standby)
    assert.equal((await standby.sql(`SELECT token FROM dlq.leases WHERE key = '${key}'`)).trim(), before, 'the lease row is on the standby')

    await primary.halt()
    const haltedAt = Date.now()
    await standby.promote()
    const promotedAt = Date.now()
    t.diagnostic(`promotion took ${promotedAt - haltedAt} ms`)
    // Only a renewal after the primary died can set the expiry past haltedAt + 15 s (the TTL).
    await waitFor(async () => {
      const [state] = await statusOf(standby.url, key)
      return Date.parse(state?.holders[0]?.expiresAt ?? 0) > haltedAt + 15_000
    }, {what: 'a renewal on the promoted standby', timeoutMs: 30_000, intervalMs: 100})
    t.diagnostic(`first renewal on the new primary ${Date.now() - promotedAt} ms after the promotion (renewals every 5 s)`)
    const [held] = await statusOf(standby.url, key)
    assert.equal(String(held.holders[0].fencingToken), before, 'the same lease, not a new one')
    assert.equal(holder.exited, false, 'the command runs on')
    assert.equal(waiter.exited, false, `the waiter still waits: ${waiter.stderrText()}`)

    const exitedAt = new Promise((resolve) => holder.once('exit', () => resolve(Date.now())))
    const heldAt = new Promise((resolve) => waiter.stdout.once('data', () => resolve(Date.now())))
    await writeFile(join(dir, 'go'), '')
    const goAt = Date.now()
    const released = await holder.result
    assert.equal(released.code, 0, released.stderr)
    const r = await waiter.result
    assert.equal(r.code, 0, r.stderr)
    // The holder releases before it exits; its shell looks for the go file every 50 ms.
    t.diagnostic(`the waiter's command ran ${(await heldAt) - goAt} ms after the holder's command was told to finish (the holder exited ${(await exitedAt) - goAt} ms after), ${(await heldAt) - promotedAt} ms after the promotion`)
    const after = r.stdout.trim()
    assert.ok(BigInt(after) > BigInt(before), `fencing token after the failover (${after}) above the last before (${before})`)
    // And another key's first token too: one sequence, replicated (logged 32 values ahead).
    const other = await cli(url, ['lock', 'acquire', '--key', uniqueName('k'), '--ttl', '10s', '--json'])
    assert.equal(other.code, 0, other.stderr)
    assert.ok(BigInt(JSON.parse(other.stdout).fencingToken) > BigInt(after))
  })
})

describe('postgres: a failover that loses the lease row (asynchronous replication)', {concurrency: 1}, () => {
  const servers = pair()

  it('the holder whose lease never reached the standby stops with 70 once it reaches the new primary', async (t) => {
    const {primary, standby} = servers
    // The standby stops streaming (primary_conninfo is reloadable): what the primary commits now
    // is lost in the failover, as the last commits before a crash can be under asynchronous replication.
    await standby.sql("ALTER SYSTEM SET primary_conninfo = ''", 'postgres')
    await standby.sql('SELECT pg_reload_conf()', 'postgres')
    await waitFor(async () => (await standby.sql('SELECT count(*) FROM pg_stat_wal_receiver', 'postgres')).trim() === '0', {what: 'the standby to stop streaming', timeoutMs: 30_000, intervalMs: 100})
    const url = multiHost([primary.url, standby.url], '?connectTimeout=30s')
    const dir = await tempDir(t)
    const key = uniqueName('lost')
    const holder = spawnCli(url, ['lock', 'run', '--key', key, '--ttl', '30s', '--kill-grace', '1s', '--', 'sh', '-c', `echo "$DLQ_FENCING_TOKEN" > "$1/token"; ${shUntil('false', 90)}`, 'dlq-test-sh', dir], {timeoutMs: 120_000, t})
    await waitFor(() => readText(join(dir, 'token')), {what: 'the holder to start', timeoutMs: 20_000})
    assert.equal((await standby.sql(`SELECT count(*) FROM dlq.leases WHERE key = '${key}'`)).trim(), '0', 'not on the standby')

    await primary.halt()
    await standby.promote()
    const promotedAt = Date.now()
    const r = await holder.result
    t.diagnostic(`the holder stopped ${Date.now() - promotedAt} ms after the promotion (TTL 30 s)`)
    assert.equal(r.code, 70, r.stderr)
    assert.match(r.stderr, /lock .* lost: no lease with owner .* any more \(.*did not reach the standby that took over\)/)
    t.diagnostic(r.stderr.trim())
    assert.ok(Date.now() - promotedAt < 25_000, 'at its first look at the new primary, not at the end of its TTL')
    // The key is free there: a new holder gets it at once.
    const again = await cli(standby.url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
    assert.equal(again.code, 0, again.stderr)
  })
})

describe('postgres: a failover mid-`queue pop --wait`', {concurrency: 1}, () => {
  const servers = pair()

  it('the waiting pop gets the message pushed to the promoted standby (exit 0, the message on stdout)', async (t) => {
    const {primary, standby} = servers
    const url = multiHost([primary.url, standby.url], '?connectTimeout=30s')
    const queue = uniqueName('q')
    const pop = spawnCli(url, ['queue', 'pop', '--queue', queue, '--wait', '60s', '--verbose'], {timeoutMs: 120_000, t})
    await waitFor(() => /LISTEN/.test(pop.stderrText()), {what: 'the pop to listen', timeoutMs: 20_000})
    await caughtUp(primary, standby)

    await primary.halt()
    await standby.promote()
    const promotedAt = Date.now()
    // Back on the new primary: its LISTEN is issued again as it reconnects.
    await waitFor(() => pop.stderrText().split(`connected to`).length > 2 || pop.exited, {what: 'the pop to reconnect', timeoutMs: 40_000, intervalMs: 50})
    assert.equal(pop.exited, false, `still waiting: ${pop.stderrText()}`)
    t.diagnostic(`the pop reconnected ${Date.now() - promotedAt} ms after the promotion`)
    const pushed = await cli(standby.url, ['queue', 'push', '--queue', queue, 'after the failover'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const pushedAt = Date.now()
    const r = await pop.result
    t.diagnostic(`the pop returned ${Date.now() - pushedAt} ms after the push`)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'after the failover\n')
  })
})
