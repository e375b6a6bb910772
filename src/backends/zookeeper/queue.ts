// ZooKeeper queues, after the queue recipe of the ZooKeeper documentation (kazoo/recipe/queue.py:
// sequential nodes, take the lowest) with kazoo's LockingQueue idea of moving a message aside while
// it is worked on, made atomic with a multi:
//
//   queues/<queue>/waiting/m<seq>[.<deliveries>]                     data: {"e":enqueued}\n<body>
//   queues/<queue>/claimed/m<seq>.<delivery>.<deadline>.<reserver>   the same data
//
// - push: one multi of PERSISTENT_SEQUENTIAL creates per ~1 MB, so a batch is stored in order, all
//   at once; the sequence number is the message id and FIFO order.
// - reserve: read the lowest waiting nodes, then claim them with a multi of {delete waiting/X,
//   create claimed/Y} pairs, as many as fit one request. Two poppers cannot both claim X: the delete
//   of a node that is gone fails, and with it the whole multi (the loser tries the rest again, then
//   one by one). A waiting node's name says how often it was delivered, so the same name always
//   holds the same data: a claim built on a stale read is still a correct claim.
// - the claim's deadline (server clock, see connection.ts) and its reserver are in its name, so
//   listing claimed/ is enough to find expired claims; whoever lists them returns them to waiting/
//   (one multi each), or moves them to the queue <queue>.dead once --max-attempts deliveries are
//   used up. extend renames the claim to a later deadline, again by one multi.
// - ack deletes the claims (one multi); retry and release move a claim back by one multi. A claim that is gone
//   (expired and taken by another popper) is left alone: its new owner settles it. A retry with a
//   delay (pop --retry-delay) renames the claim to the deadline now+delay under the reserver
//   "later", which no popper is: it waits in claimed/, its delivery counted, until a sweep
//   returns it like any expired claim.
// - waiting (pop --wait, tail --follow) is a child watch on waiting/ plus a timer for the earliest
//   claim deadline; a slow poll remains as the fallback. A queue not made yet is waited on with
//   an exists watch: only a push creates a queue's nodes.
// - push with a delay creates PERSISTENT_SEQUENTIAL nodes waiting/d<due>-<seq> (the due time on
//   the server's clock, taken at its latest); no reader parses them as messages, and the first
//   reserve after that time (the server's clock past it for sure) renames each to waiting/m<seq>
//   by one multi: the same id, its place by sequence number. follow counts them as seen.
// - delete removes the queue's nodes and its dead letters', children first.
// ZooKeeper keeps every znode in memory and lists a directory in one reply: it suits queues of
// thousands of messages, not millions.
import type {Watcher} from 'node-zookeeper-client'

import {dataError} from '../../errors.js'
import {inBatches} from '../inbatches.js'
import type {Message, Outcome, PushOptions, QueueDriver, QueueStats, ReserveRequest, SettleOptions} from '../types.js'
import {Wakeup} from '../wakeup.js'
import {Code, isCode, isConnectionLoss, Mode, type Op, type Session, time} from './connection.js'
import {basename, decodeName, type Layout} from './paths.js'

// jute.maxbuffer (the server's default limit of one request, 0xfffff bytes) must hold a claim: a
// multi that deletes one node and creates another with the message, both named by long paths.
const juteMaxBuffer = 0xfffff
const requestOverhead = 4096
const multiBytes = 900 * 1024
const fallbackPollMs = 3000

const waitingName = /^m(\d{10})(?:\.(\d+))?$/
/** A message pushed with a delay: PERSISTENT_SEQUENTIAL in waiting/ (so it has its id), due then. */
const delayedName = /^d(\d{13})-(\d{10})$/
const claimName = /^m(\d{10})\.(\d+)\.(\d{13})\.([0-9a-z]+)$/
/** The reserver of a claim waiting out a retry delay: a word no reserver id is (those start with a time). */
const laterReserver = 'later'

interface Waiting {
  name: string
  seq: string
  deliveries: number
}

