// Redis behind Sentinel (redis+sentinel://): a master, a replica and three Sentinels that the tests
// start on free loopback ports; the master is killed (SIGKILL) mid-hold and mid-wait, and dlq must
// follow the replica that Sentinel promotes. Each failover test gets a group of its own. Then
// groups whose Sentinels and data nodes require passwords, and whose servers speak only TLS
// (rediss+sentinel://).
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {PassThrough} from 'node:stream'
import {after, before, describe, it} from 'node:test'

import {oneErrorLine, run, shUntil, spawnDlq, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {makeCertificates, startSentinels} from '../support/servers.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const redisCli = (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8'})
const kill = (server) => process.kill(server.pid(), 'SIGKILL')

/** Waits until the replica has what the master wrote so far (replication offset caught up). */
async function replicated(group) {
  const offset = (port, field) => Number(new RegExp(`${field}:(\\d+)`).exec(redisCli(port, 'INFO', 'replication'))?.[1] ?? -1)
  const target = offset(group.master.port, 'master_repl_offset')
  await waitFor(() => offset(group.replica.port, 'slave_repl_offset') >= target, {what: 'the replica to catch up', timeoutMs: 5000})
}

describe('redis+sentinel: URLs', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('locks and queues work through Sentinel, and the URL is shown as written', async () => {
    const key = uniqueName('s')
    const r = await cli(group.url(), ['lock', 'run', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^\d+\n$/)
    const queue = uniqueName('q')
    assert.equal((await cli(group.url(), ['queue', 'push', '--queue', queue, 'one', 'two'])).code, 0)
    const popped = await cli(group.url(), ['queue', 'pop', '--queue', queue, '--count', '2'])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'one\ntwo\n')
    // The data went to the master Sentinel names.
    assert.equal(redisCli(group.master.port, 'EXISTS', `{dlq:q:${queue}}:stream`).trim(), '1')
  })

  it('unknown parameters, a missing master name and a bad ?failoverTimeout= are usage errors (64)', async () => {
    for (const url of [`${group.url()}?sentinel=x`, group.url().replace(/\/mymaster$/, ''), `${group.url()}/0/extra`, `${group.url()}?failoverTimeout=soon`]) {
      const r = await cli(url, ['lock', 'status'])
      assert.equal(r.code, 64, `${url}: ${r.stderr}`)
      oneErrorLine(r, assert)
    }
    const ok = await cli(`${group.url()}/0?failoverTimeout=10s&connectTimeout=3s`, ['lock', 'status'])
    assert.equal(ok.code, 0, ok.stderr)
  })

  it('a master name Sentinel does not know is exit 69 with one line', async () => {
    const r = await cli(group.url().replace(/mymaster$/, 'nosuchmaster') + '?connectTimeout=2s', ['lock', 'status'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /127\.0\.0\.1:\d+,127\.0\.0\.1:\d+/)
  })
})

describe('redis+sentinel: the master dies mid-hold', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('the holder renews on the promoted replica and its command runs on; fencing tokens still increase', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('hold')
    const holder = spawnDlq(['lock', 'run', '-b', group.url(), '--key', key, '--ttl', '9s', '--kill-grace', '1s', '--', 'sh', '-c', `echo $DLQ_FENCING_TOKEN > "$1/token"; ${shUntil('[ -e "$1/go" ]', 60)}`, 'x', dir], {t, timeoutMs: 60_000})
    await waitFor(() => existsSync(join(dir, 'token')), {what: 'the command to start'})
    const token = BigInt((await readFile(join(dir, 'token'), 'utf8')).trim())
    await replicated(group)
    kill(group.master)
    const killedAt = Date.now()
    await group.promoted(group.replica.port)
    // A renewal on the new master: every lease the old one granted ends by killedAt + ttl.
    await waitFor(() => {
      const [, expiry] = redisCli(group.replica.port, 'ZRANGE', `{dlq:l:${key}}:holders`, '0', '-1', 'WITHSCORES').split('\n')
      return Number(expiry) > killedAt + 9000
    }, {what: 'a renewal on the promoted replica', timeoutMs: 15_000})
    assert.equal(holder.exited, false, `the holder ended: ${holder.stderrText()}`)
    await writeFile(join(dir, 'go'), '')
    const r = await holder.result
    assert.equal(r.code, 0, r.stderr)
    const next = await cli(group.url(), ['lock', 'run', '--key', key, '--wait', '0', '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(next.code, 0, next.stderr)
    assert.ok(BigInt(next.stdout.trim()) > token, `the token after the failover (${next.stdout.trim()}) must exceed the one before (${token})`)
  })
})

