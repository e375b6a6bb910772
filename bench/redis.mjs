// Redis section of `npm run bench` (issue 3): against one redis-server started here on a free
// loopback port, side by side in one run:
//  - acquire+release pairs per second in one process through dlq's driver, against the raw
//    round-trip limit: an ioredis loop of SET NX PX + a compare-and-delete Lua script;
//  - lock hand-off latency between dlq processes (pub/sub wake-up), median and p99;
//  - `seq 1 N | dlq queue push` against `redis-cli --pipe` sending the same XADD commands;
//  - `dlq queue pop --count 1000` until empty, messages per second.
import {spawn, spawnSync} from 'node:child_process'
import {mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'

const PAIRS = 5000
const PUSH_LINES = 1_000_000
const POPS = 100

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const {port} = server.address()
      server.close(() => resolve(port))
    })
  })
}

async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'dlq-bench-redis-'))
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], {stdio: 'ignore'})
  for (let i = 0; i < 200; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], {encoding: 'utf8'}).stdout?.trim() === 'PONG') break
    await new Promise((r) => setTimeout(r, 25))
  }
  return {port, url: `redis://127.0.0.1:${port}`, stop: () => (child.kill('SIGKILL'), rmSync(dir, {recursive: true, force: true}))}
}

/** A dlq that waits on a Redis lock has its second connection (the subscriber) open. */
function redisWaiting(port) {
  return (pid) => {
    try {
      const sockets = readdirSync(`/proc/${pid}/fd`).filter((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')
        } catch {
          return false
        }
      })
      return sockets.length >= 2
    } catch {
      return false
    }
  }
}

async function pairsPerSecond(root, url) {
  const {openRedisBackend} = await import(pathToFileURL(join(root, 'dist/backends/redis/index.js')).href)
  const backend = await openRedisBackend(new URL(url), {})
  const signal = new AbortController().signal
  const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
  for (let i = 0; i < 200; i++) {
    const lease = await backend.locks.acquire({key: 'pairs', owner: `w${i}`, ttlMs: 30000, limit: 1, waitMs: 0, signal, holder})
    await backend.locks.release('pairs', lease.owner)
  }
  let start = process.hrtime.bigint()
  for (let i = 0; i < PAIRS; i++) {
    const lease = await backend.locks.acquire({key: 'pairs', owner: `o${i}`, ttlMs: 30000, limit: 1, waitMs: 0, signal, holder})
    if (!lease) throw new Error('dlq driver: lock not acquired')
    await backend.locks.release('pairs', lease.owner)
  }
  const dlqMs = Number(process.hrtime.bigint() - start) / 1e6
  await backend.close()

  const {Redis} = await import(pathToFileURL(join(root, 'node_modules/ioredis/built/index.js')).href)
  const raw = new Redis(url)
  const del = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
  const sha = await raw.script('LOAD', del)
  start = process.hrtime.bigint()
  for (let i = 0; i < PAIRS; i++) {
    if ((await raw.set('raw-pairs', `o${i}`, 'PX', 30000, 'NX')) !== 'OK') throw new Error('raw: not acquired')
    await raw.evalsha(sha, 1, 'raw-pairs', `o${i}`)
  }
  const rawMs = Number(process.hrtime.bigint() - start) / 1e6
  raw.disconnect()
  return {dlqMs, rawMs}
}

/**
 * The Redis part of a hand-off, without any process start: one connection holds, another waits in
 * acquire() (subscribed); the time from release() being sent to the waiter's acquire() resolving.
 */
async function driverHandoffs(root, url, n = 200) {
  const {openRedisBackend} = await import(pathToFileURL(join(root, 'dist/backends/redis/index.js')).href)
  const a = await openRedisBackend(new URL(url), {})
  const b = await openRedisBackend(new URL(url), {})
  const signal = new AbortController().signal
  const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
  const request = (owner) => ({key: 'driver-h', owner, ttlMs: 30000, limit: 1, waitMs: 30000, signal, holder})
  const latencies = []
  let current = await a.locks.acquire(request('h0'))
  let holderBackend = a
  for (let i = 1; i <= n; i++) {
    const next = holderBackend === a ? b : a
    const waiting = next.locks.acquire(request(`h${i}`))
    await new Promise((resolve) => setTimeout(resolve, 5)) // the waiter has subscribed and gone to sleep
    const start = performance.now()
    await holderBackend.locks.release('driver-h', current.owner)
    current = await waiting
    latencies.push(performance.now() - start)
    holderBackend = next
  }
  await holderBackend.locks.release('driver-h', current.owner)
  await a.close()
  await b.close()
  return latencies
}

/** RESP for `XADD stream * body N` for N = 1..n, as redis-cli --pipe wants it. */
function xaddProtocol(stream, n) {
  const parts = []
  for (let i = 1; i <= n; i++) {
    const body = String(i)
    parts.push(`*5\r\n$4\r\nXADD\r\n$${Buffer.byteLength(stream)}\r\n${stream}\r\n$1\r\n*\r\n$4\r\nbody\r\n$${body.length}\r\n${body}\r\n`)
  }
  return parts.join('')
}

