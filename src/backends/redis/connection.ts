// One Redis connection per dlq process (plus a duplicate for blocking reads or pub/sub when a
// command has to wait), with the failures that mean "backend unavailable" turned into exit 69:
// to one server, to the master Sentinel names (following its failovers), or to a Redis Cluster
// (following MOVED/ASK). Nothing is sent twice: a command whose reply a dropped connection lost
// fails rather than being resent, and only the wait loops ask again (FailoverWait).
import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {createConnection, isIP} from 'node:net'
import {connect as tlsConnect, type ConnectionOptions} from 'node:tls'

import type {Cluster, ClusterOptions, Redis, RedisOptions} from 'ioredis'

import {vendored} from '../../builtins.js'
import {formatDuration} from '../../duration.js'
import {DlqError, ExitCode, serverRefusal, toDlqError, unavailable, usageError} from '../../errors.js'
import {connectTimeoutMs, credentials, durationParam, maskUrl, shownUrl} from '../url.js'

/** One server or a master behind Sentinel (Redis), or a Redis Cluster (Cluster). */
export type Client = Redis | Cluster

/** A second connection like `client`, for blocking reads and pub/sub: never cut off, queued until connected. */
export function duplicateOf(client: Client): Client {
  if (client.isCluster) {
    const cluster = client as Cluster
    return cluster.duplicate(undefined, {enableOfflineQueue: true, redisOptions: {...cluster.options.redisOptions, commandTimeout: undefined}})
  }
  return revived((client as Redis).duplicate({enableOfflineQueue: true, commandTimeout: undefined}))
}

/**
 * Behind Sentinel: ioredis's failover detector (+switch-master), disconnecting while a
 * reconnection is still connecting, ends the client for good (status "end", no reconnection
 * left); a pop waiting through a failover then asked a dead client until ?failoverTimeout= (seen
 * over TLS, 1 run in 5). A client that ended without dlq closing it is connected again.
 */
function revived(client: Redis): Redis {
  if (!client.options.sentinels) return client
  let closing = false
  const disconnect = client.disconnect.bind(client)
  client.disconnect = (reconnect = false) => {
    closing ||= !reconnect
    disconnect(reconnect)
  }
  client.on('end', () => {
    if (!closing) client.connect().catch(() => {})
  })
  return client
}

/** Every master that holds dlq's keys: the one server, or each master of a cluster. */
export function mastersOf(client: Client): Redis[] {
  return client.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
}

/** Where a URL's data lives: one server, a master that Sentinel names and follows, or a cluster. */
interface Topology {
  options: RedisOptions
  /** redis+cluster://: the seed nodes and the Cluster client's own options. */
  cluster?: {nodes: {host: string; port: number}[]; options: ClusterOptions}
  /** ?failoverTimeout= (Sentinel, Cluster): how long a waiting command waits for a new master. */
  followMs: number
}

const isCluster = (url: URL) => url.protocol === 'redis+cluster:'
const isSentinel = (url: URL) => url.protocol === 'redis+sentinel:' || url.protocol === 'rediss+sentinel:'
const isTls = (url: URL) => url.protocol === 'rediss:' || url.protocol === 'rediss+sentinel:'

/** ?failoverTimeout=DURATION (Sentinel), default 30s: Sentinel's own default down-after is 30 s. */
export const failoverTimeoutMs = (url: URL): number => durationParam(url, 'failoverTimeout', 30_000, '30s')

/**
 * redis+sentinel://[user:pass@]h1:26379,h2:26379/MASTER[/DB]: the host list arrives %-encoded
 * (backends/index.ts), the credentials are the data nodes'. The Sentinels' own (their
 * requirepass, or an ACL user of theirs) are ?sentinelUser= and ?sentinelPasswordFile= (or
 * ?sentinelPassword=, masked like any password); without them Sentinel is asked without AUTH.
 */
async function sentinelCredentials(url: URL): Promise<Pick<RedisOptions, 'sentinelUsername' | 'sentinelPassword'>> {
  const file = url.searchParams.get('sentinelPasswordFile')
  let password = url.searchParams.get('sentinelPassword') ?? undefined
  if (file) {
    password = await readFile(file, 'utf8').then((text) => text.replace(/\r?\n$/, ''), (error: NodeJS.ErrnoException) => {
      throw usageError('cannot read ?sentinelPasswordFile=', `${file}: ${error.code ?? 'error'}`, 'name a readable file holding the Sentinels\' password')
    })
  }
  return {sentinelUsername: url.searchParams.get('sentinelUser') ?? undefined, sentinelPassword: password}
}

