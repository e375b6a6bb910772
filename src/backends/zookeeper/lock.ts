// ZooKeeper locks and semaphores: the lock recipe of the ZooKeeper documentation ("Recipes and
// Solutions"), as kazoo (kazoo/recipe/lock.py) and Curator (InterProcessMutex) implement it, with
// --limit N and leases on top. Read top to bottom:
//
// 1. A contender creates an EPHEMERAL_SEQUENTIAL node locks/<key>/c.<owner>.<seq> whose data is its
//    holder record. The owner id is in the name so that a create whose reply was lost (connection
//    dropped after the server applied it) is found again instead of created twice: a duplicate
//    would sort ahead of us and block us forever (Curator's "protected" mode, kazoo's uuid prefix).
// 2. Contenders hold in sequence order: a contender holds when fewer than N live nodes precede it
//    (N = its --limit), counting leases (below). With N = 1 that is the lowest node.
// 3. A waiter watches only the N contender nodes immediately ahead of it (N = 1: its predecessor;
//    no herd). Watching only the node N places ahead is not enough: with N = 2 and nodes A B C D,
//    D watches B, A and C leave, and D should hold while B stays. The N nodes just ahead change only
//    when one of them goes, and while all N live the waiter cannot hold. A waiter with fewer than N
//    ahead is blocked only by leases, so it watches those too.
// 4. The fencing token is the node's czxid: zxids increase across the whole ensemble, and nodes hold
//    in creation order, so every acquisition of a key gets a larger token (force releases included,
//    and nothing is kept per key that could reset it). It is the zxid of the create's reply, so an
//    uncontended acquire+release costs the recipe's three requests (create, getChildren, delete).
// 5. A holder's record carries its lease (`leaseMs`): it expires at the node's mtime + leaseMs on
//    the server's clock, and renewals rewrite it (setData, compare-and-set on the version). A holder
//    whose process died but whose session lingers (kill -9: the session outlives it by its timeout)
//    is deleted by the waiter behind it once expired, version-checked so a renewal wins a race.
//    Waiters' nodes never expire this way (their session is their lease): a node is created marked
//    acquired, so that an uncontended acquisition costs no second write, and a contender that has
//    to wait marks itself waiting, then acquired again (with the time) once it holds.
// 6. Session loss is lock loss: watchLoss reports an expired session, a connection silent for
//    nearly the session timeout (connection.ts), and the node's deletion (force release).
// 8. Shared (reader) contenders, the read/write lock recipe of the same document (Curator's
//    InterProcessReadWriteLock): a shared contender's node is c.<owner>.r.<seq> (an exclusive one's
//    c.<owner>.<seq>, so a dlq of before --shared counts readers as the contenders they are). A
//    reader holds when no exclusive contender precedes it and no live lease is exclusive, and
//    watches only the nearest exclusive contender ahead (no herd); an exclusive contender holds as
//    in step 2, and only when no shared contender precedes it and no live lease is shared. Writer
//    preference is the sequence order itself: a reader arriving after a waiting writer is behind it
//    (FIFO). A lease of step 7 keeps its mode in its record (`shared`).
// 7. `lock acquire` hands its lease over to a node that outlives its session: when the backend is
//    closed while a lease is still held, one multi turns the contender into a PERSISTENT node
//    locks/<key>/l.<owner> with the same record, token and expiry (mtime + leaseMs). Such a lease
//    counts as a holder until released (--token), renewed, or seen expired, when whoever sees it
//    deletes it. ZooKeeper's own TTL nodes would need extendedTypesEnabled on the server and a
//    create opcode node-zookeeper-client does not have.
import type {Stat, Watcher} from 'node-zookeeper-client'