interface Claim {
  name: string
  seq: string
  delivery: number
  deadline: number
  reserver: string
}

function parseWaiting(name: string): Waiting | undefined {
  const m = waitingName.exec(name)
  return m ? {name, seq: m[1], deliveries: Number(m[2] ?? 0)} : undefined
}

interface Delayed {
  name: string
  seq: string
  due: number
}

function parseDelayed(name: string): Delayed | undefined {
  const m = delayedName.exec(name)
  return m ? {name, seq: m[2], due: Number(m[1])} : undefined
}

function parseClaim(name: string): Claim | undefined {
  const m = claimName.exec(name)
  return m ? {name, seq: m[1], delivery: Number(m[2]), deadline: Number(m[3]), reserver: m[4]} : undefined
}

/** A claim about to be committed. */
interface Claiming {
  from: string
  to: string
  bytes: number
  ops: Op[]
  message: Message
}

// Reads in flight at once. node-zookeeper-client copies the rest of its receive buffer once per
// reply it takes out of it, so a thousand pipelined replies cost quadratic copying and GC.
const readsInFlight = 64


/** Splits items into runs that fit one request: at most multiBytes and 1000 items each. */
function chunks<T>(items: T[], size: (item: T) => number): T[][] {
  const out: T[][] = []
  let current: T[] = []
  let bytes = 0
  for (const item of items) {
    const n = size(item) + 64
    if (current.length > 0 && (bytes + n > multiBytes || current.length >= 1000)) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += n
  }
  if (current.length > 0) out.push(current)
  return out
}

const waitingFile = (seq: string, deliveries: number) => (deliveries > 0 ? `m${seq}.${deliveries}` : `m${seq}`)
const claimFile = (c: Omit<Claim, 'name'>) => `m${c.seq}.${c.delivery}.${String(c.deadline).padStart(13, '0')}.${c.reserver}`
const idOf = (seq: string) => String(Number(seq))

