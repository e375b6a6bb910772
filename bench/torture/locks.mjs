// The lock half of the torture: lockers that loop `dlq lock run --key K --ttl 2s --kill-grace 1s
// -- node child.mjs`, the fenced store their commands write to, and the checker.
//
// The fenced store is a server on a unix socket. A command says hello with its fencing token (that
// starts its critical section, CS), gets a plan, then makes fenced writes: a write is accepted only
// if its token is >= the highest token of any accepted write. The CS ends when its socket closes
// (a killed command's socket is closed by the kernel at its death). A store that refuses lower
// tokens makes "accepted out of order" trivially 0, so the checker also looks for what actually
// breaks fencing: one token handed to two acquisitions, a token that goes backwards, a write
// accepted from a holder whose lease a newer holder already had, and CSs that overlapped.
//
// Readers and writers mixed (--shared): two slots in three run `lock run --shared` (with writers
// looping back to back, writer preference would keep readers out on the backends without a FIFO). A
// reader's CS says hello and makes its plan's steps as reads (not fenced writes, not recorded as
// writes); two readers may overlap, but no overlap that involves a writer is allowed (unless the
// older holder reported its lock lost, as for writers alone), and tokens must still increase.
import {createServer} from 'node:net'
import {join} from 'node:path'

import {DLQ, NODE, ROOT, endRuns, isAlive, randomBetween, randomInt, start, tortureEnv} from './procs.mjs'

const CHILD = join(ROOT, 'bench', 'torture', 'child.mjs')

/** A short CS: 2–3 writes, 20–200 ms apart. A long one (for the stop faults): ~5 s of writes. */
function plan(long) {
  if (long) return Array.from({length: 13}, () => Math.round(randomBetween(350, 420)))
  return Array.from({length: randomInt(2, 3)}, () => Math.round(randomBetween(20, 200)))
}

export class FencedStore {
  /** Every CS, in hello order: {token, owner, pid, ppid, start, end, bye, long, writes[]}. */
  acquisitions = []
  /** Every write, in arrival order: {acquisition, seq, at, arrivedAt, accepted}. */
  writes = []
  highest = -1n
  /** Set by a fault that needs a holder with a long CS: the next hello gets one. */
  wantLong = false
  longShare = 0.03

  constructor(path) {
    this.path = path
  }

  listen() {
    this.server = createServer((socket) => this.serve(socket))
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.path, resolve)
    })
  }

  close() {
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  /** The CSs running now (hello seen, socket still open). */
  holders() {
    return this.acquisitions.filter((a) => a.end === undefined)
  }

  serve(socket) {
    let acquisition
    let buffered = ''
    socket.on('error', () => {})
    socket.on('close', () => {
      if (acquisition) acquisition.end = Date.now()
    })
    socket.on('data', (chunk) => {
      const lines = (buffered + chunk).split('\n')
      buffered = lines.pop()
      for (const line of lines) {
        const message = JSON.parse(line)
        if (message.t === 'hello') {
          const long = this.wantLong || Math.random() < this.longShare
          this.wantLong = false
          // A token that is not an integer (DLQ_FENCING_TOKEN's contract) sorts below every other.
          const token = /^\d+$/.test(message.token ?? '') ? BigInt(message.token) : -1n
          acquisition = {token, tokenText: String(message.token), badToken: token < 0n, owner: message.owner, pid: message.pid, ppid: message.ppid, start: message.at, long, shared: message.shared === true, writes: []}
          this.acquisitions.push(acquisition)
          socket.write(`${JSON.stringify({pauses: plan(long)})}\n`)
        } else if (message.t === 'write' && acquisition.shared) {
          socket.write(`${JSON.stringify({accepted: true})}\n`) // a reader's step: a read, nothing to fence
        } else if (message.t === 'write') {
          const accepted = acquisition.token >= this.highest
          if (accepted) this.highest = acquisition.token
          const write = {acquisition, seq: message.seq, at: message.at, arrivedAt: Date.now(), accepted}
          acquisition.writes.push(write)
          this.writes.push(write)
          socket.write(`${JSON.stringify({accepted})}\n`)
        } else if (message.t === 'bye') {
          acquisition.bye = message.at
        }
      }
    })
  }
}

/** `count` slots, each running `dlq lock run` again as soon as the previous one exits. */
export class Lockers {
  runs = []
  stopping = false

