// File-backend queues: a Maildir/dirq-style directory queue (cern-mig/python-dirq) in which every
// change is one rename, link or unlink, so that a process killed at any system call leaves one of
// the states listed below, each with a named recoverer.
//
//   queues/<queue>/tmp/  batches being written by push (never read by anyone else)
//   queues/<queue>/new/  waiting:  <batch>.<start>.<count>.<deliveries>
//   queues/<queue>/cur/  claimed:  <batch>.<start>.<count>.<deliveries>.<deadline ms>.<reserver>
//                        split:    <batch>.<start>.<count>.<deliveries>.<deadline ms>.<reserver>.split<take>
//
// A batch is one file, written once by push ("DLQ1 <first index>\n", then "<length>\n<bytes>\n" per
// message) and never rewritten. Each name of it is a hard link that stands for the messages
// [start, start+count) of the batch, so a split is a link plus a rename, never a copy, and a
// message is gone once no name covers it. Names sort by batch (<ms><seq>-<random>): FIFO order.
//
// Steps, one system call each:
//   push    T1 open tmp/F O_EXCL (EEXIST: draw another name), T2 writev, T3 fdatasync, T4 rename
//           tmp/F → new/F, T5 fsync new/. Exit 0 only after T5. A push with a delay (--delay,
//           --at) renames instead to cur/<all of F, no delivery, deadline its due time, reserver
//           "later"> and fsyncs cur/: D1's state, which a sweep returns (R1) once due, so it
//           waits invisible and then sorts in new/ by its batch (push order). Only a push makes a
//           claim on no delivery: `queue status` counts those as delayed.
//   delete  X1 rename queues/<Q> → queues/.deleted-<random> (no name decodes with a leading dot),
//           the same for Q.dead, then rm -r of every .deleted-* (a killed delete's too). A pop
//           waiting in the renamed directory sees that its name is gone and waits for a new one.
// Readers create nothing: pop, tail and settle use a queue's directory only if it exists, and
// wait for a push to make it with a watch on queues/.
//   claim   C1 rename new/W → cur/<claim of all of W>: of racing reservers exactly one succeeds.
//   split   (W holds more than the `take` messages wanted) S1 rename new/W → cur/<split>: all of W,
//           naming how many are taken; S2 link cur/<split> → cur/<claim of the first `take`>;
//           S3 rename cur/<split> → new/<the rest, same batch: it sorts where W did>.
//   ack     A1 unlink cur/<claim>. Acking the first k of a claim is A1' rename cur/<claim> →
//           cur/<claim of the rest>: the first k lose their last name in the same step.
//   return  R1 rename cur/<claim> → new/<waiting> (retry, expiry; release with one delivery less)
//           or → <queue>.dead/new/<…> (the last attempt; mkdir of that queue first, idempotent).
//   extend  E1 rename cur/<claim> → cur/<the same claim with a later deadline>.
//   retry later (pop --retry-delay) D1 rename cur/<claim> → cur/<the same range and deliveries,
//           deadline now+delay, reserver "later">: E1's step under a name no reserver settles or
//           extends, so the message waits out its delay in flight, its delivery counted, and at the
//           deadline any reserver's sweep returns it (R1) as it returns an expired claim. A claim
//           on its last delivery takes R1 to the dead letters instead, at once.
//
// What a kill right after each step leaves, and who recovers it (a kill before T1, C1 or S1
// leaves nothing):
//   T1–T3   a file in tmp/: never visible, never confirmed (the push did not exit 0). Any
//           reserver that has not looked for an hour unlinks tmp/ files older than an hour; its
//           name is unique, so it stands in nobody's way meanwhile.
//   T4      new/F before its fsync: waiting, as after a push whose reply was lost.
//   C1      a claim: in flight until its deadline, then any reserver's sweep returns it (R1).
//   S1      a split without its claim: in flight until its deadline (the claim's: the rest is
//           invisible for at most --visibility), then a sweep renames it back to new/W (nothing
//           was taken, no delivery is counted).
//   S2      a split whose claim exists: after the deadline a sweep does S3 for it; the claim
//           expires like any other. A split and its claim share one deadline and a sweep decides
//           every split of its listing before it returns any claim, so the claim a decision
//           depends on cannot have left cur/ yet (a sweep that lists after another one returned
//           the claim lists no split either: that sweep renamed it first).
//   S3, A1' a claim (and the rest in new/): the normal states.
//   writes  a pop killed after writing some messages and before A1: the claim expires and they
//           come again. Only a kill after a message left the process duplicates it, so a kill
//           duplicates at most the messages that process had in hand.
//   R1, E1, D1  atomic: before or after.
// A step that fails (ENOSPC, EIO) undoes what it can: push unlinks its tmp/ file; a split unlinks
// its claim and renames itself back to new/W. What an undo killed half-way leaves is one of the
// states above. A reserver that outlives its own deadline can find its split already decided: S2
// then fails (ENOENT: it takes nothing) or S3 does (it keeps its claim: at-least-once, never a
// loss). A settle that finds its claim gone changes nothing (another reserver has those messages).
// Settling any other part of a claim than its first messages (no command does: pop acks what it
// wrote, a prefix; --exec claims one message) links the new names first and then renames the
// claim: a kill in between leaves names that overlap, and at most that claim's messages come twice.
// `queue status` counts, per batch, the messages covered by some name: as waiting if a pop may
// take them (a name in new/, or one in cur/ whose deadline passed), else as in flight, so names
// that overlap (a split and its claim) count once; `queue tail` shows the same waiting messages.
// test/file/queue-crash.test.mjs kills push, pop and pop --exec at each of these system calls.
import {link, lstat, open, readdir, rename, rm, stat, unlink, constants} from 'node:fs/promises'
import {join} from 'node:path'

