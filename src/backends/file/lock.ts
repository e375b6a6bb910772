// File-backend locks: leases in a directory per key, safe on local disks and NFS.
//
// The protocol follows proper-lockfile's semantics (an entry whose mtime is the heartbeat; stale
// after the TTL) but never reclaims by rmdir-then-mkdir, which lets two processes in
// (moxystudio/node-proper-lockfile#121). Instead every acquisition creates a NEW entry:
//
//   locks/<key>/<gen>   gen = 20-digit decimal; the highest gen ever created is never deleted
//
// - An entry's mtime IS its lease's expiry. Renewal is one lutimes(); release sets it to 0.
// - To acquire: scan the entries; if fewer than `limit` are unexpired, hard-link a holder record
//   to gen = max+1. link(2) fails with EEXIST when the name exists (atomic on NFS too, unlike
//   O_EXCL on old NFS: see open(2)), so of all racers that saw the same max exactly one wins, and
//   the rest rescan. A stale holder is never removed to make room: a newer gen simply outnumbers it.
// - Why this is exact for --limit N: between a scan and its link, the only change that could add
//   a holder is another link, which takes gen max+1 first and makes ours fail; expiries and
//   releases only remove holders, and an expired lease is never renewed (renew refuses).
// - gen is the fencing token: strictly increasing per key, because the highest entry is kept.
// - Waiters watch the key's directory (inotify via fs.watch) and arm a timer for the earliest
//   expiry; a slow poll remains only for NFS, where another machine's changes raise no event.
// - Entries below the highest that have expired are deleted by whoever passes by.
// Clocks: expiry is compared with the local clock, so machines sharing a directory over NFS must
// keep their clocks in sync (as proper-lockfile's mtime check also assumes).
import {watch} from 'node:fs'
import {chmod, link, lstat, lutimes, open, readdir, stat, unlink, writeFile, constants} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {LockLostError} from '../../errors.js'
import type {AcquireRequest, Holder, HolderInfo, Lease, LockDriver, LockState} from '../types.js'
import {decodeName, encodeName, existingDir, type Modes, safeDir} from './paths.js'
import {waitFor} from './watch.js'

const entryName = /^\d{20}$/
// A renewal this close to expiry is refused: a waiter may already have counted the lease as gone.
const renewMarginMs = (ttlMs: number) => Math.min(250, ttlMs / 10)

interface Entry {
  name: string
  gen: bigint
  expiresMs: number
}

interface Record extends HolderInfo {
  owner: string
  acquiredAt: string
  ttlMs: number
}

export class FileLocks implements LockDriver {
  /** owner → entry path, for this process's own leases. */
  private readonly mine = new Map<string, string>()
  private readonly ttls = new Map<string, number>()

  constructor(
    private readonly base: string,
    private readonly modes: Modes,
    private readonly log?: (line: string) => void,
  ) {}

  private keyDir(key: string): Promise<string> {
    return safeDir(this.base, ['locks', encodeName(key)], this.modes, key)
  }

  private async scan(dir: string): Promise<{entries: Entry[]; max: bigint}> {
    let names: string[]
    try {
      names = await readdir(dir)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {entries: [], max: 0n}
      throw error
    }
    const entries: Entry[] = []
    let max = 0n
    for (const name of names) {
      if (!entryName.test(name)) continue
      const gen = BigInt(name)
      if (gen > max) max = gen
      try {
        const info = await lstat(join(dir, name))
        if (info.isFile()) entries.push({name, gen, expiresMs: info.mtimeMs})
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      }
    }
    this.log?.(`file: scan ${dir}: ${entries.length} entries, max ${max}`)
    return {entries, max}
  }

