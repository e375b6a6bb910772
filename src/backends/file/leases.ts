// The file backend's lock protocol, as pure steps: no I/O here. The driver (lock.ts) runs these
// steps against the real directory, one system call per step; the model checker
// (test/unit/file-lock-model.test.mjs) runs the very same steps against an in-memory directory over
// every interleaving of three processes, a clock and garbage collection, and checks the
// invariants below in every reachable state. A change that breaks them fails there.
//
// A key's directory holds one versioned state and nothing else:
//
//   leases/<key>/S.<v>.<id>   the state marker: exactly one exists at any moment (empty file)
//   leases/<key>/C.<v>.<id>   the holders of version v as JSON (immutable once written), and the
//                             exclusive requests waiting (each with an expiry it refreshes)
//
// A transaction (acquire, renew, release, force release) is a compare-and-swap on the version:
//   1. list     readdir: the S name with the highest version is the state read (v, id)
//   2. read     C.<v>.<id>; ENOENT means the state moved on (its content was collected): back to 1
//   3. decide   the new holders from the old ones and the clock (pure: `decide` below)
//   4. write    C.<v+1>.<new id>, a name nobody else can use (fresh random id)
//   5. commit   rename(S.<v>.<id>, S.<v+1>.<new id>); ENOENT means another commit came first,
//               or (over NFS) that a retransmitted rename found its own work done: so list again
//               and look for our marker; if it is there we committed, else unlink our C (6) and
//               go back to 1
//   7. collect  unlink C.<v>.<id> and any C older than the state read, or of version v but not id
//
// Why the commit is exact, whatever the delay between any two steps: a name S.<v+1>.<x> is only
// ever created by renaming S.<v>.<y>, which exists at most once, so by induction each version is
// created at most once and each S name exists at most once in the key's whole history. A rename
// whose source is gone fails. So a commit succeeds only if no other commit happened since its
// state was read, and a stalled process can never act on an old view: there is nothing it could
// re-create (unlike a scheme that recycles generation names, where a scanner delayed past a
// collection re-links a generation that was already held).
//
// Invariants (checked by the model in every reachable state):
//   I1 exactly one S name exists;
//   I2 the current state has at most `limit` holders whose lease has not expired;
//   I3 at most `limit` processes believe they hold the lock at any instant (a holder believes it
//      until the expiry of its last successful acquire or renewal, computed from the clock at its
//      read, never later than the expiry the state records for it);
//   I4 fencing tokens (the version an acquisition created) strictly increase in the order of the
//      acquisitions, so no token is ever given twice;
//   I5 never a writer beside anyone: no exclusive holder beside a shared one, in the state and
//      among the processes that believe they hold (exclusive ones stay within their limit: I2, I3).
// Shared (reader) holders: a shared acquire succeeds when no live holder is exclusive and no live
// exclusive request waits; an exclusive acquire when no live holder is shared and fewer than its
// limit are exclusive, counting the live waiters ahead of it in line, in arrival order; a request
// not in line is behind all of them. (--shared and --limit N > 1 do not combine, but a semaphore's
// holders and readers may meet on one key: they exclude each other.) Writer preference: an exclusive acquire that finds the key busy records itself
// in the state's `waiting` list with an expiry (waiterTtlMs), and refreshes it while it waits
// (decide: when less than half of it is left); a crashed waiter stops blocking readers at that
// expiry, one that gives up leaves the list at once (intent `leave`). Being a commit like any
// other, recording a waiter is covered by the same argument and the same model.
// A readdir that is not atomic with concurrent renames (POSIX allows that) can only show a state
// that existed at some instant during it, which is the same as an atomic readdir followed by a
// delay: a case the interleavings already cover. The collection in 7 never removes the current
// content: versions only grow, and a version below the one read, or version v with another id,
// is never current again.
// Clocks: expiries are compared with the local clock, so machines sharing a directory over NFS
// must keep their clocks in sync (as proper-lockfile's mtime check also assumes).