function sentinelTopology(url: URL, db: number): Pick<RedisOptions, 'sentinels' | 'name' | 'db'> {
  const [name, dbText, ...rest] = decodeURIComponent(url.pathname).split('/').slice(1)
  const bad = (why: string) => usageError('bad backend URL', `${why} in ${maskUrl(url.href)}`, `${url.protocol}//h1:26379,h2:26379/MASTER[/DB]`)
  if (!name) throw bad('no master name')
  if (rest.length > 0 || (dbText !== undefined && !/^\d+$/.test(dbText))) throw bad('a path other than /MASTER[/DB]')
  return {sentinels: hostList(url, 26379, bad), name, db: dbText === undefined ? db : Number(dbText)}
}

/** h1:26379,h2 (%-encoded by backends/index.ts) as addresses, `port` where none is given. */
function hostList(url: URL, port: number, bad: (why: string) => Error): {host: string; port: number}[] {
  const hosts = decodeURIComponent(url.host).split(',').map((h) => h.trim()).filter(Boolean)
  if (hosts.length === 0) throw bad('no address')
  return hosts.map((entry) => {
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry)
    if (!match) throw bad(`address ${JSON.stringify(entry)}`)
    return {host: match[1].replace(/^\[|\]$/g, ''), port: match[2] ? Number(match[2]) : port}
  })
}

async function topologyOf(url: URL, user: string | undefined, password: string | undefined): Promise<Topology> {
  const sentinel = isSentinel(url)
  if (isCluster(url) && url.pathname.length > 1) throw usageError('bad backend URL', `a path in ${shownUrl(url)}`, 'a cluster has only database 0: redis+cluster://h1:7000,h2:7001')
  const db = !sentinel && url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) throw usageError('bad backend URL', `database ${JSON.stringify(url.pathname.slice(1))} in ${maskUrl(url.href)}`, 'redis://host:port/DB with DB a number')
  let tls: RedisOptions['tls']
  if (isTls(url)) {
    const ca = url.searchParams.get('ca')
    const host = sentinel ? '' : url.hostname.replace(/^\[|\]$/g, '')
    tls = {
      ...(sentinel || isIP(host) ? {} : {servername: host}),
      ...(ca ? {ca: await readFile(ca).catch(() => { throw usageError('cannot read ?ca=', ca, 'name a PEM file with the CA certificate') })} : {}),
      rejectUnauthorized: url.searchParams.get('insecure') === null,
    }
  }
  const timeout = connectTimeoutMs(url)
  const common: RedisOptions = {
    username: user,
    password,
    tls,
    lazyConnect: true,
    connectTimeout: timeout,
    // A command must not hang dlq when the server stops answering (SIGSTOP, partition).
    commandTimeout: timeout,
    // 0: a connection that drops fails every command still waiting for its reply, at once. With
    // more, ioredis keeps them and (autoResendUnfulfilledCommands) sends them again on the next
    // connection: a push whose first XADD had landed would be appended twice.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // No queueing while disconnected: renewals fail fast, and the supervisor decides at expiry.
    enableOfflineQueue: false,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    connectionName: 'dlq',
  }
  if (isCluster(url)) {
    const bad = (why: string) => usageError('bad backend URL', `${why} in ${shownUrl(url)}`, 'redis+cluster://h1:7000,h2:7001')
    return {
      options: common,
      cluster: {
        nodes: hostList(url, 6379, bad),
        options: {
          redisOptions: {...common, enableReadyCheck: false},
          lazyConnect: true,
          // The cluster connects to each node on its first command there: without the queue a
          // second command while that connection opens would fail. Each command stays bounded by
          // the nodes' commandTimeout.
          enableOfflineQueue: true,
          // No CLUSTER INFO ready check: one that finds cluster_state:fail (a master just died)
          // reconnects, and ioredis then never settles the first connect() (it waited out
          // ?connectTimeout= even once a replica had taken over). A command on a slot without a
          // master is answered CLUSTERDOWN instead, retried below, then exit 69 naming it.
          enableReadyCheck: false,
          // MOVED and ASK are followed (a slot moving, a failover), TRYAGAIN retried: each answered
          // an error, so nothing ran twice. Past the redirections, exit 69. CLUSTERDOWN is not
          // retried here: ioredis sends the retry to a random node, maybe the dead master that the
          // slot map still lists, and the user was told "connection lost" instead of the cause.
          // It is exit 69 naming CLUSTERDOWN; the wait loops ask again (FailoverWait).
          maxRedirections: 16,
          retryDelayOnClusterDown: 0,
          retryDelayOnTryAgain: 100,
          // 0: a command whose connection closed before its reply may have run; it is not sent again.
          retryDelayOnFailover: 0,
          slotsRefreshTimeout: timeout,
          clusterRetryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
          // Writes and reads go to masters: a replica's copy may lag.
          scaleReads: 'master',
        },
      },
      followMs: failoverTimeoutMs(url),
    }
  }
  if (!sentinel) {
    return {options: {...common, host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: url.port ? Number(url.port) : 6379, db, enableReadyCheck: false}, followMs: 0}
  }
  return {
    options: {
      ...common,
      ...sentinelTopology(url, db),
      ...(await sentinelCredentials(url)),
      role: 'master',
      enableTLSForSentinelMode: tls !== undefined,
      sentinelTLS: tls,
      // The ready check asks the server its role: a demoted master that Sentinel still named a
      // moment ago is refused, and the next Sentinel asked.
      enableReadyCheck: true,
      // Told by Sentinel of a new master (+switch-master), ioredis reconnects at once rather than
      // at its next failed command.
      failoverDetector: true,
      sentinelRetryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
      sentinelCommandTimeout: timeout,
      // A master demoted under dlq answers writes with READONLY (one still loading, LOADING):
      // reconnect through Sentinel, failing this command (never resending it: see above).
      reconnectOnError: (error) => (/^(READONLY|LOADING)\b/.test(error.message) ? 1 : false),
    },
    followMs: failoverTimeoutMs(url),
  }
}

