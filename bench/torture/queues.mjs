// The queue half of the torture: producers that pipe unique ids into `dlq queue push`, workers
// that run `dlq queue pop --exec -- sh handler.sh`, a drain once the faults stop, and the checker.
//
// An id counts as pushed only when its push exited 0; the ids of a push that failed (killed, or
// the server was away) are "uncertain": they may or may not be in the queue. Poison ids make the
// handler fail every time: they must end in the dead-letter queue Q.dead, and nothing else may.
import {open} from 'node:fs/promises'
import {join} from 'node:path'

import {DLQ, NODE, ROOT, childrenOf, endRuns, randomInt, runDlq, start, waitUntil} from './procs.mjs'

const HANDLER = join(ROOT, 'bench', 'torture', 'handler.sh')
// A line of --verbose: one round trip to the backend.
const roundTrip = /^dlq: (pg|redis|zk|file): /
const POISON_SHARE = 0.02
// Producers hold back while this many pushed ids are not handled yet, so the drain stays short.
const MAX_BACKLOG = 150

export class QueueTorture {
  /** id → {poison} for every id whose push exited 0. */
  confirmed = new Map()
  uncertain = new Set()
  pushes = {ok: 0, failed: 0}
  /** Handler records: {kind: 'start'|'ok', id, attempt, pid, ppid, at}. */
  records = []
  okIds = new Set()
  workerRuns = []
  stopping = false

  constructor({url, queue, handledLog, producers, workers, visibility, maxAttempts, retryDelay, concurrency}) {
    Object.assign(this, {url, queue, handledLog, producers, workers, visibility, maxAttempts, retryDelay, concurrency})
  }

  start() {
    this.producing = true
    this.producerLoops = Array.from({length: this.producers}, (_, n) => this.produce(n))
    this.workerLoops = Array.from({length: this.workers}, (_, n) => this.work(n))
    this.tailer = setInterval(() => void this.readRecords(), 200)
  }

  async produce(n) {
    let seq = 0
    while (this.producing) {
      await waitUntil(() => !this.producing || this.confirmed.size - this.okIds.size < MAX_BACKLOG, {timeoutMs: 1000, intervalMs: 50})
      if (!this.producing) break
      const ids = Array.from({length: randomInt(5, 15)}, () => {
        const id = `p${n}-${String(seq++).padStart(6, '0')}`
        return Math.random() < POISON_SHARE ? `${id}-poison` : id
      })
      const input = ids.map((id) => `${id} ${randomInt(0, 60)}\n`).join('')
      const proc = start(NODE, [DLQ, 'queue', 'push', '-b', this.url, '--queue', this.queue], {input})
      const done = await proc.done
      if (done.code === 0) {
        this.pushes.ok++
        for (const id of ids) this.confirmed.set(id, {poison: id.endsWith('-poison')})
      } else {
        this.pushes.failed++
        for (const id of ids) this.uncertain.add(id)
      }
      // Pace the producers (this is load, not a wait for a condition).
      await waitUntil(() => !this.producing, {timeoutMs: randomInt(200, 800), intervalMs: 50})
    }
  }

  async work(n) {
    while (!this.stopping) {
      // --verbose: each round trip is logged, stamped here as it arrives, so that a duplicate no
      // fault explains comes with what its worker was doing meanwhile (checkQueues).
      const args = ['queue', 'pop', '-b', this.url, '--queue', this.queue, '--exec', '--wait', '2s', '--visibility', this.visibility, '--max-attempts', String(this.maxAttempts), '--retry-delay', this.retryDelay, '--concurrency', String(this.concurrency), '--verbose', '--', '/bin/sh', HANDLER]
      const said = []
      const trace = []
      const onStderrLine = (line, at) => {
        if (!roundTrip.test(line)) said.push(line)
        else if (trace.length < 20_000) trace.push({at, line: line.slice(5)})
      }
      const proc = start(NODE, [DLQ, ...args], {env: undefined, onStderrLine})
      const run = {worker: n, proc, pid: proc.pid, spawnAt: proc.spawnAt, trace}
      this.workerRuns.push(run)
      const done = await proc.done
      Object.assign(run, {exitAt: done.at, code: done.code, signal: done.signal, stderr: said.join('\n')})
    }
  }

