// The PostgreSQL connection of one dlq process, and the schema it works in.
// - The URL becomes a pg.Client config: the password from the URL, ?password=, ?passwordFile=,
//   DLQ_PASSWORD, then PGPASSWORD and the password file (PGPASSFILE or ~/.pgpass) as libpq reads
//   them. The password is handed to pg as a function, so pg never falls back to its own
//   (deprecated, warning-printing) .pgpass reader, and is scrubbed from every message dlq prints.
// - One pg.Client, used strictly one statement at a time (pg warns on overlapping queries, and a
//   worker's extend timer can overlap its settle). Every statement has a deadline; past it the
//   socket is destroyed, so a paused or partitioned server can never hang dlq.
// - The URL may name several servers (libpq's multi-host syntax, hosts.ts): pg connects to one,
//   so connect() tries them in order, taking the first that ?target_session_attrs= accepts.
// - When the server goes away (a restart, a failover), the next statement connects again, going
//   round the hosts for the connect timeout: a `lock run` whose lease is still in its table (or,
//   after a failover, reached the standby) keeps its lock when renewals resume before the lease
//   expires. LISTEN channels are re-issued on the new session and their
//   waiters woken, since notifications sent meanwhile are lost. LISTEN and NOTIFY share the one
//   session: unlike Redis pub/sub, a listening PostgreSQL session still runs statements.
// - No session state is relied on, so that a pooler (PgBouncer) can stand in between: no startup
//   `options` (PgBouncer refuses the parameter), the planner settings dlq's statements need are
//   SET clauses of its functions (migration 3) and the isolation level is READ COMMITTED by the
//   database's default or by an explicit BEGIN per statement where that default is another.
//   Behind a transaction pooler (?pooling=transaction) every statement may run on another server
//   session, so statements are unnamed (a named one is prepared in one server session and missing,
//   or already there, in the next) and there is no LISTEN (waits poll instead: see poll.ts).
//   Behind a session pooler with ?pooling=session, dlq disconnects while it waits (idle()).
// - The schema (`dlq`, or ?schema=) is created on first use by a versioned migration: one
//   transaction holding pg_advisory_xact_lock on a fixed key while it reads schema_version, so of
//   two dlq processes starting at once one migrates and the other waits, then finds it done.
import {createHash} from 'node:crypto'
import {readFile, stat} from 'node:fs/promises'
import {homedir, userInfo} from 'node:os'
import {join} from 'node:path'
import type {ConnectionOptions} from 'node:tls'

import type {Client, ClientConfig, QueryConfig, QueryResultRow} from 'pg'

import {vendored} from '../../builtins.js'
import {DlqError, unavailable, usageError} from '../../errors.js'
import {checkParameters, connectTimeoutMs, credentials} from '../url.js'
import {displayOf, type Host, type Targets, targetsOf} from './hosts.js'
import {lockSchema, lockSchemaV3, lockSchemaV5, lockSchemaV7} from './lock.js'
import {queueFunctionsV4, queueFunctionsV6, queueSchema, queueSchemaV2, queueSchemaV3, queueSchemaV4, queueSchemaV6} from './queue.js'

/**
 * A statement prepared once per session under its name (pg re-prepares after a reconnect), sent
 * unnamed behind a transaction pooler.
 */
export interface Statement {
  name: string
  text: string
}

/** Where dlq's objects live, and the names derived from it. */
export interface Schema {
  /** The schema's name, as given. */
  name: string
  /** The schema's name quoted as an SQL identifier. */
  sql: string
  /** A 32-bit advisory-lock space of this schema: the first half of the two-int lock key. */
  lockSpace(kind: 'lock' | 'queue'): number
  /** The NOTIFY channel of one key or queue (an identifier of at most 63 bytes, whatever the name). */
  channel(kind: 'lock' | 'queue', name: string): string
  /** A lock waiter's own channel: its key's, _, 8 hex of md5(owner) (the release function says the same in SQL). */
  waiterChannel(key: string, owner: string): string
}

/**
 * What stands between dlq and PostgreSQL (?pooling=): nothing (`none`, also right for a session
 * pooler, where dlq then holds a server connection for as long as it runs, as direct); a pooler
 * that gives each client connection one server session for its life (`session`: PgBouncer's
 * pool_mode=session), where dlq disconnects while it waits or holds between renewals so as not to
 * pin one; or one that may give each transaction another server session (`transaction`).
 */