import type {Message, Outcome, PushOptions, QueueDriver, QueueStats, ReserveRequest, SettleOptions} from '../types.js'
import {crypto} from '../../builtins.js'
import {decodeName, encodeName, existingPath, forgetDirs, knownDir, type Modes, openNewFile, readRegularFile, safeDir, unpin} from './paths.js'
import {waitFor} from './watch.js'

const maxMessageBytes = 1024 * 1024
const staleTmpMs = 3_600_000
const batchPattern = '\\d{13}[0-9a-z]{6}-[0-9a-f]{10}'
const waitingName = new RegExp(`^(${batchPattern})\\.(\\d{8})\\.(\\d{8})\\.(\\d+)$`)
const claimName = new RegExp(`^(${batchPattern})\\.(\\d{8})\\.(\\d{8})\\.(\\d+)\\.(\\d{13})\\.([0-9a-f]+|later)$`)
/** The reserver of a claim waiting out a retry delay (D1): not hex, so it is never a live reserver's. */
const laterReserver = 'later'
// `.split` without a take: left by a dlq whose splits wrote the rest anew; such a split is only undone.
const splitName = new RegExp(`^(${batchPattern})\\.(\\d{8})\\.(\\d{8})\\.(\\d+)\\.(\\d{13})\\.([0-9a-f]+)\\.split(\\d{8})?$`)
/** How long a reserver that found nothing waits for another reserver's split to finish. */
const splitWaitMs = 2_000

interface Waiting {
  name: string
  batch: string
  start: number
  count: number
  deliveries: number
}

interface Claim extends Waiting {
  deadline: number
  reserver: string
}

/** A split under way: `deliveries` are W's (not yet counting this delivery), `take` the claim's count. */
interface Split extends Claim {
  take: number
}

type Range = Omit<Waiting, 'name'>

interface Kinds {
  waiting: Range[]
  inFlight: Range[]
  delayed: Range[]
}

interface Counts {
  waiting: number
  inFlight: number
  delayed: number
  oldest?: number
}

/** A push with a delay: a claim of nobody's ("later") on no delivery yet, which only push makes. */
const isDelayed = (entry: Waiting & {reserver?: string}) => entry.deliveries === 0 && entry.reserver === laterReserver
/** Where a deleted queue's directory waits for its removal: no queue name encodes to a leading dot. */
const deletedPrefix = '.deleted-'

const pad = (n: number, width = 8) => String(n).padStart(width, '0')
const waitingFile = (w: Range) => `${w.batch}.${pad(w.start)}.${pad(w.count)}.${w.deliveries}`
const claimFile = (c: Omit<Claim, 'name'>) => `${waitingFile(c)}.${pad(c.deadline, 13)}.${c.reserver}`
const splitFile = (s: Omit<Split, 'name'>) => `${claimFile(s)}.split${pad(s.take)}`

function parseWaiting(name: string): Waiting | undefined {
  const m = waitingName.exec(name)
  return m ? {name, batch: m[1], start: +m[2], count: +m[3], deliveries: +m[4]} : undefined
}

function parseClaim(name: string): Claim | undefined {
  const m = claimName.exec(name)
  return m ? {name, batch: m[1], start: +m[2], count: +m[3], deliveries: +m[4], deadline: +m[5], reserver: m[6]} : undefined
}

function parseSplit(name: string): Split | undefined {
  const m = splitName.exec(name)
  return m ? {name, batch: m[1], start: +m[2], count: +m[3], deliveries: +m[4], deadline: +m[5], reserver: m[6], take: m[7] === undefined ? 0 : +m[7]} : undefined
}

/** The claim S2 of `split` makes: its existence is what tells S2 happened. */
const claimOfSplit = (s: Split): Omit<Claim, 'name'> =>
  ({batch: s.batch, start: s.start, count: s.take, deliveries: s.deliveries + 1, deadline: s.deadline, reserver: s.reserver})
const restOfSplit = (s: Split): Range => ({batch: s.batch, start: s.start + s.take, count: s.count - s.take, deliveries: s.deliveries})