describe('redis+sentinel: the master dies mid-wait', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('a waiting queue pop follows the promoted replica and gets a message pushed there (never exit 0 without one)', async (t) => {
    const queue = uniqueName('wait')
    assert.equal((await cli(group.url(), ['queue', 'push', '--queue', queue, 'before'])).code, 0)
    assert.equal((await cli(group.url(), ['queue', 'pop', '--queue', queue])).stdout, 'before\n')
    await replicated(group)
    const pop = spawnDlq(['queue', 'pop', '-b', group.url(), '--queue', queue, '--wait', '60s'], {t, timeoutMs: 60_000})
    await waitFor(() => /blocked_clients:1/.test(redisCli(group.master.port, 'INFO', 'clients')), {what: 'the pop to block on the master'})
    kill(group.master)
    await group.promoted(group.replica.port)
    assert.equal(pop.exited, false, `the pop ended: ${pop.stderrText()}`)
    const pushed = await cli(group.url(), ['queue', 'push', '--queue', queue, 'after'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const r = await pop.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'after\n')
  })
})

describe('redis+sentinel: the master dies under a waiting lock run', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('the waiter follows the promoted replica and gets the lock once it is released there, with a larger token', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('waiter')
    const acquired = await cli(group.url(), ['lock', 'acquire', '--key', key, '--ttl', '60s', '--json'])
    assert.equal(acquired.code, 0, acquired.stderr)
    const {token, fencingToken} = JSON.parse(acquired.stdout)
    const waiter = spawnDlq(['lock', 'run', '-b', group.url(), '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN > "$1/token"', 'x', dir], {t, timeoutMs: 60_000})
    await waitFor(() => redisCli(group.master.port, 'ZCARD', `{dlq:l:${key}}:waiters`).trim() === '1', {what: 'the waiter to wait'})
    await replicated(group)
    kill(group.master)
    await group.promoted(group.replica.port)
    assert.equal(waiter.exited, false, `the waiter ended: ${waiter.stderrText()}`)
    const released = await cli(group.url(), ['lock', 'release', '--key', key, '--token', token])
    assert.equal(released.code, 0, released.stderr)
    const r = await waiter.result
    assert.equal(r.code, 0, r.stderr)
    assert.ok(BigInt((await readFile(join(dir, 'token'), 'utf8')).trim()) > BigInt(fencingToken))
  })
})

describe('redis+sentinel: the master dies mid-push', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('what survives on the promoted replica is the push in order, nothing twice; exit 0 only if all of it survived', async (t) => {
    const queue = uniqueName('midpush')
    const stream = `{dlq:q:${queue}}:stream`
    const input = new PassThrough()
    const lines = (from, to) => Array.from({length: to - from}, (_v, i) => `m${from + i}\n`).join('')
    const push = spawnDlq(['queue', 'push', '-b', group.url(), '--queue', queue], {t, input, timeoutMs: 60_000})
    input.write(lines(0, 5000))
    await waitFor(() => Number(redisCli(group.master.port, 'XLEN', stream)) >= 2000, {what: 'the first batches to reach the master'})
    kill(group.master)
    input.end(lines(5000, 10_000))
    const r = await push.result
    assert.ok(r.code === 0 || r.code === 69, `exit ${r.code}: ${r.stderr}`)
    if (r.code === 69) oneErrorLine(r, assert)
    await group.promoted(group.replica.port)
    const bodies = redisCli(group.replica.port, 'XRANGE', stream, '-', '+').split('\n').filter((l) => /^m\d+$/.test(l))
    bodies.forEach((body, i) => assert.equal(body, `m${i}`, `message ${i} on the new master`))
    if (r.code === 0) assert.equal(bodies.length, 10_000, 'an acknowledged push lost messages in the failover')
    assert.ok(bodies.length >= 1000, `the replica had ${bodies.length} messages`)
  })
})

