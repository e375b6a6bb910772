// The fault injector: one fault at a time, kinds in a fresh random order each round (so a short
// run still sees every kind; groups take turns within a round), a random pause between faults. Each fault picks a victim that makes
// it count (a holder in the middle of its critical section, a worker with a message in hand),
// injects, and waits — on conditions, with deadlines — until its effect is over before the next
// one starts, so that each measurement (how long the key stayed unusable, how soon a stale holder
// was stopped) belongs to one fault. Server faults exist only for servers the torture started.
import {isAlive, pick, randomBetween, signalPid, waitUntil} from './procs.mjs'

export const KINDS = [
  {name: 'kill -9 dlq (holding)', group: 'lock'},
  {name: 'kill -9 dlq (waiting)', group: 'lock'},
  {name: 'kill -9 command', group: 'lock'},
  {name: 'SIGSTOP dlq > TTL', group: 'lock'},
  {name: 'kill -9 worker', group: 'queue'},
  {name: 'kill -9 handler', group: 'queue'},
  {name: 'SIGSTOP worker > visibility', group: 'queue'},
  {name: 'SIGSTOP server > TTL', group: 'server'},
  {name: 'restart server', group: 'server'},
  // Through the TCP proxy in front of the server (proxy.mjs): only for a server the torture started.
  {name: 'partition (stall) > TTL', group: 'network'},
  {name: 'cut connections', group: 'network'},
  {name: 'slow server (50-300 ms a chunk)', group: 'network'},
  // Twice a round: a round of the others takes about 30 s, and a 30 s run should see two kills.
  {name: 'kill -9 master (Sentinel)', group: 'server', perRound: 2},
]

/** Whether `server` can take fault `kind`: server faults only for servers the torture started. */
export const offers = (server, kind) => {
  if (kind.name === 'kill -9 master (Sentinel)') return Boolean(server.killMaster)
  if (kind.group === 'network') return Boolean(server.network) // only behind the torture's proxy
  return kind.group !== 'server' || Boolean(server.pause)
}