// Content: "DLQ1 <first index>\n" then per message "<length>\n<bytes>\n".
function encodeBatch(first: number, bodies: Buffer[]): Buffer[] {
  const parts: Buffer[] = [Buffer.from(`DLQ1 ${first}\n`)]
  for (const body of bodies) parts.push(Buffer.from(`${body.length}\n`), body, newline)
  return parts
}
const newline = Buffer.from('\n')

function decodeBatch(data: Buffer): {first: number; bodies: Buffer[]} {
  let at = data.indexOf(10)
  const first = Number(data.subarray(5, at).toString())
  const bodies: Buffer[] = []
  at++
  while (at < data.length) {
    const nl = data.indexOf(10, at)
    const length = Number(data.subarray(at, nl).toString())
    bodies.push(data.subarray(nl + 1, nl + 1 + length))
    at = nl + 1 + length + 1
  }
  return {first, bodies}
}

let sequence = 0
function newBatch(): string {
  sequence = (sequence + 1) % 36 ** 6
  return `${pad(Date.now(), 13)}${sequence.toString(36).padStart(6, '0')}-${crypto().randomBytes(5).toString('hex')}`
}

const batchTime = (batch: string) => Number(batch.slice(0, 13))
const errorCode = (error: unknown) => (error as NodeJS.ErrnoException).code
const isMissing = (error: unknown) => errorCode(error) === 'ENOENT'
/** For steps another process may have done first: ENOENT means it did. */
const unlessMissing = (error: unknown): undefined => {
  if (!isMissing(error)) throw error
  return undefined
}

/** How many indices the ranges cover together (overlaps counted once), and how many of them `minus` does not cover. */
function covered(ranges: Range[], minus: Range[] = []): number {
  const points = (rs: Range[]) => rs.map((r) => [r.start, r.start + r.count] as const).sort((a, b) => a[0] - b[0])
  const merge = (spans: (readonly [number, number])[]) => {
    const out: [number, number][] = []
    for (const [from, to] of spans) {
      const last = out.at(-1)
      if (last && from <= last[1]) last[1] = Math.max(last[1], to)
      else out.push([from, to])
    }
    return out
  }
  const have = merge(points(ranges))
  const not = merge(points(minus))
  let total = 0
  for (const [from, to] of have) {
    let size = to - from
    for (const [a, b] of not) size -= Math.max(0, Math.min(to, b) - Math.max(from, a))
    total += size
  }
  return total
}

interface QueueDirs {
  root: string
  tmp: string
  new: string
  cur: string
}

export class FileQueues implements QueueDriver {
  readonly maxMessageBytes = maxMessageBytes
  /** This process's id in claim names: settle and extend touch only our own claims. */
  private reserverId?: string
  private get reserver(): string {
    return (this.reserverId ??= crypto().randomBytes(6).toString('hex')) // drawn on first use: lock runs never need it
  }
  private tmpSwept = 0
  /** Splits of this process under way (S1 to S3). */
  private splitting = 0

  constructor(
    private readonly base: string,
    private readonly modes: Modes,
    private readonly log?: (line: string) => void,
  ) {}

  private async dirs(queue: string): Promise<QueueDirs> {
    const root = await safeDir(this.base, ['queues', encodeName(queue)], this.modes, queue)
    return this.dirsIn(root)
  }

  private async dirsIn(root: string): Promise<QueueDirs> {
    const [tmp, fresh, cur] = await Promise.all(['tmp', 'new', 'cur'].map((d) => safeDir(root, [d], this.modes)))
    return {root, tmp, new: fresh, cur}
  }

  /** The queue's directories if the queue exists (a push made it), else undefined: readers create no queue. */
  private async existingDirs(queue: string): Promise<QueueDirs | undefined> {
    const root = await knownDir(this.base, ['queues', encodeName(queue)], this.modes)
    return root === undefined ? undefined : this.dirsIn(root)
  }

  /** existingDirs(), waiting until `deadline` for a push to create the queue (a watch on queues/). */
  private async appeared(queue: string, signal: AbortSignal, deadline: number): Promise<QueueDirs | undefined> {
    const found = await this.existingDirs(queue)
    if (found !== undefined || Date.now() >= deadline) return found
    const queuesDir = await safeDir(this.base, ['queues'], this.modes)
    return waitFor(queuesDir, signal, deadline, async () => {
      const dirs = await this.existingDirs(queue)
      return {done: dirs !== undefined, value: dirs, next: Number.POSITIVE_INFINITY}
    }, undefined)
  }

