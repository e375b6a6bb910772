// The part of node-zookeeper-client (1.1.x, no types of its own) that the ZooKeeper driver uses,
// as read from its index.js and lib/. Longs (zxids, times) arrive as 8-byte big-endian Buffers.
declare module 'node-zookeeper-client' {
  import type {EventEmitter} from 'node:events'

  export interface Stat {
    czxid: Buffer
    mzxid: Buffer
    /** Server time (ms since the epoch) of the creating / last modifying transaction. */
    ctime: Buffer
    mtime: Buffer
    version: number
    cversion: number
    aversion: number
    ephemeralOwner: Buffer
    dataLength: number
    numChildren: number
    pzxid: Buffer
  }

  export interface Exception extends Error {
    readonly code: number
    readonly name: string
    getCode(): number
    getName(): string
  }

  export const Exception: {
    readonly OK: 0
    readonly CONNECTION_LOSS: -4
    readonly OPERATION_TIMEOUT: -7
    readonly NO_NODE: -101
    readonly NO_AUTH: -102
    readonly BAD_VERSION: -103
    readonly NODE_EXISTS: -110
    readonly NOT_EMPTY: -111
    readonly SESSION_EXPIRED: -112
    readonly INVALID_ACL: -114
    readonly AUTH_FAILED: -115
  }

  export const CreateMode: {
    readonly PERSISTENT: 0
    readonly EPHEMERAL: 1
    readonly PERSISTENT_SEQUENTIAL: 2
    readonly EPHEMERAL_SEQUENTIAL: 3
  }
  export type CreateModeValue = (typeof CreateMode)[keyof typeof CreateMode]

  export const Event: {
    readonly NODE_CREATED: 1
    readonly NODE_DELETED: 2
    readonly NODE_DATA_CHANGED: 3
    readonly NODE_CHILDREN_CHANGED: 4
  }

  export interface WatchEvent {
    readonly type: number
    readonly name: string
    readonly path: string
  }
  export type Watcher = (event: WatchEvent) => void

  export interface Id {
    readonly scheme: string
    readonly id: string
  }
  export interface ACL {
    readonly permission: number
    readonly id: Id
  }
  export const ACL: {
    readonly OPEN_ACL_UNSAFE: ACL[]
    /** Everything for the ids the creating session authenticated as (digest user:password). */
    readonly CREATOR_ALL_ACL: ACL[]
  }

  export interface State {
    readonly name: string
    readonly code: number
  }

  /** One result of Transaction.commit, in the order of the operations. */
  export interface TransactionResult {
    readonly type: number
    readonly path?: string
    readonly stat?: Stat
    readonly err?: number
  }

  export interface Transaction {
    create(path: string, data: Buffer | null, acls: ACL[], mode: CreateModeValue): Transaction
    /** Version 0 is sent as -1 (any version) by this library: alexguan/node-zookeeper-client#67. */
    remove(path: string, version?: number): Transaction
    setData(path: string, data: Buffer | null, version?: number): Transaction
    check(path: string, version?: number): Transaction
    commit(callback: (error: Exception | null, results?: TransactionResult[]) => void): void
  }

  export interface ClientOptions {
    /** Requested session timeout in ms; the server clamps it to [min, max]SessionTimeout. */
    sessionTimeout?: number
    /** Upper bound of the random delay before a new round of connection attempts. */
    spinDelay?: number
    retries?: number
  }

  /** Internals, each used with a fallback (see connection.ts). */
  export interface ConnectionManager {
    /**
     * Closed when a connection stops answering: the library has no read timeout
     * (alexguan/node-zookeeper-client#13), so a paused server would hold the client forever.
     */
    socket?: {destroy(): void; cork(): void; uncork(): void; destroyed: boolean}
    /** The zxid of the last reply, set just before that reply's callback runs. */
    zxid?: Buffer
  }

  export interface Client extends EventEmitter {
    readonly connectionManager?: ConnectionManager
    connect(): void
    close(): void
    getState(): State
    getSessionTimeout(): number
    addAuthInfo(scheme: string, auth: Buffer): void
    create(path: string, data: Buffer | null, acls: ACL[], mode: CreateModeValue, callback: (error: Exception | null, path: string) => void): void
    remove(path: string, version: number, callback: (error: Exception | null) => void): void
    exists(path: string, watcher: Watcher | undefined, callback: (error: Exception | null, stat: Stat | null) => void): void
    getData(path: string, watcher: Watcher | undefined, callback: (error: Exception | null, data: Buffer | undefined, stat: Stat) => void): void
    setData(path: string, data: Buffer, version: number, callback: (error: Exception | null, stat: Stat) => void): void
    getChildren(path: string, watcher: Watcher | undefined, callback: (error: Exception | null, children: string[], stat: Stat) => void): void
    transaction(): Transaction
    on(event: 'state', listener: (state: State) => void): this
    on(event: 'connected' | 'disconnected' | 'expired' | 'authenticationFailed', listener: () => void): this
  }

  export function createClient(connectionString: string, options?: ClientOptions): Client
}