export type Pooling = 'none' | 'session' | 'transaction'
const poolings: readonly Pooling[] = ['none', 'session', 'transaction']

// Beside dlq's own, the libpq URI parameters that make sense here (a Unix socket is ?host=/dir).
const knownParameters = ['schema', 'pooling', 'connectTimeout', 'passwordFile', 'user', 'password', 'host', 'port', 'sslmode', 'sslrootcert', 'application_name', 'target_session_attrs', 'connect_timeout']
const schemaPattern = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

// Every dlq statement reads or writes a few rows through an index (the first messages of one
// queue in id order, a lease by key, rows by (queue, id)), which is always the right plan; but
// right after a bulk push the statistics still say the queue is tiny, and the planner would sort,
// hash or bitmap-scan the whole queue for each pop (160 ms instead of 1.5 ms for 1000 of 300,000).
// These settings leave it the index and nested loops. They were the startup `options` of dlq's
// sessions up to migration 2; a pooler refuses that parameter (PgBouncer: "unsupported startup
// parameter: options") and shares server sessions, so from migration 3 on they are SET clauses of
// the functions that read the queue and the leases, in force for each call and nowhere else.
// jit is off with them: a plan that needs a node type turned off costs 10^10, past the server's
// jit_above_cost, so with the default jit=on LLVM compiled a burial for 100-300 ms of CPU (seconds
// on a busy machine, while the dead-letter queue's lock held the next burials, and a worker's acks
// waited behind its own burial past --visibility). No dlq statement gains from JIT.
const PLANNER_SETTINGS = ['enable_seqscan', 'enable_bitmapscan', 'enable_sort', 'enable_hashjoin', 'enable_mergejoin', 'jit']
const FUNCTIONS = ['acquire', 'release', 'force_release', 'push', 'bury', 'reserve', 'settle', 'peek', 'after', 'stats_of_queue']
const plannerSettingsOfFunctions = ({sql: s}: Schema, functions = FUNCTIONS): string[] =>
  functions.map((name) => `ALTER FUNCTION ${s}.${name} ${PLANNER_SETTINGS.map((setting) => `SET ${setting} = off`).join(' ')}`)

const quoteLiteral = (text: string) => `'${text.replace(/'/g, "''")}'`
// Migration 8: jit = off for every function already in the schema, whether or not it has the
// planner settings (jit joined the list above only then).
const jitOffOfFunctions = ({name}: Schema): string => `DO $do$
  DECLARE
    f regprocedure;
  BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ${quoteLiteral(name)} LOOP
      EXECUTE format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;
  END
  $do$`

// The lock functions rely on READ COMMITTED (each statement sees what committed before it, the
// count after the advisory lock included), and SKIP LOCKED reservations would fail with
// serialization errors under REPEATABLE READ. Where the database's default is another level, each
// statement is sent inside BEGIN ISOLATION LEVEL READ COMMITTED … COMMIT: two more round trips,
// but no session state (a SET would stay behind in a pooler's shared session).
const BEGIN_READ_COMMITTED = 'BEGIN ISOLATION LEVEL READ COMMITTED'

// client_encoding is a startup parameter PgBouncer knows (it tracks it per client): keys and queue
// names are UTF-8 whatever the database's default client encoding.
const STARTUP_PARAMETERS = {client_encoding: 'UTF8'}

// 'dlq-migr' as a 64-bit integer: the one key every dlq process takes before it migrates a schema.
const MIGRATION_LOCK = '7236841547384498034'
const SCHEMA_EXISTS = 'SELECT 1 FROM pg_namespace WHERE nspname = $1'
const READ_VERSION = (s: string) => `SELECT coalesce(max(version), 0) AS version FROM ${s}.schema_version`
const OPENING = (s: string) => `SELECT current_setting('transaction_isolation') AS isolation, (${READ_VERSION(s)}) AS version`
const ISOLATION = "SELECT current_setting('transaction_isolation') AS isolation"
const CREATE_VERSION_TABLE = (s: string) => `CREATE TABLE IF NOT EXISTS ${s}.schema_version (
  version integer PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by text NOT NULL DEFAULT current_user
)`
const RECORD_VERSION = (s: string) => `INSERT INTO ${s}.schema_version (version) VALUES ($1)`

