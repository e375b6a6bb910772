// A model checker for the file backend's lock protocol (src/backends/file/leases.ts). It runs the
// protocol's own step functions (begin / request / advance / decide, the ones the driver runs
// against the real directory) against an in-memory directory, and explores EVERY interleaving of
// their steps — each step is one system call — for three processes, a clock that may tick between
// any two steps (so any process may stall for any time anywhere), and the collection of old state.
// Every reachable state (deduplicated) is checked against the invariants in leases.ts:
//   I1 exactly one S marker;  I2 the state never lists more than `limit` unexpired holders;
//   I3 at most `limit` processes believe they hold the lock at once;  I4 fencing tokens strictly
//   increase in the order of acquisitions.
// The last test breaks the protocol on purpose (a commit that does not compare) and requires the
// checker to find the overlap, so the checker itself cannot silently stop checking.
import {advance, begin, markerName, contentOf, encodeHolders, request} from '../../dist/backends/file/leases.js'


/** Applies one request to the in-memory directory; returns the reply and the new files. */
function perform(files, step, {compareOnCommit = true} = {}) {
  switch (step.op) {
    case 'list':
      return {reply: {names: Object.keys(files)}, files}
    case 'read':
      return {reply: step.name in files ? {data: files[step.name]} : {missing: true}, files}
    case 'write':
      if (step.name in files) throw new Error(`write over an existing name ${step.name}`)
      return {reply: {ok: true}, files: {...files, [step.name]: step.data}}
    case 'rename': {
      if (!(step.from in files)) {
        if (compareOnCommit) return {reply: {missing: true}, files}
        // The broken variant: a commit that writes its marker whether or not the state moved on.
        const next = {...files, [step.to]: ''}
        for (const name of Object.keys(next)) if (name.startsWith('S.') && name !== step.to) delete next[name]
        return {reply: {ok: true}, files: next}
      }
      const next = {...files, [step.to]: files[step.from]}
      delete next[step.from]
      return {reply: {ok: true}, files: next}
    }
    case 'unlink': {
      if (!(step.name in files)) return {reply: {missing: true}, files}
      const next = {...files}
      delete next[step.name]
      return {reply: {ok: true}, files: next}
    }
  }
  throw new Error(`unknown op ${step.op}`)
}

const info = {host: 'h', pid: 1, user: 'u', command: 'c'}

// Two reductions keep the state space small enough for CI, both sound (they only merge states that
// behave alike):
// - time: the protocol only compares times with the clock and adds the TTL to it, so states that
//   differ by a shift of every time are equivalent, and so are all times already past. The key keeps
//   times relative to the clock (0 once past), which makes the state space finite without bounding
//   time.
// - versions: they are only compared with each other and incremented, so the key counts them from
//   the current one.
// - names: ids are only ever compared for equality, and the workers run the same script, so states
//   that differ by a renaming of ids, or by a permutation of the workers, are equivalent. The key
//   takes the smallest form over the workers' permutations, with ids numbered in order of appearance.
const parsed = new Map()
function parse(text) {
  let value = parsed.get(text)
  if (value === undefined) parsed.set(text, (value = JSON.parse(text)))
  return value
}

function permutations(n) {
  if (n <= 1) return [[...Array(n).keys()]]
  const out = []
  for (const rest of permutations(n - 1)) for (let at = 0; at < n; at++) out.push([...rest.slice(0, at), n - 1, ...rest.slice(at)])
  return out
}