  /**
   * T1–T5: a batch file written in tmp/ and renamed into new/ once durable (or, delayed until
   * `due`, into cur/ as a claim of nobody's with that deadline); resolves with its name.
   */
  private async writeBatch(dirs: QueueDirs, bodies: Buffer[], due?: number): Promise<string> {
    const parts = encodeBatch(0, bodies)
    const size = parts.reduce((sum, part) => sum + part.length, 0)
    const into = due === undefined ? dirs.new : dirs.cur
    for (;;) {
      const range = {batch: newBatch(), start: 0, count: bodies.length, deliveries: 0}
      const name = due === undefined ? waitingFile(range) : claimFile({...range, deadline: due, reserver: laterReserver})
      const tmp = join(dirs.tmp, name)
      const handle = await openNewFile(tmp, this.modes).catch((error) => {
        if (errorCode(error) === 'EEXIST') return undefined // a name some other process drew: draw again
        throw error
      })
      if (!handle) continue
      try {
        try {
          // The parts as they are (writev), not copied into one buffer. libuv reports an error that
          // came after some bytes only as fewer bytes written: writing the rest reports it.
          let written = (await handle.writev(parts)).bytesWritten
          const all = written < size ? Buffer.concat(parts) : undefined
          while (all && written < size) {
            const {bytesWritten} = await handle.write(all, written, size - written)
            if (bytesWritten === 0) throw Object.assign(new Error(`cannot write ${tmp}: 0 bytes written`), {code: 'EIO'})
            written += bytesWritten
          }
          await handle.datasync()
        } finally {
          await handle.close()
        }
        await rename(tmp, join(into, name))
      } catch (error) {
        await unlink(tmp).catch(() => {}) // ENOSPC and the like: leave no half batch behind
        throw error
      }
      await this.syncDir(into)
      return name
    }
  }