/** Each version's DDL, applied in order, once per schema (exported for the migration test). */
export const migrations = (schema: Schema): {version: number; statements: string[]}[] => [
  {version: 1, statements: [...lockSchema(schema), ...queueSchema(schema)]},
  {version: 2, statements: queueSchemaV2(schema)},
  {version: 3, statements: [...lockSchemaV3(schema), ...queueSchemaV3(schema), ...plannerSettingsOfFunctions(schema)]},
  {version: 4, statements: [...queueSchemaV4(schema), ...plannerSettingsOfFunctions(schema, queueFunctionsV4)]},
  {version: 5, statements: lockSchemaV5(schema)},
  {version: 6, statements: [...queueSchemaV6(schema), ...plannerSettingsOfFunctions(schema, queueFunctionsV6)]},
  {version: 7, statements: lockSchemaV7(schema)},
  {version: 8, statements: [jitOffOfFunctions(schema)]},
]
const LATEST_VERSION = 8

// Server errors (SQLSTATE) that mean "the backend cannot be used" rather than a bug in dlq.
const unavailableStates = /^(08|28|3D|53|57P0|25006|42501)/
// A named prepared statement already there (42P05), or missing (26000), where pg knows it did
// (not) prepare it on this connection: only a server session shared with other clients does that.
const sharedSessionStates = new Set(['42P05', '26000'])
const retryableStates = new Set(['57P01', '57P02', '57P03', '53300'])
const socketCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ENOENT', 'EACCES'])
const socketMessages = /Connection terminated|timeout expired|Client has encountered a connection error|not queryable|SSL/i

// What ?target_session_attrs= asks of a server, in one round trip after the login.
const SESSION_ATTRS = "SELECT pg_catalog.pg_is_in_recovery() AS recovery, pg_catalog.current_setting('transaction_read_only') AS read_only"

/** A server that accepted the session but is not what ?target_session_attrs= asks for. */
class StandbyError extends Error {
  constructor(what: string, attrs: string) {
    super(`is ${what}, not ${attrs}`)
  }
}

const execute = <Row extends QueryResultRow>(client: Client, query: string | QueryConfig) => (typeof query === 'string' ? client.query<Row>(query) : client.query<Row>(query))
const quoteIdentifier = (name: string) => `"${name.replace(/"/g, '""')}"`
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The names derived from a schema name (exported for the benchmarks, which listen like dlq). */
export function schemaOf(name: string): Schema {
  const hash = (text: string) => createHash('md5').update(text).digest()
  const channel = (kind: 'lock' | 'queue', key: string) => `dlq_${kind[0]}_${hash(`${name}\0${kind}\0${key}`).toString('hex').slice(0, 24)}`
  return {
    name,
    sql: quoteIdentifier(name),
    lockSpace: (kind) => hash(`${name}\0${kind}`).readInt32BE(0),
    channel,
    waiterChannel: (key, owner) => `${channel('lock', key)}_${hash(owner).toString('hex').slice(0, 8)}`,
  }
}

interface Settings {
  displayUrl: string
  /** The servers to try, in order, and which of them will do (hosts.ts). */
  targets: Targets
  /** pg's configuration for one of them. */
  config: (target: Host) => ClientConfig
  /** Every secret this connection may send: scrubbed from messages. */
  secrets: () => string[]
  schema: Schema
  /** A statement's deadline (?connectTimeout=). */
  timeoutMs: number
  pooling: Pooling
}

/** libpq's password file: host:port:database:user:password, `*` matches anything, `\` escapes. */
async function passwordFromFile(host: string, port: number, database: string, user: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const file = env.PGPASSFILE || join(env.HOME || homedir(), '.pgpass')
  const hostname = host.startsWith('/') ? 'localhost' : host // libpq's name for a Unix socket
  try {
    const info = await stat(file)
    // libpq ignores a password file that others can read.
    if (!info.isFile() || (info.mode & 0o077) !== 0) return undefined
    for (const line of (await readFile(file, 'utf8')).split(/\r?\n/)) {
      if (line === '' || line.startsWith('#')) continue
      const fields: string[] = ['']
      for (let i = 0; i < line.length; i++) {
        if (line[i] === '\\' && i + 1 < line.length) fields[fields.length - 1] += line[++i]
        else if (line[i] === ':' && fields.length < 5) fields.push('')
        else fields[fields.length - 1] += line[i]
      }
      if (fields.length !== 5) continue
      const wanted = [hostname, String(port), database, user]
      if (wanted.every((value, i) => fields[i] === '*' || fields[i] === value)) return fields[4]
    }
  } catch {
    // no file, or unreadable: as libpq, no password from it
  }
  return undefined
}

