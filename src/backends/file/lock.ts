// File-backend locks: a versioned lease state per key, changed only by compare-and-swap renames,
// safe on local disks and NFS and exact whatever the delay between any two system calls. The
// protocol, its invariants and the argument for them are in leases.ts; this module runs its steps
// against the real directory and adds waiting.
//
// It keeps proper-lockfile's semantics (a lease that is stale after its TTL, no server), but not its
// mechanism: mkdir/rmdir reclaim lets two processes in (moxystudio/node-proper-lockfile#121), and
// so did this backend's own first protocol (a generation file per holder, with old generations
// collected), because a scanner delayed past a collection could link a generation that had
// already been held.
//
// - Creating a key's directory is itself atomic: it is built in tmp/ with its first state and
//   renamed into place, so there is never a key directory without a state, and never two first
//   states (rename onto a directory that is not empty fails). It is never removed afterwards.
// - Waiters watch the key's directory (inotify via fs.watch: every commit renames the marker), or
//   once in line a wake-up file of their own (wakeFile below), and arm a timer for the earliest
//   expiry; a slow poll remains as insurance, and for NFS, where another machine's changes raise
//   no event.
// - State files are written without fsync: after a power loss the state may be older than what
//   was acknowledged (leases expire by then anyway), and so may the fencing counter.
import {readdirSync, watch} from 'node:fs'
import {open, readdir, rename, rm, unlink, constants} from 'node:fs/promises'
import {join} from 'node:path'

import {LockLostError, unavailable} from '../../errors.js'
import type {AcquireRequest, Holder, Lease, LockDriver, LockState} from '../types.js'
import {advance, begin, contentOf, DamagedState, encodeHolders, type HolderRecord, type Intent, markerName, type Outcome, type Reply, type Request, aheadInLine, lineMark, request as nextRequest, wakesWaiters} from './leases.js'
import {decodeName, encodeName, existingDir, existingPath, inExistingDirSync, makeDir, type Modes, readRegularFile, readRegularFileSync, safeDir, unpin, writeNewFile} from './paths.js'
import {waitFor} from './watch.js'

// A renewal this close to expiry is refused: a waiter may already have counted the lease as gone.
const renewMarginMs = (ttlMs: number) => Math.min(250, ttlMs / 10)
// How long an exclusive waiter's place ahead of new shared requests lasts unless refreshed (it is,
// at half of it, while the waiter lives): a waiter that died stops blocking readers after this.
const waiterTtlMs = 5000

/** Fresh ids for state names: unique per process and call, without loading node:crypto. */
let idCount = 0
function freshId(): string {
  const random = Math.floor(Math.random() * 2 ** 48).toString(36)
  return `${Date.now().toString(36)}${process.pid.toString(36)}${(idCount++).toString(36)}${random}`
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException).code

/** A state the protocol cannot read is the operator's to clear: exit 69 saying how. */
const damaged = (dir: string, error: unknown) => error instanceof DamagedState
  ? unavailable(`damaged lock directory ${dir}`, error.message, 'clear it with dlq lock release --force, or remove the directory if no dlq uses the key')
  : error

function toHolder(record: HolderRecord): Holder {
  return {
    owner: record.owner, host: record.host, pid: record.pid, user: record.user, command: record.command,
    fencingToken: record.token, acquiredAt: new Date(record.acquiredMs), expiresAt: new Date(record.expiresMs),
    mode: record.shared ? 'shared' : 'exclusive',
  }
}

export class FileLocks implements LockDriver {
  /** owner → key directory, for this process's own leases. */
  private readonly mine = new Map<string, string>()
  /** Encoded key → its pinned directory. */
  private readonly ready = new Map<string, string>()

  constructor(
    private readonly base: string,
    private readonly modes: Modes,
    private readonly log?: (line: string) => void,
  ) {}

  /** One step of a transaction: the system call a Request names, in `dir`. */
  private async perform(dir: string, step: Request): Promise<Reply> {
    try {
      switch (step.op) {
        case 'list':
          return {names: await readdir(dir)}
        case 'read':
          return {data: (await readRegularFile(join(dir, step.name))).toString('utf8')}
        case 'write':
          await writeNewFile(join(dir, step.name), step.data, this.modes)
          return {ok: true}
        case 'rename':
          await rename(join(dir, step.from), join(dir, step.to))
          return {ok: true}
        case 'unlink':
          await unlink(join(dir, step.name))
          return {ok: true}
      }
    } catch (error) {
      if (errorCode(error) === 'ENOENT' && step.op !== 'list') return {missing: true}
      throw error
    }
  }

