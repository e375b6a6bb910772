// Redis queues on Streams with one consumer group:
// - push: XADD, a batch per script call (one command carrying a thousand bodies costs the client
//   far less than a thousand pipelined commands), several batches in flight;
// - reserve: one script that first re-delivers reservations whose deadline passed (XCLAIM, which
//   counts the delivery), moves those delivered --max-attempts times to the dead-letter stream, then
//   takes new entries (XREADGROUP >). Deadlines live in a sorted set scored with the server's clock,
//   so each popper's own --visibility holds (XAUTOCLAIM's single min-idle could not), and
//   ownership in a hash, so a popper settles only what it still holds;
// - an empty queue is waited on with XREAD BLOCK from the last entry id on a second connection, so
//   a push wakes the popper at once, without reserving anything outside the script;
// - ack is XACK + XDEL; retry and release make the entry due now (release also takes the delivery
//   back); a retry with a delay (pop --retry-delay) makes it due then, owned by nobody, so the next
//   reserve after it takes it like an expired reservation; tail is XREVRANGE minus what is in
//   flight; --follow is XREAD BLOCK.
// - A script blocks the whole server while it runs (a few µs per message), so reserve and settle
//   cut any count into calls of at most scriptBatch ids, pipelined and run one after another:
//   other clients' commands get in between, every few milliseconds at most.
// - status counts with ZCOUNT and XLEN, and finds the oldest waiting message without walking the
//   reservations still running (see oldestWaiting).
// - push with a delay adds the entries as usual and their due times (server clock) to a sorted
//   set; when the group reads past one that is not due yet, reserve parks it: left in the PEL with
//   its delivery count set back to 0, owned by nobody, in a second sorted set by due time, from
//   which a later reserve takes it like an expired reservation (the count then 1). status counts
//   the entries due later as delayed; peek and follow leave them out.
// - Nothing here creates a queue but a push: the group is made (without MKSTREAM) once the stream
//   exists, and a pop of a queue with no stream waits for it with XREAD BLOCK. delete is one DEL.
// The dead-letter queue Q.dead shares Q's hash tag ({dlq:q:Q}:dead:…), so moves stay in one slot.
import type {Message, Outcome, PushOptions, QueueDriver, QueueStats, ReserveRequest, SettleOptions} from '../types.js'
import {type Client, duplicateOf, FailoverWait, mastersOf, num, type Replication, Script, text} from './connection.js'

const group = 'dlq'
const maxMessageBytes = 1024 * 1024
const fallbackPollMs = 5000
/** Ids per script call: 200 keep one call near 1–2 ms of server time (`npm run bench popcosts`). */
export const scriptBatch = 200
const statusPage = 1000
const neverAborted = new AbortController().signal

// Keys: 1 stream, 2 deadlines (zset id → ms), 3 owners (hash id → reserver), 4 dead stream,
// 5 delayed (zset id → due ms: every entry pushed with a delay), 6 parked (zset id → due ms: the
// delayed entries the group has read past but not delivered).
const serverNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
const moveToDead = `
local function bury(id, fields)
  redis.call('XADD', KEYS[4], '*', 'body', fields[2], 'enq', string.match(id, '^(%d+)'))
  redis.call('XACK', KEYS[1], '${group}', id)
  redis.call('XDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
`