async function settingsOf(url: URL, env: NodeJS.ProcessEnv = process.env): Promise<Settings> {
  const displayUrl = displayOf(url)
  checkParameters(url, knownParameters, displayUrl)
  const schemaName = url.searchParams.get('schema') ?? 'dlq'
  if (!schemaPattern.test(schemaName)) throw usageError('bad ?schema=', `${JSON.stringify(schemaName)} in ${displayUrl}`, 'a schema name of letters, digits and _, at most 63, not starting with a digit')
  const targets = targetsOf(url, env)
  const found = await credentials(url, env)
  let user = found.user || url.searchParams.get('user') || env.PGUSER
  if (!user) {
    try {
      user = userInfo().username
    } catch {
      user = env.USER ?? 'postgres'
    }
  }
  let database: string
  try {
    database = url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : env.PGDATABASE || user
  } catch {
    throw usageError('bad backend URL', `database name in ${displayUrl}`, 'postgres://user@host:port/database')
  }
  const given = url.password ? found.password : url.searchParams.get('password') ?? found.password
  const password: string | undefined = given ?? (env.PGPASSWORD || undefined)
  // The password file is read per host, as libpq does; what it gave is scrubbed like the rest.
  const fromFile = new Map<string, string | undefined>()
  const timeoutMs = connectTimeoutMs(url)
  const pooling = (url.searchParams.get('pooling') ?? 'none') as Pooling
  if (!poolings.includes(pooling)) throw usageError('bad ?pooling=', `${pooling} in ${displayUrl}`, 'none, session or transaction (PgBouncer\'s pool_mode)')
  const ssl = await tlsOf(url, env)
  return {
    displayUrl,
    targets,
    secrets: () => [...new Set([password, ...fromFile.values()].filter((secret): secret is string => Boolean(secret)))],
    schema: schemaOf(schemaName),
    timeoutMs,
    pooling,
    config: ({host, port}) => ({
      host,
      port,
      user,
      database,
      // Asked for only when the server wants a password: a trust setup never reads ~/.pgpass.
      password: async () => {
        const key = `${host}:${port}`
        if (password === undefined && !fromFile.has(key)) fromFile.set(key, await passwordFromFile(host, port, database, user, env))
        const secret = password ?? fromFile.get(key)
        if (secret === undefined) {
          throw unavailable(`authentication refused by ${displayUrl}`, 'the server asks for a password and none was given', 'put it in the URL, DLQ_PASSWORD, ?passwordFile=, PGPASSWORD or ~/.pgpass')
        }
        return secret
      },
      ssl,
      application_name: url.searchParams.get('application_name') ?? 'dlq',
      keepAlive: true,
    }),
  }
}

/** ?sslmode= as libpq spells it (else $PGSSLMODE); prefer and allow connect without TLS. */
async function tlsOf(url: URL, env: NodeJS.ProcessEnv): Promise<false | ConnectionOptions> {
  const mode = url.searchParams.get('sslmode') ?? env.PGSSLMODE ?? 'disable'
  const rootFile = url.searchParams.get('sslrootcert')
  const ca = rootFile ? await readFile(rootFile).catch(() => { throw usageError('cannot read ?sslrootcert=', rootFile, 'name a PEM file with the CA certificate') }) : undefined
  switch (mode) {
    case 'disable':
    case 'allow':
    case 'prefer':
      return false
    case 'require':
      return {rejectUnauthorized: false}
    case 'verify-ca':
      return {rejectUnauthorized: true, ca, checkServerIdentity: () => undefined}
    case 'verify-full':
      return {rejectUnauthorized: true, ca} // pg checks the name (SNI only for names, never IPs)
    default:
      throw usageError('bad ?sslmode=', `${mode} in ${displayOf(url)}`, 'disable, require, verify-ca or verify-full')
  }
}

/**
 * pg, loaded without its Cloudflare check: where there is no `navigator` (Node 20; Node 21 has
 * one), pg's stream.js asks whether the `Response` global takes Cloudflare's options, and reading
 * that global loads node's whole fetch implementation (undici): 25 ms of every PostgreSQL
 * command's start, on a machine where node itself starts in 100. pg reads it once, as it loads; a
 * navigator that is not Cloudflare's, there only for that moment, answers first.
 */