export interface Connection {
  client: Client
  /** How long waiting commands go on through a failover (0: a dead server ends them: exit 69). */
  followMs: number
  replication: Replication
}

export async function connect(url: URL, log?: (line: string) => void): Promise<Connection> {
  const {Redis, Cluster} = vendored<typeof import('ioredis')>('ioredis')
  const {user, password} = await credentials(url)
  const {options, cluster, followMs} = await topologyOf(url, user, password)
  const {wanted, timeoutMs} = replicationOf(url)
  const db = options.db ?? 0
  const client: Client = cluster ? new Cluster(cluster.nodes, cluster.options) : revived(new Redis(options))
  // The connect promise often says only "Connection is closed"; the cause arrives as an event.
  let cause: Error | undefined
  // ioredis asks the Sentinels again and again, even when each refused dlq's credentials: that
  // refusal ends the connect at once rather than at ?connectTimeout= as "no answer".
  let refuse: (error: Error) => void = () => {}
  const refused = new Promise<never>((_resolve, reject) => (refuse = reject))
  refused.catch(() => {})
  // Over TLS ioredis reports a Sentinel whose certificate is refused only as "Connection is
  // closed": one handshake of dlq's own with the first Sentinel finds out why.
  let probed = false
  const onError = (error: Error) => {
    cause = error
    log?.(`redis: ${error.message}`)
    if (/^All sentinels are unreachable.*Last error: .*(WRONGPASS|NOAUTH|invalid password)/i.test(error.message)) refuse(error)
    const first = options.sentinels?.[0]
    if (/^All sentinels are unreachable/.test(error.message) && options.sentinelTLS && first?.host && !probed) {
      probed = true
      void tlsRefusal(first.host, first.port ?? 26379, options.sentinelTLS, connectTimeoutMs(url)).then((why) => {
        if (why) refuse((cause = new Error(`All sentinels are unreachable. Last error: ${why}`)))
      })
    }
  }
  client.on('error', onError)
  client.on('sentinelError', onError)
  // Behind Sentinel a command may start mid-failover, the master named still the dead one: ioredis
  // fails connect() at the first refusal but goes on asking the Sentinels. dlq waits for it until
  // a moment before ?connectTimeout= (then it names the last cause), as it follows a failover
  // once connected; refused credentials end it at once.
  const giveUp = isSentinel(url) ? setTimeout(() => refuse(cause ?? new Error('no master answered')), Math.max(0, connectTimeoutMs(url) - 250)) : undefined
  try {
    const connecting = client.connect()
    await Promise.race([
      refused,
      isSentinel(url)
        ? new Promise<void>((resolve, reject) => {
          client.once('ready', resolve)
          connecting.catch((error: Error) => /WRONGPASS|NOAUTH|NOPERM|invalid password/i.test((cause ?? error).message) && reject(error))
        })
        : connecting,
    ])
    clearTimeout(giveUp)
    // connect() can resolve before the AUTH reply: one round trip proves the session usable. A
    // cluster sends PING to a random node, which may be a master that just died and is still in
    // the slot map: any master answering will do (each refused one leaves the map).
    if (cluster) await Promise.any(mastersOf(client).map((node) => node.ping())).catch((error: AggregateError) => { throw error.errors?.[0] ?? error })
    else await client.ping()
    // ioredis reports a refused SELECT only as an event and goes on in database 0: ask again, so
    // that a database the server does not have is an error, not someone else's locks and queues.
    if (db !== 0) await client.select(db)
  } catch (error) {
    clearTimeout(giveUp)
    client.disconnect()
    // ioredis's "Retrying from scratch after 400ms" is not true any more once dlq gives up.
    const message = (cause ?? (error as Error)).message.replace(/ Retrying from scratch after \d+ms\./, '')
    if (/DB index/i.test(message)) {
      throw unavailable(`cannot use database ${db} of ${shownUrl(url)}`, message, 'the server has fewer: see its "databases" setting')
    }
    if (/^All sentinels are unreachable/.test(message) && /WRONGPASS|NOAUTH|invalid password/i.test(message)) {
      const why = message.replace(/^.*Last error: /, '').replace(options.sentinelPassword ?? '\0', '***')
      throw unavailable(`authentication refused by the Sentinels of ${shownUrl(url)}`, why, options.sentinelPassword ? 'check ?sentinelUser= and ?sentinelPasswordFile= (the Sentinels\' own credentials, not the data nodes\')' : 'they ask for a password: give it with ?sentinelPasswordFile= or ?sentinelPassword=')
    }
    if (/^All sentinels are unreachable/.test(message) && tlsProblem.test(message)) {
      throw unavailable(`cannot connect to the Sentinels of ${shownUrl(url)}`, message.replace(/^.*Last error: /, ''), 'give the CA that signed their certificates with ?ca=/path/ca.pem')
    }
    if (/WRONGPASS|NOAUTH|NOPERM|invalid password|AUTH/i.test(message)) {
      throw unavailable(`authentication refused by ${shownUrl(url)}`, message.replace(password ?? '\0', '***'), 'check the user and DLQ_PASSWORD or ?passwordFile=')
    }
    // A full server writes its refusal and closes; ioredis has written its first commands by then
    // and reports only the broken pipe. A connection that sends nothing reads the refusal.
    const refusal = /EPIPE|ECONNRESET|Connection is closed/.test(message) && !isSentinel(url) && !cluster && !isTls(url)
      ? await greeting(options.host ?? '127.0.0.1', options.port ?? 6379, connectTimeoutMs(url))
      : undefined
    const server = serverRefusal(refusal?.startsWith('-') ? refusal.slice(1) : message)
    if (server) throw unavailable(`cannot use ${shownUrl(url)}`, server.why, server.hint)
    throw unavailable(`cannot connect to ${shownUrl(url)}`, message, 'is the server up and reachable?')
  }
  log?.(`redis: connected to ${shownUrl(url)}`)
  return {client, followMs, replication: new Replication(client, wanted, timeoutMs)}
}

