// One ZooKeeper session per dlq process, opened on first use (so `lock run` can size it from --ttl),
// with what node-zookeeper-client leaves out:
// - every request has a deadline: the library queues requests while it reconnects and never gives
//   up, so a dead ensemble would hang dlq (exit 69 instead);
// - the library has no read timeout (alexguan/node-zookeeper-client#13): a server that stops
//   answering without closing the socket (SIGSTOP, partition) holds the client forever, and
//   expiry is only reported once a server is reached again (#20). So the session keeps its own
//   clock: `lastHeard` is when the latest answered request was sent, and a probe goes out after
//   1/10 of the session timeout without one. A holder's request unanswered for 1/4 of it, or a
//   handshake that long, closes the socket so that the client fails over to another server of
//   the ensemble (the Java client's read timeout, sooner: a holder's lease must be renewed
//   elsewhere before it runs out); so does silence for 2/3 of it, for anyone; silent for 3/4 of
//   it → anyone watching for loss is told, before the ensemble can expire the session and let
//   another holder in;
// - Curator's SUSPENDED → RECONNECTED: between a disconnect and the next handshake the session is
//   suspended, not lost (a reconnect to any server of the ensemble keeps it, its ephemeral nodes
//   and its watches); whenConnected() lets a renewal or a wait carry on once it is back, and
//   retryable() lets a request be tried again for as long as the session may live;
// - the session timeout is --ttl's, at most 10 s (?sessionTimeout= sets it): it bounds how long
//   a dead process's nodes (a waiter's especially, which no lease ends) block a key, also after
//   the ensemble lost and regained its quorum, when every session starts its timeout afresh;
// - deadlines (lock expiry, message visibility) are read on the server's clock: a znode's mtime is
//   the leader's time of the write, and each process learns its offset from writes of its own, as
//   bounds (clock.ts): others' deadlines are judged on the earliest, its own set on the latest.
import {vendored} from '../../builtins.js'
import {formatDuration} from '../../duration.js'
import {DlqError, ExitCode, unavailable, usageError} from '../../errors.js'
import {connectTimeoutMs, credentials, durationParam, shownUrl} from '../url.js'
import {ServerClock, type ServerTime} from './clock.js'
import type {ACL, Client, CreateModeValue, Exception, Stat, TransactionResult, Watcher} from 'node-zookeeper-client'

type Library = typeof import('node-zookeeper-client')

/** Error codes as node-zookeeper-client numbers them (its Exception.*). */
export const Code = {
  CONNECTION_LOSS: -4,
  OPERATION_TIMEOUT: -7,
  NO_NODE: -101,
  NO_AUTH: -102,
  BAD_VERSION: -103,
  NODE_EXISTS: -110,
  NOT_EMPTY: -111,
  SESSION_EXPIRED: -112,
  INVALID_ACL: -114,
  AUTH_FAILED: -115,
} as const

export const Mode = {PERSISTENT: 0, EPHEMERAL: 1, PERSISTENT_SEQUENTIAL: 2, EPHEMERAL_SEQUENTIAL: 3} as const satisfies Record<string, CreateModeValue>

// Answers that are about the data, not the connection: the caller decides what they mean.
const logicalCodes = new Set<number>([Code.NO_NODE, Code.BAD_VERSION, Code.NODE_EXISTS, Code.NOT_EMPTY])

/** The connection failed (or a request had no answer in time): exit 69 unless the caller recovers. */
export class ConnectionError extends DlqError {
  constructor(readonly code: number, what: string, why: string, hint?: string) {
    super(ExitCode.unavailable, what, why, hint)
  }
}

export function codeOf(error: unknown): number | undefined {
  if (error instanceof ConnectionError) return error.code
  const candidate = error as Partial<Exception> | undefined
  return typeof candidate?.getCode === 'function' ? candidate.getCode() : undefined
}

export const isCode = (error: unknown, ...codes: number[]): boolean => codes.includes(codeOf(error) ?? 0)

/** A request whose reply may have been lost: it may or may not have happened. */
export const isConnectionLoss = (error: unknown): boolean => isCode(error, Code.CONNECTION_LOSS, Code.OPERATION_TIMEOUT)