function stateKey(workers) {
  const perms = permutations(workers)
  return (s) => {
    const current = BigInt(Object.keys(s.files).find((n) => n.startsWith('S.'))?.split('.')[1] ?? 0)
    const version = (v) => (BigInt(v) - current).toString()
    const time = (t) => Math.max(0, t - s.clock)
    const name = (n) => {
      const [kind, v, id] = n.split('.')
      return `${kind}${version(v)}.${id}`
    }
    const holder = (h) => `${h.owner}/${time(h.expiresMs)}/${version(h.token)}${h.shared ? '/s' : ''}`
    const waiter = (w) => `${w.owner}/${time(w.expiresMs)}`
    const holders = (data) => {
      const state = parse(data)
      return `${state.holders.map(holder).join(',')}${state.waiting ? `+${state.waiting.map(waiter).join(',')}` : ''}`
    }
    const outcome = (o) => o && `${o.kind}:${o.record ? holder(o.record) : o.held ?? o.count ?? ''}`
    // What a process still has to do, and no more: a name already gone from its garbage would only be
    // a failing unlink, the intent follows from the program counter, a finished result is spent.
    const garbage = (tx) => tx.garbage.filter((n) => n in s.files).map(name).join(',')
    const tx = (t) => t && [t.phase, t.version && version(t.version), t.id, t.newId, t.data && holders(t.data), outcome(t.pending), garbage(t), t.empty, t.missed && name(t.missed)].join(' ')
    // A content that is neither current, nor about to be read, nor a commit's own is garbage: it
    // only awaits an unlink that changes nothing else, so it is left out.
    const kept = new Set([currentMarker(s.files).replace(/^S/, 'C')])
    for (const p of s.procs) {
      if (p.tx?.phase === 'read') kept.add(contentOf(p.tx.version, p.tx.id))
      if (p.tx?.newId) kept.add(contentOf(BigInt(p.tx.version) + 1n, p.tx.newId))
    }
    const files = Object.keys(s.files).sort().filter((n) => n.startsWith('S.') || kept.has(n))
      .map((n) => (n.startsWith('C.') ? `${name(n)}=${holders(s.files[n])}` : name(n))).join(' ')
    const body = `${files}|${s.lastToken && version(s.lastToken)}|${s.acquisitions}|${s.lossLeft}|${s.tokenViolation ?? ""}`
    const procs = s.procs.map((p) => {
      const background = p.background && garbage(p.background)
      return [p.shared ? 'r' : 'w', p.rounds, p.pc, p.renews, time(p.deadline), p.seen && name(p.seen), p.seenClock !== undefined && s.clock > p.seenClock, tx(p.tx), background].join(';')
    })
    // Split once into text and names (odd places: worker names such as p1, ids such as p1x4).
    const parts = [body, ...procs].map((text) => text.split(/\b(p\d+x\d+|opx\d+|p\d+(?=\/))/))
    let best
    for (const perm of perms) {
      // Worker i is renamed perm[i] and the procs are listed in their new order (the operator last);
      // ids are numbered in order of appearance.
      const order = [parts[0]]
      for (let i = 1; i < parts.length; i++) order[i <= workers ? perm[i - 1] + 1 : i] = parts[i]
      const ids = new Map()
      let text = ''
      for (const pieces of order) {
        for (let at = 0; at < pieces.length; at++) {
          const piece = pieces[at]
          if (at % 2 === 0) text += piece
          else if (piece.includes('x')) {
            let short = ids.get(piece)
            if (short === undefined) ids.set(piece, (short = `#${ids.size}`))
            text += short
          } else text += `p${perm[Number(piece.slice(1))]}`
        }
        text += '|'
      }
      if (best === undefined || text < best) best = text
    }
    return best
  }
}

/**
 * A process is a small script around transactions:
 *   worker:   acquire (retrying while busy) → hold, renewing up to `renews` times → release
 *   operator: one force release
 */
function startTx(proc) {
  switch (proc.pc) {
    case 'acquire':
      return begin({kind: 'acquire', owner: proc.name, limit: proc.limit, ttlMs: proc.ttl, info, shared: proc.shared, waiterTtlMs: proc.shared ? 0 : proc.waiterTtl})
    case 'renew':
      return begin({kind: 'renew', owner: proc.name, marginMs: 0})
    case 'release':
      return begin({kind: 'release', owner: proc.name})
    case 'force':
      return begin({kind: 'forceRelease'})
  }
  return undefined
}

const currentMarker = (files) => Object.keys(files).find((n) => n.startsWith('S.'))

/**
 * One step of a transaction. Writing our new content and discarding it after a failed commit are
 * fused with the step before them: they touch a fresh name that no other process reads, so they
 * commute with every other process's step and doing them at once hides no interleaving.
 */
function stepOnce(files, tx, now, freshId, options) {
  const {reply, files: after} = perform(files, request(tx), options)
  const results = [{reply, files: after}]
  // Over NFS, a rename whose reply was lost is retransmitted and fails with ENOENT: the rename
  // happened, and the caller is told it did not.
  if (options.lossLeft > 0 && request(tx).op === 'rename' && 'ok' in reply) results.push({reply: {missing: true}, files: after, lost: 1})
  return results.map(({reply, files, lost = 0}) => {
    let next = advance(tx, reply, now, freshId)
    // The broken variant: a failed rename taken at its word (its content discarded at once).
    if (options.trustRenameErrors && next.phase === 'confirm') next = {...next, phase: 'discard'}
    while (next.phase === 'write' || next.phase === 'discard') {
      const done = perform(files, request(next), options)
      next = advance(next, done.reply, now, freshId)
      files = done.files
    }
    return {tx: next, files, lost}
  })
}