/** A holder as the state records it. */
export interface HolderRecord {
  owner: string
  host: string
  pid: number
  user: string
  command: string
  acquiredMs: number
  ttlMs: number
  expiresMs: number
  /** The fencing token: the version this acquisition created. */
  token: string
  /** A shared (reader) holder; exclusive when absent. */
  shared?: boolean
}

/** An exclusive request waiting for the key: new shared requests wait behind it until its expiry. */
export interface WaiterRecord {
  owner: string
  expiresMs: number
}

/** What a state file holds. */
export interface LeaseState {
  holders: HolderRecord[]
  waiting: WaiterRecord[]
}

export type Intent =
  | {kind: 'acquire'; owner: string; limit: number; ttlMs: number; info: Pick<HolderRecord, 'host' | 'pid' | 'user' | 'command'>; shared?: boolean; waiterTtlMs?: number}
  | {kind: 'leave'; owner: string}
  | {kind: 'renew'; owner: string; ttlMs?: number; marginMs: number}
  | {kind: 'release'; owner: string}
  | {kind: 'forceRelease'}
  | {kind: 'read'}

export type Outcome =
  | {kind: 'acquired'; record: HolderRecord}
  | {kind: 'busy'; holders: HolderRecord[]; waiting: WaiterRecord[]}
  | {kind: 'left'}
  | {kind: 'renewed'; record: HolderRecord}
  | {kind: 'lost'; why: string}
  | {kind: 'released'; held: boolean}
  | {kind: 'forced'; count: number}
  | {kind: 'state'; holders: HolderRecord[]}

/** One system call's worth of work, on names inside the key's directory. */
export type Request =
  | {op: 'list'}
  | {op: 'read'; name: string}
  | {op: 'write'; name: string; data: string}
  | {op: 'rename'; from: string; to: string}
  | {op: 'unlink'; name: string}

/** The answer to a request: names for list, data for read, or a missing name (ENOENT). */
export type Reply = {names: string[]} | {data: string} | {ok: true} | {missing: true}

export interface Transaction {
  intent: Intent
  phase: 'list' | 'read' | 'write' | 'commit' | 'confirm' | 'discard' | 'collect' | 'done'
  /** The state read: S.<version>.<id>. */
  version?: string
  id?: string
  /** Our new state, once decided: C.<version+1>.<newId>. */
  newId?: string
  data?: string
  pending?: Outcome
  garbage: string[]
  /** Lists in a row that showed no state marker (a directory that is not ours, or damaged). */
  empty: number
  /** The state whose content was missing at the last read: seen again, it is damaged. */
  missed?: string
  /** The waiters our new state names (its first two in line): the ones to wake once it is committed. */
  named?: string[]
  outcome?: Outcome
}

const stateName = /^S\.(\d{1,19})\.([0-9a-z]{1,40})$/
const contentName = /^C\.(\d{1,19})\.([0-9a-z]{1,40})$/
/** Versions stay below 2^63: a planted or damaged name can never wrap a token back to 1. */
const maxVersion = 2n ** 63n - 1n

export const markerName = (version: bigint | string, id: string) => `S.${version}.${id}`
/*
 * Who a commit wakes, told by the id of its marker (ids are opaque to the protocol: only their
 * freshness matters, and a fresh id starts with the time in base 36, a letter until 2059):
 * - `0<fresh>`: a quiet commit (a waiter's place recorded or refreshed), which frees nothing:
 *   it wakes nobody;
 * - `1<first><second><fresh>`: any other commit while exclusive requests stand in line, naming
 *   the first two (lineMark of their owners; the second covers a first that died within its
 *   place's expiry): a waiter in line wakes only when named (the driver also touches the named
 *   waiters' own wake-up files: lock.ts, `named` below); anyone else watching wakes;
 * - any other id (no line, or a commit by a dlq before the line): wakes everyone watching.
 * Waking decides nothing (every waiter reads the state before it acts): a missed or needless
 * wake costs time, never exclusivity, and the timers (expiries, places) and the fallback poll
 * remain.
 */
