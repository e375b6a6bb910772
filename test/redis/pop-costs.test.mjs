// What a Redis pop costs the server (issue 16). A script blocks every other client while it runs,
// so no script call of a pop may carry more than a batch of ids, whatever --count: checked on
// the calls the server received (MONITOR), not on a time. `queue status` must not read the
// reservations still running, and a pop whose acknowledgement fails after it wrote messages says
// what it delivered instead of failing. Against a real redis-server on a free loopback port.
import assert from 'node:assert/strict'
import {execFileSync, spawn} from 'node:child_process'
import {after, before, describe, it} from 'node:test'

import {run, spawnDlq, waitFor} from '../support/cli.mjs'
import {startRedis} from '../support/servers.mjs'

const {openBackend} = await import('../../dist/backends/index.js')
const {scriptBatch} = await import('../../dist/backends/redis/queue.js')

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const numbers = (from, to) => Array.from({length: to - from + 1}, (_v, i) => String(from + i))
const lines = (text) => (text === '' ? [] : text.slice(0, -1).split('\n'))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function push(url, queue, bodies) {
  const r = await cli(url, ['queue', 'push', '--queue', queue], {input: bodies.join('\n') + '\n', timeoutMs: 60_000})
  assert.equal(r.code, 0, r.stderr)
}

async function stats(url, queue) {
  const r = await cli(url, ['queue', 'status', '--queue', queue, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).queues[0]
}

/** Reserves `count` messages as a popper that then vanishes (its reservations stay until they expire). */
async function reserveAndVanish(url, queue, count, visibilityMs) {
  const backend = await openBackend(url)
  try {
    let taken = 0
    while (taken < count) {
      const got = await backend.queues.reserve(queue, {count: Math.min(1000, count - taken), visibilityMs, waitMs: 0, maxAttempts: 5, signal: new AbortController().signal})
      assert.ok(got.length > 0)
      taken += got.length
    }
  } finally {
    await backend.close()
  }
}

/**
 * The commands the server receives, as MONITOR shows them: {client, args}. Scripts' own calls
 * ("[0 lua]") are left out: what counts here is what clients sent.
 */
function monitor(port) {
  const child = spawn('redis-cli', ['-p', String(port), 'monitor'], {stdio: ['ignore', 'pipe', 'inherit']})
  let text = ''
  child.stdout.on('data', (chunk) => (text += chunk))
  const commands = () => text.split('\n').flatMap((line) => {
    const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line)
    if (!m || m[1] === 'lua') return []
    return [{client: m[1], args: [...m[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1])}]
  })
  return {
    /** Waits until the server has shown everything sent before this call; returns all commands so far. */
    async sync() {
      // Sent again until seen: the first may come before MONITOR has started.
      const marker = `sync-${Math.random().toString(36).slice(2)}`
      await waitFor(() => text.includes(marker) || void execFileSync('redis-cli', ['-p', String(port), 'ECHO', marker]), {intervalMs: 100, what: 'MONITOR to catch up'})
      return commands()
    },
    stop: () => child.kill(),
  }
}

/** A script call's ids: reserve asks for ARGV[2] messages, settle names its ids after four arguments. */
function scriptCalls(commands) {
  return commands.flatMap(({args}) => {
    const name = args[0]?.toLowerCase()
    if (name !== 'evalsha' && name !== 'eval') return []
    const keys = Number(args[2])
    const argv = args.slice(3 + keys)
    if (keys === 4 && ['ack', 'retry', 'release'].includes(argv[1])) return [{script: 'settle', outcome: argv[1], ids: argv.length - 4}]
    // reserve: the stream, deadlines, owners, dead letters, delayed and parked entries.
    if (keys === 6 && argv.length === 4) return [{script: 'reserve', ids: Number(argv[1])}]
    return []
  })
}

