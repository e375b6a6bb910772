// Redis section of `npm run bench` (issue 3): against one redis-server started here on a free
// loopback port, side by side in one run:
//  - acquire+release pairs in one process through dlq's driver, against the raw round-trip limit
//    (an ioredis loop of SET NX PX + a compare-and-delete Lua script), redis-semaphore's Mutex and
//    redlock, interleaved (issue 12), with the commands each sends per pair and the server's own
//    time per pair (INFO commandstats); also alone as section `redis-pairs`, where
//    DLQ_BENCH_BASELINE=DIR adds another build's driver to the same rounds (before/after);
//  - lock hand-off latency between dlq processes (pub/sub wake-up), median and p99;
//  - `seq 1 N | dlq queue push` against `redis-cli --pipe` sending the same XADD commands;
//  - `dlq queue pop --count 1000` until empty, messages per second.
import {spawn, spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {createRequire} from 'node:module'
import {dirname, join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

const PAIR_ROUNDS = 9
const PAIRS_PER_ROUND = 1000
const PAIR_SLICE = 50
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

export async function startRedis() {
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
export function redisWaiting(port) {
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

/**
 * Lock pairs (acquire, then release) in one process, four ways side by side on one server: the raw
 * round-trip limit (an ioredis loop of SET NX PX + a compare-and-DEL Lua script by EVALSHA), dlq's
 * driver, redis-semaphore's Mutex and redlock (one server, no retries). Each round runs every
 * candidate in slices of PAIR_SLICE pairs, interleaved and in a rotating order, so that a burst of
 * load from elsewhere on the machine falls on all of them alike; a candidate's figure for a round is
 * its mean pair time over the round, and the report takes the median over the rounds. On a machine
 * shared with other work the wall time of a round trip is mostly waiting to be scheduled: the CPU
 * time each side spends per pair (this process, and the server by INFO cpu around each slice) is
 * measured beside it, and varies far less with the load.
 */
async function pairsSideBySide(root, url, baselineRoot) {
  const require = createRequire(join(root, 'package.json'))
  const {Redis} = require('ioredis')
  const {Mutex} = require('redis-semaphore')
  const {default: Redlock} = await import(pathToFileURL(require.resolve('redlock')).href.replace(/cjs\/index\.js$/, 'esm/index.js'))
  const {openRedisBackend} = await import(pathToFileURL(join(root, 'dist/backends/redis/index.js')).href)
  const backend = await openRedisBackend(new URL(url), {})
  const baseline = baselineRoot ? await (await import(pathToFileURL(join(baselineRoot, 'dist/backends/redis/index.js')).href)).openRedisBackend(new URL(url), {}) : undefined
  const signal = new AbortController().signal
  const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
  const [raw, semaphoreClient, redlockClient, probe] = [new Redis(url), new Redis(url), new Redis(url), new Redis(url)]
  const delIfEqual = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
  const sha = await raw.script('LOAD', delIfEqual)
  const redlock = new Redlock([redlockClient], {retryCount: 0})
  let n = 0
  const candidates = {
    raw: async () => {
      const owner = `o${n++}`
      if ((await raw.set('raw-pairs', owner, 'PX', 30000, 'NX')) !== 'OK') throw new Error('raw: not acquired')
      await raw.evalsha(sha, 1, 'raw-pairs', owner)
    },
    dlq: async () => {
      const lease = await backend.locks.acquire({key: 'pairs', owner: `o${n++}`, ttlMs: 30000, limit: 1, waitMs: 0, signal, holder})
      if (!lease) throw new Error('dlq driver: lock not acquired')
      await backend.locks.release('pairs', lease.owner)
    },
    ...(baseline
      ? {
          'dlq baseline': async () => {
            const lease = await baseline.locks.acquire({key: 'baseline-pairs', owner: `o${n++}`, ttlMs: 30000, limit: 1, waitMs: 0, signal, holder})
            if (!lease) throw new Error('baseline dlq driver: lock not acquired')
            await baseline.locks.release('baseline-pairs', lease.owner)
          },
        }
      : {}),
    'redis-semaphore': async () => {
      const mutex = new Mutex(semaphoreClient, 'semaphore-pairs', {lockTimeout: 30000, acquireAttemptsLimit: 1})
      if (!(await mutex.tryAcquire())) throw new Error('redis-semaphore: not acquired')
      await mutex.release()
    },
    redlock: async () => {
      const lock = await redlock.acquire(['redlock-pairs'], 30000)
      await lock.release()
    },
  }
  const names = Object.keys(candidates)
  try {
    for (const name of names) for (let i = 0; i < 200; i++) await candidates[name]() // warm-up: JIT, scripts loaded
    const rounds = Object.fromEntries(names.map((name) => [name, []]))
    const cpu = Object.fromEntries(names.map((name) => [name, {client: [], server: []}]))
    for (let round = 0; round < PAIR_ROUNDS; round++) {
      const spent = Object.fromEntries(names.map((name) => [name, {wall: 0, client: 0, server: 0}]))
      for (let slice = 0; slice < PAIRS_PER_ROUND / PAIR_SLICE; slice++) {
        for (let j = 0; j < names.length; j++) {
          const name = names[(slice + round + j) % names.length]
          const serverBefore = await serverCpuMicros(probe)
          const clientBefore = process.cpuUsage()
          const start = performance.now()
          for (let i = 0; i < PAIR_SLICE; i++) await candidates[name]()
          spent[name].wall += performance.now() - start
          const client = process.cpuUsage(clientBefore)
          spent[name].client += client.user + client.system
          spent[name].server += (await serverCpuMicros(probe)) - serverBefore
        }
      }
      for (const name of names) {
        rounds[name].push(spent[name].wall / PAIRS_PER_ROUND)
        cpu[name].client.push(spent[name].client / PAIRS_PER_ROUND)
        cpu[name].server.push(spent[name].server / PAIRS_PER_ROUND)
      }
    }
    return {rounds, cpu, serverUsec: await serverTimePerPair(probe, candidates), commands: await commandsPerPair(url, candidates)}
  } finally {
    await backend.close()
    await baseline?.close()
    for (const client of [raw, semaphoreClient, redlockClient, probe]) client.disconnect()
  }
}

/** The server's CPU time so far (user + system), in microseconds. */
async function serverCpuMicros(client) {
  const info = await client.info('cpu')
  const seconds = (field) => Number(new RegExp(`^${field}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN)
  return (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6
}

/**
 * The server's own time per pair, outside the timed rounds: each candidate alone for `pairs` pairs
 * between CONFIG RESETSTAT and INFO commandstats, summing the usec of the commands its client sends
 * (EVALSHA and EVAL; SET for raw and redis-semaphore, which send it themselves: a script's inner
 * calls, redlock's SET among them, are inside its EVALSHA's time and counted there only). Unlike the wall time,
 * the time Redis spends executing does not include waiting to be scheduled, so it moves little with
 * the machine's load; a script's share is its Lua and its redis.call()s.
 */
async function serverTimePerPair(probe, candidates, pairs = 2000) {
  const sendsSet = new Set(['raw', 'redis-semaphore'])
  const usec = {}
  for (const [name, pair] of Object.entries(candidates)) {
    await probe.config('RESETSTAT')
    for (let i = 0; i < pairs; i++) await pair()
    const stats = await probe.info('commandstats')
    const of = (command) => Number(new RegExp(`^cmdstat_${command}:calls=\\d+,usec=(\\d+)`, 'm').exec(stats)?.[1] ?? 0)
    usec[name] = ((sendsSet.has(name) ? of('set') : 0) + of('evalsha') + of('eval')) / pairs
  }
  return usec
}

/**
 * What each candidate sends per pair, from MONITOR (a separate connection, outside the timed
 * rounds): the commands its own connection sends, not those a script runs inside the server (those
 * MONITOR marks "lua"). A pair needs one round trip per command unless commands are sent together.
 */
async function commandsPerPair(url, candidates, pairs = 100) {
  const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json'))
  const {Redis} = require('ioredis')
  const monitorClient = new Redis(url)
  const monitor = await monitorClient.monitor()
  const counts = {}
  let counting
  monitor.on('monitor', (_time, args, source) => {
    if (counting && source !== 'lua') counting[String(args[0]).toUpperCase()] = (counting[String(args[0]).toUpperCase()] ?? 0) + 1
  })
  const settle = () => new Promise((resolve) => setTimeout(resolve, 200))
  try {
    for (const [name, pair] of Object.entries(candidates)) {
      counts[name] = counting = {}
      for (let i = 0; i < pairs; i++) await pair()
      await settle()
      counting = undefined
      counts[name] = Object.entries(counts[name]).map(([command, count]) => `${command} ${count / pairs}`).join(' + ')
    }
  } finally {
    monitor.disconnect()
    monitorClient.disconnect()
  }
  return counts
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

/**
 * The pair rows, verdicts and notes of a report (sections redis and redis-pairs). A candidate's
 * ratio to raw is taken within each round (the same minute of machine load), then the median.
 */
function pairReport(pairs, {fmt, fmtInt, median}) {
  const ratioToRaw = (name) => pairs.rounds[name].map((ms, round) => ms / pairs.rounds.raw[round])
  const pairRow = (name, label) => {
    const ratios = ratioToRaw(name)
    return [label, fmtInt(PAIR_ROUNDS * PAIRS_PER_ROUND), fmt(median(pairs.rounds[name]), 3), fmt(median(pairs.rounds.raw), 3), `${fmt(median(ratios), 2)} (${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)})`]
  }
  const cpuRow = (name, label) => {
    const {client, server} = pairs.cpu[name]
    const total = client.map((c, round) => c + server[round])
    const rawTotal = pairs.cpu.raw.client.map((c, round) => c + pairs.cpu.raw.server[round])
    return [label, '', `${fmt(median(client), 1)} + ${fmt(median(server), 1)}`, `${fmt(median(pairs.cpu.raw.client), 1)} + ${fmt(median(pairs.cpu.raw.server), 1)}`, fmt(median(total.map((t, round) => t / rawTotal[round])), 2)]
  }
  const serverRow = (name, label) => [label, '', fmt(pairs.serverUsec[name], 1), fmt(pairs.serverUsec.raw, 1), fmt(pairs.serverUsec[name] / pairs.serverUsec.raw, 2)]
  const others = [['redis-semaphore', 'redis-semaphore Mutex tryAcquire+release'], ['redlock', 'redlock acquire+release (one server, no retry)'], ...('dlq baseline' in pairs.rounds ? [['dlq baseline', `dlq, the build in DLQ_BENCH_BASELINE`]] : [])]
  const dlqRatio = median(ratioToRaw('dlq'))
  const dlqToSemaphore = median(pairs.rounds.dlq.map((ms, round) => ms / pairs.rounds['redis-semaphore'][round]))
  const verdicts = [
    {ok: dlqRatio <= 1.3, target: 'acquire+release within 1.3× of the raw two-round-trip loop (median of the rounds\' ratios)', measured: `${fmt(dlqRatio, 2)}×`},
    {ok: dlqToSemaphore <= 1, target: 'acquire+release no slower than redis-semaphore\'s Mutex in the same rounds', measured: `${fmt(dlqToSemaphore, 2)}× redis-semaphore`},
  ]
  if ('dlq baseline' in pairs.rounds) {
    const toBaseline = median(pairs.rounds.dlq.map((ms, round) => ms / pairs.rounds['dlq baseline'][round]))
    verdicts.push({ok: toBaseline <= 1, target: 'this build no slower than the baseline build in the same rounds', measured: `${fmt(toBaseline, 2)}× baseline`})
  }
  return {
    rows: [
      pairRow('dlq', 'acquire+release pair, ms (ref: raw SET NX PX + Lua compare-and-DEL)'),
      ...others.map(([name, label]) => pairRow(name, `  ${label}, ms`)),
      cpuRow('dlq', 'CPU µs per pair, this process + the server: dlq'),
      ...others.map(([name]) => cpuRow(name, `  ${name}`)),
      serverRow('dlq', 'server µs per pair executing its commands (commandstats): dlq'),
      ...others.map(([name]) => serverRow(name, `  ${name}`)),
    ],
    verdicts,
    notes: [
      `pairs: ${PAIR_ROUNDS} rounds of ${fmtInt(PAIRS_PER_ROUND)} pairs per candidate, interleaved in slices of ${PAIR_SLICE}; ms are the median round's mean, ratios the median (min-max) of each round's ratio to raw.`,
      `commands each pair sends (MONITOR, a script's own calls not counted; all sent one after the other, one round trip each): ${Object.entries(pairs.commands).map(([name, commands]) => `${name}: ${commands}`).join('; ')}. dlq also sends ROLE once per connection, alongside its first acquisition (no round trip of its own).`,
      'server µs: what Redis spent executing the commands a pair sends (a script with its inner calls), each candidate alone for 2,000 pairs after the rounds; the rest of a pair is the two round trips and this process.',
    ],
  }
}

/** Section redis-pairs: the lock pairs alone (a minute, not the whole Redis section); DLQ_BENCH_BASELINE=DIR adds that build. */
export async function benchRedisPairs({root, fmt, fmtInt, median}) {
  const baseline = process.env.DLQ_BENCH_BASELINE
  if (baseline && !existsSync(join(baseline, 'dist/backends/redis/index.js'))) throw new Error(`DLQ_BENCH_BASELINE=${baseline}: no built dlq there (dist/)`)
  const server = await startRedis()
  try {
    const report = pairReport(await pairsSideBySide(root, server.url, baseline), {fmt, fmtInt, median})
    return {
      title: `Redis ${server.url} — lock acquire+release pairs in one process${baseline ? `, beside the build in ${baseline}` : ''}`,
      table: {header: ['measure', 'n', 'dlq', 'reference', 'ratio'], rows: report.rows},
      verdicts: report.verdicts,
      notes: report.notes,
    }
  } finally {
    server.stop()
  }
}

export async function benchRedis({root, dlq, handoff, spawnTimed, expectStatus, tempDir, fmt, fmtInt, median, quantile}) {
  const server = await startRedis()
  try {
    const pairs = pairReport(await pairsSideBySide(root, server.url), {fmt, fmtInt, median})
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
    const m = median(driverHand)
    const p99 = quantile(driverHand, 0.99)
    return {
      title: `(d) Redis ${server.url} — locks in one process, hand-off between processes, ${fmtInt(PUSH_LINES)} piped messages`,
      table: {
        header: ['measure', 'n', 'dlq', 'reference', 'ratio'],
        rows: [
          ...pairs.rows,
          ['hand-off median ms (p99): release() → waiter\'s acquire() resolves', String(driverHand.length), `${fmt(m, 2)} (${fmt(p99, 2)})`, '-', '-'],
          ['hand-off median ms (p99): command end → next command running', String(hand.latencies.length), `${fmt(median(hand.latencies), 2)} (${fmt(quantile(hand.latencies, 0.99), 2)})`, '-', '-'],
          ['queue push msgs/s (ref: redis-cli --pipe XADD)', fmtInt(PUSH_LINES), fmtInt(pushRate), fmtInt(pipeRate), fmt(pushRate / pipeRate, 2)],
          ['queue pop --count 1000 msgs/s', fmtInt(round.popped), fmtInt(round.popped / (round.popMs / 1000)), '-', '-'],
        ],
      },
      verdicts: [
        ...pairs.verdicts,
        {ok: m < 2, target: 'hand-off median < 2 ms (release → the waiter holds: one round trip after the release)', measured: `${fmt(m, 2)} ms`},
        {ok: p99 < 10, target: 'hand-off p99 < 10 ms', measured: `${fmt(p99, 2)} ms`},
        {ok: pushRate >= 0.5 * pipeRate, target: 'push ≥ 50% of redis-cli --pipe', measured: `${fmt((100 * pushRate) / pipeRate, 0)}%`},
        {ok: round.missing === 0 && round.duplicates === 0, target: 'pop returns the first 100,000 exactly once, in order', measured: `${round.missing} missing or out of order, ${round.duplicates} duplicates`},
      ],
      notes: [
        ...pairs.notes,
        'driver hand-off: two connections in one process, the waiter subscribed and asleep; from release() sent to the waiter\'s acquire() resolved (PUBLISH, wake-up, acquire script).',
        'command hand-off, as in (b): also the holder\'s exit noticed, the release, and the supervisor starting the next command (spawn, watchdog, bash) — the same for every backend.',
        ...(hand.overlaps ? [`${hand.overlaps} critical sections OVERLAPPED`] : []),
        ...(hand.tokenDisorder ? [`fencing tokens out of order ${hand.tokenDisorder} times`] : []),
      ],
    }
  } finally {
    server.stop()
  }
}