const reserveScript = new Script('reserve', `${serverNow}${moveToDead}
local want = tonumber(ARGV[2])
local deadline = now + tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, want + 100)
-- Parked entries that came due: in the PEL on no delivery, taken like an expired reservation.
local parked = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, want)
for _, id in ipairs(parked) do
  redis.call('ZREM', KEYS[6], id)
  due[#due + 1] = id
end
for _, id in ipairs(due) do
  if #out >= want then break end
  local claimed = redis.call('XCLAIM', KEYS[1], '${group}', '${group}', 0, id)
  if #claimed == 0 or not claimed[1] then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  else
    local deliveries = redis.call('XPENDING', KEYS[1], '${group}', id, id, 1)[1][4]
    if deliveries > max then
      bury(id, claimed[1][2])
    else
      redis.call('ZADD', KEYS[2], deadline, id)
      redis.call('HSET', KEYS[3], id, ARGV[1])
      out[#out + 1] = {id, claimed[1][2][2], deliveries, claimed[1][2][4] or ''}
    end
  end
end
-- New entries in stream order. One pushed with a delay that is not due yet is parked instead:
-- kept in the PEL with its delivery count set back to 0 and owned by nobody, until the loop above
-- takes it once due. Past the first read, a look ahead (XRANGE) counts the delayed entries next
-- in line, so a run of them is parked by one read; a call parks at most 1000, then asks to be
-- called again (next due 0) so that it stays short.
local again = false
local parkedNow = 0
local lastSeen = nil
while #out < want do
  if parkedNow >= 1000 then
    again = true
    break
  end
  local n = want - #out
  if lastSeen then
    local ahead = redis.call('XRANGE', KEYS[1], '(' .. lastSeen, '+', 'COUNT', 200)
    if #ahead == 0 then break end
    local ids = {}
    for i, entry in ipairs(ahead) do ids[i] = entry[1] end
    local scores = redis.call('ZMSCORE', KEYS[5], unpack(ids))
    local k = 0
    while k < #ahead and scores[k + 1] and tonumber(scores[k + 1]) > now do k = k + 1 end
    if k > 0 then n = k end
  end
  local fresh = redis.call('XREADGROUP', 'GROUP', '${group}', '${group}', 'COUNT', n, 'STREAMS', KEYS[1], '>')
  if not fresh or #fresh[1][2] == 0 then break end
  local ids = {}
  for i, entry in ipairs(fresh[1][2]) do ids[i] = entry[1] end
  lastSeen = ids[#ids]
  local delays = redis.call('ZMSCORE', KEYS[5], unpack(ids))
  -- One ZADD and one HSET for the whole batch: a call from Lua costs about as much as its work.
  local deadlines, owners = {}, {}
  for i, entry in ipairs(fresh[1][2]) do
    local dueAt = delays[i] and tonumber(delays[i])
    if dueAt and dueAt > now then
      redis.call('XCLAIM', KEYS[1], '${group}', '${group}', 0, entry[1], 'RETRYCOUNT', 0, 'JUSTID')
      redis.call('ZADD', KEYS[6], dueAt, entry[1])
      parkedNow = parkedNow + 1
    else
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = entry[1]
      owners[#owners + 1] = entry[1]
      owners[#owners + 1] = ARGV[1]
      out[#out + 1] = {entry[1], entry[2][2], 1, entry[2][4] or ''}
    end
  end
  if #owners > 0 then
    redis.call('ZADD', KEYS[2], unpack(deadlines))
    redis.call('HSET', KEYS[3], unpack(owners))
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local next = -1
for _, key in ipairs({KEYS[2], KEYS[6]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] and (next < 0 or tonumber(first[2]) - now < next) then next = math.max(tonumber(first[2]) - now, 0) end
end
if again then next = 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {out, next, last[1] and last[1][1] or '0-0'}
`)

// ARGV: the bodies, in order.
const pushScript = new Script('push', `
local ids = {}
for i = 1, #ARGV do ids[i] = redis.call('XADD', KEYS[1], '*', 'body', ARGV[i]) end
return ids
`)

// Keys: 1 stream, 2 delayed. ARGV: delay in ms (on the server's clock) or -1, due time in ms
// since the epoch (for --at) or -1, then the bodies in order.
const pushLaterScript = new Script('push-later', `${serverNow}
local due = tonumber(ARGV[1]) >= 0 and now + tonumber(ARGV[1]) or tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 'body', ARGV[i])
  ids[#ids + 1] = id
  if due > now then redis.call('ZADD', KEYS[2], due, id) end
end
return ids
`)

// ARGV: reserver, outcome, max attempts, retry delay in ms, ids…
const settleScript = new Script('settle', `${serverNow}${moveToDead}
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
local holders = redis.call('HMGET', KEYS[3], unpack(ids))
local held = {}
for i, id in ipairs(ids) do
  if holders[i] == ARGV[1] then held[#held + 1] = id end
end
if #held == 0 then return 1 end
if ARGV[2] == 'ack' then
  -- One call per structure for the whole batch (see reserve).
  redis.call('XACK', KEYS[1], '${group}', unpack(held))
  redis.call('XDEL', KEYS[1], unpack(held))
  redis.call('ZREM', KEYS[2], unpack(held))
  redis.call('HDEL', KEYS[3], unpack(held))
  return 1
end
for _, id in ipairs(held) do
  local deliveries = redis.call('XPENDING', KEYS[1], '${group}', id, id, 1)[1][4]
  if ARGV[2] == 'retry' and deliveries >= tonumber(ARGV[3]) then
    bury(id, redis.call('XRANGE', KEYS[1], id, id)[1][2])
  else
    local due = 0
    if ARGV[2] == 'release' then
      redis.call('XCLAIM', KEYS[1], '${group}', '${group}', 0, id, 'RETRYCOUNT', math.max(deliveries - 1, 0), 'JUSTID')
    elseif tonumber(ARGV[4]) > 0 then
      due = now + tonumber(ARGV[4])
    end
    redis.call('ZADD', KEYS[2], due, id)
    redis.call('HDEL', KEYS[3], id)
  end
end
return 1
`)