/** The successor states of `state`: one per process that can take a step, plus a clock tick. */
function* successors(state, options) {
  yield {...state, clock: state.clock + 1}
  for (let i = 0; i < state.procs.length; i++) {
    const proc = state.procs[i]
    const set = (changes, extra = {}) => {
      const procs = state.procs.slice()
      procs[i] = {...proc, ...changes}
      return {...state, ...extra, procs}
    }
    if (proc.pc === 'waiting') {
      if (currentMarker(state.files) !== proc.seen || state.clock > proc.seenClock) {
        yield set({pc: 'acquire', seen: undefined, seenClock: undefined, tx: startTx({...proc, pc: 'acquire'})})
      }
      continue
    }
    if (proc.pc === 'hold') {
      // The command ends (then release), or the supervisor renews.
      yield set({pc: 'release', tx: startTx({...proc, pc: 'release'})})
      if (proc.renews > 0) yield set({pc: 'renew', renews: proc.renews - 1, tx: startTx({...proc, pc: 'renew'})})
      continue
    }
    if (!proc.tx) continue
    const step = request(proc.tx)
    if (!step) continue
    let ids = proc.ids
    for (const {tx, files, lost} of stepOnce(state.files, proc.tx, state.clock, () => `${proc.name}x${ids++}`, {...options, lossLeft: state.lossLeft})) {
      let changes = {tx, ids}
      let extra = {files, lossLeft: state.lossLeft - lost}
      const outcome = tx.outcome
      if (outcome && !proc.tx.outcome) {
        // The transaction's result is known (any collection left runs on in the background).
        switch (outcome.kind) {
          case 'acquired':
            changes = {...changes, tx: undefined, pc: 'hold', deadline: outcome.record.expiresMs}
            if (state.lastToken !== undefined && BigInt(outcome.record.token) <= BigInt(state.lastToken)) {
              extra = {...extra, tokenViolation: `I4: token ${outcome.record.token} after ${state.lastToken}`}
            }
            extra = {...extra, lastToken: outcome.record.token, acquisitions: state.acquisitions + 1}
            break
          case 'busy':
            // The driver sleeps until the directory changes or a lease may have expired: retry then.
            changes = {...changes, tx: undefined, pc: 'waiting', seen: currentMarker(files), seenClock: state.clock}
            break
          case 'renewed':
            changes = {...changes, tx: undefined, pc: 'hold', deadline: outcome.record.expiresMs}
            break
          case 'lost':
            changes = {...changes, tx: undefined, pc: 'lost', deadline: -1}
            break
          case 'released':
            // Another round (a reader that comes back while a writer waits): acquire again.
            if (proc.rounds > 1) changes = {...changes, tx: startTx({...proc, pc: 'acquire'}), pc: 'acquire', rounds: proc.rounds - 1, deadline: -1}
            else changes = {...changes, tx: undefined, pc: 'done', deadline: -1}
            break
          case 'forced':
            changes = {...changes, tx: undefined, pc: 'done', deadline: -1}
            break
        }
        // A finished transaction still collecting goes on in the background, as in the driver.
        if (request(tx)) changes = {...changes, background: tx}
      }
      yield set(changes, extra)
    }
  }
  for (let i = 0; i < state.procs.length; i++) {
    const proc = state.procs[i]
    const step = proc.background && request(proc.background)
    if (!step) continue
    // A collection's unlinks run as one step: each removes a content that is never current again,
    // so it only matters to a reader of that very file, which sees it before or after either way.
    let files = state.files
    let background = proc.background
    while (request(background)) {
      const {reply, files: after} = perform(files, request(background), options)
      background = advance(background, reply, state.clock, () => 'never')
      files = after
    }
    const procs = state.procs.slice()
    procs[i] = {...proc, background: request(background) ? background : undefined}
    yield {...state, files, procs}
  }
}

/** Checks the invariants of one state; returns a description of the first violation. */
function violation(state, options) {
  const markers = Object.keys(state.files).filter((n) => n.startsWith('S.'))
  if (markers.length !== 1) return `I1: ${markers.length} state markers (${markers.join(', ')})`
  const [, version, id] = markers[0].split('.')
  const content = state.files[contentOf(version, id)]
  if (content === undefined) return `the current state ${markers[0]} has no content`
  const live = JSON.parse(content).holders.filter((h) => h.expiresMs > state.clock)
  const liveExclusive = live.filter((h) => !h.shared)
  if (liveExclusive.length > options.limit) return `I2: the state lists ${liveExclusive.length} live exclusive holders, limit ${options.limit}`
  if (liveExclusive.length > 0 && liveExclusive.length < live.length) return `I5: the state lists an exclusive holder beside ${live.length - liveExclusive.length} shared ones`
  if (options.exclusion) {
    const believers = state.procs.filter((p) => (p.pc === 'hold' || p.pc === 'renew') && state.clock < p.deadline)
    const writers = believers.filter((p) => !p.shared)
    if (writers.length > options.limit) return `I3: ${writers.map((p) => p.name).join(' and ')} hold at once (limit ${options.limit})`
    if (writers.length > 0 && writers.length < believers.length) return `I5: ${writers.map((p) => p.name).join(' and ')} (exclusive) hold beside ${believers.filter((p) => p.shared).map((p) => p.name).join(' and ')} (shared)`
  }
  return state.tokenViolation
}