import {LockLostError} from '../../errors.js'
import {inBatches} from '../inbatches.js'
import type {AcquireRequest, Holder, HolderInfo, Lease, LockDriver, LockState} from '../types.js'
import {Wakeup} from '../wakeup.js'
import {Code, isCode, isConnectionLoss, Mode, type Session, time, zxid} from './connection.js'
import {basename, decodeName, encodeName, type Layout, sequenceOf} from './paths.js'

// A waiter deletes an expired holder only this long after its expiry (on the earliest the server's
// clock can be, clock.ts): a margin for the server's clock itself.
const expiryGraceMs = 25
// A renewal this close to expiry is refused: a waiter may already have counted the lease as gone.
const renewMarginMs = (ttlMs: number) => Math.min(250, ttlMs / 10)
const fallbackPollMs = 3000
const NODE_DELETED = 2

interface HolderRecord extends HolderInfo {
  owner: string
  limit: number
  /** The TTL the lease was taken with: what renew uses by default. */
  ttlMs: number
  /** The lease ends at mtime + leaseMs (server clock). */
  leaseMs: number
  /** Holds (and so expires); false while waiting, when the session alone keeps the node. */
  acquired: boolean
  acquiredAt: number
  /** Leases only: the fencing token of the acquisition they continue. */
  token?: string
  /** A shared (reader) holding; exclusive when absent. */
  shared?: boolean
}

interface Known {
  name: string
  path: string
  record: HolderRecord
  stat: Stat
}

/** This process's holdings, for renew, release, watchLoss and the hand-over on close. */
interface Mine {
  key: string
  path: string
  record: HolderRecord
  token: string
  expiresAt: number
  lost?: string
  /** The write that marks a waiter the holder, still in flight. */
  confirming?: Promise<void>
}

const contenderPrefix = (owner: string) => `c.${encodeName(owner)}.`
/** c.<owner>.r.<seq>: a shared contender (names are encoded, so an owner never holds a dot). */
const isSharedContender = (name: string) => name.split('.').length === 4
const isShared = (node: Known) => (node.name.startsWith('l.') ? node.record.shared === true : isSharedContender(node.name))
const leaseName = (owner: string) => `l.${encodeName(owner)}`
const encode = (record: HolderRecord) => Buffer.from(JSON.stringify(record))
const expiry = (node: Known) => time(node.stat.mtime) + node.record.leaseMs

/** A node that is not dlq's (or is damaged) counts as a live contender that never expires. */
function parse(data: Buffer, name: string): HolderRecord {
  try {
    const record = JSON.parse(data.toString('utf8')) as HolderRecord
    if (typeof record.owner === 'string' && typeof record.leaseMs === 'number') return record
  } catch {
    // fall through
  }
  return {owner: name, host: '?', pid: 0, user: '?', command: '?', limit: 1, ttlMs: 0, leaseMs: 0, acquired: false, acquiredAt: 0}
}

function split(children: string[]): {contenders: string[]; leases: string[]} {
  const contenders = children.filter((c) => c.startsWith('c.')).sort((a, b) => (sequenceOf(a) < sequenceOf(b) ? -1 : 1))
  return {contenders, leases: children.filter((c) => c.startsWith('l.'))}
}

export class ZooKeeperLocks implements LockDriver {
  private readonly mine = new Map<string, Mine>()
  /** Whether a create's reply zxid is its node's czxid (checked once against exists()). */
  private replyZxids?: boolean

  constructor(
    private readonly session: Session,
    private readonly paths: Layout,
  ) {}

  /** Reads nodes (setting watches when asked); a node gone meanwhile is left out. */
  private async read(keyPath: string, names: string[], watcher?: Watcher): Promise<Known[]> {
    const nodes = await Promise.all(names.map(async (name) => {
      const path = `${keyPath}/${name}`
      try {
        const {data, stat} = await this.session.getData(path, watcher)
        return {name, path, record: parse(data, name), stat}
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return undefined
        throw error
      }
    }))
    return nodes.filter((n): n is Known => n !== undefined)
  }

