// The one interface every backend driver implements. Commands talk only to this; each driver
// (file/, redis/, zookeeper/, postgres/) implements it natively: waiting is the driver's job
// (watch, pub/sub, NOTIFY), never a poll loop in a command.

/** Who holds (or wants) a lock: written beside the lease so `lock status` can show it. */
export interface HolderInfo {
  host: string
  pid: number
  user: string
  command: string
}

export interface Holder extends HolderInfo {
  /** Unique id of this holding (DLQ_LOCK_OWNER): the token that `lock acquire` prints and --token takes. */
  owner: string
  /** DLQ_FENCING_TOKEN: an integer that strictly increases with every successful acquisition of the key. */
  fencingToken: string
  acquiredAt: Date
  expiresAt: Date
  /** A shared (reader) holding beside others, or an exclusive one (counted against its limit). */
  mode: LockMode
}

/**
 * `exclusive`: up to `limit` holders at once, shared ones counted. `shared` (--shared): any number
 * of shared holders together, none beside an exclusive holder; and once an exclusive request waits,
 * new shared requests wait behind it (writer preference), while the shared holders already in stay.
 */
export type LockMode = 'exclusive' | 'shared'

export interface AcquireRequest {
  key: string
  owner: string
  ttlMs: number
  /** Semaphore size: up to `limit` holders at once (1 for a shared request). */
  limit: number
  /** A reader lock (--shared); exclusive when absent. */
  shared?: boolean
  /** How long to wait; 0 = try once, Infinity = forever. */
  waitMs: number
  signal: AbortSignal
  holder: HolderInfo
  /** Called while waiting, whenever the driver learns who holds the key. */
  onWaiting?: (holders: Holder[]) => void
}

export interface Lease {
  key: string
  /** The holding's id: the token --token takes. */
  owner: string
  /** DLQ_FENCING_TOKEN (see Holder). */
  fencingToken: string
  ttlMs: number
  expiresAt: Date
}

/** A process waiting for a lock, where the backend knows its waiters in order (ZooKeeper). */
export interface Waiter extends HolderInfo {
  owner: string
  since: Date
}

export interface LockState {
  key: string
  holders: Holder[]
  /** Waiters, where the backend can tell. */
  waiters?: number
  /** The waiters in the order they will get the lock, where the backend's queue is fair. */
  queue?: Waiter[]
}

export interface LockDriver {
  /** Resolves with the lease, or undefined when `waitMs` ran out. Rejects with AbortError on abort. */
  acquire(request: AcquireRequest): Promise<Lease | undefined>
  /**
   * Extends the lease to now+ttl (the lease's own TTL when ttlMs is undefined). Throws
   * LockLostError when the lease is gone or taken.
   */
  renew(key: string, owner: string, ttlMs?: number): Promise<Lease>
  /** Compare-and-delete: true when `owner` held the key and no longer does. */
  release(key: string, owner: string): Promise<boolean>
  /** All held locks, or one key. */
  status(key?: string): Promise<LockState[]>
  /** Deletes every hold of the key; returns how many there were. */
  forceRelease(key: string): Promise<number>
  /**
   * Backends that can lose a lease without a failed renewal (a ZooKeeper session) report it here.
   * Returns a function that stops watching.
   */
  watchLoss?(lease: Lease, onLost: (why: string) => void): () => void
  /**
   * For `lock acquire`: makes a holding outlive this process where it is tied to the connection
   * (a ZooKeeper session), before its token is printed. Fails rather than hand out a dead token.
   */
  detach?(key: string, owner: string): Promise<void>
}

export interface Message {
  id: string
  body: Buffer
  enqueuedAt: Date
  /** Which delivery this is: 1 the first time. */
  attempts: number
  /** Opaque handle for settle(): which reservation this delivery belongs to. */
  receipt: string
}

export interface ReserveRequest {
  count: number
  visibilityMs: number
  waitMs: number
  maxAttempts: number
  signal: AbortSignal
}

/**
 * What became of a reserved message: `ack` deletes it, `retry` makes it visible again (or moves
 * it to the dead-letter queue once its attempts reach maxAttempts), `release` gives it back as if
 * it had not been delivered (it was never written out).
 */
export type Outcome = 'ack' | 'retry' | 'release'

export interface SettleOptions {
  /**
   * For `retry`: how long the message stays invisible before it can be delivered again (0, the
   * default: at once). It stays reserved until then, its delivery counted, the way an expired
   * reservation comes back; nobody else can take it, and no settle or extend of the old delivery
   * changes it any more. A message on its last attempt goes to the dead letters at once.
   */
  retryDelayMs?: number
}

export interface PushOptions {
  /**
   * `queue push --delay` / `--at`: the messages stay invisible (to pop, tail and the waiting
   * count) until then, counted as `delayed`. `delayMs` is measured on the backend's clock where
   * the driver has one (as retryDelayMs is), `at` is a point in time; at most one is given.
   */
  delayMs?: number
  at?: Date
}

export interface QueueStats {
  queue: string
  waiting: number
  /** Pushed with a delay that has not passed yet: invisible until then. */
  delayed: number
  inFlight: number
  dead: number
  /** Age of the oldest waiting message in ms, if any. */
  oldestAgeMs?: number
}

export interface QueueDriver {
  /** Largest message the backend accepts, in bytes. */
  readonly maxMessageBytes: number
  /**
   * How many push() batches may be in flight at once without reordering messages (default 1).
   * Only a driver whose one connection applies requests in order can allow more.
   */
  readonly pushConcurrency?: number
  /** Appends one batch in order; resolves with the ids once the batch is durable. */
  push(queue: string, bodies: Buffer[], options?: PushOptions): Promise<string[]>
  /**
   * Reserves up to `count` messages, waiting up to `waitMs` for the first. [] when none came.
   * Creates nothing: a queue that does not exist is waited on until a push creates it.
   */
  reserve(queue: string, request: ReserveRequest): Promise<Message[]>
  /** Settles reserved messages. */
  settle(queue: string, messages: Message[], outcome: Outcome, maxAttempts: number, options?: SettleOptions): Promise<void>
  /** Pushes the reservation's deadline to now+visibility; false when it was lost already. */
  extend(queue: string, message: Message, visibilityMs: number): Promise<boolean>
  /** The last `count` waiting messages, oldest first, without consuming them. */
  peek(queue: string, count: number): Promise<Message[]>
  /**
   * Calls onMessages with every message pushed from now on until the signal aborts (not those
   * pushed with a delay). Like reserve, it creates nothing.
   */
  follow(queue: string, signal: AbortSignal, onMessages: (messages: Message[]) => Promise<void> | void): Promise<void>
  /** All queues that exist, or the one named (zeros if it does not). */
  stats(queue?: string): Promise<QueueStats[]>
  /**
   * Deletes the queue and its dead letters (`queue`.dead) with every message they hold, waiting,
   * delayed or in flight: a settle of a message in hand then changes nothing. Resolves false
   * when there was no such queue.
   */
  deleteQueue(queue: string): Promise<boolean>
}

export interface Backend {
  /** The URL with any password masked: safe to print. */
  readonly displayUrl: string
  readonly locks: LockDriver
  readonly queues: QueueDriver
  close(): Promise<void>
}

export interface BackendOptions {
  /** Log each backend round trip (already masked) to stderr. */
  log?: (line: string) => void
}
