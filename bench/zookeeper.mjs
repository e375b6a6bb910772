// ZooKeeper section of `npm run bench` (issue 4), against one standalone ZooKeeper 3.8 server
// started here on a free loopback port with forceSync on (every write is fsynced, as in production):
//  - acquire+release cycles in one process through dlq's driver (dist/backends/zookeeper), against
//    the raw recipe with node-zookeeper-client on the same server: create EPHEMERAL_SEQUENTIAL +
//    getChildren + delete. Rounds of both are interleaved, so machine noise hits both alike;
//  - lock hand-off latency between two processes that take turns on one key through the driver:
//    from the moment the holder calls release() to the moment the waiter's acquire() returns
//    (process.hrtime is CLOCK_MONOTONIC, shared by both processes);
//  - `seq 1 N | dlq queue push` and `dlq queue pop --count 1000` until empty, messages per second.
import {spawn, spawnSync} from 'node:child_process'
import {createRequire} from 'node:module'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

import {startZooKeeper} from '../test/support/zookeeper.mjs'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const DRIVER = pathToFileURL(join(ROOT, 'dist/backends/zookeeper/index.js')).href
const ROUNDS = 20
const CYCLES = 100
const HANDOFFS = 300
const QUEUE_MESSAGES = 20_000

const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b)
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  return sorted[lo] + (sorted[Math.ceil(pos)] - sorted[lo]) * (pos - lo)
}
const median = (values) => quantile(values, 0.5)
const fmt = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '-')
const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-')
const nowMs = () => Number(process.hrtime.bigint()) / 1e6

/** ms per acquire+release cycle: dlq's driver vs the raw recipe, interleaved rounds. */
async function cycles(server) {
  const {openZooKeeperBackend} = await import(DRIVER)
  const backend = await openZooKeeperBackend(new URL(server.url), {})
  const signal = new AbortController().signal
  const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
  let owners = 0
  const dlqRound = async (n) => {
    const start = nowMs()
    for (let i = 0; i < n; i++) {
      const owner = `bench-${owners++}`
      const lease = await backend.locks.acquire({key: 'cycles', owner, ttlMs: 30_000, limit: 1, waitMs: 0, signal, holder})
      if (!lease) throw new Error('dlq driver: lock not acquired')
      await backend.locks.release('cycles', owner)
    }
    return (nowMs() - start) / n
  }

  const zookeeper = createRequire(join(ROOT, 'package.json'))('node-zookeeper-client')
  const raw = zookeeper.createClient(server.connectString, {sessionTimeout: 30_000})
  await new Promise((resolve) => {
    raw.once('connected', resolve)
    raw.connect()
  })
  const call = (method, ...args) => new Promise((resolve, reject) => raw[method](...args, (error, result) => (error ? reject(error) : resolve(result))))
  await call('mkdirp', '/raw/cycles')
  const rawRound = async (n) => {
    const start = nowMs()
    for (let i = 0; i < n; i++) {
      const path = await call('create', '/raw/cycles/lock-', zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL)
      await call('getChildren', '/raw/cycles')
      await call('remove', path, -1)
    }
    return (nowMs() - start) / n
  }

  await dlqRound(50) // warm-up: JIT, and the key's node exists
  await rawRound(50)
  const dlq = []
  const rawMs = []
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      dlq.push(await dlqRound(CYCLES))
      rawMs.push(await rawRound(CYCLES))
    } else {
      rawMs.push(await rawRound(CYCLES))
      dlq.push(await dlqRound(CYCLES))
    }
  }
  raw.close()
  await backend.close()
  return {dlq, raw: rawMs}
}

// One of the two processes taking turns: acquire (waiting), hold, release; prints its timestamps.
const TURN_TAKER = `
const [driver, url, turns, holdMs] = process.argv.slice(1)
const {openZooKeeperBackend} = await import(driver)
const backend = await openZooKeeperBackend(new URL(url), {})
const signal = new AbortController().signal
const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
const now = () => Number(process.hrtime.bigint()) / 1e6
const lines = []
for (let i = 0; i < Number(turns); i++) {
  const owner = process.pid + '-' + i
  await backend.locks.acquire({key: 'handoff', owner, ttlMs: 30000, limit: 1, waitMs: Infinity, signal, holder})
  lines.push('acquired ' + now())
  const until = now() + Number(holdMs)
  while (now() < until) await new Promise((r) => setTimeout(r, 1))
  lines.push('releasing ' + now())
  await backend.locks.release('handoff', owner)
  // Queue up again only once the other process has taken over: its hand-off is not measured
  // against our own create competing for the same fsync.
  await new Promise((r) => setTimeout(r, 5))
}
await backend.close()
process.stdout.write(lines.join('\\n') + '\\n')
`