  /**
   * Runs one transaction to its outcome. The collection that follows a commit is housekeeping
   * nobody waits for (off the hand-off path); release() lets it finish before the process ends.
   */
  private async transact(dir: string, intent: Intent): Promise<Outcome> {
    let tx = begin(intent)
    try {
      for (let step = nextRequest(tx); step && !tx.outcome; step = nextRequest(tx)) {
        tx = advance(tx, await this.perform(dir, step), Date.now(), freshId)
      }
    } catch (error) {
      throw damaged(dir, error)
    }
    this.log?.(`file: ${intent.kind} ${dir}: ${tx.outcome!.kind} (state ${tx.version}${tx.newId ? ` → ${BigInt(tx.version!) + 1n}` : ''})`)
    // Committed a state that names waiters in line: wake them, each on its own file.
    if (tx.named?.length) await this.wake(tx.named)
    if (nextRequest(tx)) this.tidy(this.finishCollecting(dir, tx))
    return tx.outcome!
  }

  private async finishCollecting(dir: string, tx: ReturnType<typeof begin>): Promise<void> {
    for (let step = nextRequest(tx); step; step = nextRequest(tx)) tx = advance(tx, await this.perform(dir, step), Date.now(), freshId)
  }

  /**
   * Waiters in line sleep on a file of their own, wake/<owner>, instead of the key's directory:
   * every commit raised five or so inotify events in every waiter's process (fifty waiters, fifty
   * wake-ups to look at a name and sleep on). A commit that names waiters touches their files
   * (an open with O_TRUNC: the file stays empty); a commit by a dlq before this one touches
   * none, and its waiters in line then wake at the timers or the fallback poll (5 s on a local
   * filesystem). A waiter removes its file when it stops waiting; one killed meanwhile leaves an
   * empty file in wake/, which nothing reads and anyone may remove.
   */
  private async wakeFile(owner: string): Promise<string | undefined> {
    try {
      const path = join(await this.wakeDir(), encodeName(owner))
      await writeNewFile(path, '', this.modes).catch((error: unknown) => {
        if (errorCode(error) !== 'EEXIST') throw error
      })
      return path
    } catch (error) {
      this.log?.(`file: no wake-up file for ${owner} (${(error as Error).message}): waiting on the key's directory`)
      return undefined
    }
  }

  private async wake(owners: string[]): Promise<void> {
    try {
      const dir = await this.wakeDir()
      await Promise.all(owners.map(async (owner) => {
        // Truncating the empty file raises the waiter's event and needs only write permission (in a
        // group's directory the waiter may be another member); O_NOFOLLOW: a link is not followed.
        const handle = await open(join(dir, encodeName(owner)), constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined)
        await handle?.close()
      }))
    } catch {
      // no wake/ to be had: the waiters' timers and fallback poll remain
    }
  }

  private pending: Promise<unknown>[] = []
  private tidy(work: Promise<unknown>): void {
    this.pending.push(work.catch(() => {}))
  }

  private leasesDir(): Promise<string> {
    return safeDir(this.base, ['leases'], this.modes)
  }

  private wakeDir(): Promise<string> {
    return safeDir(this.base, ['wake'], this.modes)
  }

  /**
   * The key's directory (pinned: paths.ts); with `create`, made (atomically, with its first state)
   * when missing. A planted link in its place is refused, never followed.
   */
  private async keyDir(key: string, create: boolean): Promise<string | undefined> {
    const leases = await this.leasesDir()
    const component = encodeName(key)
    const ready = this.ready.get(component)
    if (ready) return ready
    let dir = await existingDir(join(leases, component), this.modes)
    if (!dir) {
      if (!create) return undefined
      await this.createKeyDir(key, join(leases, component))
      dir = await existingDir(join(leases, component), this.modes)
      if (!dir) throw unavailable(`lock directory ${join(leases, component)} vanished`, 'removed by someone else as dlq made it', 'key directories are never removed while dlq may use them')
    }
    this.ready.set(component, dir)
    return dir
  }

  private async createKeyDir(key: string, dir: string): Promise<void> {
    const staging = join(await safeDir(this.base, ['tmp'], this.modes), `lease-${freshId()}`)
    // Made with the tree's modes (2770 and 0660 in a group's directory, past the umask) before
    // anything is in it, so the renamed directory is as usable by the group as any other.
    const pinnedStaging = await makeDir(staging, this.modes)
    try {
      const {version, holders} = await this.legacy(key)
      const id = freshId()
      await writeNewFile(join(pinnedStaging, 'name'), key, this.modes) // the real name, for `lock status` of hashed names
      await writeNewFile(join(pinnedStaging, contentOf(version, id)), encodeHolders(holders), this.modes)
      await writeNewFile(join(pinnedStaging, markerName(version, id)), '', this.modes)
      await rename(staging, dir)
      this.log?.(`file: created ${dir} at version ${version}`)
    } catch (error) {
      // Another process created it first (rename onto a directory that is not empty fails).
      if (errorCode(error) !== 'ENOTEMPTY' && errorCode(error) !== 'EEXIST') throw error
    } finally {
      await unpin(pinnedStaging)
      await rm(staging, {recursive: true, force: true}).catch(() => {})
    }
  }