  private async syncDir(dir: string): Promise<void> {
    const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async push(queue: string, bodies: Buffer[], options: PushOptions = {}): Promise<string[]> {
    if (bodies.length === 0) return []
    const dirs = await this.dirs(queue)
    const due = options.at?.getTime() ?? (options.delayMs ? Date.now() + options.delayMs : undefined)
    const delayed = due !== undefined && due > Date.now() ? Math.ceil(due) : undefined
    const name = await this.writeBatch(dirs, bodies, delayed)
    const batch = name.slice(0, name.indexOf('.'))
    this.log?.(`file: pushed ${bodies.length} messages to ${delayed === undefined ? dirs.new : dirs.cur}/${batch}`)
    return bodies.map((_b, i) => `${batch}.${i}`)
  }

  private async listWaiting(dir: string): Promise<Waiting[]> {
    const names = await readdir(dir)
    return names.sort().map(parseWaiting).filter((w): w is Waiting => w !== undefined)
  }

  private async listClaims(dir: string): Promise<Claim[]> {
    return (await readdir(dir)).map(parseClaim).filter((c): c is Claim => c !== undefined)
  }

  /**
   * Where a message goes when it becomes visible again: back to new/, or to the dead letters. A
   * dead letter starts Q.dead with no deliveries, as on the other backends: with its count from Q
   * kept, a pop of Q.dead with the same --max-attempts would bury it again, in Q.dead.dead.
   */
  private async destination(queue: string, dirs: QueueDirs, waiting: Range, maxAttempts: number): Promise<string> {
    const dead = waiting.deliveries >= maxAttempts
    if (!dead) return join(dirs.new, waitingFile(waiting))
    this.log?.(`file: ${waiting.count} messages of ${waiting.batch} dead after ${waiting.deliveries} deliveries`)
    return join((await this.dirs(`${queue}.dead`)).new, waitingFile({...waiting, deliveries: 0}))
  }

  /** R1. */
  private async returnTo(queue: string, dirs: QueueDirs, from: string, waiting: Range, maxAttempts: number): Promise<void> {
    await rename(from, await this.destination(queue, dirs, waiting, maxAttempts))
  }

  /**
   * Recovers what dead or late reservers left (expired splits, then expired claims) and, once an
   * hour, tmp/ leftovers of killed pushes; resolves with the earliest deadline still pending.
   */
  private async sweep(queue: string, dirs: QueueDirs, maxAttempts: number): Promise<{earliest: number}> {
    const now = Date.now()
    if (now - this.tmpSwept > staleTmpMs) {
      this.tmpSwept = now
      for (const name of await readdir(dirs.tmp)) {
        const path = join(dirs.tmp, name)
        if (now - (await lstat(path).catch(() => ({mtimeMs: now}))).mtimeMs > staleTmpMs) await unlink(path).catch(() => {})
      }
    }
    let earliest = Number.POSITIVE_INFINITY
    const names = await readdir(dirs.cur)
    const present = new Set(names)
    for (const split of names.map(parseSplit).filter((s): s is Split => s !== undefined)) {
      if (split.deadline > now) {
        earliest = Math.min(earliest, split.deadline)
        continue
      }
      // Its reserver died (or is later than its own deadline): S3 if S2 happened, else undo S1.
      const claimed = split.take > 0 && present.has(claimFile(claimOfSplit(split)))
      const back = claimed ? restOfSplit(split) : split
      await rename(join(dirs.cur, split.name), join(dirs.new, waitingFile(back))).catch(unlessMissing)
      this.log?.(`file: split ${split.name} ${claimed ? 'completed' : 'undone'} for its reserver`)
    }
    for (const claim of names.map(parseClaim).filter((c): c is Claim => c !== undefined)) {
      if (claim.deadline > now) {
        earliest = Math.min(earliest, claim.deadline)
        continue
      }
      await this.returnTo(queue, dirs, join(dirs.cur, claim.name), claim, maxAttempts).catch(unlessMissing)
    }
    return {earliest}
  }

  private async splitInProgress(dirs: QueueDirs): Promise<boolean> {
    // Ours are known here, and a reserve of ours that runs beside this one (pop --concurrency) may be splitting.
    if (this.splitting > 0) return true
    const now = Date.now()
    return (await readdir(dirs.cur)).some((name) => {
      const split = parseSplit(name)
      return split !== undefined && split.deadline > now && split.reserver !== this.reserver
    })
  }

  private async readMessages(path: string, range: Range, deliveries: number): Promise<Message[]> {
    const {first, bodies} = decodeBatch(await readRegularFile(path))
    const enqueuedAt = new Date(batchTime(range.batch))
    const out: Message[] = []
    for (let i = 0; i < range.count; i++) {
      const index = range.start + i
      out.push({id: `${range.batch}.${index}`, body: bodies[index - first], enqueuedAt, attempts: deliveries, receipt: this.reserver})
    }
    return out
  }

  /**
   * C1, or S1–S3: claims the first `take` messages of `entry`. Resolves with the claim's path, or
   * undefined when another reserver (or a sweep, if we were slower than our deadline) was first.
   */
  private async claim(dirs: QueueDirs, entry: Waiting, claim: Omit<Claim, 'name'>): Promise<string | undefined> {
    const from = join(dirs.new, entry.name)
    const claimed = join(dirs.cur, claimFile(claim))
    if (claim.count === entry.count) {
      return rename(from, claimed).then(() => claimed, (error) => unlessMissing(error))
    }
    const split = join(dirs.cur, splitFile({...entry, deadline: claim.deadline, reserver: claim.reserver, take: claim.count}))
    this.splitting++
    try {
      return await this.splitClaim(dirs, entry, claim, from, split, claimed)
    } finally {
      this.splitting--
    }
  }

  /** S1–S3 of claim(). */
  private async splitClaim(dirs: QueueDirs, entry: Waiting, claim: Omit<Claim, 'name'>, from: string, split: string, claimed: string): Promise<string | undefined> {
    try {
      await rename(from, split)
    } catch (error) {
      return unlessMissing(error)
    }
    try {
      await link(split, claimed)
    } catch (error) {
      if (isMissing(error)) return undefined // a sweep undid our split: we took nothing
      await rename(split, from).catch(() => {}) // else our sweep-to-be: a split without claim is undone
      throw error
    }
    const rest = {batch: entry.batch, start: entry.start + claim.count, count: entry.count - claim.count, deliveries: entry.deliveries}
    try {
      await rename(split, join(dirs.new, waitingFile(rest)))
    } catch (error) {
      if (isMissing(error)) return claimed // a sweep did S3 for us (or undid S1 after S2: at-least-once)
      // Undo what we can; whatever is left, a sweep decides the same way (claim present or not).
      await unlink(claimed).then(() => rename(split, from)).catch(() => {})
      throw error
    }
    return claimed
  }

  private async reserveOnce(queue: string, dirs: QueueDirs, request: ReserveRequest): Promise<{messages: Message[]; earliest: number; raced: boolean}> {
    const {earliest} = await this.sweep(queue, dirs, request.maxAttempts)
    let raced = false
    const messages: Message[] = []
    try {
      for (const entry of await this.listWaiting(dirs.new)) {
        if (messages.length >= request.count) break
        if (entry.deliveries >= request.maxAttempts) {
          await this.returnTo(queue, dirs, join(dirs.new, entry.name), entry, request.maxAttempts).catch(() => {})
          continue
        }
        const take = Math.min(request.count - messages.length, entry.count)
        const claim = {batch: entry.batch, start: entry.start, count: take, deliveries: entry.deliveries + 1, deadline: Date.now() + request.visibilityMs, reserver: this.reserver}
        const claimed = await this.claim(dirs, entry, claim)
        const taken = claimed === undefined ? undefined : await this.readMessages(claimed, claim, claim.deliveries).catch(unlessMissing)
        if (taken === undefined) {
          raced = true
          continue
        }
        messages.push(...taken)
      }
    } catch (error) {
      // A full disk or the like half-way: what we hold goes back now rather than at its deadline.
      await this.settle(queue, messages, 'release', request.maxAttempts).catch(() => {})
      throw error
    }
    if (messages.length > 0) this.log?.(`file: reserved ${messages.length} messages from ${dirs.new}`)
    return {messages, earliest, raced}
  }

  /**
   * Whether `dirs` is still the queue's directory: a queue delete renames it away, and a push
   * after that makes a new one, which a waiting pop must look for instead.
   */
  private async stillThere(queue: string, dirs: QueueDirs): Promise<boolean> {
    const queuesDir = await safeDir(this.base, ['queues'], this.modes)
    const [named, mine] = await Promise.all([lstat(join(queuesDir, encodeName(queue))).catch(() => undefined), stat(dirs.root).catch(() => undefined)])
    return named !== undefined && mine !== undefined && named.ino === mine.ino && named.dev === mine.dev
  }

  async reserve(queue: string, request: ReserveRequest): Promise<Message[]> {
    const deadline = Date.now() + request.waitMs
    for (;;) {
      const dirs = await this.appeared(queue, request.signal, deadline)
      if (dirs === undefined) return []
      const messages = await this.reserveIn(queue, dirs, request, deadline)
      if (messages !== undefined) return messages
      // Deleted while we waited: wait for the queue a push makes next (its dead letters were
      // deleted with it: the next one buried makes them anew, not in the deleted directory).
      const queuesDir = await safeDir(this.base, ['queues'], this.modes)
      for (const name of [queue, `${queue}.dead`]) forgetDirs(join(queuesDir, encodeName(name)))
    }
  }

  /** Reserves from the queue in `dirs`, waiting until `deadline`; undefined when the queue was deleted meanwhile. */
  private async reserveIn(queue: string, dirs: QueueDirs, request: ReserveRequest, deadline: number): Promise<Message[] | undefined> {
    return waitFor<Message[] | undefined>(dirs.new, request.signal, deadline, async () => {
      const started = Date.now()
      for (let tries = 0; ; tries++) {
        const {messages, earliest, raced} = await this.reserveOnce(queue, dirs, request)
        if (messages.length > 0) return {done: true, value: messages, next: earliest}
        if (request.waitMs > 0 && !(await this.stillThere(queue, dirs))) return {done: true, value: undefined, next: earliest}
        // Nothing taken, yet the queue may not be empty: another reserver won the race for what we
        // saw, or is giving back the rest of a batch it split. Its split leaves cur/ only after
        // the rest is in new/, so looking at cur/ and then new/ cannot miss both. A live split
        // takes two more system calls; one whose reserver died stays until its deadline.
        const busy = raced || (await this.splitInProgress(dirs)) || (await this.listWaiting(dirs.new)).length > 0
        if (!busy || Date.now() - started > splitWaitMs) return {done: false, value: messages, next: earliest}
        await new Promise((resolve) => setTimeout(resolve, tries < 5 ? 0 : Math.min(50, 2 * 1.5 ** (tries - 5))))
      }
    }, [])
  }

  /**
   * Settles the messages of our own claims. A claim settled whole is one step (A1 or R1), and so
   * is acking the first messages of a claim (A1', what pop does when its output stops half-way).
   * Any other part of a claim is cut off by links to the new names (what stays claimed, what
   * goes back) and then one rename of the claim; a kill between them leaves names that overlap,
   * and at most this claim's messages come twice.
   */
  async settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number, options: SettleOptions = {}): Promise<void> {
    if (messages.length === 0) return
    const dirs = await this.existingDirs(queue)
    if (dirs === undefined) return // deleted meanwhile: nothing left to settle
    const delayMs = outcome === 'retry' ? options.retryDelayMs ?? 0 : 0
    /** R1's destination, or D1's for a retry later that is not the last attempt. */
    const returnPath = async (range: Range, limit: number) => delayMs > 0 && range.deliveries < limit
      ? join(dirs.cur, claimFile({...range, deadline: Date.now() + delayMs, reserver: laterReserver}))
      : this.destination(queue, dirs, range, limit)
    const ids = new Set(messages.map((m) => m.id))
    for (const claim of await this.listClaims(dirs.cur)) {
      if (claim.reserver !== this.reserver) continue
      const inSettle = Array.from({length: claim.count}, (_v, i) => ids.has(`${claim.batch}.${claim.start + i}`))
      if (!inSettle.some(Boolean)) continue
      const path = join(dirs.cur, claim.name)
      const deliveries = outcome === 'release' ? claim.deliveries - 1 : claim.deliveries
      const limit = outcome === 'release' ? Number.POSITIVE_INFINITY : maxAttempts
      // Runs of messages that are settled or not, in order, each with where its name goes.
      const runs: {range: Range; settled: boolean}[] = []
      inSettle.forEach((settled, i) => {
        const last = runs.at(-1)
        if (last && last.settled === settled) last.range.count++
        else runs.push({range: {batch: claim.batch, start: claim.start + i, count: 1, deliveries: claim.deliveries}, settled})
      })
      try {
        if (runs.length === 1) {
          if (outcome === 'ack') await unlink(path)
          else await rename(path, await returnPath({...claim, deliveries}, limit))
        } else {
          const keep = (r: Range) => join(dirs.cur, claimFile({...claim, start: r.start, count: r.count}))
          const named = await Promise.all(runs.map(async ({range, settled}) =>
            !settled ? keep(range) : outcome === 'ack' ? undefined : returnPath({...range, deliveries}, limit)))
          const last = runs.findIndex((r) => !r.settled) // some run stays claimed: not all of it is settled
          for (const [i, to] of named.entries()) if (to !== undefined && i !== last) await link(path, to)
          await rename(path, named[last]!)
        }
      } catch (error) {
        unlessMissing(error) // gone: the claim expired and another reserver has it
      }
      this.log?.(`file: ${outcome} ${inSettle.filter(Boolean).length} messages of ${claim.batch}${delayMs > 0 ? ` after ${delayMs}ms` : ''}`)
    }
  }