const tlsProblem = /certificate|SSL|TLS|handshake/i

/** Why a TLS handshake with host:port fails, if it fails for TLS's reasons (not a refused connection). */
function tlsRefusal(host: string, port: number, options: ConnectionOptions, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = tlsConnect({...options, host, port})
    const done = (why?: string) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(why !== undefined && tlsProblem.test(why) ? why : undefined)
    }
    const timer = setTimeout(() => done(), timeoutMs)
    socket.once('secureConnect', () => done())
    socket.once('error', (error) => done(error.message))
  })
}

/** What a server says unasked within a moment of a connection (a refusal), if anything. */
function greeting(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({host, port})
    let text = ''
    const done = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve(text === '' ? undefined : text.split('\r\n')[0])
    }
    const timer = setTimeout(done, Math.min(500, timeoutMs))
    socket.on('data', (chunk) => {
      text += chunk.toString('utf8')
      if (text.includes('\r\n')) done()
    })
    socket.on('error', done)
    socket.on('close', done)
  })
}

export {shownUrl}

/**
 * For the wait loops (a lock's --wait, a pop's --wait): behind Sentinel a failure of the server
 * (connection lost, READONLY from a demoted master) is waited out while ioredis finds the new
 * master, for up to ?failoverTimeout= since the first failure in a row; then it is exit 69. On a
 * single server (followMs 0) it is exit 69 at once. Nothing is retried that could have taken
 * effect twice: the loops only ask again (acquire is idempotent for its owner, reserve re-reads).
 */