/** Hand-off latencies (ms): release() called by one process → acquire() returned in the other. */
async function handoffs(server) {
  const turns = HANDOFFS / 2 + 1
  const run = () => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', TURN_TAKER, DRIVER, server.url, String(turns), '20'], {stdio: ['ignore', 'pipe', 'inherit']})
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`turn taker exited ${code}`))))
  })
  const outputs = await Promise.all([run(), run()])
  const events = outputs.flatMap((out, who) => out.trim().split('\n').map((line) => {
    const [what, at] = line.split(' ')
    return {who, what, at: Number(at)}
  }))
  events.sort((a, b) => a.at - b.at)
  const latencies = []
  let overlaps = 0
  let holding = -1
  for (let i = 0; i < events.length; i++) {
    const e = events[i]
    if (e.what === 'acquired') {
      if (holding !== -1) overlaps++
      holding = e.who
      const previous = events.slice(0, i).reverse().find((p) => p.what === 'releasing')
      if (previous && previous.who !== e.who) latencies.push(e.at - previous.at)
    } else holding = -1
  }
  return {latencies, overlaps}
}

/** The same through the driver in one process: what the queue costs without starting dlq each time. */
async function driverQueue(server, n) {
  const {openZooKeeperBackend} = await import(DRIVER)
  const backend = await openZooKeeperBackend(new URL(server.url), {})
  const signal = new AbortController().signal
  let start = nowMs()
  for (let i = 0; i < n; i += 1000) await backend.queues.push('driver', Array.from({length: Math.min(1000, n - i)}, (_v, j) => Buffer.from(String(i + j + 1))))
  const pushMs = nowMs() - start
  start = nowMs()
  let popped = 0
  for (;;) {
    const messages = await backend.queues.reserve('driver', {count: 1000, visibilityMs: 30_000, waitMs: 0, maxAttempts: 5, signal})
    if (messages.length === 0) break
    await backend.queues.settle('driver', messages, 'ack', 5)
    popped += messages.length
  }
  const popMs = nowMs() - start
  await backend.close()
  return {pushMs, popMs, popped}
}

/** `seq 1 N | dlq queue push`, then `dlq queue pop --count 1000` until empty. */
function queueRoundTrip(bin, url, n) {
  const queue = 'bench'
  const timed = (cmd, args, options) => {
    const start = nowMs()
    const result = spawnSync(cmd, args, {encoding: 'utf8', maxBuffer: 64 << 20, ...options})
    if (result.error) throw result.error
    return {ms: nowMs() - start, result}
  }
  const push = timed('sh', ['-c', `seq 1 ${n} | "$0" "$1" -b "$2" queue push --queue "$3"`, process.execPath, bin, url, queue])
  if (push.result.status !== 0) throw new Error(`queue push: exit ${push.result.status}: ${push.result.stderr}`)
  const popped = []
  let popMs = 0
  for (let pops = 0; ; pops++) {
    const pop = timed(process.execPath, [bin, '-b', url, 'queue', 'pop', '--queue', queue, '--count', '1000'])
    popMs += pop.ms
    if (pop.result.status === 75) break
    if (pop.result.status !== 0) throw new Error(`queue pop: exit ${pop.result.status}: ${pop.result.stderr}`)
    popped.push(...pop.result.stdout.slice(0, -1).split('\n'))
    if (pops > n / 1000 + 10) throw new Error('queue pop: the queue does not empty')
  }
  const inOrder = popped.every((m, i) => m === String(i + 1))
  return {pushMs: push.ms, popMs, popped: popped.length, inOrder}
}