describe('redis+sentinel: the master dies under a worker\'s ack', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('the ack in flight is sent again to the promoted replica: the worker goes on, nothing is handled twice', async (t) => {
    const dir = await tempDir(t)
    const queue = uniqueName('ack')
    const handled = join(dir, 'handled')
    assert.equal((await cli(group.url(), ['queue', 'push', '--queue', queue, 'one'])).code, 0)
    // Each handler records its message, then waits for the test's go (the first) or goes on.
    const handler = `cat >> "$1"; ${shUntil('[ -e "$2" ]', 60)}`
    const worker = spawnDlq(['queue', 'pop', '-b', group.url(), '--queue', queue, '--exec', '--count', '2', '--wait', '60s', '--visibility', '30s', '--', 'sh', '-c', handler, 'x', handled, join(dir, 'go')], {t, timeoutMs: 90_000})
    await waitFor(async () => (await readFile(handled, 'utf8').catch(() => '')) === 'one', {what: 'the handler to start'})
    await replicated(group)
    // The master takes no writes now: the worker's ack reaches it and waits unanswered.
    redisCli(group.master.port, 'CLIENT', 'PAUSE', '20000', 'WRITE')
    await writeFile(join(dir, 'go'), '')
    await waitFor(() => /qbuf=[1-9]|cmd=evalsha/.test(redisCli(group.master.port, 'CLIENT', 'LIST')), {what: 'the ack to reach the paused master'})
    kill(group.master)
    await group.promoted(group.replica.port)
    const pushed = await cli(group.url(), ['queue', 'push', '--queue', queue, 'two'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const r = await worker.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(await readFile(handled, 'utf8'), 'onetwo')
    const status = await cli(group.url(), ['queue', 'status', '--queue', queue, '--json'])
    const {waiting, inFlight} = JSON.parse(status.stdout).queues[0]
    assert.deepEqual({waiting, inFlight}, {waiting: 0, inFlight: 0})
  })
})

describe('redis+sentinel: no master comes back', () => {
  let group
  before(async () => {
    group = await startSentinels()
  })
  after(() => group?.stop())

  it('a waiting pop and a waiting lock run give up after ?failoverTimeout= with exit 69 and one line, nothing on stdout', async (t) => {
    const key = uniqueName('gone')
    const url = `${group.url()}?failoverTimeout=2s&connectTimeout=2s`
    assert.equal((await cli(url, ['lock', 'acquire', '--key', key, '--ttl', '60s'])).code, 0)
    const pop = spawnDlq(['queue', 'pop', '-b', url, '--queue', uniqueName('gone'), '--wait', '60s'], {t, timeoutMs: 40_000})
    const waiter = spawnDlq(['lock', 'run', '-b', url, '--key', key, '--wait', '60s', '--', 'echo', 'ran'], {t, timeoutMs: 40_000})
    await waitFor(() => /blocked_clients:1/.test(redisCli(group.master.port, 'INFO', 'clients')) && redisCli(group.master.port, 'ZCARD', `{dlq:l:${key}}:waiters`).trim() === '1', {what: 'both to wait'})
    // The replica first, then the master: nothing is left for Sentinel to promote.
    kill(group.replica)
    kill(group.master)
    for (const child of [pop, waiter]) {
      const r = await child.result
      assert.equal(r.code, 69, r.stderr)
      assert.equal(r.stdout, '')
      assert.match(oneErrorLine(r, assert), /master went away while waiting: no master answered for \d/)
    }
  })
})

describe('redis+sentinel: Sentinels and data nodes with passwords', () => {
  const auth = {user: 'alice', password: 'data-pw-4f1c', sentinelPassword: 'sentinel-pw-9d2e'}
  let group
  let dir
  before(async () => {
    group = await startSentinels({auth})
    dir = await tempDir()
    await writeFile(join(dir, 'sentinel-pw'), `${auth.sentinelPassword}\n`, {mode: 0o600})
  })
  after(() => group?.stop())

  const withAuth = (query, user = `${auth.user}:${auth.password}`) => group.url().replace('://', `://${user}@`) + query
  const noPassword = (r) => {
    for (const secret of [auth.password, auth.sentinelPassword, 'wrong-pw-77']) assert.doesNotMatch(r.stdout + r.stderr, new RegExp(secret))
  }

  it('the data nodes\' user in the URL, the Sentinels\' password from ?sentinelPasswordFile= (or ?sentinelPassword=): locks and queues work, and no password is printed, even with --verbose', async () => {
    const url = withAuth(`?sentinelPasswordFile=${join(dir, 'sentinel-pw')}`)
    const key = uniqueName('auth')
    const locked = await cli(url, ['lock', 'run', '--verbose', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(locked.code, 0, locked.stderr)
    assert.match(locked.stdout, /^\d+\n$/)
    assert.match(locked.stderr, /alice:\*\*\*@/)
    noPassword(locked)
    const queue = uniqueName('auth')
    const inline = withAuth(`?sentinelPassword=${auth.sentinelPassword}`)
    const pushed = await cli(inline, ['queue', 'push', '--verbose', '--queue', queue, 'one'])
    assert.equal(pushed.code, 0, pushed.stderr)
    assert.match(pushed.stderr, /sentinelPassword=\*\*\*/)
    noPassword(pushed)
    const popped = await cli(url, ['queue', 'pop', '--verbose', '--queue', queue])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'one\n')
    noPassword(popped)
  })

  it('no Sentinel password, a wrong one, a wrong data password: exit 69 at once, one line saying who refused, no password in it', async () => {
    const cases = [
      [withAuth(''), /authentication refused by the Sentinels of .*NOAUTH.*\?sentinelPasswordFile=/],
      [withAuth('?sentinelPassword=wrong-pw-77'), /authentication refused by the Sentinels of .*sentinelPassword=\*\*\*: WRONGPASS/],
      [withAuth(`?sentinelPasswordFile=${join(dir, 'sentinel-pw')}`, `${auth.user}:wrong-pw-77`), /authentication refused by redis\+sentinel:\/\/alice:\*\*\*@.*WRONGPASS/],
    ]
    for (const [url, expected] of cases) {
      for (const verbose of [[], ['--verbose']]) {
        const r = await cli(url, ['lock', 'status', ...verbose])
        assert.equal(r.code, 69, r.stderr)
        assert.equal(r.stdout, '')
        if (verbose.length === 0) assert.match(oneErrorLine(r, assert), expected)
        assert.ok(r.ms < 4000, `refused after ${r.ms} ms: it waited for ?connectTimeout= instead`)
        noPassword(r)
      }
    }
  })

  it('a failover is followed with the same credentials', async () => {
    const url = withAuth(`?sentinelPasswordFile=${join(dir, 'sentinel-pw')}`)
    const queue = uniqueName('authfail')
    assert.equal((await cli(url, ['queue', 'push', '--queue', queue, 'before'])).code, 0)
    kill(group.master)
    await group.promoted(group.replica.port)
    const pushed = await cli(url, ['queue', 'push', '--queue', queue, 'after'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const popped = await cli(url, ['queue', 'pop', '--queue', queue, '--count', '2'])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'before\nafter\n')
  })
})

describe('rediss+sentinel: Sentinels and data nodes that speak only TLS', () => {
  let group
  let ca
  before(async () => {
    const certificates = await makeCertificates(await tempDir())
    ca = certificates.ca
    group = await startSentinels({tls: certificates})
  })
  after(() => group?.stop())

  it('with the CA given by ?ca=, a lock and a queue work, and go on working on the replica promoted after a failover', async (t) => {
    const url = `${group.url()}?ca=${ca}`
    assert.match(url, /^rediss\+sentinel:\/\//)
    const key = uniqueName('tls')
    const first = await cli(url, ['lock', 'run', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(first.code, 0, first.stderr)
    const queue = uniqueName('tls')
    assert.equal((await cli(url, ['queue', 'push', '--queue', queue, 'before'])).code, 0)
    assert.equal((await cli(url, ['queue', 'pop', '--queue', queue])).stdout, 'before\n')
    // A pop waiting through the failover, on TLS connections to the Sentinels and to each master.
    const waiting = spawnDlq(['queue', 'pop', '--verbose', '-b', url, '--queue', queue, '--wait', '60s'], {t, timeoutMs: 60_000})
    await waitFor(() => /blocked_clients:1/.test(group.cli(group.master.port, 'INFO', 'clients')), {what: 'the pop to block on the master'})
    kill(group.master)
    await group.promoted(group.replica.port)
    const pushed = await cli(url, ['queue', 'push', '--queue', queue, 'after'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const r = await waiting.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'after\n')
    const second = await cli(url, ['lock', 'run', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(second.code, 0, second.stderr)
    assert.ok(BigInt(second.stdout.trim()) > BigInt(first.stdout.trim()))
  })

  it('without ?ca=, the Sentinels\' certificate is refused: exit 69 at once, one line naming the certificate and ?ca=', async () => {
    const r = await cli(group.url(), ['lock', 'status'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /Sentinels of rediss\+sentinel:.*certificate.*\?ca=/)
    assert.ok(r.ms < 4000, `refused after ${r.ms} ms: it waited for ?connectTimeout= instead`)
  })
})