  constructor({url, key, storePath, count, ttl, killGrace, readers = true}) {
    Object.assign(this, {url, key, storePath, count, ttl, killGrace, readers})
  }

  /** Two slots in three are readers (--shared), unless `readers` is false. */
  isReader(slot) {
    return this.readers && slot % 3 !== 0
  }

  start() {
    this.loops = Array.from({length: this.count}, (_, slot) => this.loop(slot))
  }

  async loop(slot) {
    while (!this.stopping) {
      const shared = this.isReader(slot)
      const proc = start(NODE, [DLQ, 'lock', 'run', '-b', this.url, '--key', this.key, '--ttl', this.ttl, '--kill-grace', this.killGrace, ...(shared ? ['--shared'] : []), '--', NODE, CHILD], {
        env: shared ? tortureEnv({TORTURE_SHARED: '1'}) : undefined,
        input: undefined,
      })
      const run = {slot, proc, pid: proc.pid, spawnAt: proc.spawnAt, shared}
      this.runs.push(run)
      const done = await proc.done
      Object.assign(run, {exitAt: done.at, code: done.code, signal: done.signal, stderr: proc.stderrText()})
    }
  }

  /** dlq processes running now. */
  live() {
    return this.runs.filter((r) => r.exitAt === undefined)
  }

  /** The dlq run that started a CS: its parent, alive at the CS's start (pids get reused). */
  runOf(acquisition) {
    return this.runs.find((r) => r.pid === acquisition.ppid && r.spawnAt <= acquisition.start && (r.exitAt === undefined || r.exitAt >= acquisition.start))
  }

  /** Stops looping and ends the dlq processes still running (SIGTERM: forwarded to the command). */
  async stop() {
    this.stopping = true
    const ended = await endRuns(() => this.live())
    await Promise.all(this.loops)
    return ended
  }
}

/** A dlq run that reported its lock lost: exit 70 and the line that says so. */
const reportedLost = (run) => run?.code === 70 && /lost/.test(run.stderr ?? '')

/**
 * The lock checks. `events` are the faults the injector recorded:
 *   {kind, at, owner?, measure: 'unusable' | 'stale-stop', until?}
 * Returns {facts, checks: [{name, figure, limit, ok, must}], samples}.
 */