  async extend(queue: string, message: Message, visibilityMs: number): Promise<boolean> {
    const dirs = await this.existingDirs(queue)
    if (dirs === undefined) return false
    for (const claim of await this.listClaims(dirs.cur)) {
      if (claim.reserver !== this.reserver || `${claim.batch}.${claim.start}` !== message.id || claim.count !== 1) continue
      if (claim.deadline <= Date.now()) return false
      try {
        await rename(join(dirs.cur, claim.name), join(dirs.cur, claimFile({...claim, deadline: Date.now() + visibilityMs})))
        return true
      } catch (error) {
        if (isMissing(error)) return false
        throw error
      }
    }
    return false
  }

  /**
   * The names whose messages the next pop may take: new/, and the names in cur/ whose deadline
   * passed (the next reserver's sweep puts them back), newest first.
   */
  private async visibleNames(dirs: Pick<QueueDirs, 'new' | 'cur'>): Promise<{path: string; entry: Waiting}[]> {
    const now = Date.now()
    const [fresh, cur] = await Promise.all([readdir(dirs.new).catch(() => [] as string[]), readdir(dirs.cur).catch(() => [] as string[])])
    const visible = [
      ...fresh.map((name) => ({path: join(dirs.new, name), entry: parseWaiting(name)})),
      ...cur.map((name) => ({path: join(dirs.cur, name), entry: parseClaim(name) ?? parseSplit(name)})).filter(({entry}) => entry !== undefined && entry.deadline <= now),
    ].filter((v): v is {path: string; entry: Waiting} => v.entry !== undefined)
    const end = (w: Waiting) => w.start + w.count
    return visible.sort((a, b) => (a.entry.batch === b.entry.batch ? end(b.entry) - end(a.entry) : a.entry.batch < b.entry.batch ? 1 : -1))
  }