export const quietId = (id: string) => `0${id}`.slice(0, 40)
/** Four base-36 characters for an owner (FNV-1a): how a commit names a waiter it wakes. */
export function lineMark(owner: string): string {
  let hash = 0x811c9dc5
  for (let i = 0; i < owner.length; i++) hash = Math.imul(hash ^ owner.charCodeAt(i), 0x01000193) >>> 0
  return (hash % 36 ** 4).toString(36).padStart(4, '0')
}
/** The live waiters ahead of `owner` in line: all of them when it has no place. */
export function aheadInLine(waiting: WaiterRecord[], owner: string): WaiterRecord[] {
  const at = waiting.findIndex((w) => w.owner === owner)
  return at < 0 ? waiting : waiting.slice(0, at)
}
export const namingId = (line: WaiterRecord[], id: string) => (line.length === 0 ? id : `1${lineMark(line[0].owner)}${lineMark((line[1] ?? line[0]).owner)}${id}`.slice(0, 40))
/**
 * Whether a name seen changing in a key's directory may concern a watcher: a marker's rename (a
 * commit) that is not quiet and, for a waiter in line (`mark`: its lineMark), names it.
 */
export function wakesWaiters(name: string | null | undefined, mark?: string): boolean {
  if (name == null) return true // the platform did not say what changed
  const m = /^S\.\d+\.([0-9a-z])(?:(.{4})(.{4}))?/.exec(name)
  if (!m || m[1] === '0') return false
  if (m[1] !== '1' || mark === undefined) return true
  return m[2] === mark || m[3] === mark
}
export const contentOf = (version: bigint | string, id: string) => `C.${version}.${id}`
export const encodeHolders = (holders: HolderRecord[]) => JSON.stringify({holders})
/** `waiting` is left out when empty: a state without it is what dlq before --shared wrote and reads. */
export const encodeState = ({holders, waiting}: LeaseState) => JSON.stringify(waiting.length > 0 ? {holders, waiting} : {holders})

export function decodeState(data: string): LeaseState {
  const parsed = JSON.parse(data) as {holders?: HolderRecord[]; waiting?: WaiterRecord[]}
  if (!Array.isArray(parsed.holders)) throw new Error('not a lease state')
  return {holders: parsed.holders, waiting: Array.isArray(parsed.waiting) ? parsed.waiting : []}
}

export const decodeHolders = (data: string): HolderRecord[] => decodeState(data).holders

/** The current state among a directory's names: the marker with the highest version. */
export function currentState(names: string[]): {version: bigint; id: string} | undefined {
  let best: {version: bigint; id: string} | undefined
  for (const name of names) {
    const m = stateName.exec(name)
    if (!m) continue
    const version = BigInt(m[1])
    if (version > maxVersion) continue
    if (!best || version > best.version) best = {version, id: m[2]}
  }
  return best
}

/** Contents that can never be current again, given that the state read was (version, id). */
export function staleContents(names: string[], version: bigint, id: string): string[] {
  return names.filter((name) => {
    const m = contentName.exec(name)
    if (!m) return false
    const v = BigInt(m[1])
    return v < version || (v === version && m[2] !== id)
  })
}