  /** Worker dlq processes running now. */
  liveWorkers() {
    return this.workerRuns.filter((r) => r.exitAt === undefined)
  }

  /** Workers with a handler running now: [{run, handler}]. */
  busyWorkers() {
    return this.liveWorkers().flatMap((run) => childrenOf(run.pid).map((handler) => ({run, handler})))
  }

  async readRecords() {
    this.reading ??= this.readMore().finally(() => (this.reading = undefined))
    return this.reading
  }

  async readMore() {
    let file
    try {
      file = await open(this.handledLog, 'r')
    } catch {
      return // no handler has run yet
    }
    try {
      this.offset ??= 0
      this.partial ??= ''
      const {size} = await file.stat()
      if (size <= this.offset) return
      const buffer = Buffer.alloc(size - this.offset)
      const {bytesRead} = await file.read(buffer, 0, buffer.length, this.offset)
      this.offset += bytesRead
      const lines = (this.partial + buffer.subarray(0, bytesRead).toString('utf8')).split('\n')
      this.partial = lines.pop()
      for (const line of lines) {
        const [kind, id, attempt, pid, ppid, at] = line.split(' ')
        this.records.push({kind, id, attempt: Number(attempt), pid: Number(pid), ppid: Number(ppid), at: Number(at)})
        if (kind === 'ok') this.okIds.add(id)
      }
    } finally {
      await file.close()
    }
  }

  async status(queue = this.queue) {
    const r = await runDlq(['queue', 'status', '-b', this.url, '--queue', queue, '--json'])
    if (r.code !== 0) return undefined
    return JSON.parse(r.stdout).queues.find((q) => q.queue === queue) ?? {queue, waiting: 0, inFlight: 0, dead: 0}
  }

  async stopProducing() {
    this.producing = false
    await Promise.all(this.producerLoops)
  }

  /**
   * Lets the workers empty the queue: done once `queue status` shows nothing waiting or in flight
   * twice in a row (a killed worker's reservation counts as in flight until its visibility ends).
   */
  async drain(timeoutMs) {
    const began = Date.now()
    let quiet = 0
    const drained = await waitUntil(async () => {
      const s = await this.status()
      quiet = s && s.waiting === 0 && s.inFlight === 0 ? quiet + 1 : 0
      return quiet >= 2
    }, {timeoutMs, intervalMs: 300})
    return {drained: Boolean(drained), ms: Date.now() - began}
  }

  /** Stops the workers (SIGTERM: an idle worker's wait is cancelled), then reads the dead letters. */
  async finish() {
    this.stopping = true
    const ended = await endRuns(() => this.liveWorkers())
    await Promise.all(this.workerLoops)
    clearInterval(this.tailer)
    await this.readRecords()
    this.dead = []
    for (;;) {
      const r = await runDlq(['queue', 'pop', '-b', this.url, '--queue', `${this.queue}.dead`, '--count', '1000', '--json'])
      if (r.code === 75) break
      if (r.code !== 0) {
        this.deadError = r.stderr.trim()
        break
      }
      for (const line of r.stdout.split('\n').filter(Boolean)) this.dead.push(JSON.parse(line).body.split(' ')[0])
    }
    this.final = await this.status()
  }
}

/**
 * The queue checks. `events` are the injector's faults ({kind, at, pid?, server?}): a duplicate
 * (an id handled OK and delivered again) is explained by a fault that hit one of the two
 * deliveries — the first one's worker or handler killed or stopped after it began, the second
 * one's worker stopped while it held the message, or a server fault between the two. A fault of a
 * worker explains at most `concurrency` duplicates (its messages in hand), one of a handler at most
 * one, a server fault at most `concurrency` per worker.
 */