export class FailoverWait {
  private since?: number
  private last?: string

  constructor(private readonly followMs: number) {}

  /** A round trip succeeded: the next failure starts a new count. */
  succeeded(): void {
    this.since = undefined
  }

  /** Resolves after a short pause when `error` may pass with a failover before `deadline`; else throws. */
  async failed(error: unknown, signal: AbortSignal, deadline: number): Promise<void> {
    const dlqError = toDlqError(error)
    if (this.followMs <= 0 || signal.aborted || error instanceof DlqError || dlqError.exitCode !== ExitCode.unavailable) throw error
    const now = Date.now()
    this.since ??= now
    this.last = dlqError.why
    if (now >= deadline) throw error
    if (now - this.since >= this.followMs) {
      throw unavailable('the Redis master went away while waiting', `no master answered for ${formatDuration(now - this.since)} (last: ${this.last})`, 'is a replica being promoted (by Sentinel, or by the cluster)? ?failoverTimeout= sets how long dlq follows a failover')
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(200, deadline - now)))
  }
}

/**
 * WAIT after a write that must outlive a failover (an acquisition, a renewal, a push): the write
 * is confirmed once `?replicas=N` replicas have it (default: one when the master has any, none on
 * a master without replicas), within ?replicaTimeout= (default 1s). Asynchronous replication is
 * not consensus: this narrows the window in which a failover loses an acknowledged write to the
 * replicas that confirmed it dying too, or Sentinel promoting one that had not (see README).
 * The master's replicas are counted (ROLE) on each connection, sent alongside its first write: no
 * extra wait (on a cluster, by the master of the written key's slot, one round trip before its
 * WAIT). A reconnection may have reached another master (a failover): the count is not kept
 * across it, or a promoted replica that has no replica yet would be asked to WAIT for one, and every
 * write after a failover would pay ?replicaTimeout= (1 s: the waiting lock run of the failover bench).
 */
export class Replication {
  private counted?: Promise<number>
  /** The count behind `counted` is in and is 0 (one server, no replica): confirm() has nothing to do. */
  private lone = false

  constructor(
    private readonly client: Client,
    /** ?replicas=N; undefined: one if the master has any. */
    private readonly wanted: number | undefined,
    private readonly timeoutMs: number,
  ) {
    client.on('ready', () => {
      this.counted = undefined
      this.lone = false
    })
  }

  /**
   * WAIT on the connection that carried the write. On a cluster that is the node owning the key's
   * slot: a keyed no-op (EXISTS) takes the pipeline there, WAIT with it.
   */
  private async wait(wanted: number, key: string): Promise<number> {
    if (!this.client.isCluster) return Number(await this.client.call('WAIT', wanted, this.timeoutMs))
    const replies = await this.client.pipeline().exists(key).call('WAIT', wanted, this.timeoutMs).exec()
    const [error, reply] = replies?.[1] ?? [new Error('no reply to WAIT')]
    if (error) throw error
    return Number(reply)
  }

  /**
   * Starts counting the master's replicas, if ?replicas= did not say: call before the write. On a
   * cluster the count belongs to the master of each key's slot: confirm() asks it (replicasFor).
   */
  prepare(): void {
    if (this.wanted === undefined && !this.counted && !this.client.isCluster) {
      const counted: Promise<number> = this.client.role().then(replicasIn, () => {
        this.counted = undefined
        return 0
      })
      this.counted = counted
      void counted.then((replicas) => {
        this.lone = replicas === 0 && this.counted === counted
      })
    }
  }