/** What an intent does to the state at time `now`: the new state (none: no change) and the outcome. */
export function decide(intent: Intent, state: LeaseState, now: number, nextVersion: bigint): {next?: LeaseState; outcome: Outcome; quiet?: true} {
  const {holders} = state
  const live = holders.filter((h) => h.expiresMs > now)
  const waiting = state.waiting.filter((w) => w.expiresMs > now)
  const othersWaiting = (owner: string) => waiting.filter((w) => w.owner !== owner)
  switch (intent.kind) {
    case 'read':
      return {outcome: {kind: 'state', holders: live}}
    case 'acquire': {
      // Already ours: a commit whose rename was reported failed although it happened (NFS).
      const mine = live.find((h) => h.owner === intent.owner)
      if (mine) return {outcome: {kind: 'acquired', record: mine}}
      // The exclusive requests waiting stand in line by arrival: one takes a free place only when
      // the waiters ahead of it leave enough (a request not in line is behind all of them). So a
      // release is taken by the first in line, and the others need not try (no herd of commits).
      const free = intent.shared
        ? !live.some((h) => !h.shared) && othersWaiting(intent.owner).length === 0
        : live.length + aheadInLine(waiting, intent.owner).length < intent.limit && !live.some((h) => h.shared)
      if (!free) {
        const busy: Outcome = {kind: 'busy', holders: live, waiting}
        const waiterTtlMs = intent.waiterTtlMs ?? 0
        if (intent.shared || waiterTtlMs <= 0) return {outcome: busy}
        // An exclusive request that will wait: recorded at the end of the line (or refreshed in
        // its place once half its time is gone), so that new shared requests queue behind it. A
        // quiet change: it frees nothing for anyone (entries dropped had expired, which every
        // decision already ignores), so waiters need not wake for it (quietId). Holders dropped
        // here had expired too: a waiter's timer at that expiry covers them.
        const own = waiting.find((w) => w.owner === intent.owner)
        if (own && own.expiresMs - now > waiterTtlMs / 2) return {outcome: busy}
        const place = {owner: intent.owner, expiresMs: now + waiterTtlMs}
        return {next: {holders: live, waiting: own ? waiting.map((w) => (w === own ? place : w)) : [...waiting, place]}, outcome: busy, quiet: true}
      }
      const record: HolderRecord = {owner: intent.owner, ...intent.info, acquiredMs: now, ttlMs: intent.ttlMs, expiresMs: now + intent.ttlMs, token: nextVersion.toString()}
      if (intent.shared) record.shared = true
      return {next: {holders: [...live, record], waiting: othersWaiting(intent.owner)}, outcome: {kind: 'acquired', record}}
    }
    case 'leave':
      if (!state.waiting.some((w) => w.owner === intent.owner)) return {outcome: {kind: 'left'}}
      return {next: {holders: live, waiting: othersWaiting(intent.owner)}, outcome: {kind: 'left'}}
    case 'renew': {
      const mine = holders.find((h) => h.owner === intent.owner)
      if (!mine) return {outcome: {kind: 'lost', why: `no lease with owner ${intent.owner} (it expired and was taken, or was released or force-released)`}}
      if (mine.expiresMs <= now + intent.marginMs) return {outcome: {kind: 'lost', why: `the lease expired at ${new Date(mine.expiresMs).toISOString()} before it was renewed`}}
      const ttlMs = intent.ttlMs ?? mine.ttlMs
      const record = {...mine, ttlMs, expiresMs: now + ttlMs}
      // Quiet: a renewal frees nothing (a waiter's timer at the old expiry finds it renewed).
      return {next: {holders: live.map((h) => (h.owner === intent.owner ? record : h)), waiting}, outcome: {kind: 'renewed', record}, quiet: true}
    }
    case 'release': {
      const mine = holders.find((h) => h.owner === intent.owner)
      if (!mine) return {outcome: {kind: 'released', held: false}}
      return {next: {holders: live.filter((h) => h.owner !== intent.owner), waiting}, outcome: {kind: 'released', held: mine.expiresMs > now}}
    }
    case 'forceRelease':
      if (holders.length === 0) return {outcome: {kind: 'forced', count: 0}}
      return {next: {holders: [], waiting}, outcome: {kind: 'forced', count: live.length}}
  }
}