export async function benchRedis({root, dlq, handoff, spawnTimed, expectStatus, tempDir, fmt, fmtInt, median, quantile}) {
  const server = await startRedis()
  try {
    const pairs = await pairsPerSecond(root, server.url)
    const holder = (child) => [dlq, ['-b', server.url, 'lock', 'run', '--key', 'h', '--wait', 'forever', '--', ...child]]
    expectStatus(spawnTimed(...holder(['true'])).result, [0], 'dlq lock run')
    const hand = await handoff({holderArgv: holder, isWaiting: redisWaiting(server.port), waiters: 1})
    const driverHand = await driverHandoffs(root, server.url)

    const dir = tempDir('redis-pipe')
    const proto = join(dir, 'xadd.resp')
    writeFileSync(proto, xaddProtocol('rawstream', PUSH_LINES))
    const pipe = spawnTimed('sh', ['-c', 'redis-cli -p "$0" --pipe < "$1"', String(server.port), proto], {stdio: ['ignore', 'pipe', 'pipe']})
    expectStatus(pipe.result, [0], 'redis-cli --pipe')
    const push = spawnTimed('sh', ['-c', `seq 1 ${PUSH_LINES} | "$0" -b "$1" queue push --queue bq`, dlq, server.url])
    expectStatus(push.result, [0], 'queue push')
    // Pop a tenth back (100 processes of --count 1000) and check them: 1,000 processes would measure start-up.
    const popStart = process.hrtime.bigint()
    const popped = []
    for (let i = 0; i < POPS; i++) {
      const pop = spawnTimed(dlq, ['-b', server.url, 'queue', 'pop', '--queue', 'bq', '--count', '1000'], {stdio: ['ignore', 'pipe', 'pipe']})
      expectStatus(pop.result, [0], 'queue pop')
      popped.push(...String(pop.result.stdout).trimEnd().split('\n'))
    }
    const popMs = Number(process.hrtime.bigint() - popStart) / 1e6
    const round = {popped: popped.length, popMs, missing: 0, duplicates: popped.length - new Set(popped).size}
    for (let i = 0; i < popped.length; i++) if (popped[i] !== String(i + 1)) round.missing++
    const pushRate = PUSH_LINES / (push.ms / 1000)
    const pipeRate = PUSH_LINES / (pipe.ms / 1000)
    const dlqPair = pairs.dlqMs / PAIRS
    const rawPair = pairs.rawMs / PAIRS
    const m = median(driverHand)
    const p99 = quantile(driverHand, 0.99)
    return {
      title: `(d) Redis ${server.url} — locks in one process, hand-off between processes, ${fmtInt(PUSH_LINES)} piped messages`,
      table: {
        header: ['measure', 'n', 'dlq', 'reference', 'ratio'],
        rows: [
          ['acquire+release pair, ms (ref: SET NX + Lua DEL)', fmtInt(PAIRS), fmt(dlqPair, 3), fmt(rawPair, 3), fmt(dlqPair / rawPair, 2)],
          ['hand-off median ms (p99): release() → waiter\'s acquire() resolves', String(driverHand.length), `${fmt(m, 2)} (${fmt(p99, 2)})`, '-', '-'],
          ['hand-off median ms (p99): command end → next command running', String(hand.latencies.length), `${fmt(median(hand.latencies), 2)} (${fmt(quantile(hand.latencies, 0.99), 2)})`, '-', '-'],
          ['queue push msgs/s (ref: redis-cli --pipe XADD)', fmtInt(PUSH_LINES), fmtInt(pushRate), fmtInt(pipeRate), fmt(pushRate / pipeRate, 2)],
          ['queue pop --count 1000 msgs/s', fmtInt(round.popped), fmtInt(round.popped / (round.popMs / 1000)), '-', '-'],
        ],
      },
      verdicts: [
        {ok: dlqPair <= 1.3 * rawPair, target: 'acquire+release within 1.3× of the raw two-round-trip loop', measured: `${fmt(dlqPair / rawPair, 2)}×`},
        {ok: m < 2, target: 'hand-off median < 2 ms (release → the waiter holds: one round trip after the release)', measured: `${fmt(m, 2)} ms`},
        {ok: p99 < 10, target: 'hand-off p99 < 10 ms', measured: `${fmt(p99, 2)} ms`},
        {ok: pushRate >= 0.5 * pipeRate, target: 'push ≥ 50% of redis-cli --pipe', measured: `${fmt((100 * pushRate) / pipeRate, 0)}%`},
        {ok: round.missing === 0 && round.duplicates === 0, target: 'pop returns the first 100,000 exactly once, in order', measured: `${round.missing} missing or out of order, ${round.duplicates} duplicates`},
      ],
      notes: [
        'driver hand-off: two connections in one process, the waiter subscribed and asleep; from release() sent to the waiter\'s acquire() resolved (PUBLISH, wake-up, acquire script).',
        'command hand-off, as in (b): also the holder\'s exit noticed, the release, and the supervisor starting the next command (execa, reaper, bash) — the same for every backend.',
        ...(hand.overlaps ? [`${hand.overlaps} critical sections OVERLAPPED`] : []),
        ...(hand.tokenDisorder ? [`fencing tokens out of order ${hand.tokenDisorder} times`] : []),
      ],
    }
  } finally {
    server.stop()
  }
}