const extendScript = new Script('extend', `${serverNow}
if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[1] then return 0 end
local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
return 1
`)

/** Q, Q.dead, Q.dead.dead… all share Q's hash tag. */
function keysOf(queue: string) {
  let base = queue
  let depth = 0
  while (base.endsWith('.dead') && base.length > 5) {
    base = base.slice(0, -5)
    depth++
  }
  const prefix = (d: number) => `{dlq:q:${base}}:${'dead:'.repeat(d)}`
  return {
    stream: `${prefix(depth)}stream`,
    deadlines: `${prefix(depth)}deadlines`,
    owners: `${prefix(depth)}owners`,
    dead: `${prefix(depth + 1)}stream`,
    delayed: `${prefix(depth)}delayed`,
    parked: `${prefix(depth)}parked`,
  }
}

const keyPattern = /^\{dlq:q:(.*)\}:((?:dead:)*)stream$/
const idTime = (id: string) => Number(id.split('-')[0])
/** [from, to) ranges of at most scriptBatch covering 0..count. */
const batchesOf = (count: number): [number, number][] =>
  Array.from({length: Math.ceil(count / scriptBatch)}, (_v, i) => [i * scriptBatch, Math.min(count, (i + 1) * scriptBatch)])

export class RedisQueues implements QueueDriver {
  readonly maxMessageBytes = maxMessageBytes
  // One connection, commands applied in the order sent: batches can overlap and stay in order.
  readonly pushConcurrency = 8
  private readonly reserver = `${Date.now().toString(36)}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`
  private readonly groups = new Set<string>()

  constructor(
    private readonly client: Client,
    private readonly log?: (line: string) => void,
    /** Behind Sentinel: how long a waiting pop follows a failover (connection.ts). */
    private readonly followMs = 0,
    /** WAIT for replicas after pushes (connection.ts). */
    private readonly replication?: Replication,
  ) {}

  /**
   * The group of an existing stream; false when there is no stream (no push made the queue): a
   * pop creates no queue (no MKSTREAM), it waits for the stream to appear.
   */
  private async ensureGroup(stream: string): Promise<boolean> {
    if (this.groups.has(stream)) return true
    // Start at 0, not $: messages pushed before the group existed are not skipped.
    const created = await this.client.xgroup('CREATE', stream, group, '0').then(() => true, (error: Error) => {
      if (error.message.includes('BUSYGROUP')) return true
      if (/requires the key to exist|no such key/i.test(error.message)) return false
      throw error
    })
    if (created) this.groups.add(stream)
    return created
  }

  async push(queue: string, bodies: Buffer[], options: PushOptions = {}): Promise<string[]> {
    const {stream, delayed} = keysOf(queue)
    this.replication?.prepare()
    const later = options.delayMs !== undefined || options.at !== undefined
    const ids = (later
      ? (await pushLaterScript.runInOrder(this.client, [stream, delayed], [Math.ceil(options.delayMs ?? -1), options.at?.getTime() ?? -1, ...bodies])) as Buffer[]
      : (await pushScript.runInOrder(this.client, [stream], bodies)) as Buffer[]).map(text)
    await this.replication?.confirm(() => `the push of ${bodies.length} message${bodies.length === 1 ? '' : 's'} to ${JSON.stringify(queue)}`, stream)
    this.log?.(`redis: XADD ${bodies.length} to ${stream}`)
    return ids
  }