export function checkLocks({store, lockers, events, ttlMs, killGraceMs}) {
  // A CS ends at its goodbye, on its own clock, as it starts at its hello: the socket's close is
  // seen by this process, as late as its event loop lags (1.4 s once, under CI's load, which made
  // a writer that had said goodbye look as if it still ran beside the readers after it). A CS
  // that never said goodbye (killed) ends when its socket closed, seen late if anything.
  const acquisitions = store.acquisitions.filter((a) => a.end !== undefined).map((a) => (a.bye === undefined ? a : {...a, end: Math.min(a.end, a.bye)}))
  const checks = []
  const samples = []

  // 1. Accepted writes out of token order (the store's own rule; 0 unless the store is wrong).
  let outOfOrder = 0
  let highest = -1n
  for (const w of store.writes) {
    if (!w.accepted) continue
    if (w.acquisition.token < highest) outOfOrder++
    else highest = w.acquisition.token
  }
  checks.push({name: 'fenced writes accepted out of token order', figure: outOfOrder, limit: 0, ok: outOfOrder === 0, must: true})

  const malformed = store.acquisitions.filter((a) => a.badToken)
  for (const a of malformed.slice(0, 2)) samples.push(`DLQ_FENCING_TOKEN ${JSON.stringify(a.tokenText)} is not an integer`)
  checks.push({name: 'tokens that are not integers', figure: malformed.length, limit: 0, ok: malformed.length === 0, must: true})

  // 2. One token, two acquisitions.
  const byToken = new Map()
  for (const a of store.acquisitions) {
    const owners = byToken.get(a.tokenText) ?? new Set()
    owners.add(a.owner)
    byToken.set(a.tokenText, owners)
  }
  const shared = [...byToken.entries()].filter(([, owners]) => owners.size > 1)
  for (const [token, owners] of shared.slice(0, 3)) samples.push(`token ${token} given to ${owners.size} acquisitions: ${[...owners].join(', ')}`)
  checks.push({name: 'tokens given to two acquisitions', figure: shared.length, limit: 0, ok: shared.length === 0, must: true})

  // 3. Tokens that went backwards. B's acquisition certainly came after A's when B's dlq was
  // started after A's command had already said hello; then B's token must be larger.
  const helloOrder = [...store.acquisitions].sort((x, y) => x.start - y.start)
  let backwards = 0
  for (const b of store.acquisitions) {
    const run = lockers.runOf(b)
    if (!run) continue
    const earlier = helloOrder.filter((a) => a.start < run.spawnAt && a !== b)
    const worst = earlier.find((a) => a.token >= b.token)
    if (worst) {
      backwards++
      if (samples.length < 6) samples.push(`token ${b.tokenText} (dlq started ${iso(run.spawnAt)}) after token ${worst.tokenText} had started its CS at ${iso(worst.start)}`)
    }
  }
  checks.push({name: 'tokens that went backwards', figure: backwards, limit: 0, ok: backwards === 0, must: true})

  // 4. Writes accepted from a holder whose lease a newer holder already had: sent after a CS with
  // a larger token had begun. Fencing cannot catch these until the newer holder's first write.
  let staleAccepted = 0
  for (const w of store.writes) {
    if (!w.accepted) continue
    const newer = store.acquisitions.find((b) => b.token > w.acquisition.token && b.start < w.at)
    if (newer) {
      staleAccepted++
      if (samples.length < 9) samples.push(`write ${w.seq} of token ${w.acquisition.tokenText} accepted at ${iso(w.at)}, after token ${newer.tokenText} began at ${iso(newer.start)}`)
    }
  }
  const rejected = store.writes.filter((w) => !w.accepted).length
  checks.push({name: 'writes accepted from a holder already superseded', figure: staleAccepted, limit: 0, ok: staleAccepted === 0, must: true})

  // 5. Overlapping CSs. For each CS that a newer one (larger token) overlapped: the older holder
  // must have been reported lost (exit 70), and must have ended within the kill grace of the
  // first newer CS's start (its lease was gone by then). Two readers may overlap: only overlaps
  // with a writer on either side count (never a writer beside anyone).
  let allowed = 0
  let forbidden = 0
  for (const older of acquisitions) {
    const newer = acquisitions.filter((b) => b.token > older.token && b.start < older.end && b.end > older.start && !(b.shared && older.shared)).sort((x, y) => x.start - y.start)
    if (newer.length === 0) continue
    const first = newer[0]
    const run = lockers.runOf(older)
    const lost = reportedLost(run)
    if (lost && older.end <= Math.max(first.start, older.start) + killGraceMs) allowed++
    else {
      forbidden++
      if (samples.length < 12) {
        samples.push(`CS of token ${older.tokenText} [${iso(older.start)} – ${iso(older.end)}] overlapped ${newer.length} newer CS from token ${first.tokenText} at ${iso(first.start)} on, for ${older.end - Math.max(first.start, older.start)} ms; its dlq exited ${run?.code ?? run?.signal ?? '?'}${lost ? ' (lock lost)' : ''}`)
      }
    }
  }
  const readerPairs = acquisitions.filter((a) => a.shared).reduce((n, a) => n + acquisitions.filter((b) => b.shared && b.token > a.token && b.start < a.end && b.end > a.start).length, 0)
  checks.push({name: 'overlapping CSs with a writer, not covered by a lost lock', figure: forbidden, limit: 0, ok: forbidden === 0, must: true})
  checks.push({name: 'overlapping CSs with a writer, within kill-grace of a lost lock', figure: allowed, limit: 'reported', ok: true, must: false})
  checks.push({name: 'readers overlapping readers (allowed)', figure: readerPairs, limit: 'reported', ok: true, must: false})

  // 6. How long the key stayed unusable after a holder died (killed, or stopped past its TTL).
  // Not measured when a server fault began before the key was usable again and within the limit
  // (the injector waits for the key before its next fault, so this is for the record only).
  const unusableLimit = ttlMs + 1000
  const unusable = events.filter((e) => e.measure === 'unusable')
  const serverFaults = events.filter((e) => e.server)
  let longest = 0
  let excluded = 0
  for (const e of unusable) {
    const next = acquisitions.concat(store.holders()).filter((a) => a.start > e.at && a.owner !== e.owner).sort((x, y) => x.start - y.start)[0]
    const gap = next ? next.start - e.at : Number.POSITIVE_INFINITY
    if (serverFaults.some((s) => s.at >= e.at && s.at < e.at + Math.min(gap, unusableLimit))) {
      excluded++
      continue
    }
    e.gap = gap
    longest = Math.max(longest, gap)
  }
  // That the key became usable again is a must; how fast is a timing, reported against its target
  // (TTL + 1 s) but not failing the run: on a loaded 2-core machine it ran 2.3-3.2 s for a 2 s TTL,
  // and timings belong to npm run bench, not to the test command.
  checks.push({
    name: 'keys never usable again after a holder died',
    figure: unusable.filter((e) => e.gap === Number.POSITIVE_INFINITY).length,
    limit: 0,
    ok: unusable.every((e) => e.gap !== Number.POSITIVE_INFINITY),
    must: true,
  })
  checks.push({
    name: 'longest key unusable after a holder died',
    figure: unusable.length - excluded === 0 ? 'n/a' : seconds(longest),
    limit: `target ≤ ${seconds(unusableLimit)}`,
    ok: true,
    must: false,
    note: `${unusable.length - excluded} deaths measured${excluded ? `, ${excluded} overlapped a server fault` : ''}${longest > unusableLimit ? '; over its target' : ''}`,
  })

  // 7. After a server pause or a partition longer than the TTL, the stale holder's command is
  // stopped in time.
  const staleLimit = ttlMs + killGraceMs
  for (const [measure, what] of [['stale-stop', 'a server pause'], ['partition-stop', 'a partition']]) {
    const pauses = events.filter((e) => e.measure === measure)
    if (measure === 'partition-stop' && pauses.length === 0) continue
    let slowest = 0
    let measured = 0
    for (const e of pauses) {
      // A partition cuts off one holder (e.owner); a server pause, whoever held the key.
      const stale = store.acquisitions.filter((a) => a.start < e.at && (a.end === undefined || a.end > e.at) && (measure === 'stale-stop' || a.owner === e.owner))
      for (const a of stale) {
        measured++
        const stopped = (a.end ?? Number.POSITIVE_INFINITY) - e.at
        slowest = Math.max(slowest, stopped)
        if (stopped > staleLimit && samples.length < 14) samples.push(`token ${a.tokenText} still ran ${stopped} ms after ${what} began at ${iso(e.at)}`)
      }
    }
    checks.push({
      name: `stale holder stopped after ${what}`,
      figure: measured === 0 ? 'n/a' : seconds(slowest),
      limit: `≤ ${seconds(staleLimit)}`,
      ok: slowest <= staleLimit,
      must: true,
      note: `${measured} holder${measured === 1 ? '' : 's'} caught by ${pauses.length} fault${pauses.length === 1 ? '' : 's'}`,
    })
  }

  // 8. Network faults (the proxy), reported, not failing. The key unusable: after a partition,
  // from its start until another holder's CS began (the cut-off holder's lease had to run out);
  // after a cut or a slow spell, from the end of the fault or of the holder's CS, whichever came
  // later, until the next CS began. And how many holders caught by one lost their lock.
  for (const kind of [...new Set(events.filter((e) => e.group === 'network').map((e) => e.kind))]) {
    const faults = events.filter((e) => e.kind === kind)
    let longest = 0
    let holdersLost = 0
    for (const e of faults) {
      const held = store.acquisitions.find((a) => a.owner === e.owner)
      const from = e.measure === 'partition-stop' ? e.at : Math.max(e.until ?? e.at, held?.end ?? 0)
      const next = store.acquisitions.filter((a) => a.start > from && a.owner !== e.owner).sort((x, y) => x.start - y.start)[0]
      longest = Math.max(longest, next ? next.start - from : Number.POSITIVE_INFINITY)
      if (held && reportedLost(lockers.runOf(held))) holdersLost++
    }
    const what = faults[0].measure === 'partition-stop' ? `key unusable from the start of a ${kind}` : `key unusable after ${kind}`
    checks.push({name: what, figure: seconds(longest), limit: 'reported', ok: true, must: false, note: `${faults.length} fault${faults.length === 1 ? '' : 's'}, ${holdersLost} holder${holdersLost === 1 ? '' : 's'} caught lost the lock`})
  }

  const lostRuns = lockers.runs.filter(reportedLost).length
  const facts = {
    acquisitions: store.acquisitions.length,
    shared: store.acquisitions.filter((a) => a.shared).length,
    writes: store.writes.length,
    rejected,
    lostRuns,
    runs: lockers.runs.length,
  }
  return {facts, checks, samples}
}

export const seconds = (ms) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : 'never')
const iso = (ms) => new Date(ms).toISOString().slice(11, 23)

export {isAlive}