  /**
   * How many replicas the master holding `key` has. On a cluster, ROLE goes with a keyed no-op to
   * that master, as WAIT does: a random node's count was wrong for a master with none (one just
   * promoted, whose old master is dead), and every write there was refused as unconfirmed.
   */
  private async replicasFor(key: string): Promise<number> {
    if (!this.client.isCluster) {
      this.prepare()
      return this.counted!
    }
    const replies = await this.client.pipeline().exists(key).role().exec()
    const [error, role] = replies?.[1] ?? [new Error('no reply to ROLE')]
    if (error) throw error
    return replicasIn(role as unknown[])
  }

  /**
   * Resolves once the write is on enough replicas; throws exit 69 when it is not in time. On a
   * master known to have none (every write of a lone server) it returns at once, without the
   * awaits below: about 1 µs of a lock pair's JavaScript (bench redis-pairs).
   */
  confirm(what: () => string, key: string): Promise<void> {
    if (this.wanted === 0 || (this.wanted === undefined && this.lone)) return confirmedAlready
    return this.confirmOnReplicas(what, key)
  }

  private async confirmOnReplicas(what: () => string, key: string): Promise<void> {
    const wanted = this.wanted ?? Math.min(1, await this.replicasFor(key))
    if (wanted <= 0) return
    const acknowledged = await this.wait(wanted, key)
    if (acknowledged < wanted && this.wanted === undefined) {
      // By default dlq waits for a replica the master has: one that went away is not waited for.
      this.counted = undefined
      this.lone = false
      if ((await this.replicasFor(key)) === 0) return
    }
    if (acknowledged < wanted) {
      throw unavailable(`${what()} was not confirmed by ${wanted} replica${wanted === 1 ? '' : 's'}`, `${acknowledged} had it within ${formatDuration(this.timeoutMs)} (WAIT)`, 'the master has it, but a failover now could lose it; ?replicas= and ?replicaTimeout= set what dlq waits for')
    }
  }
}

const confirmedAlready = Promise.resolve()

/** The number of replicas in a ROLE reply (0 unless it is a master's). */
const replicasIn = (role: unknown[]): number => (role[0] === 'master' && Array.isArray(role[2]) ? role[2].length : 0)

/** ?replicas=N and ?replicaTimeout=DURATION (default 1s, within ?connectTimeout=). */
export function replicationOf(url: URL): {wanted: number | undefined; timeoutMs: number} {
  const text = url.searchParams.get('replicas')
  let wanted: number | undefined
  if (text !== null) {
    wanted = Number(text)
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(wanted)) throw usageError('bad ?replicas=', `${text} in ${shownUrl(url)}`, 'a number of replicas, 0 for none')
  }
  const timeoutMs = durationParam(url, 'replicaTimeout', 1000, '1s', shownUrl(url))
  // A command is cut off after ?connectTimeout=: WAIT must end first.
  return {wanted, timeoutMs: Math.max(1, Math.min(timeoutMs, connectTimeoutMs(url) - 100))}
}

/** A Lua script called by its SHA1, loaded on the first NOSCRIPT. */
export class Script {
  readonly sha: string

  constructor(readonly name: string, readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex')
  }

  run(client: Client, keys: string[], args: (string | number | Buffer)[], replies: 'buffers' | 'text' = 'buffers'): Promise<unknown> {
    const call = (command: string, ...rest: (string | number | Buffer)[]) => (replies === 'text' ? client.call(command, rest) : client.callBuffer(command, rest))
    return call('EVALSHA', this.sha, keys.length, ...keys, ...args).catch((error: Error) => {
      if (!String(error.message).startsWith('NOSCRIPT')) throw error
      return call('EVAL', this.lua, keys.length, ...keys, ...args)
    })
  }

  /**
   * For calls sent while others are in flight whose order matters (push batches, a pop's later
   * reserve calls): EVAL, with the script's text, so none can fail with NOSCRIPT and be sent again
   * behind the calls after it. (With EVALSHA, another client loading the script between two
   * calls made the second succeed and the first come back last: messages stored out of order.)
   * The server compiles the text once, by its SHA1; the text is small beside a batch's messages.
   */
  runInOrder(client: Client, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    return client.callBuffer('EVAL', [this.lua, keys.length, ...keys, ...args])
  }
}

/** Replies come back as Buffers (message bodies are bytes); this reads the rest as text. */
export const text = (value: unknown): string => (Buffer.isBuffer(value) ? value.toString('utf8') : String(value))
export const num = (value: unknown): number => Number(text(value))