export async function benchZooKeeper({bin = join(ROOT, 'bin', 'run.cjs'), log = () => {}} = {}) {
  log('zookeeper: starting a standalone server (forceSync=yes)')
  const server = await startZooKeeper({servers: 1, forceSync: true})
  try {
    log(`zookeeper: ${ROUNDS} × ${CYCLES} acquire+release cycles, dlq driver and raw recipe interleaved`)
    const cycle = await cycles(server)
    log(`zookeeper: ${HANDOFFS} hand-offs between two processes`)
    const hand = await handoffs(server)
    log(`zookeeper: push and pop ${QUEUE_MESSAGES} messages through the CLI`)
    const round = queueRoundTrip(bin, server.url, QUEUE_MESSAGES)
    const driver = await driverQueue(server, QUEUE_MESSAGES)

    const dlqCycle = median(cycle.dlq)
    const rawCycle = median(cycle.raw)
    // Paired: each dlq round against the raw round next to it, so a noisy stretch cancels out.
    const ratio = median(cycle.dlq.map((d, i) => d / cycle.raw[i]))
    const m = median(hand.latencies)
    const p99 = quantile(hand.latencies, 0.99)
    return {
      title: `ZooKeeper 3.8 standalone ${server.url} (forceSync=yes) — locks in one process, hand-off between two processes, ${fmtInt(QUEUE_MESSAGES)} messages through the CLI`,
      table: {
        header: ['measure', 'n', 'dlq', 'reference', 'ratio'],
        rows: [
          ['acquire+release cycle, ms, median of rounds (ref: raw create-seq + getChildren + delete)', `${ROUNDS}×${CYCLES}`, fmt(dlqCycle, 3), fmt(rawCycle, 3), fmt(ratio, 2)],
          ['acquire+release cycles per second', '', fmtInt(1000 / dlqCycle), fmtInt(1000 / rawCycle), ''],
          ['hand-off median ms (p99), release() → acquire() returns', String(hand.latencies.length), `${fmt(m)} (${fmt(p99)})`, '-', '-'],
          ['queue push msgs/s (seq | dlq queue push)', fmtInt(QUEUE_MESSAGES), fmtInt(QUEUE_MESSAGES / (round.pushMs / 1000)), '-', '-'],
          ['queue pop --count 1000 msgs/s', fmtInt(round.popped), fmtInt(round.popped / (round.popMs / 1000)), '-', '-'],
          ['  driver in one process: push (batches of 1000) msgs/s', fmtInt(QUEUE_MESSAGES), fmtInt(QUEUE_MESSAGES / (driver.pushMs / 1000)), '-', '-'],
          ['  driver in one process: reserve 1000 + ack msgs/s', fmtInt(driver.popped), fmtInt(driver.popped / (driver.popMs / 1000)), '-', '-'],
        ],
      },
      verdicts: [
        {ok: ratio <= 1.3, target: 'acquire+release within 1.3× of the raw create-sequential + getChildren + delete loop', measured: `${fmt(ratio)}× (median of ${ROUNDS} paired rounds; dlq p25–p75 ${fmt(quantile(cycle.dlq, 0.25))}–${fmt(quantile(cycle.dlq, 0.75))} ms, raw ${fmt(quantile(cycle.raw, 0.25))}–${fmt(quantile(cycle.raw, 0.75))} ms)`},
        {ok: m < 5, target: 'hand-off median < 5 ms', measured: `${fmt(m)} ms (p99 ${fmt(p99)} ms)`},
        {ok: hand.overlaps === 0, target: 'the two processes never hold at once', measured: `${hand.overlaps} overlaps`},
        {ok: round.popped === QUEUE_MESSAGES && round.inOrder, target: 'pop returns every message once, in order', measured: `${round.popped} of ${QUEUE_MESSAGES}, ${round.inOrder ? 'in order' : 'OUT OF ORDER'}`},
      ],
      notes: [
        'a dlq cycle: create the contender node (EPHEMERAL_SEQUENTIAL, holder record as data; the reply\'s zxid is its czxid, the',
        '  fencing token), getChildren, delete: the raw loop\'s three requests (the first acquire of a process also reads the node back',
        '  with exists() once, to check that the reply\'s zxid is the czxid).',
        'rounds alternate dlq-first and raw-first; the ratio is the median of the per-pair ratios (robust to a busy machine).',
        'hand-off: the holder\'s delete (an fsynced write), the watch notification, the waiter\'s getChildren; its setData marking it',
        '  the holder is sent but not waited for. Each process holds 20 ms, and queues up again 5 ms after its release.',
        'push and pop through the CLI include starting dlq (node) for every command: 1 push, one pop per 1000 messages; the driver',
        '  rows are the same work in one process. A pop reads each message (64 reads in flight) and claims them with one multi.',
      ],
    }
  } finally {
    await server.stop()
  }
}

// Also runnable on its own: node bench/zookeeper.mjs
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const report = await benchZooKeeper({log: (line) => console.error(line)})
  console.log(`== ${report.title}`)
  for (const row of [report.table.header, ...report.table.rows]) console.log(`  ${row.join(' | ')}`)
  for (const v of report.verdicts) console.log(`  ${v.ok ? 'PASS' : 'MISS'}  ${v.target} — ${v.measured}`)
  for (const note of report.notes) console.log(`  note: ${note}`)
}