  /**
   * The first protocol kept a key's holders as locks/<key>/<20-digit generation> files whose
   * mtime was the expiry. A new key directory continues that key's counter (tokens never go back)
   * and starts with the holders it still lists, at the expiry they have then.
   */
  private async legacy(key: string): Promise<{version: bigint; holders: HolderRecord[]}> {
    // Held to the same rules as the rest of the tree: another user's locks/ could forge holders.
    const dir = await existingPath(this.base, ['locks', encodeName(key)], this.modes)
    let version = 0n
    const holders: HolderRecord[] = []
    if (dir === undefined) return {version, holders}
    try {
      const now = Date.now()
      for (const name of (await readdir(dir)).filter((n) => /^\d{20}$/.test(n))) {
        if (BigInt(name) > version && BigInt(name) < 2n ** 62n) version = BigInt(name)
        try {
          const handle = await open(join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
          const info = await handle.stat().catch(async (error) => {
            await handle.close()
            throw error
          })
          if (!info.isFile() || info.mtimeMs <= now) {
            await handle.close()
            continue
          }
          const record = JSON.parse(await handle.readFile('utf8').finally(() => handle.close())) as HolderRecord & {acquiredAt: string}
          holders.push({owner: record.owner, host: record.host, pid: record.pid, user: record.user, command: record.command,
            acquiredMs: Date.parse(record.acquiredAt), ttlMs: record.ttlMs, expiresMs: info.mtimeMs, token: BigInt(name).toString()})
        } catch {
          // released, a link, or unreadable: not a holder
        }
      }
    } finally {
      await unpin(dir)
    }
    return {version, holders}
  }

  async acquire(request: AcquireRequest): Promise<Lease | undefined> {
    const dir = (await this.keyDir(request.key, true))!
    const shared = request.shared === true
    // Only an exclusive request that may wait takes a place ahead of new shared ones.
    const queues = !shared && request.waitMs > 0
    const intent: Intent = {kind: 'acquire', owner: request.owner, limit: request.limit, ttlMs: request.ttlMs, info: request.holder, shared, waiterTtlMs: queues ? waiterTtlMs : 0}
    let acquired = false
    // Once in line, this waiter wakes only for the commits that name it: on its own file, else
    // (no file to be had) on the commits in the directory whose id names it (leases.ts, wakesWaiters).
    const mark = lineMark(request.owner)
    let inLine = false
    let wake: string | undefined | null // its file, once in line; null: none to be had
    const watched = async () => {
      if (inLine && wake === undefined) wake = (await this.wakeFile(request.owner)) ?? null
      return inLine && wake ? {path: wake} : {path: dir, wakesOn: (name: string | null) => wakesWaiters(name, inLine ? mark : undefined)}
    }
    try {
      return await waitFor<Lease | undefined>(dir, request.signal, Date.now() + request.waitMs, async () => {
        const outcome = await this.transact(dir, intent)
        if (outcome.kind === 'acquired') {
          acquired = true
          this.mine.set(request.owner, dir)
          return {done: true, value: {key: request.key, owner: request.owner, fencingToken: outcome.record.token, ttlMs: request.ttlMs, expiresAt: new Date(outcome.record.expiresMs)}, next: 0}
        }
        const holders = outcome.kind === 'busy' ? outcome.holders : []
        const waiting = outcome.kind === 'busy' ? outcome.waiting : []
        request.onWaiting?.(holders.map(toHolder))
        // A holder that died is noticed at its expiry, without any event; so is a dead exclusive
        // waiter ahead in line (by a shared request: any); and an exclusive waiter refreshes its
        // place at half its time.
        const own = waiting.find((w) => w.owner === request.owner)
        inLine = own !== undefined
        const times = [...holders.map((h) => h.expiresMs), ...aheadInLine(waiting, request.owner).map((w) => w.expiresMs), ...(own ? [own.expiresMs - waiterTtlMs / 2] : [])]
        return {done: false, value: undefined, next: Math.min(...times)}
      }, undefined, watched)
    } finally {
      if (wake) await unlink(wake).catch(() => {})
      // A waiter that gives up leaves at once, so the readers behind it need not wait for its expiry.
      if (!acquired && queues) await this.transact(dir, {kind: 'leave', owner: request.owner}).catch(() => {})
    }
  }

  private async dirOf(key: string, owner: string): Promise<string | undefined> {
    return this.mine.get(owner) ?? (await this.keyDir(key, false))
  }

  async renew(key: string, owner: string, ttlMs?: number): Promise<Lease> {
    const dir = await this.dirOf(key, owner)
    if (!dir) throw new LockLostError(key, `no lease with owner ${owner} (the key has never been locked)`)
    const outcome = await this.transact(dir, {kind: 'renew', owner, ttlMs, marginMs: renewMarginMs(ttlMs ?? 30_000)})
    if (outcome.kind !== 'renewed') throw new LockLostError(key, outcome.kind === 'lost' ? outcome.why : 'the lease is gone')
    return {key, owner, fencingToken: outcome.record.token, ttlMs: outcome.record.ttlMs, expiresAt: new Date(outcome.record.expiresMs)}
  }

  async release(key: string, owner: string): Promise<boolean> {
    const dir = await this.dirOf(key, owner)
    this.mine.delete(owner)
    if (!dir) return false
    const outcome = await this.transact(dir, {kind: 'release', owner})
    await Promise.all(this.pending.splice(0))
    return outcome.kind === 'released' && outcome.held
  }

  async status(key?: string): Promise<LockState[]> {
    const leases = await this.leasesDir()
    const components = key === undefined ? (await readdir(leases)).sort() : [encodeName(key)]
    // Key after key with synchronous calls: a read is about eight system calls of a few µs, and on
    // the thread pool each cost more in hand-offs than the call (10,000 keys: see the README).
    const states: LockState[] = []
    for (const component of components) {
      const read = (dir: string) => this.readSync(dir)
      const ready = this.ready.get(component)
      const holders = ready ? read(ready) : inExistingDirSync(join(leases, component), this.modes, read)
      if (!holders?.length) continue
      const name = key ?? decodeName(leases, component, this.modes) ?? component
      states.push({key: name, holders: holders.map(toHolder).sort((a, b) => Number(BigInt(a.fencingToken) - BigInt(b.fencingToken)))})
    }
    return states
  }

  /** The holders of a key's directory: a read transaction (list, read) run with synchronous calls. */
  private readSync(dir: string): HolderRecord[] {
    let tx = begin({kind: 'read'})
    try {
      for (let step = nextRequest(tx); step && !tx.outcome; step = nextRequest(tx)) {
        let reply: Reply
        if (step.op === 'list') reply = {names: readdirSync(dir)}
        else if (step.op === 'read') {
          try {
            reply = {data: readRegularFileSync(join(dir, step.name)).toString('utf8')}
          } catch (error) {
            if (errorCode(error) !== 'ENOENT') throw error
            reply = {missing: true}
          }
        } else throw new Error(`a read transaction asked for ${step.op}`)
        tx = advance(tx, reply, Date.now(), freshId)
      }
    } catch (error) {
      throw damaged(dir, error)
    }
    return tx.outcome?.kind === 'state' ? tx.outcome.holders : []
  }

  /** A force release is noticed at once (every commit renames the marker), not at the next renewal. */
  watchLoss(lease: Lease, onLost: (why: string) => void): () => void {
    const dir = this.mine.get(lease.owner)
    if (!dir) return () => {}
    let checking = false
    let again = false
    const check = async (): Promise<void> => {
      if (checking) {
        again = true
        return
      }
      checking = true
      try {
        do {
          again = false
          const outcome = await this.transact(dir, {kind: 'read'}).catch(() => undefined)
          if (outcome?.kind === 'state' && !outcome.holders.some((h) => h.owner === lease.owner)) {
            if (this.mine.has(lease.owner)) onLost('the lease is gone: released by someone else (force release?), or expired')
            return
          }
        } while (again)
      } finally {
        checking = false
      }
    }
    try {
      const watcher = watch(dir, {persistent: false}, (_event, name) => wakesWaiters(name) && void check())
      watcher.on('error', () => {})
      return () => watcher.close()
    } catch {
      return () => {} // no inotify: the next renewal finds out
    }
  }

  async forceRelease(key: string): Promise<number> {
    const dir = await this.keyDir(key, false)
    if (!dir) return 0
    const outcome = await this.transact(dir, {kind: 'forceRelease'})
    await Promise.all(this.pending.splice(0))
    return outcome.kind === 'forced' ? outcome.count : 0
  }
}