function loadPg(): typeof import('pg').default {
  if ('navigator' in globalThis) return vendored('pg')
  Object.defineProperty(globalThis, 'navigator', {value: {userAgent: 'Node.js'}, configurable: true})
  try {
    return vendored('pg')
  } finally {
    delete (globalThis as {navigator?: unknown}).navigator
  }
}

export class Connection {
  readonly displayUrl: string
  readonly schema: Schema
  /** As given by ?pooling=, or `transaction` once a statement showed that server sessions are shared. */
  private pooling: Pooling
  private live?: Client
  /** False when the database's default isolation is not READ COMMITTED: then each statement says so. */
  private readCommitted = true
  private tail: Promise<unknown> = Promise.resolve()
  private readonly channels = new Map<string, {handlers: Set<() => void>; ready: Promise<void>}>()
  private closed = false

  private constructor(
    private readonly client: typeof Client,
    private readonly settings: Settings,
    private readonly log?: (line: string) => void,
  ) {
    this.displayUrl = settings.displayUrl
    this.schema = settings.schema
    this.pooling = settings.pooling
  }

  /**
   * LISTEN needs a session that stays: behind a transaction pooler there is none, and behind a
   * session pooler dlq lets its session go while it waits (idle()).
   */
  get canListen(): boolean {
    return this.pooling === 'none'
  }