function encode(enqueuedAt: number | undefined, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${enqueuedAt === undefined ? '{}' : JSON.stringify({e: enqueuedAt})}\n`), body])
}

function decode(data: Buffer): {enqueuedAt?: number; body: Buffer} {
  const nl = data.indexOf(10)
  try {
    const header = JSON.parse(data.subarray(0, nl).toString('utf8')) as {e?: number}
    return {enqueuedAt: header.e, body: data.subarray(nl + 1)}
  } catch {
    return {body: data}
  }
}

export class ZooKeeperQueues implements QueueDriver {
  readonly maxMessageBytes: number
  /** This process's id in claim names. */
  private readonly reserver = `${Date.now().toString(36)}${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 6).toString(36)}`
  /** Extensions in flight, per message id: settle waits for them (an extension renames the claim). */
  private readonly extending = new Map<string, Promise<boolean>>()

  constructor(
    private readonly session: Session,
    private readonly paths: Layout,
  ) {
    const longestPath = paths.queues.length + 1 + 255 * 3 + '.dead/claimed/'.length + 64
    this.maxMessageBytes = juteMaxBuffer - 2 * longestPath - requestOverhead
  }

  private async dirs(queue: string): Promise<{waiting: string; claimed: string}> {
    const dirs = this.paths.queue(queue)
    await Promise.all([this.session.ensurePath(dirs.waiting), this.session.ensurePath(dirs.claimed)])
    return dirs
  }

  private async list(dir: string, watcher?: Watcher): Promise<string[]> {
    try {
      return (await this.session.getChildren(dir, watcher)).children.sort()
    } catch (error) {
      if (isCode(error, Code.NO_NODE)) return []
      throw error
    }
  }

  /** Runs a multi; false when a node it needs is gone (someone else was first). */
  private async attempt(ops: Op[], recover?: () => Promise<boolean>): Promise<boolean> {
    try {
      await this.session.multi(ops)
      return true
    } catch (error) {
      if (isCode(error, Code.NO_NODE, Code.NODE_EXISTS)) return false
      if (recover && isConnectionLoss(error)) return recover()
      throw error
    }
  }

  async push(queue: string, bodies: Buffer[], options: PushOptions = {}): Promise<string[]> {
    if (bodies.length === 0) return []
    const big = bodies.findIndex((b) => b.length > this.maxMessageBytes)
    if (big !== -1) throw dataError(`message ${big + 1} is too large`, `${bodies[big].length} bytes, over ZooKeeper's limit of ${this.maxMessageBytes} bytes (jute.maxbuffer)`, 'nothing of this batch was pushed')
    // Due once the server's clock is past it for sure (clock.ts): never early.
    const due = options.at?.getTime() ?? (options.delayMs ? (await this.session.serverNow()).latest + options.delayMs : undefined)
    const prefix = due !== undefined && due > this.session.clockNow().earliest ? `d${String(Math.ceil(due)).padStart(13, '0')}-` : 'm'
    const {waiting} = await this.dirs(queue)
    const ids: string[] = []
    // One multi per request's worth, one after the other: each is stored whole, and in order.
    for (const chunk of chunks(bodies, (b) => b.length + waiting.length)) {
      const results = await this.session.multi(chunk.map((body) => ({op: 'create', path: `${waiting}/${prefix}`, data: encode(undefined, body), mode: Mode.PERSISTENT_SEQUENTIAL})))
      for (const result of results) ids.push(idOf(basename(result.path ?? '').slice(-10)))
    }
    return ids
  }

  /**
   * Delayed messages whose time has come become waiting ones under their own sequence number (one
   * multi each; racing poppers: one wins); resolves with the earliest due time still ahead.
   */
  private async release(waiting: string, names: string[], now: number): Promise<number> {
    let earliest = Number.POSITIVE_INFINITY
    await Promise.all(names.map(async (name) => {
      const delayed = parseDelayed(name)
      if (!delayed) return
      if (delayed.due > now) {
        earliest = Math.min(earliest, delayed.due)
        return
      }
      try {
        const {data, stat} = await this.session.getData(`${waiting}/${name}`)
        const {enqueuedAt, body} = decode(data)
        await this.attempt([{op: 'remove', path: `${waiting}/${name}`}, {op: 'create', path: `${waiting}/${waitingFile(delayed.seq, 0)}`, data: encode(enqueuedAt ?? time(stat.ctime), body), mode: Mode.PERSISTENT}])
      } catch (error) {
        if (!isCode(error, Code.NO_NODE)) throw error
      }
    }))
    return earliest
  }

  /** Moves a message out of `from` into waiting/ (deliveries kept) or into the dead letters. */
  private async returnMessage(queue: string, from: string, seq: string, deliveries: number, data: Buffer, maxAttempts: number): Promise<boolean> {
    if (deliveries >= maxAttempts) {
      const dead = await this.dirs(`${queue}.dead`)
      const {enqueuedAt, body} = decode(data)
      return this.attempt([{op: 'remove', path: from}, {op: 'create', path: `${dead.waiting}/m`, data: encode(enqueuedAt, body), mode: Mode.PERSISTENT_SEQUENTIAL}])
    }
    const {waiting} = this.paths.queue(queue)
    return this.attempt([{op: 'remove', path: from}, {op: 'create', path: `${waiting}/${waitingFile(seq, deliveries)}`, data, mode: Mode.PERSISTENT}])
  }

  /** Returns expired claims; resolves with the earliest deadline still pending (server clock). */
  private async sweep(queue: string, claimed: string, names: string[], now: number, maxAttempts: number): Promise<number> {
    let earliest = Number.POSITIVE_INFINITY
    await Promise.all(names.map(async (name) => {
      const claim = parseClaim(name)
      if (!claim) return
      if (claim.deadline > now) {
        earliest = Math.min(earliest, claim.deadline)
        return
      }
      try {
        const {data} = await this.session.getData(`${claimed}/${name}`)
        await this.returnMessage(queue, `${claimed}/${name}`, claim.seq, claim.delivery, data, maxAttempts)
      } catch (error) {
        if (!isCode(error, Code.NO_NODE)) throw error
      }
    }))
    return earliest
  }

  /** What a claim will do: read, named, not yet committed. */
  private async prepareClaims(queue: string, dirs: {waiting: string; claimed: string}, entries: Waiting[], request: ReserveRequest): Promise<Claiming[]> {
    const reads = await inBatches(entries, readsInFlight, async (entry) => {
      const from = `${dirs.waiting}/${entry.name}`
      try {
        return {entry, from, ...(await this.session.getData(from))}
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return undefined // taken meanwhile
        throw error
      }
    })
    const claims: Claiming[] = []
    // A claim lasts --visibility from now, after the reads (which a busy server can make slow),
    // from the latest the server's clock can be (clock.ts).
    const now = this.session.clockNow().latest
    for (const read of reads) {
      if (!read) continue
      const {entry, from} = read
      if (entry.deliveries >= request.maxAttempts) {
        await this.returnMessage(queue, from, entry.seq, entry.deliveries, read.data, request.maxAttempts)
        continue
      }
      const {enqueuedAt, body} = decode(read.data)
      const enqueued = enqueuedAt ?? time(read.stat.ctime)
      const delivery = entry.deliveries + 1
      const name = claimFile({seq: entry.seq, delivery, deadline: Math.ceil(now + request.visibilityMs), reserver: this.reserver})
      const to = `${dirs.claimed}/${name}`
      const data = encode(enqueued, body)
      claims.push({
        from, to, bytes: data.length + from.length + to.length,
        ops: [{op: 'remove', path: from}, {op: 'create', path: to, data, mode: Mode.PERSISTENT}],
        message: {id: idOf(entry.seq), body, enqueuedAt: new Date(enqueued), attempts: delivery, receipt: name},
      })
    }
    return claims
  }

  /**
   * Commits claims in as few multis as fit a request, each all or nothing. A multi that fails lost
   * a race for at least one message: the rest are tried again, then one by one.
   */
  private async commitClaims(dirs: {waiting: string}, claims: Claiming[], retried = false): Promise<Message[]> {
    const out: Message[] = []
    const failed: Claiming[] = []
    for (const chunk of chunks(claims, (c) => c.bytes)) {
      // A lost reply: the claim happened if its first node (named for this process) exists.
      const ok = await this.attempt(chunk.flatMap((c) => c.ops), async () => (await this.session.exists(chunk[0].to)) !== null)
      if (ok) out.push(...chunk.map((c) => c.message))
      else failed.push(...chunk)
    }
    if (failed.length === 0) return out
    if (failed.length === 1 || retried) {
      const one = await Promise.all(failed.map(async (c) => ((await this.attempt(c.ops, async () => (await this.session.exists(c.to)) !== null)) ? c.message : undefined)))
      return [...out, ...one.filter((m): m is Message => m !== undefined)]
    }
    const still = new Set(await this.list(dirs.waiting))
    return [...out, ...(await this.commitClaims(dirs, failed.filter((c) => still.has(basename(c.from))), true))]
  }

  private async reserveOnce(queue: string, dirs: {waiting: string; claimed: string}, request: ReserveRequest, watcher?: Watcher): Promise<{messages: Message[]; waiting: number; nextDue: number}> {
    let [waitingNames, claimedNames] = await Promise.all([this.list(dirs.waiting, watcher), this.list(dirs.claimed)])
    // Nothing listed: perhaps no queue yet, whose creation only an exists watch reports.
    if (waitingNames.length === 0 && !(await this.exists(dirs.waiting, watcher))) return {messages: [], waiting: 0, nextDue: Number.POSITIVE_INFINITY}
    // Others' claims are over when the server's clock is past them for sure (clock.ts).
    const now = await this.session.serverNow()
    const nextDelayed = await this.release(dirs.waiting, waitingNames, now.earliest)
    if (waitingNames.some((name) => (parseDelayed(name)?.due ?? Infinity) <= now.earliest)) waitingNames = await this.list(dirs.waiting)
    const nextDue = Math.min(nextDelayed, await this.sweep(queue, dirs.claimed, claimedNames, now.earliest, request.maxAttempts))
    const entries = waitingNames.map(parseWaiting).filter((w): w is Waiting => w !== undefined)
    const messages: Message[] = []
    // The lowest first; what others took first is skipped for the next ones in line.
    for (let at = 0; at < entries.length && messages.length < request.count;) {
      const batch = entries.slice(at, at + request.count - messages.length)
      at += batch.length
      messages.push(...(await this.commitClaims(dirs, await this.prepareClaims(queue, dirs, batch, request))))
    }
    return {messages, waiting: entries.length, nextDue}
  }

  /**
   * Whether a queue's node exists; when it does not and a watcher is given, the watcher is set on
   * it (an exists watch fires on its creation): a pop or tail waits for a push to make the queue
   * and creates nothing.
   */
  private async exists(path: string, watcher?: Watcher): Promise<boolean> {
    if ((await this.session.exists(path)) !== null) return true
    return watcher !== undefined && (await this.session.exists(path, watcher)) !== null
  }

  async reserve(queue: string, request: ReserveRequest): Promise<Message[]> {
    const dirs = this.paths.queue(queue)
    const deadline = Date.now() + request.waitMs
    return this.waitFor(request.signal, deadline, async (watcher) => {
      const {messages, waiting, nextDue} = await this.reserveOnce(queue, dirs, request, watcher)
      // Messages were listed but others took them all: look again at once rather than wait.
      return {done: messages.length > 0, value: messages, retryNow: waiting > 0 || nextDue <= this.session.clockNow().earliest, next: nextDue}
    }, [])
  }

  /**
   * Runs `attempt` until it is done or the deadline passes, sleeping until the watch it set fires,
   * its `next` time (server clock) comes, or the slow fallback poll.
   */
  private async waitFor<T>(signal: AbortSignal, deadline: number, attempt: (watcher?: Watcher) => Promise<{done: boolean; value: T; retryNow?: boolean; next: number}>, timedOut: T): Promise<T> {
    const wakeup = new Wakeup(signal)
    const onChange = wakeup.wake
    const stopSessionWatch = this.session.onChange(onChange)
    let retries = 0
    let troubleSince: number | undefined
    try {
      for (;;) {
        signal.throwIfAborted()
        wakeup.changed = false
        let result
        try {
          result = await attempt(Date.now() < deadline ? onChange : undefined)
        } catch (error) {
          // The connection dropped: the client reconnects, and the attempt starts over.
          troubleSince ??= Date.now()
          if (signal.aborted || !this.session.retryable(error, troubleSince)) throw error
          await new Promise((resolve) => setTimeout(resolve, 100))
          continue
        }
        troubleSince = undefined
        if (result.done) return result.value
        // Even a pop --wait 0 looks again when it lost every race: the queue is not empty.
        if (result.retryNow && retries++ < 100) continue
        if (Date.now() >= deadline) return timedOut
        if (wakeup.changed) continue
        const next = result.next - (this.session.clockNow().earliest - Date.now())
        const sleep = Math.max(1, Math.min(deadline - Date.now(), next - Date.now() + 1, fallbackPollMs))
        await wakeup.sleep(sleep)
      }
    } finally {
      wakeup.dispose()
      stopSessionWatch()
    }
  }

  async settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number, options: SettleOptions = {}): Promise<void> {
    if (messages.length === 0) return
    const {waiting, claimed} = this.paths.queue(queue)
    await Promise.all(messages.map((m) => this.extending.get(m.id)))
    const mine = messages.filter((m) => parseClaim(m.receipt)?.reserver === this.reserver)
    if (outcome === 'ack') {
      // All at once; if some claim is gone (expired and taken by another popper), one by one.
      const remove = (m: Message): Op => ({op: 'remove', path: `${claimed}/${m.receipt}`})
      for (const chunk of chunks(mine, (m) => m.receipt.length + claimed.length)) {
        if (await this.attempt(chunk.map(remove))) continue
        await Promise.all(chunk.map((m) => this.attempt([remove(m)])))
      }
      return
    }
    await Promise.all(mine.map(async (message) => {
      const claim = parseClaim(message.receipt)!
      const path = `${claimed}/${message.receipt}`
      const data = encode(message.enqueuedAt.getTime(), message.body)
      const delayMs = outcome === 'retry' ? options.retryDelayMs ?? 0 : 0
      if (outcome === 'release') {
        await this.attempt([{op: 'remove', path}, {op: 'create', path: `${waiting}/${waitingFile(claim.seq, claim.delivery - 1)}`, data, mode: Mode.PERSISTENT}])
      } else if (delayMs > 0 && claim.delivery < maxAttempts) {
        // Due once the server's clock is past now+delay for sure (clock.ts): never early.
        const later = claimFile({...claim, deadline: Math.ceil((await this.session.serverNow()).latest + delayMs), reserver: laterReserver})
        await this.attempt([{op: 'remove', path}, {op: 'create', path: `${claimed}/${later}`, data, mode: Mode.PERSISTENT}])
      } else {
        await this.returnMessage(queue, path, claim.seq, claim.delivery, data, maxAttempts)
      }
    }))
  }

  async extend(queue: string, message: Message, visibilityMs: number): Promise<boolean> {
    const previous = this.extending.get(message.id) ?? Promise.resolve(true)
    const next = previous.then(async () => {
      const claim = parseClaim(message.receipt)
      if (!claim || claim.reserver !== this.reserver) return false
      const now = await this.session.serverNow()
      if (claim.deadline <= now.earliest) return false // expired: someone may have returned it already
      const {claimed} = this.paths.queue(queue)
      const name = claimFile({...claim, deadline: Math.ceil(now.latest + visibilityMs)})
      const moved = await this.attempt([
        {op: 'remove', path: `${claimed}/${message.receipt}`},
        {op: 'create', path: `${claimed}/${name}`, data: encode(message.enqueuedAt.getTime(), message.body), mode: Mode.PERSISTENT},
      ])
      if (moved) message.receipt = name
      return moved
    })
    const settled = next.catch(() => false)
    this.extending.set(message.id, settled)
    try {
      return await next
    } finally {
      if (this.extending.get(message.id) === settled) this.extending.delete(message.id)
    }
  }

  private async read(dir: string, entries: Waiting[]): Promise<Message[]> {
    const messages = await inBatches(entries, readsInFlight, async (entry) => {
      try {
        const {data, stat} = await this.session.getData(`${dir}/${entry.name}`)
        const {enqueuedAt, body} = decode(data)
        return {id: idOf(entry.seq), body, enqueuedAt: new Date(enqueuedAt ?? time(stat.ctime)), attempts: entry.deliveries, receipt: ''}
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return undefined // reserved meanwhile: no longer waiting
        throw error
      }
    })
    return messages.filter((m): m is Message => m !== undefined)
  }

  async peek(queue: string, count: number): Promise<Message[]> {
    // Delayed messages (d… nodes) are left out; once due, a pop makes them m… nodes.
    const {waiting} = this.paths.queue(queue)
    const entries = (await this.list(waiting)).map(parseWaiting).filter((w): w is Waiting => w !== undefined)
    const out: Message[] = []
    for (let end = entries.length; end > 0 && out.length < count;) {
      const start = Math.max(0, end - (count - out.length))
      out.unshift(...(await this.read(waiting, entries.slice(start, end))))
      end = start
    }
    return out
  }

  async follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void> {
    const {waiting} = this.paths.queue(queue)
    // What is there already is history (tail -n prints it); new pushes have higher sequence
    // numbers. A delayed message (d…) counts as seen when pushed: once due it is not shown.
    const seqOf = (name: string) => parseWaiting(name)?.seq ?? parseDelayed(name)?.seq
    const highestOf = (names: string[], from: string) => names.reduce((max, name) => {
      const seq = seqOf(name)
      return seq !== undefined && seq > max ? seq : max
    }, from)
    let highest = highestOf(await this.list(waiting), '')
    await this.waitFor(signal, Number.POSITIVE_INFINITY, async (watcher) => {
      // A queue not made yet: the exists watch wakes us when a push makes it.
      const names = await this.list(waiting, watcher)
      if (names.length === 0) await this.exists(waiting, watcher)
      const fresh = names.map(parseWaiting).filter((w): w is Waiting => w !== undefined && w.seq > highest)
      highest = highestOf(names.filter((name) => parseDelayed(name) !== undefined), highest)
      if (fresh.length > 0) {
        highest = fresh.reduce((max, w) => (w.seq > max ? w.seq : max), highest)
        const messages = await this.read(waiting, fresh)
        if (messages.length > 0) await onMessages(messages)
      }
      return {done: false, value: undefined, next: Number.POSITIVE_INFINITY}
    }, undefined).catch((error: unknown) => {
      if (!signal.aborted) throw error
    })
  }

  async stats(queue?: string): Promise<QueueStats[]> {
    let names: string[]
    if (queue !== undefined) names = [queue]
    else names = (await this.list(this.paths.queues)).map(decodeName)
    const all = new Set(names)
    const now = this.session.clockNow().earliest
    const out: QueueStats[] = []
    for (const name of [...all].sort()) {
      if (queue === undefined && name.endsWith('.dead') && all.has(name.slice(0, -5))) continue
      const dirs = this.paths.queue(name)
      const dead = this.paths.queue(`${name}.dead`)
      const [waiting, claimed, deadWaiting, deadClaimed] = await Promise.all([dirs.waiting, dirs.claimed, dead.waiting, dead.claimed].map((d) => this.list(d)))
      const claims = claimed.map(parseClaim).filter((c): c is Claim => c !== undefined)
      const inFlight = claims.filter((c) => c.deadline > now).length
      const dues = waiting.map(parseDelayed).filter((d): d is Delayed => d !== undefined)
      const delayed = dues.filter((d) => d.due > now).length
      const ready = waiting.filter((n) => parseWaiting(n)).length + dues.length - delayed
      const oldest = waiting.find((n) => parseWaiting(n))
      let oldestAgeMs: number | undefined
      if (oldest) {
        const [message] = await this.read(dirs.waiting, [parseWaiting(oldest)!])
        if (message) oldestAgeMs = Math.max(0, now - message.enqueuedAt.getTime())
      }
      out.push({
        queue: name,
        waiting: ready + claims.length - inFlight,
        delayed,
        inFlight,
        dead: deadWaiting.length + deadClaimed.length,
        ...(oldestAgeMs === undefined ? {} : {oldestAgeMs}),
      })
    }
    return out
  }

  /**
   * Removes the queue's tree and its dead letters' (children first; a push racing in makes the
   * parent's remove fail NOT_EMPTY, and the tree is listed again).
   */
  async deleteQueue(queue: string): Promise<boolean> {
    let found = false
    for (const root of [this.paths.queue(queue).root, this.paths.queue(`${queue}.dead`).root]) {
      if (await this.removeTree(root)) found = true
      this.session.forget(root)
    }
    return found
  }

  private async removeTree(path: string): Promise<boolean> {
    for (let tries = 0; ; tries++) {
      let children: string[]
      try {
        children = (await this.session.getChildren(path)).children
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return false
        throw error
      }
      await inBatches(children, readsInFlight, (child) => this.removeTree(`${path}/${child}`))
      try {
        await this.session.remove(path)
        return true
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return true
        if (!isCode(error, Code.NOT_EMPTY) || tries >= 100) throw error
      }
    }
  }
}
