// File-backend queues: a Maildir/dirq-style directory queue whose whole protocol is atomic renames.
//
//   queues/<queue>/tmp/  a batch being written (never read by anyone else)
//   queues/<queue>/new/  waiting:   <batch>.<start>.<count>.<deliveries so far>
//   queues/<queue>/cur/  reserved:  <batch>.<start>.<count>.<this delivery>.<deadline ms>.<reserver>
//                        being split: <waiting name>.<give-up ms>.<reserver>.split
//
// - push: one file per batch (one fdatasync for the whole batch, then the rename into new/ and an
//   fsync of new/), named <ms><seq>-<random> so name order is FIFO order.
// - reserve: rename new/F → cur/F…deadline.reserver. Exactly one reserver's rename succeeds. When a
//   reserver needs fewer messages than F holds, it claims F as `….split`, writes the rest back as
//   new/F' (same batch, later start: it sorts where F was) and only then renames its claim down to
//   what it took; a crash in between duplicates the rest, never loses it (at-least-once). Another
//   reserver that finds new/ empty while a split is under way waits for it rather than report an
//   empty queue; a split abandoned by a crash goes back to new/ after splitGraceMs.
// - a file's name says which messages of its content it covers (content carries its own start), so
//   splitting is a rename, not a rewrite.
// - ack = unlink; retry/release = rename back into new/ (or into <queue>.dead/new/ once the
//   deliveries reach --max-attempts); a claim whose deadline passed is renamed back by whoever
//   next looks. A settle that finds its claim gone (expired and taken by another) changes nothing.
// - waiting and --follow watch new/ (fs.watch) plus a timer for the earliest claim deadline.
import {lstat, open, readdir, rename, unlink, constants} from 'node:fs/promises'
import {join} from 'node:path'

import type {Message, Outcome, QueueDriver, QueueStats, ReserveRequest} from '../types.js'
import {crypto} from '../../builtins.js'
import {decodeName, encodeName, existingPath, type Modes, openNewFile, readRegularFile, safeDir, unpin} from './paths.js'
import {waitFor} from './watch.js'

const maxMessageBytes = 1024 * 1024
const staleTmpMs = 3_600_000
const waitingName = /^(\d{13}[0-9a-z]{6}-[0-9a-f]{10})\.(\d{8})\.(\d{8})\.(\d+)$/
const claimName = /^(\d{13}[0-9a-z]{6}-[0-9a-f]{10})\.(\d{8})\.(\d{8})\.(\d+)\.(\d{13})\.([0-9a-f]+)$/
const splitName = /^((\d{13}[0-9a-z]{6}-[0-9a-f]{10})\.(\d{8})\.(\d{8})\.(\d+))\.(\d{13})\.([0-9a-f]+)\.split$/
const splitGraceMs = 10_000

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

const pad = (n: number, width = 8) => String(n).padStart(width, '0')
const waitingFile = (w: Omit<Waiting, 'name'>) => `${w.batch}.${pad(w.start)}.${pad(w.count)}.${w.deliveries}`
const claimFile = (c: Omit<Claim, 'name'>) => `${waitingFile(c)}.${pad(c.deadline, 13)}.${c.reserver}`

function parseWaiting(name: string): Waiting | undefined {
  const m = waitingName.exec(name)
  return m ? {name, batch: m[1], start: +m[2], count: +m[3], deliveries: +m[4]} : undefined
}

function parseClaim(name: string): Claim | undefined {
  const m = claimName.exec(name)
  return m ? {name, batch: m[1], start: +m[2], count: +m[3], deliveries: +m[4], deadline: +m[5], reserver: m[6]} : undefined
}