export const zxid = (value: Buffer): bigint => value.readBigUInt64BE(0)
export const time = (value: Buffer): number => Number(value.readBigInt64BE(0))

/** One operation of a multi. */
export type Op =
  | {op: 'create'; path: string; data: Buffer; mode: CreateModeValue}
  | {op: 'remove'; path: string}
  | {op: 'setData'; path: string; data: Buffer}

export interface Target {
  /** node-zookeeper-client's connect string: host:port,host:port (no chroot: dlq adds the root itself). */
  servers: string
  root: string
  display: string
  auth?: {user: string; password: string}
  connectTimeoutMs: number
  /** ?sessionTimeout=: the session timeout asked of the ensemble, whatever --ttl is. */
  sessionTimeoutMs?: number
}

const defaultRoot = '/dlq'
/** At most this, unless ?sessionTimeout= says otherwise (kazoo's default; ZooKeeper's own minimum is 2 ticks). */
const defaultSessionTimeoutMs = 10_000

/** zk://host:port[,host:port…][/chroot]: also the host list percent-encoded, which WHATWG URL can parse. */
export async function parseTarget(url: URL): Promise<Target> {
  // Shown with the host list as written (h1:2181,h2:2181), whatever encoding got it parsed.
  const display = shownUrl(url)
  const hosts = decodeURIComponent(url.host).split(',').map((h) => h.trim())
  if (hosts.some((h) => h === '')) throw usageError('bad backend URL', `${display} names no ZooKeeper server`, 'zk://host:2181[,host:2181...][/chroot]')
  const servers = hosts.map((host) => {
    const match = /^([^:[\]/]+)(?::(\d{1,5}))?$/.exec(host)
    if (!match || Number(match[2] ?? 2181) > 65_535) {
      throw usageError('bad backend URL', `server ${JSON.stringify(host)} in ${display}`, 'give host:port (node-zookeeper-client cannot reach IPv6 literals: use a host name)')
    }
    return `${match[1]}:${match[2] ?? 2181}`
  })
  const path = decodeURIComponent(url.pathname).replace(/\/+$/, '')
  const root = path === '' ? defaultRoot : path
  const parts = root.split('/').slice(1)
  // eslint-disable-next-line no-control-regex
  if (parts.some((p) => p === '' || p === '.' || p === '..' || /[\u0000-\u001f\u007f-\u009f]/.test(p))) {
    throw usageError('bad backend URL', `chroot ${JSON.stringify(root)} in ${display}`, 'a ZooKeeper path such as /dlq or /apps/dlq')
  }
  const {user, password} = await credentials(url)
  if (password !== undefined && !user) throw usageError('bad backend URL', `${display} has a password but no user`, 'digest auth needs zk://user:password@host or zk://user@host with DLQ_PASSWORD')
  return {
    servers: servers.join(','),
    root,
    display,
    auth: user ? {user, password: password ?? ''} : undefined,
    connectTimeoutMs: connectTimeoutMs(url),
    sessionTimeoutMs: url.searchParams.has('sessionTimeout') ? clampTimeout(durationParam(url, 'sessionTimeout', defaultSessionTimeoutMs, '10s', display)) : undefined,
  }
}

const clampTimeout = (ms: number) => Math.max(200, Math.min(ms, 600_000))

export interface Live {
  client: Client
  /** The negotiated session timeout. */
  timeoutMs: number
}

export class Session {
  /** Nodes are readable and writable only by the user dlq authenticated as, if it did. */
  acl: ACL[] = []
  private live?: Live
  private opening?: Promise<Live>
  private wantedTimeoutMs: number
  private readonly clock = new ServerClock()
  private clockMeasuredAt = 0
  private lastHeard = 0
  private closed = false
  private readonly known = new Set<string>()
  private readonly lossListeners = new Set<(why: string) => void>()
  private readonly changeListeners = new Set<() => void>()
  private watchdog?: NodeJS.Timeout
  private lastProbe = 0
  private failedOverAt = 0
  /** Connected to a server (false while suspended: between a disconnect and the next handshake). */
  private connected = false
  private connectedAt = 0
  private disconnectedAt = 0
  /** When the current disconnect began, or the latest socket was closed to move on. */
  private suspendedAt = 0
  private readonly pending = new Map<symbol, number>()
  /** Whether writes are held until the current tick ends (writeTogether). */
  private corked = false
  private readonly reconnectListeners = new Set<() => void>()