const shuffle = (items) => {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

/**
 * A round: the kinds shuffled within their group, then dealt one group after the other (lock,
 * queue, server, network, lock, …), so that a short run (npm test's 30 s see eight or nine
 * faults) still meets every group.
 */
const dealRound = (kinds) => {
  const groups = [...new Set(kinds.map((k) => k.group))].map((g) => shuffle(kinds.filter((k) => k.group === g)))
  const out = []
  while (groups.some((g) => g.length > 0)) for (const g of groups) if (g.length > 0) out.push(g.shift())
  return out
}

export class Injector {
  /** Everything injected, in order: {kind, at, until?, pid?, owner?, measure?, server?}. */
  events = []
  counts = new Map(KINDS.map((k) => [k.name, 0]))
  /** Faults that found no victim in time (not injected). */
  missed = new Map()

  constructor({server, store, lockers, queues, ttlMs, killGraceMs, visibilityMs, log}) {
    Object.assign(this, {server, store, lockers, queues, ttlMs, killGraceMs, visibilityMs, log})
    this.kinds = KINDS.filter((k) => offers(server, k))
    // TORTURE_FAULTS=REGEX keeps only the kinds whose name matches (to hammer one fault).
    const only = process.env.TORTURE_FAULTS && new RegExp(process.env.TORTURE_FAULTS)
    if (only) this.kinds = this.kinds.filter((k) => only.test(k.name))
  }

  /** Injects faults until `untilMs` (epoch ms); the fault in progress then completes. */
  async run(untilMs) {
    let round = []
    while (Date.now() < untilMs && !this.aborted) {
      if (round.length === 0) round = dealRound(this.kinds.flatMap((k) => Array(k.perRound ?? 1).fill(k)))
      const kind = round.shift()
      const injected = await this.inject(kind.name)
      if (injected) this.counts.set(kind.name, this.counts.get(kind.name) + 1)
      else this.missed.set(kind.name, (this.missed.get(kind.name) ?? 0) + 1)
      await waitUntil(() => this.aborted || Date.now() >= untilMs, {timeoutMs: randomBetween(300, 1200), intervalMs: 50})
    }
  }

  note(event) {
    event.group = KINDS.find((k) => k.name === event.kind)?.group
    this.events.push(event)
    this.log?.(`${new Date(event.at).toISOString().slice(11, 23)} ${event.kind}${event.detail ? `: ${event.detail}` : ''}`)
    return event
  }

  /** A CS running now with a live dlq, optionally started within `freshMs` and long. */
  holder({long = false, freshMs = Number.POSITIVE_INFINITY} = {}) {
    const now = Date.now()
    return this.store.holders().find((a) => (!long || a.long) && now - a.start <= freshMs && isAlive(a.pid) && this.lockers.runOf(a)?.exitAt === undefined)
  }

  /** Waits for a long CS to begin (asking the store to hand one out), then a little into it. */
  async longHolder() {
    this.store.wantLong = true
    const holder = await waitUntil(() => this.holder({long: true, freshMs: 500}), {timeoutMs: 15_000})
    this.store.wantLong = false
    if (!holder) return undefined
    await waitUntil(() => holder.end !== undefined, {timeoutMs: randomBetween(100, 400)})
    return holder.end === undefined ? holder : undefined
  }

  /** After a fault that stopped the holder: the key is usable again once another CS begins. */
  recovered(after, owner, timeoutMs = this.ttlMs + 10_000) {
    return waitUntil(() => this.store.acquisitions.some((a) => a.start > after && a.owner !== owner), {timeoutMs})
  }

  async inject(kind) {
    const ttl = this.ttlMs
    switch (kind) {
      case 'kill -9 dlq (holding)': {
        const holder = await waitUntil(() => this.holder(), {timeoutMs: 10_000})
        const run = holder && this.lockers.runOf(holder)
        if (!run || !signalPid(run.pid, 'SIGKILL')) return false
        this.note({kind, at: Date.now(), owner: holder.owner, pid: run.pid, measure: 'unusable', detail: `token ${holder.tokenText}`})
        await this.recovered(Date.now(), holder.owner)
        return true
      }
      case 'kill -9 dlq (waiting)': {
        const waiting = () => this.lockers.live().filter((r) => Date.now() - r.spawnAt > 1000 && !this.store.holders().some((a) => a.ppid === r.pid))
        const runs = await waitUntil(() => waiting().length > 0 && waiting(), {timeoutMs: 10_000})
        const run = runs && pick(runs)
        if (!run || !signalPid(run.pid, 'SIGKILL')) return false
        this.note({kind, at: Date.now(), pid: run.pid})
        await this.recovered(Date.now(), undefined)
        return true
      }
      case 'kill -9 command': {
        const holder = await waitUntil(() => this.holder(), {timeoutMs: 10_000})
        if (!holder || !signalPid(holder.pid, 'SIGKILL')) return false
        this.note({kind, at: Date.now(), owner: holder.owner, pid: holder.pid, measure: 'unusable', detail: `token ${holder.tokenText}`})
        await this.recovered(Date.now(), holder.owner)
        return true
      }
      case 'SIGSTOP dlq > TTL': {
        const holder = await this.longHolder()
        const run = holder && this.lockers.runOf(holder)
        if (!run || !signalPid(run.pid, 'SIGSTOP')) return false
        const event = this.note({kind, at: Date.now(), owner: holder.owner, pid: run.pid, measure: 'unusable', detail: `token ${holder.tokenText}`})
        await waitUntil(() => this.aborted, {timeoutMs: randomBetween(ttl + 500, ttl + 2500)})
        signalPid(run.pid, 'SIGCONT')
        event.until = Date.now()
        await waitUntil(() => run.exitAt !== undefined, {timeoutMs: 10_000})
        return true
      }
      case 'kill -9 worker': {
        const busy = await waitUntil(() => pick(this.queues.busyWorkers()), {timeoutMs: 10_000, intervalMs: 5})
        if (!busy || !signalPid(busy.run.pid, 'SIGKILL')) return false
        this.note({kind, at: Date.now(), pid: busy.run.pid})
        return true
      }
      case 'kill -9 handler': {
        const busy = await waitUntil(() => pick(this.queues.busyWorkers()), {timeoutMs: 10_000, intervalMs: 5})
        if (!busy || !signalPid(busy.handler, 'SIGKILL')) return false
        this.note({kind, at: Date.now(), pid: busy.handler})
        return true
      }
      case 'SIGSTOP worker > visibility': {
        const busy = await waitUntil(() => pick(this.queues.busyWorkers()), {timeoutMs: 10_000, intervalMs: 5})
        if (!busy || !signalPid(busy.run.pid, 'SIGSTOP')) return false
        const event = this.note({kind, at: Date.now(), pid: busy.run.pid})
        await waitUntil(() => this.aborted, {timeoutMs: this.visibilityMs + 1000})
        signalPid(busy.run.pid, 'SIGCONT')
        event.until = Date.now()
        return true
      }
      case 'SIGSTOP server > TTL': {
        const holder = await this.longHolder()
        if (!holder) return false
        this.server.pause()
        const event = this.note({kind, at: Date.now(), server: true, measure: 'stale-stop', detail: `holder token ${holder.tokenText}`})
        await waitUntil(() => this.aborted, {timeoutMs: randomBetween(ttl + 500, ttl + 2000)})
        this.server.resume()
        event.until = Date.now()
        await waitUntil(() => holder.end !== undefined, {timeoutMs: ttl + this.killGraceMs + 10_000})
        await this.recovered(event.until, undefined, 30_000)
        return true
      }
      case 'restart server': {
        const at = Date.now()
        await this.server.restart()
        this.note({kind, at, until: Date.now(), server: true, detail: `serving again after ${Date.now() - at} ms`})
        await this.recovered(Date.now(), undefined, 30_000)
        return true
      }
      // The network faults count as server faults for the checks (`server: true`): the server is
      // away for everyone at once, each worker may lose the message in hand.
      case 'partition (stall) > TTL': {
        // The holder's dlq (and a worker with a message in hand, if one is at it) is cut off from
        // the server while the others still reach it: they take the key once its lease is over,
        // so the holder must have stopped its command by then.
        const holder = await this.longHolder()
        const run = holder && this.lockers.runOf(holder)
        if (!run) return false
        const busy = pick(this.queues.busyWorkers())
        this.server.network.stall(busy ? [run.pid, busy.run.pid] : [run.pid])
        const event = this.note({kind, at: Date.now(), server: true, measure: 'partition-stop', owner: holder.owner, pid: busy?.run.pid, detail: `holder token ${holder.tokenText}${busy ? ` and worker ${busy.run.pid}` : ''}`})
        await waitUntil(() => this.aborted, {timeoutMs: randomBetween(ttl + 500, ttl + 2000)})
        this.server.network.pass()
        event.until = Date.now()
        await waitUntil(() => holder.end !== undefined, {timeoutMs: ttl + this.killGraceMs + 10_000})
        await this.recovered(event.until, undefined, 30_000)
        return true
      }
      case 'cut connections': {
        // Every connection reset, and new ones refused for less than the TTL: a holder that
        // reconnects in time keeps its lease.
        const holder = await waitUntil(() => this.holder(), {timeoutMs: 10_000})
        if (!holder) return false
        const refuseMs = Math.round(randomBetween(200, 1500))
        this.server.network.drop(true)
        this.server.network.cut()
        const event = this.note({kind, at: Date.now(), server: true, owner: holder.owner, detail: `holder token ${holder.tokenText}, new connections refused for ${refuseMs} ms`})
        await waitUntil(() => this.aborted, {timeoutMs: refuseMs})
        this.server.network.pass()
        event.until = Date.now()
        await waitUntil(() => holder.end !== undefined, {timeoutMs: ttl + this.killGraceMs + 10_000})
        await this.recovered(event.until, undefined, 30_000)
        return true
      }
      case 'slow server (50-300 ms a chunk)': {
        const holder = await waitUntil(() => this.holder(), {timeoutMs: 10_000})
        if (!holder) return false
        const delayMs = Math.round(randomBetween(50, 300))
        this.server.network.slow(delayMs)
        const event = this.note({kind, at: Date.now(), server: true, owner: holder.owner, detail: `${delayMs} ms a chunk each way`})
        await waitUntil(() => this.aborted, {timeoutMs: randomBetween(ttl + 500, ttl + 2500)})
        this.server.network.pass()
        event.until = Date.now()
        await this.recovered(event.until, undefined, 30_000)
        return true
      }
      case 'kill -9 master (Sentinel)': {
        // Resolves once a replica is promoted and the killed server is back as its replica, in sync.
        const at = Date.now()
        const killing = await this.server.killMaster()
        if (!killing) return false // no replica the Sentinels could promote within 30 s: missed
        const {killed, promoted, promotedMs, readyMs, link} = killing
        const back = readyMs === undefined ? `not yet back in sync and promotable 30 s after the kill (link ${link}; the next kill waits for it)` : `back as its replica after ${readyMs} ms`
        this.note({kind, at, until: Date.now(), server: true, detail: `master :${killed} killed, :${promoted} promoted after ${promotedMs} ms, :${killed} ${back}`})
        await this.recovered(Date.now(), undefined, 30_000)
        return true
      }
      default:
        throw new Error(`unknown fault ${kind}`)
    }
  }

}