describe('redis: a pop costs what it pops', {concurrency: 1}, () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  it(`no script call of a pop carries more than ${scriptBatch} ids, whatever --count`, async () => {
    await push(server.url, 'q', numbers(1, 1450))
    // Scripts loaded first: a first call's NOSCRIPT and EVAL would show the same ids twice.
    await push(server.url, 'warm', ['w'])
    assert.equal((await cli(server.url, ['queue', 'pop', '--queue', 'warm'])).code, 0)
    const watch = monitor(server.port)
    try {
      const start = (await watch.sync()).length
      const first = await cli(server.url, ['queue', 'pop', '--queue', 'q', '--count', '1000'])
      assert.equal(first.code, 0, first.stderr)
      const second = await cli(server.url, ['queue', 'pop', '--queue', 'q', '--count', '5000'])
      assert.equal(second.code, 0, second.stderr)
      assert.deepEqual([...lines(first.stdout), ...lines(second.stdout)], numbers(1, 1450))
      const calls = scriptCalls((await watch.sync()).slice(start))
      const biggest = Math.max(...calls.map((call) => call.ids))
      assert.ok(biggest <= scriptBatch, `a script call carried ${biggest} ids: ${JSON.stringify(calls)}`)
      const acked = calls.filter((call) => call.outcome === 'ack').reduce((sum, call) => sum + call.ids, 0)
      assert.equal(acked, 1450, JSON.stringify(calls))
      assert.ok(calls.filter((call) => call.script === 'reserve').length >= Math.ceil(1450 / scriptBatch))
    } finally {
      watch.stop()
    }
  })

  it('queue status reads no reservation still running, and finds the oldest waiting message behind them or among expired ones', async () => {
    // 3000 held for an hour, then 10 waiting pushed at least 300 ms later.
    let t0 = Date.now()
    await push(server.url, 'held', numbers(1, 3000))
    let t1 = Date.now()
    await sleep(300)
    const t2 = Date.now()
    await push(server.url, 'held', numbers(3001, 3010))
    const t3 = Date.now()
    await reserveAndVanish(server.url, 'held', 3000, 3_600_000)
    const watch = monitor(server.port)
    try {
      const start = (await watch.sync()).length
      const s0 = Date.now()
      const held = await stats(server.url, 'held')
      const s1 = Date.now()
      assert.deepEqual([held.waiting, held.inFlight], [10, 3000])
      assert.ok(held.oldestAgeMs >= s0 - t3 && held.oldestAgeMs <= s1 - t2, `oldest ${held.oldestAgeMs} ms: the first of the 10 waiting is ${s0 - t3}–${s1 - t2} ms old`)
      const reads = (await watch.sync()).slice(start).filter(({args}) => /^(xrange|zmscore|zrangebyscore)$/i.test(args[0]))
      assert.ok(reads.length <= 3, `status read the stream or deadlines ${reads.length} times: ${JSON.stringify(reads.map(({args}) => args.slice(0, 6)))}`)
    } finally {
      watch.stop()
    }

    // The same shape, but the reservations run out: the oldest waiting is the first of them again.
    t0 = Date.now()
    await push(server.url, 'expired', numbers(1, 3000))
    t1 = Date.now()
    await sleep(300)
    await push(server.url, 'expired', numbers(3001, 3010))
    await reserveAndVanish(server.url, 'expired', 3000, 200)
    await sleep(400)
    const s0 = Date.now()
    const expired = await stats(server.url, 'expired')
    const s1 = Date.now()
    assert.deepEqual([expired.waiting, expired.inFlight], [3010, 0])
    assert.ok(expired.oldestAgeMs >= s0 - t1 && expired.oldestAgeMs <= s1 - t0, `oldest ${expired.oldestAgeMs} ms: the first of the expired is ${s0 - t1}–${s1 - t0} ms old`)
  })

  it('a pop whose acknowledgement times out after it wrote messages exits 0 and says what it delivered', async (t) => {
    const url = `${server.url}?connectTimeout=500ms` // for the pop only
    const bodies = numbers(1, 3000).map((n) => `${n} ${'x'.repeat(4000)}`) // a batch (4 MB) is far more than a pipe or socket buffers
    await push(server.url, 'slow', bodies)
    const pop = spawnDlq(['queue', 'pop', '-b', url, '--queue', 'slow', '--count', '3000'], {t, timeoutMs: 60_000})
    pop.stdout.pause() // dlq blocks writing its first batch
    await waitFor(async () => pop.exited || (await stats(server.url, 'slow')).inFlight === 1000, {timeoutMs: 60_000, what: 'the first batch reserved'})
    assert.equal(pop.exited, false, pop.stderrText())
    execFileSync('redis-cli', ['-p', String(server.port), 'CLIENT', 'PAUSE', '2000', 'ALL'])
    pop.stdout.resume()
    const r = await pop.result
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(lines(r.stdout), bodies.slice(0, 1000))
    assert.match(r.stderr, /^dlq: queue pop: 1000 messages written, but the acknowledgement of the last 1000 failed: .*timed out.*\(they count as delivered, and may be delivered again once --visibility ends\)\n$/)
    await sleep(2000)
    // Whether the late acknowledgement ran once the pause ended is the server's business; the
    // other 2000 were never taken.
    const left = await stats(server.url, 'slow')
    assert.ok(left.waiting >= 2000 && left.waiting + left.inFlight <= 3000, JSON.stringify(left))
  })
})