  private expired(node: Known, now: number): boolean {
    return node.record.acquired && expiry(node) + expiryGraceMs < now
  }

  /** Deletes an expired node unless it was renewed meanwhile (version check). */
  private async collect(node: Known): Promise<void> {
    await this.session.remove(node.path, node.stat.version).catch((error: unknown) => {
      if (!isCode(error, Code.NO_NODE, Code.BAD_VERSION)) throw error
    })
  }

  /** Step 1: create our contender node, finding it again if the create's reply was lost. */
  private async enter(keyPath: string, owner: string, record: HolderRecord, shared: boolean): Promise<{name: string; sent: number; received: number; czxid?: bigint}> {
    const prefix = contenderPrefix(owner)
    for (let attempt = 0; ; attempt++) {
      const sent = Date.now()
      try {
        const {path, zxid: czxid} = await this.session.createWithZxid(`${keyPath}/${prefix}${shared ? 'r.' : ''}`, encode(record), Mode.EPHEMERAL_SEQUENTIAL)
        return {name: basename(path), sent, received: Date.now(), czxid}
      } catch (error) {
        if (isCode(error, Code.NO_NODE) && attempt < 3) {
          this.session.forget(keyPath)
          await this.session.ensurePath(keyPath)
          continue
        }
        if (!isConnectionLoss(error) || attempt >= 3) throw error
      }
      // The create may have happened: look for our own node before trying again.
      const children = await this.session.getChildren(keyPath).then((r) => r.children, (error: unknown) => {
        if (isCode(error, Code.NO_NODE)) return []
        throw error
      })
      const ours = children.find((c) => c.startsWith(prefix))
      if (ours) return {name: ours, sent, received: Date.now()}
    }
  }