  async peek(queue: string, count: number): Promise<Message[]> {
    const dirs = await this.existingDirs(queue)
    if (dirs === undefined) return []
    const out = new Map<string, Message>() // newest first; names that overlap (a split and its claim) give each message once
    for (const {path, entry} of await this.visibleNames(dirs)) {
      if (out.size >= count) break
      try {
        const messages = await this.readMessages(path, entry, entry.deliveries)
        for (const message of messages.reverse()) if (out.size < count && !out.has(message.id)) out.set(message.id, message)
      } catch (error) {
        if (!isMissing(error)) throw error // reserved meanwhile: no longer waiting
      }
    }
    const order = (m: Message) => [m.id.slice(0, m.id.lastIndexOf('.')), Number(m.id.slice(m.id.lastIndexOf('.') + 1))] as const
    return [...out.values()].sort((a, b) => {
      const [batchA, indexA] = order(a)
      const [batchB, indexB] = order(b)
      return batchA === batchB ? indexA - indexB : batchA < batchB ? -1 : 1
    })
  }

  async follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void> {
    // A queue that does not exist yet: everything in it once a push makes it is new.
    const existed = await this.existingDirs(queue)
    const dirs = existed ?? (await this.appeared(queue, signal, Number.POSITIVE_INFINITY).catch((error) => {
      if (!signal.aborted) throw error
    }))
    if (dirs === undefined) return
    // Batches already there are history (tail -n prints those); only batches never seen are new.
    // A split's rest or an undone split keeps its batch, and so does a claim returned: not new
    // either. Nor is a batch pushed with a delay: it is seen in cur/ (listed on every round,
    // at least once a second) before its deadline brings it to new/.
    const seen = new Set<string>()
    const seeCur = async (all: boolean) => {
      for (const claim of await this.listClaims(dirs.cur)) if (all || (claim.deliveries === 0 && claim.reserver === laterReserver)) seen.add(claim.batch)
    }
    if (existed !== undefined) {
      for (const w of await this.listWaiting(dirs.new)) seen.add(w.batch)
      await seeCur(true)
    }
    await waitFor(dirs.new, signal, Number.POSITIVE_INFINITY, async () => {
      await seeCur(false)
      for (const entry of await this.listWaiting(dirs.new)) {
        if (seen.has(entry.batch)) continue
        seen.add(entry.batch)
        try {
          await onMessages(await this.readMessages(join(dirs.new, entry.name), entry, entry.deliveries))
        } catch (error) {
          if (!isMissing(error)) throw error
        }
      }
      return {done: false, value: undefined, next: Number.POSITIVE_INFINITY}
    }, undefined).catch((error) => {
      if (!signal.aborted) throw error
    })
  }