  private async readHolder(dir: string, entry: Entry): Promise<(Holder & {ttlMs: number}) | undefined> {
    try {
      const handle = await open(join(dir, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW)
      try {
        const record = JSON.parse(await handle.readFile('utf8')) as Record
        return {
          owner: record.owner, host: record.host, pid: record.pid, user: record.user, command: record.command,
          token: entry.gen.toString(), acquiredAt: new Date(record.acquiredAt), expiresAt: new Date(entry.expiresMs), ttlMs: record.ttlMs,
        }
      } finally {
        await handle.close()
      }
    } catch {
      return undefined // released and collected, or being written: not a holder now
    }
  }

  private async holders(dir: string, live: Entry[]): Promise<Holder[]> {
    const holders = await Promise.all(live.map((entry) => this.readHolder(dir, entry)))
    return holders.filter((h): h is Holder & {ttlMs: number} => h !== undefined).map(({ttlMs: _ttl, ...holder}) => holder)
  }

  /** Deletes expired entries below the highest: the highest carries the fencing counter. */
  private async collect(dir: string, entries: Entry[], max: bigint, now: number): Promise<void> {
    for (const entry of entries) {
      if (entry.gen < max && entry.expiresMs <= now) await unlink(join(dir, entry.name)).catch(() => {})
    }
  }

  private async tryAcquire(dir: string, request: AcquireRequest, tmp: string): Promise<Lease | Holder[]> {
    for (;;) {
      const now = Date.now()
      const {entries, max} = await this.scan(dir)
      const live = entries.filter((e) => e.expiresMs > now)
      if (live.length >= request.limit) return this.holders(dir, live)
      const gen = max + 1n
      const name = gen.toString().padStart(20, '0')
      const expiresMs = now + request.ttlMs
      const record: Record = {owner: request.owner, ...request.holder, acquiredAt: new Date(now).toISOString(), ttlMs: request.ttlMs}
      await unlink(tmp).catch(() => {})
      await writeFile(tmp, JSON.stringify(record), {mode: this.modes.file, flag: 'wx'}) // wx: never through a planted link
      if (this.modes.shared) await chmod(tmp, this.modes.file)
      await lutimes(tmp, now / 1000, expiresMs / 1000)
      try {
        await link(tmp, join(dir, name))
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        if (code === 'EEXIST') continue // another racer took gen: rescan
        // NFS may lose link's reply after doing it: the link count says whether it happened.
        if ((await stat(tmp).catch(() => undefined))?.nlink !== 2) throw error
      }
      this.log?.(`file: linked ${join(dir, name)}`)
      this.mine.set(request.owner, join(dir, name))
      this.ttls.set(request.owner, request.ttlMs)
      this.tidy(this.collect(dir, entries, gen, now)) // after the command has started: off the hand-off path
      return {key: request.key, owner: request.owner, token: gen.toString(), ttlMs: request.ttlMs, expiresAt: new Date(expiresMs)}
    }
  }

  async acquire(request: AcquireRequest): Promise<Lease | undefined> {
    const dir = await this.keyDir(request.key)
    const tmpDir = await safeDir(this.base, ['tmp'], this.modes)
    const tmp = join(tmpDir, `lock-${request.owner}`)
    try {
      return await waitFor<Lease | undefined>(dir, request.signal, Date.now() + request.waitMs, async () => {
        const result = await this.tryAcquire(dir, request, tmp)
        if (!Array.isArray(result)) return {done: true, value: result, next: 0}
        request.onWaiting?.(result)
        // A holder that died is noticed at its expiry, without any event.
        return {done: false, value: undefined, next: Math.min(...result.map((h) => h.expiresAt.getTime()))}
      }, undefined)
    } finally {
      this.tidy(unlink(tmp))
    }
  }

  /** Housekeeping that no caller waits for; release() lets it finish before the process ends. */
  private pending: Promise<unknown>[] = []
  private tidy(work: Promise<unknown>): void {
    this.pending.push(work.catch(() => {}))
  }

  /** This owner's entry: from memory for our own leases, else by reading the live records. */
  private async find(key: string, owner: string): Promise<{path: string; ttlMs?: number} | undefined> {
    const dir = await this.keyDir(key)
    const known = this.mine.get(owner)
    if (known) return {path: known, ttlMs: this.ttls.get(owner)}
    const {entries} = await this.scan(dir)
    for (const entry of entries) {
      const holder = await this.readHolder(dir, entry)
      if (holder?.owner === owner) return {path: join(dir, entry.name), ttlMs: holder.ttlMs}
    }
    return undefined
  }

  async renew(key: string, owner: string, requestedTtlMs?: number): Promise<Lease> {
    const found = await this.find(key, owner)
    if (!found) throw new LockLostError(key, `no lease with owner ${owner} (it expired, was released, or was force-released)`)
    const ttlMs = requestedTtlMs ?? found.ttlMs ?? 30_000
    let info
    try {
      info = await lstat(found.path)
    } catch {
      throw new LockLostError(key, 'the lease was deleted')
    }
    const now = Date.now()
    if (info.mtimeMs <= now + renewMarginMs(ttlMs)) {
      throw new LockLostError(key, info.mtimeMs === 0 ? 'the lease was released by someone else (force release?)' : `the lease expired at ${new Date(info.mtimeMs).toISOString()} before it was renewed`)
    }
    const expiresMs = now + ttlMs
    await lutimes(found.path, now / 1000, expiresMs / 1000)
    this.log?.(`file: renewed ${found.path} until ${new Date(expiresMs).toISOString()}`)
    const token = BigInt(found.path.slice(-20)).toString()
    return {key, owner, token, ttlMs, expiresAt: new Date(expiresMs)}
  }

  async release(key: string, owner: string): Promise<boolean> {
    await Promise.all(this.pending.splice(0))
    const found = await this.find(key, owner)
    this.mine.delete(owner)
    if (!found) return false
    let held = false
    try {
      held = (await lstat(found.path)).mtimeMs > Date.now()
      await lutimes(found.path, 0, 0) // expired: wakes the watchers; the entry keeps the counter
    } catch {
      return false
    }
    this.log?.(`file: released ${found.path}`)
    const dir = await this.keyDir(key)
    const {entries, max} = await this.scan(dir)
    await this.collect(dir, entries, max, Date.now())
    return held
  }

  async status(key?: string): Promise<LockState[]> {
    const locksDir = await safeDir(this.base, ['locks'], this.modes)
    const components = key === undefined ? (await readdir(locksDir)).sort() : [encodeName(key)]
    const states: LockState[] = []
    const now = Date.now()
    for (const component of components) {
      const dir = join(locksDir, component)
      if (!(await existingDir(dir))) continue
      const {entries} = await this.scan(dir)
      const holders = await this.holders(dir, entries.filter((e) => e.expiresMs > now))
      if (holders.length === 0) continue
      const name = key ?? (await decodeName(locksDir, component).catch(() => component))
      states.push({key: name, holders: holders.sort((a, b) => Number(BigInt(a.token) - BigInt(b.token)))})
    }
    return states
  }

  /** A force release (mtime 0) or a deleted entry is noticed at once, not at the next renewal. */
  watchLoss(lease: Lease, onLost: (why: string) => void): () => void {
    const path = this.mine.get(lease.owner)
    if (!path) return () => {}
    const check = () => {
      lstat(path).then(
        (info) => info.mtimeMs === 0 && onLost('the lease was released by someone else (force release?)'),
        () => onLost('the lease was deleted'),
      )
    }
    try {
      const watcher = watch(dirname(path), {persistent: false}, check)
      watcher.on('error', () => {})
      return () => watcher.close()
    } catch {
      return () => {} // no inotify: the next renewal finds out
    }
  }

  async forceRelease(key: string): Promise<number> {
    const dir = await this.keyDir(key)
    const {entries, max} = await this.scan(dir)
    const now = Date.now()
    let count = 0
    for (const entry of entries) {
      if (entry.expiresMs <= now) continue
      await lutimes(join(dir, entry.name), 0, 0)
      count++
    }
    await this.collect(dir, entries.map((e) => ({...e, expiresMs: 0})), max, now)
    return count
  }
}