  /**
   * Behind a session pooler (?pooling=session) a client connection pins one server connection for
   * its whole life: a waiter between two polls, or a holder between two renewals, lets it go, and
   * the next statement connects again (through PgBouncer, no new server login: about a
   * millisecond). Elsewhere nothing to do: direct, the session is dlq's own; behind a transaction
   * pooler, an idle client holds no server connection anyway.
   */
  async idle(): Promise<void> {
    if (this.pooling !== 'session') return
    // In line with the statements: one sent meanwhile connects again after this one let go.
    await this.serial(async () => {
      const client = this.live
      if (!client) return
      this.live = undefined
      let timer: NodeJS.Timeout | undefined
      await Promise.race([client.end().catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, 500)))])
      clearTimeout(timer)
      client.connection.stream.destroy()
    })
  }

  /** Connects (exit 69 at once when refused), then brings the schema up to date. */
  static async open(url: URL, log?: (line: string) => void): Promise<Connection> {
    const settings = await settingsOf(url)
    const pg = loadPg()
    // pg puts only a few parameters of its own in the startup message: the subclass adds dlq's.
    class DlqClient extends pg.Client {
      getStartupConf(): Record<string, string> {
        const own = (pg.Client.prototype as unknown as {getStartupConf(this: Client): Record<string, string>}).getStartupConf
        return {...own.call(this), ...STARTUP_PARAMETERS}
      }
    }
    const connection = new Connection(DlqClient, settings, log)
    await connection.serial(() => connection.connect(false))
    await connection.migrate()
    return connection
  }

  /** Runs one statement; rows back. Errors are DlqErrors where they mean "unavailable". */
  query<Row extends QueryResultRow = QueryResultRow>(statement: Statement | string, values: unknown[] = [], timeoutMs = this.settings.timeoutMs): Promise<Row[]> {
    return this.serial(() => this.send<Row>(statement, values, timeoutMs))
  }

  /**
   * Calls `onNotify` on every NOTIFY of `channel`, and whenever the session was lost (a
   * notification may have been missed). Resolves once the session listens; returns the unlisten.
   * A channel stays listened to after its last handler is gone: the next wait on it needs no
   * round trip, and no UNLISTEN sits in front of the statement that follows a hand-off.
   */
  async listen(channel: string, onNotify: () => void): Promise<() => void> {
    if (!this.canListen) throw new Error('LISTEN behind a pooler: poll instead')
    let entry = this.channels.get(channel)
    if (!entry) {
      const ready = this.query(`LISTEN ${quoteIdentifier(channel)}`).then(() => {})
      entry = {handlers: new Set(), ready}
      this.channels.set(channel, entry)
      ready.catch(() => this.channels.get(channel) === entry && this.channels.delete(channel))
    }
    const {handlers, ready} = entry
    handlers.add(onNotify)
    try {
      await ready
    } catch (error) {
      handlers.delete(onNotify)
      throw error
    }
    return () => handlers.delete(onNotify)
  }

  async close(): Promise<void> {
    this.closed = true
    const client = this.live
    this.live = undefined
    if (!client) return
    // Terminate politely, but never wait long for a server that does not answer.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([client.end().catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, 500)))])
    clearTimeout(timer)
    client.connection.stream.destroy()
  }

  private serial<T>(job: () => Promise<T>): Promise<T> {
    const result = this.tail.then(job, job)
    this.tail = result.catch(() => {})
    return result
  }

  /** One statement on the live session (connecting first if needed), or on `session` only. */
  private async send<Row extends QueryResultRow>(statement: Statement | string, values: unknown[], timeoutMs: number, session?: Client): Promise<Row[]> {
    if (session && this.live !== session) throw unavailable(`lost the connection to ${this.displayUrl}`, 'the session of a transaction ended', 'try again')
    const client = this.live ?? (await this.connect(true))
    const name = typeof statement === 'string' ? statement.replace(/\s+/g, ' ').slice(0, 60) : statement.name
    // A named statement is prepared in the server session it first ran in; behind a transaction
    // pooler the next run may land in another session (where it is missing) or the name in one
    // where another client prepared it ("prepared statement already exists"). Unnamed, pg parses
    // it each time: about 0.1 ms a statement, measured (bench/postgres.mjs).
    const query: string | QueryConfig = typeof statement === 'string'
      ? (values.length === 0 ? statement : {text: statement, values})
      : (this.pooling === 'transaction' ? {text: statement.text, values} : {...statement, values})
    const started = Date.now()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      this.drop(client)
    }, timeoutMs)
    try {
      const result = this.readCommitted || session ? await execute<Row>(client, query) : await this.inReadCommitted<Row>(client, query)
      this.log?.(`pg: ${name} (${Date.now() - started} ms, ${result.rowCount ?? result.rows.length} rows)`)
      return result.rows
    } catch (error) {
      if (timedOut) throw unavailable(`no reply from ${this.displayUrl}`, `${name} took longer than ${timeoutMs} ms`, 'is the server overloaded or unreachable? ?connectTimeout= sets the limit')
      if (typeof statement !== 'string' && this.pooling !== 'transaction' && sharedSessionStates.has((error as {code?: string}).code ?? '')) {
        // A named statement already prepared, or missing, in a session where pg (which counts
        // what it prepared in this connection) knows better: the server session is shared, so
        // a transaction pooler stands in between without ?pooling=transaction. The statement
        // failed at Parse or Bind, before it ran: sent again unnamed, it runs once. From now on,
        // dlq works as with ?pooling=transaction (waits that listened so far fall back to polls).
        this.pooling = 'transaction'
        this.log?.(`pg: ${name}: ${this.scrub((error as Error).message)}: server sessions are shared (a transaction pooler?): unnamed statements and polling from now on; say ?pooling=transaction`)
        clearTimeout(timer)
        return this.send<Row>(statement, values, Math.max(1, timeoutMs - (Date.now() - started)), session)
      }
      throw this.describe(error, `${name} failed on ${this.displayUrl}`)
    } finally {
      clearTimeout(timer)
    }
  }

  /** One statement in a transaction of its own at READ COMMITTED, whatever the database's default. */
  private async inReadCommitted<Row extends QueryResultRow>(client: Client, query: string | QueryConfig) {
    await client.query(BEGIN_READ_COMMITTED)
    try {
      const result = await execute<Row>(client, query)
      await client.query('COMMIT')
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
  }

  /**
   * A new session, on the first of the URL's hosts that accepts it and is what
   * ?target_session_attrs= asks for (pg connects to one host: the loop over them is here). The
   * first connect goes once through the list and fails at once (exit 69) when no host will do; a
   * reconnect goes through it again and again for the connect budget while the failures are
   * transient (refused, starting up or shutting down, a standby where a primary is wanted), so a
   * session lost to a failover comes back on the promoted standby.
   */
  private async connect(retry: boolean): Promise<Client> {
    if (this.closed) throw unavailable(`connection to ${this.displayUrl} closed`, 'the backend was closed')
    const {hosts, connectBudgetMs} = this.settings.targets
    const deadline = Date.now() + connectBudgetMs
    for (let pass = 0; ; pass++) {
      const failures: {target: Host; error: unknown; standby: boolean}[] = []
      for (const target of hosts) {
        if (Date.now() + 50 >= deadline && failures.length > 0) break
        try {
          return await this.connectTo(target, deadline)
        } catch (error) {
          failures.push({target, error, standby: error instanceof StandbyError})
        }
      }
      const transient = failures.every(({error, standby}) => {
        const code = (error as {code?: string}).code ?? ''
        return standby ? retry : retryableStates.has(code) || (retry && !(error instanceof DlqError) && (socketCodes.has(code) || socketMessages.test(String((error as Error).message))))
      })
      if (!transient || Date.now() + 50 >= deadline) throw this.connectFailure(failures)
      await sleep(Math.min(500, 50 * 2 ** pass, deadline - Date.now()))
    }
  }

  /** One attempt at one host, within its share of the time (hosts.ts) and the overall deadline. */
  private async connectTo(target: Host, deadline: number): Promise<Client> {
    const ms = Math.max(100, Math.min(this.settings.targets.perHostMs, deadline - Date.now()))
    const where = this.settings.targets.hosts.length > 1 ? ` (${target.host}:${target.port})` : ''
    const client = new this.client({...this.settings.config(target), connectionTimeoutMillis: ms})
    // An idle session's errors arrive as events; unhandled, they would end the process.
    client.on('error', (error: Error) => {
      this.log?.(`pg: session lost: ${this.scrub(error.message)}`)
      this.drop(client)
    })
    client.on('end', () => this.drop(client))
    client.on('notification', ({channel}) => {
      for (const handler of this.channels.get(channel)?.handlers ?? []) handler()
    })
    // pg's connectionTimeoutMillis covers the handshake; this also covers the session check and
    // re-issuing LISTENs.
    const timer = setTimeout(() => client.connection.stream.destroy(), ms)
    try {
      await client.connect()
      const {attrs} = this.settings.targets
      if (attrs !== 'any') {
        // libpq's checks: read-write asks transaction_read_only, primary asks pg_is_in_recovery().
        const [row] = (await client.query<{recovery: boolean; read_only: string}>(SESSION_ATTRS)).rows
        if (attrs === 'primary' ? row.recovery : row.read_only === 'on') {
          throw new StandbyError(row.recovery ? 'a standby (in recovery)' : 'read-only (default_transaction_read_only)', attrs)
        }
      }
      for (const [channel, {handlers}] of this.channels) {
        if (handlers.size > 0) await client.query(`LISTEN ${quoteIdentifier(channel)}`)
        else this.channels.delete(channel) // nobody waits on it any more: no need to listen again
      }
      clearTimeout(timer)
      this.live = client
      this.log?.(`pg: connected to ${this.displayUrl}${where} (pid ${(client as unknown as {processID: number}).processID})`)
      return client
    } catch (error) {
      clearTimeout(timer)
      client.removeAllListeners('end').removeAllListeners('error').on('error', () => {}) // never live: nothing to report
      client.connection.stream.destroy()
      this.log?.(`pg: ${target.host}:${target.port}: ${this.scrub(error instanceof Error ? error.message : String(error))}`)
      throw error
    }
  }

  /**
   * Why no host would do, as one error. Only standbys: refused as a standby refuses dlq's first
   * write when it is the one host (SQLSTATE 25006, describe()). One host: its own error, as ever.
   * Several: the first host's kind of failure, every host's reason.
   */
  private connectFailure(failures: {target: Host; error: unknown; standby: boolean}[]): Error {
    const why = ({target, error}: {target: Host; error: unknown}) => `${target.host}:${target.port} ${this.scrub(error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim()}`
    if (failures.every(({standby}) => standby)) {
      return unavailable(`cannot write to ${this.displayUrl}`, failures.map(why).join('; '), 'the server is a read-only standby: use the primary')
    }
    const first = failures.find(({standby}) => !standby)!
    if (this.settings.targets.hosts.length === 1) return this.describe(first.error, `cannot connect to ${this.displayUrl}`)
    const described = this.describe(first.error, `cannot connect to ${this.displayUrl}`)
    if (!(described instanceof DlqError)) return described
    return new DlqError(described.exitCode, described.what, failures.map(why).join('; '), described.hint)
  }

  /** Forgets a session that failed; its LISTEN waiters are woken to find out what they missed. */
  private drop(client: Client): void {
    if (this.live === client) {
      this.live = undefined
      for (const {handlers} of this.channels.values()) for (const handler of handlers) handler()
    }
    client.connection.stream.destroy()
  }

  private scrub(text: string): string {
    let out = text
    for (const secret of this.settings.secrets()) out = out.split(secret).join('***')
    return out
  }

  /** pg's error → a DlqError carrying SPEC §4's exit code; the password never in its text. */
  private describe(error: unknown, what: string): Error {
    if (error instanceof DlqError) return error
    const err = error as Error & {code?: string; severity?: string}
    const code = err.code ?? ''
    const why = this.scrub(err.message || String(error)).replace(/\s+/g, ' ').trim()
    if (code.startsWith('28')) {
      return unavailable(`authentication refused by ${this.displayUrl}`, why, 'check the user, and the password in the URL, DLQ_PASSWORD, ?passwordFile=, PGPASSWORD or ~/.pgpass')
    }
    if (code === '3D000') return unavailable(`cannot use ${this.displayUrl}`, why, 'create the database first, or name another in the URL')
    if (code === '42501') return unavailable(`permission denied on ${this.displayUrl}`, why, `dlq needs its own schema ${this.schema.sql}: grant CREATE on the database, or create the schema for this user`)
    if (code === '22P05' || code === '22021') return usageError('a key or queue name the database cannot store', why, 'dlq needs a UTF8 (or SQL_ASCII) database for names beyond its encoding')
    if (code === '25006') return unavailable(`cannot write to ${this.displayUrl}`, why, 'the server is a read-only standby: use the primary')
    // Whatever stops a connection (refused, timed out, TLS, a full server) means "unavailable".
    const connecting = what.startsWith('cannot connect')
    if (connecting || unavailableStates.test(code) || socketCodes.has(code) || socketMessages.test(why)) {
      return unavailable(connecting ? what : `lost the connection to ${this.displayUrl}`, why, connecting ? 'is the server up and reachable?' : undefined)
    }
    // Anything else is a bug in dlq (exit 1), reported with the server's SQLSTATE if it has one.
    return Object.assign(new Error(`${what}: ${why}${err.severity ? ` (SQLSTATE ${code})` : ''}`), {code})
  }

  private async migrate(): Promise<void> {
    const s = this.schema.sql
    // The default isolation comes with the schema's version: no round trip of its own.
    const version = await this.query<{isolation: string; version: number}>(OPENING(s)).then(
      ([row]) => {
        this.readCommitted = row.isolation === 'read committed'
        return row.version
      },
      async (error: {code?: string}) => {
        if (error.code !== '42P01' && error.code !== '3F000') throw error // else no table, or no schema, yet
        const [row] = await this.query<{isolation: string}>(ISOLATION)
        this.readCommitted = row.isolation === 'read committed'
        return 0
      },
    )
    if (version === LATEST_VERSION) return
    if (version > LATEST_VERSION) {
      throw unavailable(`schema ${s} in ${this.displayUrl} is at version ${version}`, `this dlq knows versions up to ${LATEST_VERSION}`, 'upgrade dlq, or use another ?schema=')
    }
    await this.serial(async () => {
      // One session throughout: a statement sent after a reconnect would run outside the transaction.
      const session = this.live ?? (await this.connect(true))
      const run = (text: string, values: unknown[] = []) => this.send(text, values, Math.max(this.settings.timeoutMs, 30_000), session)
      // READ COMMITTED: the version is read after the advisory lock is granted, not before.
      await run(BEGIN_READ_COMMITTED)
      try {
        await run(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`)
        // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists:
        // a schema an administrator made for dlq must be enough.
        if ((await run(SCHEMA_EXISTS, [this.schema.name])).length === 0) await run(`CREATE SCHEMA ${s}`)
        await run(CREATE_VERSION_TABLE(s))
        const [{version: current}] = await run(READ_VERSION(s))
        for (const migration of migrations(this.schema)) {
          if (migration.version <= current) continue
          for (const statement of migration.statements) await run(statement)
          await run(RECORD_VERSION(s), [migration.version])
          this.log?.(`pg: schema ${s} migrated to version ${migration.version}`)
        }
        await run('COMMIT')
      } catch (error) {
        if (this.live) await run('ROLLBACK').catch(() => {})
        throw error
      }
    })
  }
}