  /**
   * Messages per batch covered by names that the next pop may take (waiting: new/, and cur/ names
   * whose deadline passed), and of the rest, those covered by names in cur/ (in flight).
   */
  private async countOf(queuesDir: string, component: string): Promise<Counts> {
    const batches = new Map<string, Kinds>()
    const add = (range: Range, kind: keyof Kinds) => {
      let entry = batches.get(range.batch)
      if (!entry) batches.set(range.batch, (entry = {waiting: [], inFlight: [], delayed: []}))
      entry[kind].push(range)
    }
    // Pinned and checked on the way down: a planted link is refused, never read through.
    const root = await existingPath(queuesDir, [component], this.modes)
    if (root === undefined) return {waiting: 0, inFlight: 0, delayed: 0}
    try {
      return await this.countIn(root, batches, add)
    } finally {
      await unpin(root)
    }
  }

  private async countIn(root: string, batches: Map<string, Kinds>, add: (range: Range, kind: keyof Kinds) => void): Promise<Counts> {
    const [newDir, curDir] = [await existingPath(root, ['new'], this.modes), await existingPath(root, ['cur'], this.modes)]
    try {
      const dirs = {new: newDir ?? join(root, 'new'), cur: curDir ?? join(root, 'cur')}
      const visible = await this.visibleNames(dirs)
      for (const {entry} of visible) add(entry, 'waiting')
      const seen = new Set(visible.map(({path}) => path))
      for (const name of await readdir(dirs.cur).catch(() => [] as string[])) {
        const entry = parseClaim(name) ?? parseSplit(name)
        // A claim of nobody's on no delivery yet is a push with a delay (only a push makes one).
        if (entry && !seen.has(join(dirs.cur, name))) add(entry, isDelayed(entry) ? 'delayed' : 'inFlight')
      }
      let waiting = 0
      let inFlight = 0
      let delayed = 0
      let oldest: number | undefined
      for (const [batch, ranges] of batches) {
        waiting += covered(ranges.waiting)
        inFlight += covered(ranges.inFlight, ranges.waiting)
        delayed += covered(ranges.delayed)
        if (ranges.waiting.length > 0) oldest = Math.min(oldest ?? Number.POSITIVE_INFINITY, batchTime(batch))
      }
      return {waiting, inFlight, delayed, oldest}
    } finally {
      for (const dir of [newDir, curDir]) if (dir !== undefined) await unpin(dir)
    }
  }

  async stats(queue?: string): Promise<QueueStats[]> {
    const queuesDir = await safeDir(this.base, ['queues'], this.modes)
    const names = queue !== undefined
      ? [queue]
      : (await readdir(queuesDir)).map((c) => decodeName(queuesDir, c, this.modes))
    const all = new Set(names.filter((n): n is string => n !== undefined))
    const out: QueueStats[] = []
    for (const name of [...all].sort()) {
      if (queue === undefined && name.endsWith('.dead') && all.has(name.slice(0, -5))) continue
      const mine = await this.countOf(queuesDir, encodeName(name))
      const dead = await this.countOf(queuesDir, encodeName(`${name}.dead`))
      out.push({
        queue: name, waiting: mine.waiting, delayed: mine.delayed, inFlight: mine.inFlight, dead: dead.waiting + dead.inFlight + dead.delayed,
        ...(mine.oldest === undefined ? {} : {oldestAgeMs: Date.now() - mine.oldest}),
      })
    }
    return out
  }

  /**
   * Each of the queue's directories (Q's, then Q.dead's) is renamed to a hidden name in one step
   * (no reader decodes a name starting with a dot), so the queue is gone at once for every
   * process, and then removed; a delete killed before its removal leaves only a hidden directory,
   * which the next delete removes.
   */
  async deleteQueue(queue: string): Promise<boolean> {
    const queuesDir = await safeDir(this.base, ['queues'], this.modes)
    let found = false
    for (const name of [queue, `${queue}.dead`]) {
      const gone = join(queuesDir, `${deletedPrefix}${crypto().randomBytes(6).toString('hex')}`)
      try {
        await rename(join(queuesDir, encodeName(name)), gone)
      } catch (error) {
        if (isMissing(error)) continue
        throw error
      }
      found = true
      this.log?.(`file: deleted ${join(queuesDir, encodeName(name))}`)
    }
    // This delete's directories and any a killed delete left behind. rm never follows a link.
    for (const entry of await readdir(queuesDir)) {
      if (entry.startsWith(deletedPrefix)) await rm(join(queuesDir, entry), {recursive: true, force: true})
    }
    return found
  }
}