  async acquire(request: AcquireRequest): Promise<Lease | undefined> {
    const {key, owner, limit, signal} = request
    const shared = request.shared === true
    this.session.preferTimeout(request.ttlMs)
    const keyPath = this.paths.key(key)
    const deadline = Date.now() + request.waitMs
    const record: HolderRecord = {owner, ...request.holder, limit, ttlMs: request.ttlMs, leaseMs: request.ttlMs, acquired: true, acquiredAt: Date.now()}
    if (shared) record.shared = true
    let node: {name: string; path: string; version: number; token?: string; replyZxid?: bigint; sent: number; received: number; waiting: boolean} | undefined
    const wakeup = new Wakeup(signal)
    const onChange = wakeup.wake
    const watcher: Watcher = onChange
    const stopSessionWatch = this.session.onChange(onChange)
    let acquired = false
    let troubleSince: number | undefined
    try {
      for (;;) {
        try {
          signal.throwIfAborted()
          wakeup.changed = false
          if (!node) {
            record.acquired = true
            record.acquiredAt = Date.now()
            const entered = await this.enter(keyPath, owner, record, shared)
            node = {name: entered.name, path: `${keyPath}/${entered.name}`, version: 0, sent: entered.sent, received: entered.received, waiting: false, replyZxid: entered.czxid}
            // Step 4: the create's reply carries the czxid; read it back only until that is proven.
            if (this.replyZxids) node.token = entered.czxid?.toString()
          }
          const [{children}, own] = await Promise.all([
            this.session.getChildren(keyPath),
            node.token === undefined ? this.session.exists(node.path) : undefined,
          ])
          if (own) {
            node.token = zxid(own.czxid).toString()
            if (!node.waiting) this.session.observeWrite(own, node.sent, node.received)
          }
          if (own && this.replyZxids === undefined) this.replyZxids = node.replyZxid !== undefined && node.token === node.replyZxid.toString()
          const {contenders, leases} = split(children)
          const index = contenders.indexOf(node.name)
          if (index === -1) {
            // Our node is gone (session expired, or deleted as expired while we were stopped): enter again.
            node = undefined
            continue
          }
          // Step 2: fewer than `limit` ahead and no lease to count: ours, with no further read.
          // Step 8: a reader needs no exclusive contender ahead; a writer no shared one.
          const ahead = contenders.slice(0, index)
          const blockers = shared ? ahead.filter((c) => !isSharedContender(c)) : ahead.filter(isSharedContender)
          let holds = leases.length === 0 && (shared ? blockers.length === 0 : index < limit && blockers.length === 0)
          let nextExpiry = Number.POSITIVE_INFINITY
          if (!holds) {
            // Step 3: read (and watch) the nodes that can change our turn: a writer the `limit` just
            // ahead, a reader the nearest writer ahead; the leases when only they can stand in the way.
            const window = shared ? blockers.slice(-1) : contenders.slice(Math.max(0, index - limit), index)
            const leasesCount = shared ? blockers.length === 0 : index < limit
            const watched = await this.read(keyPath, leasesCount ? [...window, ...leases] : window, watcher)
            if (watched.length < window.length + (leasesCount ? leases.length : 0)) continue // one went meanwhile
            // Someone's lease is over when the server's clock is past it for sure: its earliest.
            let now = this.session.clockNow().earliest
            let expired = watched.filter((n) => this.expired(n, now))
            if (expired.length > 0 && !this.session.clockKnown) {
              // About to delete someone's node: on the server's clock, not on a guess.
              now = (await this.session.serverNow()).earliest
              expired = watched.filter((n) => this.expired(n, now))
            }
            if (expired.length > 0) {
              await Promise.all(expired.map((n) => this.collect(n)))
              continue
            }
            const liveLeases = watched.filter((n) => n.name.startsWith('l.'))
            holds = shared
              ? blockers.length === 0 && !liveLeases.some((n) => !isShared(n))
              : index + liveLeases.length < limit && blockers.length === 0 && !liveLeases.some(isShared)
            for (const n of watched) if (n.record.acquired) nextExpiry = Math.min(nextExpiry, expiry(n) + expiryGraceMs - (now - Date.now()))
          }
          if (holds) {
            let confirming: Promise<void> | undefined
            if (node.waiting) {
              // Waited: record that (and when) we hold, which starts the lease from now and makes it
              // expirable. Not awaited: our place in line already makes us the holder, and the
              // session sends our later requests (renew, release, hand-over) after this one.
              const sent = Date.now()
              Object.assign(record, {acquired: true, acquiredAt: sent})
              node.sent = sent
              confirming = this.session.setData(node.path, encode(record), node.version).then((stat) => this.session.observeWrite(stat, sent), () => {})
            }
            acquired = true
            const expiresAt = node.sent + request.ttlMs
            this.mine.set(owner, {key, path: node.path, record: {...record}, token: node.token!, expiresAt, confirming})
            return {key, owner, fencingToken: node.token!, ttlMs: request.ttlMs, expiresAt: new Date(expiresAt)}
          }
          if (Date.now() >= deadline) return undefined
          if (!node.waiting) {
            // Waiting is the session's business: unmark so that no one expires us while we wait.
            try {
              const sent = Date.now()
              const stat = await this.session.setData(node.path, encode({...record, acquired: false}), node.version)
              this.session.observeWrite(stat, sent)
              node.version = stat.version
              node.waiting = true
            } catch (error) {
              if (!isCode(error, Code.NO_NODE, Code.BAD_VERSION)) throw error
              if (isCode(error, Code.NO_NODE)) node = undefined
              else node.version = (await this.session.exists(node.path))?.version ?? node.version
            }
            continue
          }
          if (request.onWaiting) request.onWaiting((await this.status(key))[0]?.holders ?? [])
          if (wakeup.changed) continue
          troubleSince = undefined
          const sleep = Math.max(1, Math.min(deadline - Date.now(), nextExpiry - Date.now(), fallbackPollMs))
          await wakeup.sleep(sleep)
        } catch (error) {
          // The connection dropped (a server of the ensemble went away): the client reconnects,
          // and the loop starts over from what ZooKeeper says now.
          troubleSince ??= Date.now()
          if (signal.aborted || !this.session.retryable(error, troubleSince)) throw error
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
    } finally {
      wakeup.dispose()
      stopSessionWatch()
      if (!acquired && node) await this.session.remove(node.path).catch(() => {})
    }
  }

  /** This owner's node: ours from memory, anyone's by its name. */
  private async find(key: string, owner: string): Promise<Known | undefined> {
    const keyPath = this.paths.key(key)
    const own = this.mine.get(owner)
    let names: string[]
    if (own && own.key === key) names = [basename(own.path)]
    else {
      try {
        const {children} = await this.session.getChildren(keyPath)
        names = children.filter((c) => c === leaseName(owner) || c.startsWith(contenderPrefix(owner)))
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return undefined
        throw error
      }
    }
    return (await this.read(keyPath, names))[0]
  }

  private token(node: Known): string {
    return node.record.token ?? zxid(node.stat.czxid).toString()
  }

  async renew(key: string, owner: string, ttlMs?: number): Promise<Lease> {
    const own = this.mine.get(owner)
    if (own?.key === key) return this.renewOwn(own, ttlMs ?? own.record.ttlMs)
    for (;;) {
      const node = await this.find(key, owner)
      if (!node) throw new LockLostError(key, `no lease with owner ${owner} (it expired, was released, or was force-released)`)
      if (!node.record.acquired) throw new LockLostError(key, `owner ${owner} is waiting for the lock, not holding it`)
      if (this.expired(node, (await this.session.serverNow()).earliest)) {
        await this.collect(node)
        throw new LockLostError(key, `the lease expired at ${new Date(expiry(node)).toISOString()} before it was renewed`)
      }
      const granted = ttlMs ?? node.record.ttlMs
      const record: HolderRecord = {...node.record, leaseMs: granted}
      const sent = Date.now()
      try {
        const stat = await this.session.setData(node.path, encode(record), node.stat.version)
        this.session.observeWrite(stat, sent)
        return {key, owner, fencingToken: this.token(node), ttlMs: granted, expiresAt: new Date(sent + granted)}
      } catch (error) {
        if (isCode(error, Code.BAD_VERSION)) continue // written meanwhile (another renewal): read again
        if (isCode(error, Code.NO_NODE)) throw new LockLostError(key, 'the lock node was deleted (force release, or it expired)')
        throw error
      }
    }
  }

  /**
   * Step 5 for a holding of this process (`lock run`), Curator's SUSPENDED → RECONNECTED: a
   * renewal whose connection dropped, or whose server went silent, waits for the session to be
   * taken back by a server (any of the ensemble) and is sent again, for as long as the lease may
   * still be renewed. The lease ends at the send time of the latest renewal that succeeded plus
   * its TTL: no later than the node's mtime + leaseMs, which waiters judge it by. The record written
   * is ours (acquired): a confirming write lost in a reconnect is made good by the next renewal.
   */
  private async renewOwn(own: Mine, granted: number): Promise<Lease> {
    const {key} = own
    const owner = own.record.owner
    await own.confirming
    for (;;) {
      if (own.lost) throw new LockLostError(key, own.lost)
      const renewableUntil = own.expiresAt - renewMarginMs(own.record.ttlMs)
      if (Date.now() >= renewableUntil) throw new LockLostError(key, `the lease expired at ${new Date(own.expiresAt).toISOString()} before it was renewed`)
      const sent = Date.now()
      try {
        const node = (await this.read(this.paths.key(key), [basename(own.path)]))[0]
        if (!node) throw new LockLostError(key, 'the lock node was deleted (force release, or its session expired)')
        const record: HolderRecord = {...own.record, leaseMs: granted}
        const stat = await this.session.setData(own.path, encode(record), node.stat.version)
        this.session.observeWrite(stat, sent)
        Object.assign(own, {record, expiresAt: sent + granted})
        return {key, owner, fencingToken: own.token, ttlMs: granted, expiresAt: new Date(sent + granted)}
      } catch (error) {
        if (isCode(error, Code.BAD_VERSION)) continue // written meanwhile (a renewal whose reply was lost): read again
        if (isCode(error, Code.NO_NODE)) throw new LockLostError(key, 'the lock node was deleted (force release, or its session expired)')
        if (!isConnectionLoss(error) || !this.session.mayLive()) throw error
        // Suspended: go on once a server has the session again (the request may have been applied; a renewal twice is one).
        if (!(await this.session.whenConnected(renewableUntil))) throw error
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    }
  }

  async release(key: string, owner: string): Promise<boolean> {
    const own = this.mine.get(owner)
    this.mine.delete(owner)
    if (own?.key === key) {
      // Our own node: delete it whatever state it is in.
      await own.confirming
      try {
        await this.session.remove(own.path)
        return own.lost === undefined
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return false
        throw error
      }
    }
    for (;;) {
      const node = await this.find(key, owner)
      if (!node || !node.record.acquired) return false
      const held = !this.expired(node, (await this.session.serverNow()).earliest)
      try {
        await this.session.remove(node.path, node.stat.version)
        return held
      } catch (error) {
        if (isCode(error, Code.BAD_VERSION)) continue
        if (isCode(error, Code.NO_NODE)) return false
        throw error
      }
    }
  }

  /** Who holds the key, in token order, as seen from outside (each contender with its own limit). */
  private async holdsOf(key: string, tidy = false): Promise<{holders: Known[]; waiters: number; queue: Known[]}> {
    const keyPath = this.paths.key(key)
    let children: string[]
    try {
      children = (await this.session.getChildren(keyPath)).children
    } catch (error) {
      if (isCode(error, Code.NO_NODE)) return {holders: [], waiters: 0, queue: []}
      throw error
    }
    if (children.length === 0 && tidy) {
      // An idle key's node would stay forever (node-zookeeper-client cannot create CONTAINER
      // nodes, which the server deletes when empty). An acquirer racing this re-creates it.
      await this.session.remove(keyPath).catch(() => {})
      return {holders: [], waiters: 0, queue: []}
    }
    const {contenders, leases} = split(children)
    const nodes = await this.read(keyPath, [...leases, ...contenders])
    const now = this.session.clockNow().earliest
    const live = nodes.filter((n) => !this.expired(n, now))
    const liveLeases = live.filter((n) => n.name.startsWith('l.'))
    const holders = [...liveLeases]
    let ahead = 0
    let sharedAhead = liveLeases.some(isShared)
    let exclusiveAhead = liveLeases.some((n) => !isShared(n))
    const queue: Known[] = [] // contenders in sequence order: the order they will hold (fair)
    for (const node of live.filter((n) => n.name.startsWith('c.'))) {
      const reader = isShared(node)
      if (reader ? !exclusiveAhead : liveLeases.length + ahead < node.record.limit && !sharedAhead) holders.push(node)
      else queue.push(node)
      if (reader) sharedAhead = true
      else exclusiveAhead = true
      ahead++
    }
    holders.sort((a, b) => (BigInt(this.token(a)) < BigInt(this.token(b)) ? -1 : 1))
    return {holders, waiters: queue.length, queue}
  }

  private holder(node: Known): Holder {
    const {record} = node
    return {
      owner: record.owner, host: record.host, pid: record.pid, user: record.user, command: record.command,
      fencingToken: this.token(node),
      mode: isShared(node) ? 'shared' : 'exclusive',
      acquiredAt: new Date(record.acquired ? record.acquiredAt : time(node.stat.mtime)),
      expiresAt: new Date(expiry(node)),
    }
  }

  async status(key?: string): Promise<LockState[]> {
    let keys: string[]
    if (key !== undefined) keys = [key]
    else {
      try {
        keys = (await this.session.getChildren(this.paths.locks)).children.map(decodeName).sort()
      } catch (error) {
        if (isCode(error, Code.NO_NODE)) return []
        throw error
      }
    }
    // Keys are read 64 at a time (pipelined on the session), not one round trip after another.
    const states = await inBatches(keys, 64, async (name): Promise<LockState | undefined> => {
      const {holders, waiters, queue} = await this.holdsOf(name, key === undefined)
      if (holders.length === 0) return undefined
      return {
        key: name, holders: holders.map((n) => this.holder(n)), waiters,
        queue: queue.map(({record, stat}) => ({owner: record.owner, host: record.host, pid: record.pid, user: record.user, command: record.command, since: new Date(time(stat.ctime))})),
      }
    })
    return states.filter((state) => state !== undefined)
  }

  async forceRelease(key: string): Promise<number> {
    const {holders} = await this.holdsOf(key)
    let count = 0
    for (const node of holders) {
      try {
        await this.session.remove(node.path)
        count++
      } catch (error) {
        if (!isCode(error, Code.NO_NODE)) throw error
      }
    }
    return count
  }

  watchLoss(lease: Lease, onLost: (why: string) => void): () => void {
    const own = this.mine.get(lease.owner)
    if (!own) return () => {}
    let stopped = false
    let stopSession = () => {}
    const lose = (why: string) => {
      if (stopped) return
      stopped = true
      own.lost ??= why
      stopSession()
      onLost(why)
    }
    stopSession = this.session.watchSession(lose)
    const watch: Watcher = (event) => {
      if (event.type === NODE_DELETED) lose('the lock node was deleted (force release?)')
      else arm() // our own renewal changed the data: watch again
    }
    const arm = () => {
      if (stopped) return
      this.session.exists(own.path, watch).then(
        (stat) => stat === null && lose('the lock node was deleted (force release?)'),
        () => {}, // connection trouble: the session watch decides, and the reconnect arms again
      )
    }
    // A watch is only set by an answered request: one lost in a disconnect is set again once a
    // server has the session back (the library re-registers the watches it did set, and keeps one per function).
    const stopReconnect = this.session.onChange(arm)
    arm()
    return () => {
      stopped = true
      stopSession()
      stopReconnect()
    }
  }

  /** `lock acquire`: the holding becomes a persistent node now, so a failure is reported. */
  async detach(key: string, owner: string): Promise<void> {
    const own = this.mine.get(owner)
    if (own === undefined || own.key !== key) throw new LockLostError(key, 'this process does not hold it')
    this.mine.delete(owner)
    await this.persist(owner, own)
  }

  /**
   * Step 7, when the backend closes: leases still held outlive this process as persistent nodes;
   * anything else of ours is deleted (the session's close would remove it too).
   */
  async handOver(): Promise<void> {
    const holdings = [...this.mine.entries()]
    this.mine.clear()
    await Promise.allSettled(holdings.map(([owner, own]) => this.persist(owner, own)))
  }

  private async persist(owner: string, own: Mine): Promise<void> {
    await own.confirming
    const remaining = own.expiresAt - Date.now()
    if (own.lost !== undefined || remaining <= renewMarginMs(own.record.ttlMs)) {
      // Not worth waiting for: the session's end removes it as well.
      this.session.remove(own.path).catch(() => {})
      if (own.lost !== undefined) throw new LockLostError(own.key, own.lost)
      return
    }
    const record: HolderRecord = {...own.record, leaseMs: Math.floor(remaining), token: own.token}
    const keyPath = own.path.slice(0, own.path.lastIndexOf('/'))
    await this.session.multi([
      {op: 'create', path: `${keyPath}/${leaseName(owner)}`, data: encode(record), mode: Mode.PERSISTENT},
      {op: 'remove', path: own.path},
    ])
  }
}