export function checkQueues({q, events, drain, drainLimitMs, workers, concurrency = 1}) {
  const checks = []
  const samples = []
  const deliveries = new Map()
  for (const r of q.records) {
    if (r.kind !== 'start') continue
    const list = deliveries.get(r.id) ?? []
    list.push({...r, ok: false})
    deliveries.set(r.id, list)
  }
  for (const r of q.records) {
    if (r.kind !== 'ok') continue
    const d = deliveries.get(r.id)?.find((x) => x.pid === r.pid)
    if (d) d.ok = true
  }
  const dead = new Set(q.dead)
  const deadCount = new Map()
  for (const id of q.dead) deadCount.set(id, (deadCount.get(id) ?? 0) + 1)

  // Lost: pushed for sure, never handled OK (or, poison, never dead-lettered).
  const lost = []
  for (const [id, {poison}] of q.confirmed) {
    if (poison ? !dead.has(id) : !q.okIds.has(id)) lost.push(id)
  }
  for (const id of lost.slice(0, 5)) samples.push(`lost: ${id} (${(deliveries.get(id) ?? []).length} deliveries)`)
  checks.push({name: 'lost ids', figure: lost.length, limit: 0, ok: lost.length === 0, must: true, note: `of ${q.confirmed.size} pushed`})

  // Phantoms: handled or dead-lettered, never pushed by anyone.
  const phantoms = [...new Set([...q.okIds, ...q.dead])].filter((id) => !q.confirmed.has(id) && !q.uncertain.has(id))
  checks.push({name: 'ids delivered that nobody pushed', figure: phantoms.length, limit: 0, ok: phantoms.length === 0, must: true})

  // Dead letters: only poison, each once.
  const wrongDead = q.dead.filter((id) => !id.endsWith('-poison'))
  const doubleDead = [...deadCount.values()].filter((n) => n > 1).length
  for (const id of wrongDead.slice(0, 3)) samples.push(`dead-lettered but not poison: ${id} (${(deliveries.get(id) ?? []).map((d) => `attempt ${d.attempt}${d.ok ? ' ok' : ''}`).join(', ')})`)
  checks.push({name: 'dead letters that are not poison', figure: wrongDead.length, limit: 0, ok: wrongDead.length === 0, must: true, note: `${q.dead.length} dead letters${doubleDead ? `, ${doubleDead} twice` : ''}`})
  if (doubleDead) checks.push({name: 'ids dead-lettered twice', figure: doubleDead, limit: 0, ok: false, must: true})

  // Duplicates, each explained by a fault.
  const processHits = new Map()
  const explains = (e) => (/worker/.test(e.kind) ? concurrency : 1)
  const serverHits = new Map()
  let duplicates = 0
  let unexplained = 0
  for (const [id, list] of deliveries) {
    list.sort((a, b) => a.at - b.at)
    for (let i = 0; i < list.length - 1; i++) {
      if (!list[i].ok) continue
      duplicates++
      const d = list[i]
      const next = list[i + 1]
      // The fault hit the delivery that was handled, before the redelivery: its worker killed at
      // any time before then (one killed before the handler's first line had spawned it already:
      // a dead worker spawns nothing, and under load that line came 73-106 ms after the kill in
      // CI), or stopped while it was in hand (until after the handler began: stopped, it can
      // neither extend nor ack); or the redelivery's worker, which held the message reserved
      // while it was stopped past the visibility and started its handler late, once resumed.
      const hitFirst = (e) => (e.pid === d.ppid || e.pid === d.pid) && e.at <= next.at && (e.until === undefined || e.until >= d.at - 50)
      const hitNext = (e) => e.pid === next.ppid && e.at <= next.at && (e.until ?? e.at) >= next.at - 1000
      const hit = events.find((e) => (processHits.get(e) ?? 0) < explains(e) && (hitFirst(e) || hitNext(e)))
      if (hit) {
        processHits.set(hit, (processHits.get(hit) ?? 0) + 1)
        continue
      }
      // A server fault that ended just before the first delivery's handler started may still have
      // held its reservation: a claim sent before a pause is applied after it, already expired.
      const server = events.find((e) => e.server && (serverHits.get(e) ?? 0) < workers * concurrency && e.at <= next.at && (e.until ?? e.at) >= d.at - 1000)
      if (server) {
        serverHits.set(server, (serverHits.get(server) ?? 0) + 1)
        continue
      }
      unexplained++
      if (samples.length < 10) {
        samples.push(`duplicate without a fault: ${id} delivered at ${iso(d.at)} (attempt ${d.attempt}, worker ${d.ppid}) and handled OK, delivered again at ${iso(next.at)} (attempt ${next.attempt}, worker ${next.ppid})`)
        // What a reader needs to explain it: the faults around it and what the two workers said.
        const near = events.filter((e) => e.at <= next.at + 1000 && (e.until ?? e.at) >= d.at - 10_000)
        samples.push(`  faults from 10 s before: ${near.map((e) => `${e.kind}${e.pid ? ` (pid ${e.pid})` : ''} ${iso(e.at)}${e.until ? `-${iso(e.until)}` : ''}`).join('; ') || 'none'}`)
        for (const pid of new Set([d.ppid, next.ppid])) {
          const run = q.workerRuns.find((r) => r.pid === pid)
          if (run) samples.push(`  worker ${pid}: ${iso(run.spawnAt)}-${run.exitAt ? iso(run.exitAt) : 'end'}, ${run.signal ?? `exit ${run.code}`}${run.stderr?.trim() ? `: ${run.stderr.trim().split('\n').slice(-2).join(' | ')}` : ''}`)
          // Its round trips from the first delivery to the redelivery (the slowest, if many).
          const trips = (run?.trace ?? []).filter((t) => t.at >= d.at - 100 && t.at <= next.at + 100)
          const shown = trips.length <= 12 ? trips : [...trips].sort((a, b) => tripMs(b) - tripMs(a)).slice(0, 12).sort((a, b) => a.at - b.at)
          if (shown.length > 0) samples.push(`    ${trips.length} round trips meanwhile${trips.length > shown.length ? ' (the 12 slowest)' : ''}: ${shown.map((t) => `${iso(t.at)} ${t.line}`).join('; ')}`)
        }
      }
    }
  }
  // Every worker fault is aimed at a worker with a message in hand (up to `concurrency` of them); a
  // server fault can catch every message in hand.
  const budget = events.filter((e) => e.group === 'queue').reduce((sum, e) => sum + explains(e), 0) + workers * concurrency * events.filter((e) => e.server).length
  checks.push({
    name: 'duplicates (handled OK, delivered again)',
    figure: duplicates,
    limit: `≤ ${budget}`,
    ok: unexplained === 0 && duplicates <= budget,
    must: true,
    note: unexplained ? `${unexplained} not explained by a fault` : undefined,
  })

  // Uncertain ids: reported only.
  const uncertainDelivered = [...q.uncertain].filter((id) => q.okIds.has(id) || dead.has(id)).length
  checks.push({name: 'uncertain ids (their push failed)', figure: q.uncertain.size, limit: 'reported', ok: true, must: false, note: `${uncertainDelivered} of them delivered anyway`})

  checks.push({name: 'drain until queue status is empty', figure: drain.drained ? seconds(drain.ms) : `not in ${seconds(drain.ms)}`, limit: `≤ ${seconds(drainLimitMs)}`, ok: drain.drained, must: true})
  const leftover = q.final ? q.final.waiting + q.final.inFlight + q.final.dead : undefined
  checks.push({name: 'messages left after the drain', figure: leftover ?? `status failed`, limit: 0, ok: leftover === 0 && !q.deadError, must: true, note: q.deadError})

  const facts = {
    pushed: q.confirmed.size,
    poison: [...q.confirmed.values()].filter((v) => v.poison).length,
    pushes: q.pushes,
    handled: q.okIds.size,
    deliveries: q.records.filter((r) => r.kind === 'start').length,
    workerRuns: q.workerRuns.length,
  }
  return {facts, checks, samples}
}

const tripMs = (t) => Number(/\((\d+) ?ms/.exec(t.line)?.[1] ?? 0)
const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`
const iso = (ms) => new Date(ms).toISOString().slice(11, 23)