/**
 * Explores every interleaving of `workers` processes (and an operator forcing a release, if asked).
 * `renews` is how many times each worker renews while it holds: a number for all, or one per worker.
 * `ttl` is in clock ticks; one tick is enough for a lease to expire between any two steps.
 * `lossyRenames`: how many successful renames may be reported as failed (NFS: a retransmitted
 * rename that finds its own work done); each is explored both ways.
 * `rounds`: how many times each worker acquires and releases (one number per worker; default 1).
 * `shared`: one boolean per worker, true for a reader (--shared); an exclusive worker that finds the
 * key busy takes its place ahead of new readers for `waiterTtl` ticks, refreshed while it waits.
 * Without readers it takes none (waiterTtl 0): no exclusive decision reads the places, so they
 * would only add commits, each one an ordinary compare-and-swap, to state spaces already large.
 */
export function explore({workers, shared = [], rounds = [], waiterTtl = shared.includes(true) ? 2 : 0, operator = false, limit, renews = 0, ttl = 1, exclusion = true, compareOnCommit = true, lossyRenames = 0, trustRenameErrors = false, cap}) {
  const procs = []
  for (let i = 0; i < workers; i++) {
    const proc = {name: `p${i}`, pc: 'acquire', limit, ttl, shared: shared[i] === true, rounds: rounds[i] ?? 1, waiterTtl, renews: Array.isArray(renews) ? renews[i] : renews, deadline: -1, ids: 0}
    procs.push({...proc, tx: startTx(proc)})
  }
  if (operator) procs.push({name: 'op', pc: 'force', ids: 0, deadline: -1, tx: startTx({pc: 'force'})})
  const files = {[markerName(0, 'init')]: '', [contentOf(0, 'init')]: encodeHolders([])}
  const initial = {clock: 0, files, procs, acquisitions: 0, lossLeft: lossyRenames}
  const options = {limit, exclusion, compareOnCommit, trustRenameErrors, cap}
  const key = stateKey(workers)
  const seen = new Set([key(initial)])
  const queue = [initial]
  let allDone = 0
  let maxHolders = 0
  let maxShared = 0
  let readerBlockedByWaiter = 0
  for (let at = 0; at < queue.length; at++) {
    if (seen.size > (options.cap ?? Infinity)) return {states: seen.size, capped: true}
    const state = queue[at]
    // A debugging aid: MODEL_DEBUG=1 returns the path to the first state past version 10.
    if (process.env.MODEL_DEBUG && Object.keys(state.files).some((n) => /^S\.(1[0-9])\./.test(n))) {
      const path = []
      for (let s = state; s; s = s.parent) path.unshift(JSON.stringify({clock: s.clock, files: Object.keys(s.files).sort(), procs: s.procs.map((p) => [p.name, p.pc, p.tx?.phase, p.tx?.version, p.tx?.newId])}))
      return {states: seen.size, path}
    }
    const bad = violation(state, options)
    if (bad) return {states: seen.size, violation: bad}
    const holding = state.procs.filter((p) => p.pc === 'hold' && state.clock < p.deadline).length
    maxHolders = Math.max(maxHolders, holding)
    maxShared = Math.max(maxShared, state.procs.filter((p) => p.pc === 'hold' && p.shared && state.clock < p.deadline).length)
    // A reader waiting while no exclusive one holds: it waits behind an exclusive waiter.
    if (state.procs.some((p) => p.pc === 'waiting' && p.shared) && !state.procs.some((p) => p.pc === 'hold' && !p.shared && state.clock < p.deadline)) {
      const marker = currentMarker(state.files)
      const current = JSON.parse(state.files[marker.replace(/^S/, 'C')])
      if (!current.holders.some((h) => !h.shared && h.expiresMs > state.clock) && current.waiting?.some((w) => w.expiresMs > state.clock)) readerBlockedByWaiter++
    }
    if (state.procs.every((p) => p.pc === 'done' && !p.background?.garbage.some((n) => n in state.files)) && state.acquisitions === state.procs.reduce((sum, p) => sum + (p.name === 'op' ? 0 : rounds[Number(p.name.slice(1))] ?? 1), 0)) allDone++
    for (const next of successors(state, options)) {
      const k = key(next)
      if (seen.has(k)) continue
      seen.add(k)
      if (process.env.MODEL_DEBUG) next.parent = state
      queue.push(next)
    }
  }
  return {states: seen.size, allDone, maxHolders, maxShared, readerBlockedByWaiter}
}