  async reserve(queue: string, request: ReserveRequest): Promise<Message[]> {
    const keys = keysOf(queue)
    const deadline = Date.now() + request.waitMs
    const failover = new FailoverWait(this.followMs)
    let blocker: Client | undefined
    const onAbort = () => blocker?.disconnect()
    request.signal.addEventListener('abort', onAbort)
    try {
      for (;;) {
        request.signal.throwIfAborted()
        let batch: Awaited<ReturnType<RedisQueues['reserveBatches']>>
        try {
          batch = (await this.ensureGroup(keys.stream)) ? await this.reserveBatches(keys, request) : {entries: [], nextDueMs: -1, lastId: Buffer.from('0-0')}
        } catch (error) {
          // A master promoted before the group reached it: create it there.
          if (/NOGROUP/.test(String((error as Error).message)) && this.groups.delete(keys.stream)) continue
          // A reserve whose reply was lost holds its messages until --visibility ends; they are
          // delivered then, never lost, and asking again cannot reserve them twice.
          await failover.failed(error, request.signal, deadline)
          continue
        }
        failover.succeeded()
        const {entries, nextDueMs, lastId} = batch
        if (entries.length > 0) {
          this.log?.(`redis: reserved ${entries.length} from ${keys.stream}`)
          return entries.map(([id, body, attempts, enqueued]) => {
            const messageId = text(id)
            return {id: messageId, body: Buffer.from(body), attempts: num(attempts), enqueuedAt: new Date(text(enqueued) ? num(enqueued) : idTime(messageId)), receipt: this.reserver}
          })
        }
        // The script stopped early (parking delayed entries): go on, even past the deadline.
        if (nextDueMs === 0) continue
        const now = Date.now()
        if (now >= deadline) return []
        if (!blocker) {
          blocker = duplicateOf(this.client)
          blocker.on('error', () => {})
        }
        const sleep = Math.max(1, Math.min(deadline - now, nextDueMs >= 0 ? nextDueMs + 1 : fallbackPollMs, fallbackPollMs))
        // Wakes on any entry after the last one the script saw (XREAD waits for a stream that does
        // not exist yet, from 0-0): no push can slip in between.
        try {
          await blocker.xread('BLOCK', Math.ceil(sleep), 'STREAMS', keys.stream, text(lastId))
        } catch (error) {
          if (request.signal.aborted) continue
          await failover.failed(error, request.signal, deadline)
        }
      }
    } finally {
      request.signal.removeEventListener('abort', onAbort)
      blocker?.disconnect()
    }
  }

  /**
   * One reserve script per scriptBatch messages: the first alone, and only if it came back full
   * the others, all sent at once (a short or empty queue costs one call, as a waiting pop's every
   * look does). When one of the others fails, what the rest reserved is released (so it does not
   * sit invisible until its deadline) and the failure is thrown: a short batch would read as a
   * queue that ran dry, and pop would end early saying nothing.
   */
  private async reserveBatches(keys: ReturnType<typeof keysOf>, request: ReserveRequest): Promise<{entries: Buffer[][]; nextDueMs: number; lastId: Buffer}> {
    const args = ([from, to]: [number, number]) => [this.reserver, to - from, request.visibilityMs, request.maxAttempts]
    const scriptKeys = [keys.stream, keys.deadlines, keys.owners, keys.dead, keys.delayed, keys.parked]
    type Reply = [Buffer[][], number, Buffer]
    const [first, ...rest] = batchesOf(request.count)
    // The first alone, by EVALSHA (its NOSCRIPT retry can reorder nothing); the others in order.
    const done = [await reserveScript.run(this.client, scriptKeys, args(first)) as Reply]
    if (done[0][0].length === first[1] - first[0] && rest.length > 0) {
      const replies = await Promise.allSettled(rest.map((range) => reserveScript.runInOrder(this.client, scriptKeys, args(range)) as Promise<Reply>))
      for (const reply of replies) if (reply.status === 'fulfilled') done.push(reply.value)
      const failed = replies.find((reply) => reply.status === 'rejected')
      if (failed) {
        const ids = done.flatMap(([entries]) => entries.map(([id]) => text(id)))
        await Promise.all(batchesOf(ids.length).map(([from, to]) =>
          settleScript.run(this.client, scriptKeys, [this.reserver, 'release', request.maxAttempts, 0, ...ids.slice(from, to)]))).catch(() => {})
        throw failed.reason
      }
    }
    const [, nextDueMs, lastId] = done[done.length - 1]
    return {entries: done.flatMap(([entries]) => entries), nextDueMs: num(nextDueMs), lastId}
  }