// Content: "DLQ1 <first index>\n" then per message "<length>\n<bytes>\n".
function encodeBatch(first: number, bodies: Buffer[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`DLQ1 ${first}\n`)]
  for (const body of bodies) parts.push(Buffer.from(`${body.length}\n`), body, Buffer.from('\n'))
  return Buffer.concat(parts)
}

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
const isMissing = (error: unknown) => (error as NodeJS.ErrnoException).code === 'ENOENT'

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

  constructor(
    private readonly base: string,
    private readonly modes: Modes,
    private readonly log?: (line: string) => void,
  ) {}

  private async dirs(queue: string): Promise<QueueDirs> {
    const root = await safeDir(this.base, ['queues', encodeName(queue)], this.modes, queue)
    const [tmp, fresh, cur] = await Promise.all(['tmp', 'new', 'cur'].map((d) => safeDir(root, [d], this.modes)))
    return {root, tmp, new: fresh, cur}
  }

  /** Writes content durably into dir/name via tmp/ and a rename. */
  private async writeDurably(dirs: QueueDirs, dir: string, name: string, content: Buffer): Promise<void> {
    const tmp = join(dirs.tmp, name)
    const handle = await openNewFile(tmp, this.modes)
    try {
      await handle.writeFile(content)
      await handle.datasync()
    } finally {
      await handle.close()
    }
    await rename(tmp, join(dir, name))
    await this.syncDir(dir)
  }

  private async syncDir(dir: string): Promise<void> {
    const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async push(queue: string, bodies: Buffer[]): Promise<string[]> {
    if (bodies.length === 0) return []
    const dirs = await this.dirs(queue)
    const batch = newBatch()
    await this.writeDurably(dirs, dirs.new, waitingFile({batch, start: 0, count: bodies.length, deliveries: 0}), encodeBatch(0, bodies))
    this.log?.(`file: pushed ${bodies.length} messages to ${dirs.new}/${batch}`)
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
  private async returnTo(queue: string, dirs: QueueDirs, from: string, waiting: Omit<Waiting, 'name'>, maxAttempts: number): Promise<void> {
    const dead = waiting.deliveries >= maxAttempts
    const target = dead ? (await this.dirs(`${queue}.dead`)).new : dirs.new
    await rename(from, join(target, waitingFile(dead ? {...waiting, deliveries: 0} : waiting)))
    if (dead) this.log?.(`file: ${waiting.count} messages of ${waiting.batch} dead after ${waiting.deliveries} deliveries`)
  }

  /**
   * Returns expired claims (and abandoned splits); resolves with the earliest deadline still pending.
   */
  private async sweep(queue: string, dirs: QueueDirs, maxAttempts: number): Promise<{earliest: number}> {
    const now = Date.now()
    if (now - this.tmpSwept > staleTmpMs) {
      // Batches a killed push never renamed into new/: never visible, never acknowledged to anyone.
      this.tmpSwept = now
      for (const name of await readdir(dirs.tmp)) {
        const path = join(dirs.tmp, name)
        if (now - (await lstat(path).catch(() => ({mtimeMs: now}))).mtimeMs > staleTmpMs) await unlink(path).catch(() => {})
      }
    }
    let earliest = Number.POSITIVE_INFINITY
    const names = await readdir(dirs.cur)
    for (const name of names) {
      const split = splitName.exec(name)
      if (!split) continue
      if (Number(split[6]) > now) continue
      await rename(join(dirs.cur, name), join(dirs.new, split[1])).catch(() => {}) // its reserver died mid-split
    }
    for (const claim of names.map(parseClaim).filter((c): c is Claim => c !== undefined)) {
      if (claim.deadline > now) {
        earliest = Math.min(earliest, claim.deadline)
        continue
      }
      await this.returnTo(queue, dirs, join(dirs.cur, claim.name), claim, maxAttempts).catch((error) => {
        if (!isMissing(error)) throw error
      })
    }
    return {earliest}
  }

  private async splitInProgress(dirs: QueueDirs): Promise<boolean> {
    const now = Date.now()
    return (await readdir(dirs.cur)).some((name) => {
      const split = splitName.exec(name)
      return split !== null && Number(split[6]) > now && split[7] !== this.reserver
    })
  }

  private async readMessages(path: string, entry: Waiting, deliveries: number): Promise<Message[]> {
    const {first, bodies} = decodeBatch(await readRegularFile(path))
    const enqueuedAt = new Date(batchTime(entry.batch))
    const out: Message[] = []
    for (let i = 0; i < entry.count; i++) {
      const index = entry.start + i
      out.push({id: `${entry.batch}.${index}`, body: bodies[index - first], enqueuedAt, attempts: deliveries, receipt: this.reserver})
    }
    return out
  }

  private async reserveOnce(queue: string, dirs: QueueDirs, request: ReserveRequest): Promise<{messages: Message[]; earliest: number; raced: boolean}> {
    const {earliest} = await this.sweep(queue, dirs, request.maxAttempts)
    let raced = false
    const messages: Message[] = []
    for (const entry of await this.listWaiting(dirs.new)) {
      if (messages.length >= request.count) break
      const from = join(dirs.new, entry.name)
      if (entry.deliveries >= request.maxAttempts) {
        await this.returnTo(queue, dirs, from, entry, request.maxAttempts).catch(() => {})
        continue
      }
      const need = request.count - messages.length
      const claim = {...entry, deliveries: entry.deliveries + 1, deadline: Date.now() + request.visibilityMs, reserver: this.reserver}
      const splits = entry.count > need
      const claimed = join(dirs.cur, splits ? `${entry.name}.${pad(Date.now() + splitGraceMs, 13)}.${this.reserver}.split` : claimFile(claim))
      try {
        await rename(from, claimed)
      } catch (error) {
        if (isMissing(error)) {
          raced = true // another reserver was first
          continue
        }
        throw error
      }
      let taken = await this.readMessages(claimed, entry, claim.deliveries)
      if (splits) {
        // Give back the rest first (durably), then shrink the claim: a crash between duplicates, never loses.
        const rest = {batch: entry.batch, start: entry.start + need, count: entry.count - need, deliveries: entry.deliveries}
        await this.writeDurably(dirs, dirs.new, waitingFile(rest), encodeBatch(rest.start, taken.slice(need).map((m) => m.body)))
        await rename(claimed, join(dirs.cur, claimFile({...claim, count: need})))
        taken = taken.slice(0, need)
      }
      messages.push(...taken)
    }
    if (messages.length > 0) this.log?.(`file: reserved ${messages.length} messages from ${dirs.new}`)
    return {messages, earliest, raced}
  }

  async reserve(queue: string, request: ReserveRequest): Promise<Message[]> {
    const dirs = await this.dirs(queue)
    const deadline = Date.now() + request.waitMs
    return waitFor(dirs.new, request.signal, deadline, async () => {
      const started = Date.now()
      for (let tries = 0; ; tries++) {
        const {messages, earliest, raced} = await this.reserveOnce(queue, dirs, request)
        if (messages.length > 0) return {done: true, value: messages, next: earliest}
        // Nothing taken, yet the queue may not be empty: another reserver won the race for what we
        // saw, or is putting back the rest of a batch it split. Its marker leaves cur/ only after
        // the rest is in new/, so looking at cur/ and then new/ cannot miss both. A split either
        // finishes or is given back after splitGraceMs, so this is bounded.
        const busy = raced || (await this.splitInProgress(dirs)) || (await this.listWaiting(dirs.new)).length > 0
        if (!busy || Date.now() - started > splitGraceMs) return {done: false, value: messages, next: earliest}
        await new Promise((resolve) => setTimeout(resolve, tries < 5 ? 0 : 2))
      }
    }, [])
  }

  async settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number): Promise<void> {
    if (messages.length === 0) return
    const dirs = await this.dirs(queue)
    const ids = new Set(messages.map((m) => m.id))
    for (const claim of await this.listClaims(dirs.cur)) {
      if (claim.reserver !== this.reserver) continue
      const inClaim = (i: number) => ids.has(`${claim.batch}.${claim.start + i}`)
      const covered = Array.from({length: claim.count}, (_v, i) => inClaim(i))
      if (!covered.some(Boolean)) continue
      const path = join(dirs.cur, claim.name)
      let settled = claim
      if (!covered.every(Boolean)) {
        // Part of a claim: split off what is not being settled as a claim of its own.
        const from = covered.indexOf(true)
        const to = covered.lastIndexOf(true) + 1
        const content = decodeBatch(await readRegularFile(path))
        for (const [start, end] of [[0, from], [to, claim.count]]) {
          if (end <= start) continue
          const part = {...claim, start: claim.start + start, count: end - start}
          const bodies = content.bodies.slice(part.start - content.first, part.start - content.first + part.count)
          await this.writeDurably(dirs, dirs.cur, claimFile(part), encodeBatch(part.start, bodies))
        }
        settled = {...claim, start: claim.start + from, count: to - from}
        const renamed = join(dirs.cur, claimFile(settled))
        await rename(path, renamed)
        settled = {...settled, name: claimFile(settled)}
      }
      const settledPath = join(dirs.cur, settled.name)
      try {
        if (outcome === 'ack') await unlink(settledPath)
        else {
          const deliveries = outcome === 'release' ? settled.deliveries - 1 : settled.deliveries
          await this.returnTo(queue, dirs, settledPath, {...settled, deliveries}, outcome === 'release' ? Number.POSITIVE_INFINITY : maxAttempts)
        }
      } catch (error) {
        if (!isMissing(error)) throw error // gone: the claim expired and another reserver has it
      }
      this.log?.(`file: ${outcome} ${settled.count} messages of ${settled.batch}`)
    }
  }

  async extend(queue: string, message: Message, visibilityMs: number): Promise<boolean> {
    const dirs = await this.dirs(queue)
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

  async peek(queue: string, count: number): Promise<Message[]> {
    const dirs = await this.dirs(queue)
    const entries = await this.listWaiting(dirs.new)
    const out: Message[] = []
    for (let i = entries.length - 1; i >= 0 && out.length < count; i--) {
      const entry = entries[i]
      try {
        const messages = await this.readMessages(join(dirs.new, entry.name), entry, entry.deliveries)
        out.unshift(...messages.slice(Math.max(0, messages.length - (count - out.length))))
      } catch (error) {
        if (!isMissing(error)) throw error // reserved meanwhile: no longer waiting
      }
    }
    return out
  }

  async follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void> {
    const dirs = await this.dirs(queue)
    // Batches already there are history (tail -n prints those); only batches never seen are new.
    const seen = new Set((await this.listWaiting(dirs.new)).map((w) => w.batch))
    await waitFor(dirs.new, signal, Number.POSITIVE_INFINITY, async () => {
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

  private async countOf(from: string, parts: string[], parse: (name: string) => Waiting | undefined): Promise<{count: number; oldest?: number}> {
    let count = 0
    let oldest: number | undefined
    // Pinned and checked on the way down: a planted link is refused, never read through.
    const dir = await existingPath(from, parts, this.modes)
    const names = dir === undefined ? [] : await readdir(dir).finally(() => unpin(dir))
    for (const name of names) {
      const entry = parse(name)
      if (!entry) continue
      count += entry.count
      oldest = Math.min(oldest ?? Number.POSITIVE_INFINITY, batchTime(entry.batch))
    }
    return {count, oldest}
  }

  async stats(queue?: string): Promise<QueueStats[]> {
    const queuesDir = await safeDir(this.base, ['queues'], this.modes)
    const names = queue !== undefined
      ? [queue]
      : await Promise.all((await readdir(queuesDir)).map((c) => decodeName(queuesDir, c, this.modes)))
    const all = new Set(names.filter((n): n is string => n !== undefined))
    const out: QueueStats[] = []
    for (const name of [...all].sort()) {
      if (queue === undefined && name.endsWith('.dead') && all.has(name.slice(0, -5))) continue
      const root = encodeName(name)
      const waiting = await this.countOf(queuesDir, [root, 'new'], parseWaiting)
      const inFlight = await this.countOf(queuesDir, [root, 'cur'], parseClaim)
      const dead = await this.countOf(queuesDir, [encodeName(`${name}.dead`), 'new'], parseWaiting)
      out.push({
        queue: name, waiting: waiting.count, inFlight: inFlight.count, dead: dead.count,
        ...(waiting.oldest === undefined ? {} : {oldestAgeMs: Date.now() - waiting.oldest}),
      })
    }
    return out
  }
}