  constructor(
    readonly target: Target,
    private readonly log?: (line: string) => void,
  ) {
    this.wantedTimeoutMs = target.sessionTimeoutMs ?? defaultSessionTimeoutMs
  }

  /**
   * Sizes the session before it is opened (later calls change nothing): the lease's TTL for
   * `lock run`, at most 10 s: a waiter's node lasts as long as its session, whatever its TTL.
   */
  preferTimeout(ms: number): void {
    if (!this.live && !this.opening && this.target.sessionTimeoutMs === undefined) this.wantedTimeoutMs = clampTimeout(Math.min(ms, defaultSessionTimeoutMs))
  }

  get timeoutMs(): number {
    return this.live?.timeoutMs ?? this.wantedTimeoutMs
  }

  private async open(): Promise<Live> {
    // ?connectTimeout= bounds all of it, loading the library included: a hard bound (SPEC §1).
    const timeout = this.target.connectTimeoutMs
    const started = Date.now()
    const zk = vendored<Library>('node-zookeeper-client')
    this.acl = this.target.auth ? zk.ACL.CREATOR_ALL_ACL : zk.ACL.OPEN_ACL_UNSAFE
    const client = zk.createClient(this.target.servers, {sessionTimeout: this.wantedTimeoutMs, spinDelay: 100, retries: 0})
    if (this.target.auth) client.addAuthInfo('digest', Buffer.from(`${this.target.auth.user}:${this.target.auth.password}`))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.close()
        reject(unavailable(`cannot connect to ${this.target.display}`, `no ZooKeeper server answered within ${formatDuration(timeout)}`, 'is the ensemble up and reachable? ?connectTimeout=10s waits longer'))
      }, Math.max(0, started + timeout - Date.now()))
      client.once('connected', () => {
        clearTimeout(timer)
        resolve()
      })
      client.once('authenticationFailed', () => {
        clearTimeout(timer)
        client.close()
        reject(unavailable(`authentication refused by ${this.target.display}`, 'the server rejected the digest credentials', 'check the user and DLQ_PASSWORD or ?passwordFile='))
      })
      client.connect()
    })
    const live: Live = {client, timeoutMs: client.getSessionTimeout()}
    this.lastHeard = Date.now()
    this.connected = true
    this.connectedAt = this.lastHeard
    clearInterval(this.watchdog)
    this.watchdog = setInterval(() => this.checkLiveness(), Math.max(20, Math.floor(live.timeoutMs / 20)))
    this.watchdog.unref()
    this.log?.(`zk: session to ${this.target.display} in ${Date.now() - started}ms, timeout ${live.timeoutMs}ms`)
    client.on('connected', () => {
      // A server took the session back (it checked it with the leader): it lives, renewed from now.
      this.lastHeard = Math.max(this.lastHeard, Date.now())
      this.connected = true
      this.connectedAt = Date.now()
      this.log?.(`zk: reconnected after ${Date.now() - this.disconnectedAt}ms disconnected (session kept)`)
      this.changed()
      for (const listener of [...this.reconnectListeners]) listener()
    })
    client.on('disconnected', () => {
      if (this.closed) return
      if (this.connected) this.disconnectedAt = Date.now()
      this.connected = false
      this.suspendedAt = Date.now()
      this.log?.('zk: disconnected: session suspended until a server takes it back')
    })
    client.on('expired', () => {
      // The client is closed for good; the next request opens a new session.
      this.log?.('zk: session expired')
      if (this.live === live) this.live = undefined
      this.lost('the ZooKeeper session expired: its ephemeral nodes are gone')
      this.changed()
      for (const listener of [...this.reconnectListeners]) listener()
    })
    return live
  }

  /** The open session, opening it (or a new one after expiry) when needed. */
  async ready(): Promise<Live> {
    if (this.closed) throw new ConnectionError(Code.CONNECTION_LOSS, `connection to ${this.target.display} closed`, 'dlq is shutting down')
    if (this.live) return this.live
    this.opening ??= this.open().then(
      (live) => {
        this.live = live
        this.opening = undefined
        return live
      },
      (error: unknown) => {
        this.opening = undefined
        throw error
      },
    )
    return this.opening
  }

  private heard(sent: number): void {
    if (sent > this.lastHeard) this.lastHeard = sent
  }

  private trouble(error: unknown, what: string, path: string): unknown {
    const code = codeOf(error)
    if (code === undefined || logicalCodes.has(code)) return error
    if (code === Code.NO_AUTH || code === Code.INVALID_ACL) {
      return new ConnectionError(code, `ZooKeeper refused access to ${path}`, `${code === Code.NO_AUTH ? 'NoAuth' : 'InvalidACL'}: its ACL does not admit ${this.target.auth ? `user ${this.target.auth.user}` : 'anonymous clients'}`, 'check the user and DLQ_PASSWORD or ?passwordFile=, or use another chroot')
    }
    if (code === Code.AUTH_FAILED) return new ConnectionError(code, `authentication refused by ${this.target.display}`, 'AuthFailed', 'check the user and DLQ_PASSWORD or ?passwordFile=')
    const name = (error as Exception).name ?? String(code)
    return new ConnectionError(code, `ZooKeeper ${what} ${path} failed`, `${name} (${this.target.display})`, 'is the ensemble reachable?')
  }

  /** One request, with a deadline, logging and liveness bookkeeping. */
  private async request<T>(what: string, path: string, send: (client: Client, reply: (error: Exception | null, value?: T) => void) => void): Promise<T> {
    const {client} = await this.ready()
    const sent = Date.now()
    const id = Symbol(what)
    this.pending.set(id, sent)
    return new Promise<T>((resolve, reject) => {
      let settled = false
      const timeout = this.target.connectTimeoutMs
      const timer = setTimeout(() => {
        settled = true
        this.pending.delete(id)
        this.log?.(`zk: ${what} ${path}: no answer within ${formatDuration(timeout)}`)
        reject(new ConnectionError(Code.OPERATION_TIMEOUT, `ZooKeeper ${what} ${path} failed`, `no answer within ${formatDuration(timeout)} from ${this.target.display}`, 'is the ensemble reachable?'))
      }, timeout)
      this.writeTogether(client)
      send(client, (error, value) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.pending.delete(id)
        const code = error ? codeOf(error) : 0
        if (!error || (code !== undefined && code !== Code.CONNECTION_LOSS && code !== Code.SESSION_EXPIRED)) this.heard(sent)
        this.log?.(`zk: ${what} ${path}: ${error ? (error.name ?? code) : 'ok'} ${Date.now() - sent}ms`)
        if (error) reject(this.trouble(error, what, path))
        else resolve(value as T)
      })
    })
  }

  /**
   * The library writes each request to the socket as it is made: a system call per request (a
   * quarter of the client's CPU in a 10,000-key `lock status`). Requests made in one tick are held (cork)
   * and leave in one write when the tick ends; a lone request only waits for the end of the tick.
   */
  private writeTogether(client: Client): void {
    const socket = client.connectionManager?.socket
    if (this.corked || !socket || socket.destroyed) return
    this.corked = true
    socket.cork()
    process.nextTick(() => {
      this.corked = false
      socket.uncork()
    })
  }

  create(path: string, data: Buffer, mode: CreateModeValue): Promise<string> {
    return this.request('create', path, (c, reply) => c.create(path, data, this.acl, mode, reply))
  }

  /**
   * create, and the zxid of its reply, which is the new node's czxid: the library keeps the zxid of
   * the latest reply and sets it just before it calls back (synchronously). Callers check it once
   * against exists(), in case a version of the library does otherwise.
   */
  createWithZxid(path: string, data: Buffer, mode: CreateModeValue): Promise<{path: string; zxid?: bigint}> {
    return this.request('create', path, (c, reply) => c.create(path, data, this.acl, mode, (error, created) => {
      const last = c.connectionManager?.zxid
      reply(error, {path: created, zxid: Buffer.isBuffer(last) && last.length === 8 ? zxid(last) : undefined})
    }))
  }

  /** Whether the offset to the server's clock was measured (else clockNow() is the local clock). */
  get clockKnown(): boolean {
    return this.clock.known
  }

  remove(path: string, version = -1): Promise<void> {
    return this.request('delete', path, (c, reply) => c.remove(path, version, (error) => reply(error)))
  }

  exists(path: string, watcher?: Watcher): Promise<Stat | null> {
    return this.request('exists', path, (c, reply) => c.exists(path, watcher, reply))
  }

  getData(path: string, watcher?: Watcher): Promise<{data: Buffer; stat: Stat}> {
    return this.request('get', path, (c, reply) => c.getData(path, watcher, (error, data, stat) => reply(error, {data: data ?? Buffer.alloc(0), stat})))
  }

  setData(path: string, data: Buffer, version = -1): Promise<Stat> {
    return this.request('set', path, (c, reply) => c.setData(path, data, version, reply))
  }

  getChildren(path: string, watcher?: Watcher): Promise<{children: string[]; stat: Stat}> {
    return this.request('children', path, (c, reply) => c.getChildren(path, watcher, (error, children, stat) => reply(error, {children, stat})))
  }

  /** All or nothing. Versions are not offered: the library sends version 0 as "any" (#67). */
  multi(ops: Op[]): Promise<TransactionResult[]> {
    return this.request('multi', `${ops[0]?.path ?? ''} (+${ops.length - 1})`, (c, reply) => {
      const transaction = c.transaction()
      for (const op of ops) {
        if (op.op === 'create') transaction.create(op.path, op.data, this.acl, op.mode)
        else if (op.op === 'remove') transaction.remove(op.path, -1)
        else transaction.setData(op.path, op.data, -1)
      }
      transaction.commit((error, results) => reply(error, results ?? []))
    })
  }

  /** mkdir -p with dlq's ACL; remembered, so the common case costs nothing. */
  async ensurePath(path: string): Promise<void> {
    if (this.known.has(path)) return
    let at = ''
    for (const part of path.split('/').slice(1)) {
      at += `/${part}`
      if (this.known.has(at)) continue
      try {
        await this.create(at, Buffer.alloc(0), Mode.PERSISTENT)
      } catch (error) {
        if (!isCode(error, Code.NODE_EXISTS)) throw error
      }
      this.known.add(at)
    }
  }

  /** Forget a path that turned out to be gone (deleted by a clean-up). */
  forget(path: string): void {
    for (const known of this.known) if (known === path || known.startsWith(`${path}/`)) this.known.delete(known)
  }

  /** Learn the server's clock from the stat of a write this process just made. */
  observeWrite(stat: Stat, sent: number, received = Date.now()): void {
    this.clock.observe(time(stat.mtime), sent, received)
  }

  /** Now on the server's clock, as far as this process knows it (clock.ts; its own clock until it wrote). */
  clockNow(): ServerTime {
    return this.clock.now()
  }

  /**
   * Now on the server's clock, measured by one write if this process has not written yet, or if
   * what it measured is too vague (a reply that came after a stall), at most once a second.
   */
  async serverNow(): Promise<ServerTime> {
    if (this.clock.wide && Date.now() - this.clockMeasuredAt >= 1000) {
      const clock = `${this.target.root}/clock`
      const sent = Date.now()
      try {
        this.observeWrite(await this.setData(clock, Buffer.alloc(0)), sent)
        this.clockMeasuredAt = Date.now()
      } catch (error) {
        if (!isCode(error, Code.NO_NODE)) throw error
        await this.ensurePath(clock)
        return this.serverNow()
      }
    }
    return this.clock.now()
  }

  /** Wakes on reconnection and on session expiry (watches may have been lost). */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener)
    return () => this.changeListeners.delete(listener)
  }

  private changed(): void {
    for (const listener of [...this.changeListeners]) listener()
  }

  /**
   * Calls `onLost` (once) when the session is gone or may be: expired, or nothing heard from the
   * ensemble for nearly the session timeout (the watchdog's probes keep answers coming meanwhile).
   */
  watchSession(onLost: (why: string) => void): () => void {
    let done = false
    const listener = (why: string) => {
      if (done) return
      done = true
      this.lossListeners.delete(listener)
      onLost(why)
    }
    if (!this.live) {
      listener('the ZooKeeper session is gone')
      return () => {}
    }
    this.lossListeners.add(listener)
    return () => {
      done = true
      this.lossListeners.delete(listener)
    }
  }

  /**
   * A request failed because the connection dropped or its server went silent: worth another try
   * (the client reconnects, to another server if need be) for ?connectTimeout=, and beyond it for
   * as long as the session may live: its nodes (a waiter's place in line) live as long.
   */
  retryable(error: unknown, troubleSince: number): boolean {
    return isConnectionLoss(error) && !this.closed && (Date.now() - troubleSince < this.target.connectTimeoutMs || this.mayLive())
  }

  /** The session may still live: open, and heard from within 3/4 of its timeout (see checkLiveness). */
  mayLive(): boolean {
    return this.live !== undefined && !this.closed && Date.now() - this.lastHeard <= this.live.timeoutMs * 0.75
  }

  /**
   * Resolves true once connected (at once if it is), false at `until` (local ms), on expiry or
   * close: how a request that failed with a connection loss waits for RECONNECTED.
   */
  async whenConnected(until: number): Promise<boolean> {
    if (this.connected && this.live) return true
    if (this.closed || !this.live || Date.now() >= until) return false
    return new Promise<boolean>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.reconnectListeners.delete(done)
        resolve(this.connected && this.live !== undefined)
      }
      const timer = setTimeout(done, until - Date.now())
      this.reconnectListeners.add(done)
    })
  }

  private lost(why: string): void {
    for (const listener of [...this.lossListeners]) listener(why)
  }

  private checkLiveness(): void {
    const live = this.live
    if (!live) return
    const now = Date.now()
    const silent = now - this.lastHeard
    const timeout = live.timeoutMs
    if (this.connected && now - this.lastProbe >= timeout / 10 && now - this.lastHeard >= timeout / 10) {
      this.lastProbe = now
      this.exists(this.target.root).catch(() => {})
    }
    // The ensemble expires a session it has not heard from for its timeout, counted from no
    // earlier than the send time of our last answered request: give up a quarter before that
    // (this check runs every 1/20 of it, so the loss is reported by 4/5 of the timeout).
    if (silent > timeout * 0.75 && this.lossListeners.size > 0) {
      this.lost(`no answer from ZooKeeper for ${formatDuration(silent)} (session timeout ${formatDuration(timeout)}): the session may have expired`)
      return
    }
    // The read timeout: a handshake unfinished, or for a holder (a lease to renew in time) a
    // request unanswered (counted from the handshake for one sent before it), for a quarter of
    // the timeout. Only with another server to go to: with one, this would only cut slow
    // replies. Not for others: cutting a request fails it (a push cannot be sent twice), and
    // for them a slow answer within ?connectTimeout= is as good as a quick one.
    const readTimeout = timeout / 4
    let oldest = now
    for (const sent of this.pending.values()) oldest = Math.min(oldest, sent)
    const waited = now - Math.max(oldest, this.connectedAt)
    const stuck = this.connected ? this.lossListeners.size > 0 && waited > readTimeout : now - this.suspendedAt > readTimeout
    if (stuck && this.target.servers.includes(',') && now - this.failedOverAt > readTimeout) {
      this.failedOverAt = now
      this.suspendedAt = now
      this.log?.(this.connected ? `zk: no answer for ${waited}ms: closing the connection to fail over` : `zk: no handshake within ${formatDuration(readTimeout)}: trying the next server`)
      live.client.connectionManager?.socket?.destroy()
    } else if (silent > (timeout * 2) / 3 && now - this.failedOverAt > timeout / 3) {
      this.failedOverAt = now
      this.log?.(`zk: no answer for ${silent}ms: closing the connection to fail over`)
      live.client.connectionManager?.socket?.destroy()
    }
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.watchdog)
    for (const listener of [...this.reconnectListeners]) listener()
    const live = this.live ?? (await this.opening?.catch(() => undefined))
    this.live = undefined
    if (!live) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 500)
      timer.unref()
      live.client.once('disconnected', () => {
        clearTimeout(timer)
        resolve()
      })
      live.client.close()
    })
  }
}