export function begin(intent: Intent): Transaction {
  return {intent, phase: 'list', garbage: [], empty: 0}
}

/** The system call the transaction needs next; undefined once it is done. */
export function request(tx: Transaction): Request | undefined {
  switch (tx.phase) {
    case 'list':
      return {op: 'list'}
    case 'read':
      return {op: 'read', name: contentOf(tx.version!, tx.id!)}
    case 'write':
      return {op: 'write', name: contentOf(BigInt(tx.version!) + 1n, tx.newId!), data: tx.data!}
    case 'commit':
      return {op: 'rename', from: markerName(tx.version!, tx.id!), to: markerName(BigInt(tx.version!) + 1n, tx.newId!)}
    case 'confirm':
      return {op: 'list'}
    case 'discard':
      return {op: 'unlink', name: contentOf(BigInt(tx.version!) + 1n, tx.newId!)}
    case 'collect':
      return tx.garbage.length > 0 ? {op: 'unlink', name: tx.garbage[0]} : undefined
    case 'done':
      return undefined
  }
}

function committed(tx: Transaction): Transaction {
  return {...tx, phase: 'collect', outcome: tx.pending, pending: undefined, data: undefined, garbage: [contentOf(tx.version!, tx.id!), ...tx.garbage]}
}

/** Thrown when a key's directory shows no state, list after list: not dlq's, or damaged. */
export class DamagedState extends Error {}

/**
 * Feeds the reply to the transaction's last request. `now` is the clock when the reply arrived;
 * `freshId` draws an id no other transaction will ever use.
 */
export function advance(tx: Transaction, reply: Reply, now: number, freshId: () => string): Transaction {
  const missing = 'missing' in reply
  switch (tx.phase) {
    case 'list': {
      const names = 'names' in reply ? reply.names : []
      const state = currentState(names)
      if (!state) {
        // Only a readdir racing a commit can miss the one marker, and not many times in a row.
        if (tx.empty >= 100) throw new DamagedState('no lease state in the key\'s directory')
        return {...tx, empty: tx.empty + 1}
      }
      if (state.version >= maxVersion) throw new DamagedState('the fencing token is at its maximum')
      // The current content is never collected, so the same state without it is damage, not a race.
      if (tx.missed === markerName(state.version, state.id)) throw new DamagedState(`${contentOf(state.version, state.id)} is missing`)
      return {...tx, phase: 'read', version: state.version.toString(), id: state.id, garbage: staleContents(names, state.version, state.id), empty: 0}
    }
    case 'read': {
      if (missing || !('data' in reply)) return {...tx, phase: 'list', missed: markerName(tx.version!, tx.id!)}
      const nextVersion = BigInt(tx.version!) + 1n
      const {next, outcome, quiet} = decide(tx.intent, decodeState(reply.data), now, nextVersion)
      if (!next) return {...tx, phase: tx.intent.kind === 'read' ? 'done' : 'collect', outcome, named: undefined}
      const named = quiet ? undefined : next.waiting.slice(0, 2).map((w) => w.owner)
      return {...tx, phase: 'write', newId: quiet ? quietId(freshId()) : namingId(next.waiting, freshId()), data: encodeState(next), pending: outcome, missed: undefined, named}
    }
    case 'write':
      return {...tx, phase: 'commit'}
    case 'commit':
      if (missing) return {...tx, phase: 'confirm'}
      return committed(tx)
    case 'confirm': {
      // Our marker exists only if our rename happened: its name is fresh, and only we create it.
      const names = 'names' in reply ? reply.names : []
      return names.includes(markerName(BigInt(tx.version!) + 1n, tx.newId!)) ? committed(tx) : {...tx, phase: 'discard'}
    }
    case 'discard':
      return {...tx, phase: 'list', newId: undefined, data: undefined, pending: undefined}
    case 'collect':
      return {...tx, garbage: tx.garbage.slice(1)}
    case 'done':
      return tx
  }
}