  async settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number, options: SettleOptions = {}): Promise<void> {
    if (messages.length === 0) return
    const keys = keysOf(queue)
    const ids = messages.map((m) => m.id)
    const delayMs = outcome === 'retry' ? Math.ceil(options.retryDelayMs ?? 0) : 0
    this.replication?.prepare()
    await Promise.all(batchesOf(ids.length).map(([from, to]) => this.followingFailover(() =>
      settleScript.run(this.client, [keys.stream, keys.deadlines, keys.owners, keys.dead], [this.reserver, outcome, maxAttempts, delayMs, ...ids.slice(from, to)]), this.followMs)))
    // On a replica, an ack that a failover loses is a delivery more (at least once allows it), not
    // an error: a shortfall is not reported.
    await this.replication?.confirm(() => `the ${outcome} in ${JSON.stringify(queue)}`, keys.stream).catch(() => {})
    this.log?.(`redis: ${outcome} ${messages.length} in ${keys.stream}`)
  }

  async extend(queue: string, message: Message, visibilityMs: number): Promise<boolean> {
    const keys = keysOf(queue)
    const extended = () => extendScript.run(this.client, [keys.stream, keys.deadlines, keys.owners], [this.reserver, message.id, visibilityMs])
    return num(await this.followingFailover(extended, Math.min(this.followMs, visibilityMs))) === 1
  }

  /**
   * Sends a settle or an extend again while a failover (Sentinel, Cluster) runs, for up to
   * ?failoverTimeout= (on one server: not at all). A worker's ack in flight when the master died
   * was exit 69 and, in the Sentinel torture, a message handled twice. Both scripts are safe to
   * repeat: they act only on messages this reserver still owns, and an ack, retry or release
   * already applied took that ownership away, so a second one finds nothing to do; an extend sets
   * the deadline again.
   */
  private async followingFailover<T>(send: () => Promise<T>, forMs: number): Promise<T> {
    const failover = new FailoverWait(this.followMs)
    const deadline = Date.now() + forMs
    for (;;) {
      try {
        return await send()
      } catch (error) {
        await failover.failed(error, neverAborted, deadline)
      }
    }
  }

  /** Entries from the newest backwards, skipping those in flight, until `count` are found. */
  async peek(queue: string, count: number): Promise<Message[]> {
    const keys = keysOf(queue)
    const out: Message[] = []
    let end = '+'
    const now = Number((await this.client.time())[0]) * 1000
    while (out.length < count) {
      const page = await this.client.xrevrangeBuffer(keys.stream, end, '-', 'COUNT', Math.max(count - out.length, 100))
      if (page.length === 0) break
      const ids = page.map(([id]) => text(id))
      const [scores, delays] = await Promise.all([this.client.zmscore(keys.deadlines, ...ids), this.client.zmscore(keys.delayed, ...ids)])
      const later = (score: string | null) => score !== null && Number(score) > now
      page.forEach(([id, fields], i) => {
        if (out.length >= count || later(scores[i]) || later(delays[i])) return
        out.push(this.message(text(id), fields))
      })
      end = `(${text(page.at(-1)![0])}`
    }
    return out.reverse()
  }

  private message(id: string, fields: Buffer[]): Message {
    const enq = fields.length >= 4 ? num(fields[3]) : idTime(id)
    return {id, body: Buffer.from(fields[1]), attempts: 0, enqueuedAt: new Date(enq), receipt: ''}
  }

  async follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void> {
    const keys = keysOf(queue)
    const blocker = duplicateOf(this.client)
    blocker.on('error', () => {})
    const onAbort = () => blocker.disconnect()
    signal.addEventListener('abort', onAbort)
    try {
      const [last] = await this.client.xrevrange(keys.stream, '+', '-', 'COUNT', 1)
      let from = last ? last[0] : '0-0'
      while (!signal.aborted) {
        const reply = await blocker.xreadBuffer('COUNT', 1000, 'BLOCK', fallbackPollMs, 'STREAMS', keys.stream, from).catch((error: Error) => {
          if (signal.aborted) return null
          throw error
        })
        if (!reply) continue
        const entries = reply[0][1]
        if (entries.length === 0) continue
        from = text(entries.at(-1)![0])
        // Entries pushed with a delay are not shown (tail shows them once due).
        const delays = await this.client.zmscore(keys.delayed, ...entries.map(([id]) => text(id)))
        const now = Number((await this.client.time())[0]) * 1000
        const shown = entries.filter((_entry, i) => delays[i] === null || Number(delays[i]) <= now)
        if (shown.length > 0) await onMessages(shown.map(([id, fields]) => this.message(text(id), fields)))
      }
    } finally {
      signal.removeEventListener('abort', onAbort)
      blocker.disconnect()
    }
  }

  async stats(queue?: string): Promise<QueueStats[]> {
    const names = queue !== undefined ? [queue] : await this.queueNames()
    const out: QueueStats[] = []
    const [seconds, micros] = await this.client.time()
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
    for (const name of names) {
      if (queue === undefined && name.endsWith('.dead') && names.includes(name.slice(0, -5))) continue
      const keys = keysOf(name)
      const [length, inFlight, delayed, dead] = await Promise.all([
        this.client.xlen(keys.stream), this.client.zcount(keys.deadlines, `(${now}`, '+inf'), this.client.zcount(keys.delayed, `(${now}`, '+inf'), this.client.xlen(keys.dead),
      ])
      const oldest = length > inFlight + delayed ? await this.oldestWaiting(keys, now) : undefined
      out.push({queue: name, waiting: Math.max(0, length - inFlight - delayed), delayed, inFlight, dead, ...(oldest === undefined ? {} : {oldestAgeMs: now - oldest})})
    }
    return out
  }

  /**
   * The enqueue time of the oldest waiting entry: the first never delivered (after the group's
   * last-delivered-id) or a reservation that is due (deadline passed, released or retried: score
   * <= now). Reservations still running are not read: two walks go side by side a page at a time,
   * and the first to end has the answer. One walks the due reservations (short when few are due);
   * the other walks the stream from its start to the first entry not held (short when the oldest
   * entries are due, as after a crashed popper).
   */
  private async oldestWaiting(keys: ReturnType<typeof keysOf>, now: number): Promise<number | undefined> {
    const firstNew = await this.firstUndelivered(keys, now)
    let oldest = firstNew === undefined ? Number.POSITIVE_INFINITY : idTime(firstNew)
    const result = () => (Number.isFinite(oldest) ? oldest : undefined)
    let dueFrom = 0
    let streamFrom = '-'
    for (;;) {
      const due = await this.client.zrangebyscore(keys.deadlines, '-inf', now, 'LIMIT', dueFrom, statusPage)
      for (const id of due) oldest = Math.min(oldest, idTime(id))
      dueFrom += due.length
      if (due.length < statusPage) return result()
      const page = await this.client.xrange(keys.stream, streamFrom, '+', 'COUNT', statusPage)
      if (page.length === 0) return result()
      const scores = await this.client.zmscore(keys.deadlines, ...page.map(([id]) => id))
      const index = scores.findIndex((score) => score === null || Number(score) <= now)
      if (index !== -1) return idTime(page[index][0])
      streamFrom = `(${page.at(-1)![0]}`
    }
  }

  /** The first entry the group has not delivered yet and that is not delayed, if any. */
  private async firstUndelivered(keys: ReturnType<typeof keysOf>, now: number): Promise<string | undefined> {
    const groups = (await this.client.xinfo('GROUPS', keys.stream).catch(() => [])) as unknown[][]
    const info = groups.map((fields) => Object.fromEntries(Array.from({length: fields.length / 2}, (_v, i) => [String(fields[2 * i]), fields[2 * i + 1]])))
    const ours = info.find((fields) => fields.name === group)
    let from = ours ? `(${String(ours['last-delivered-id'])}` : '-'
    for (;;) {
      const page = await this.client.xrange(keys.stream, from, '+', 'COUNT', statusPage)
      if (page.length === 0) return undefined
      const delays = await this.client.zmscore(keys.delayed, ...page.map(([id]) => id))
      const index = delays.findIndex((score) => score === null || Number(score) <= now)
      if (index !== -1) return page[index][0]
      from = `(${page.at(-1)![0]}`
    }
  }

  /** DEL of the queue's keys and its dead letters' (all in one slot): gone at once for every client. */
  async deleteQueue(queue: string): Promise<boolean> {
    const mine = keysOf(queue)
    const dead = keysOf(`${queue}.dead`)
    const keys = [mine.stream, mine.deadlines, mine.owners, mine.delayed, mine.parked, dead.stream, dead.deadlines, dead.owners, dead.delayed, dead.parked]
    const existed = await this.client.exists(mine.stream, dead.stream)
    this.replication?.prepare()
    await this.client.del(...keys)
    await this.replication?.confirm(() => `the delete of ${JSON.stringify(queue)}`, mine.stream)
    this.log?.(`redis: DEL ${keys.length} keys of ${mine.stream}`)
    return existed > 0
  }

  private async queueNames(): Promise<string[]> {
    const found = new Set<string>()
    // On a cluster each master holds its own slots: every one is scanned.
    for (const node of mastersOf(this.client)) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', '{dlq:q:*}:stream', 'COUNT', 1000)
        cursor = next
        for (const key of keys) {
          const match = keyPattern.exec(key)
          if (match) found.add(match[1] + '.dead'.repeat(match[2].length / 5))
        }
      } while (cursor !== '0')
    }
    return [...found].sort()
  }
}
