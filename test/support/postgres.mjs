// A real PostgreSQL for the tests: initdb in a temporary directory, a free loopback port, the
// Unix socket in that directory (never the system's cluster or its port), password (SCRAM) login
// for a test user that owns its database but is no superuser. When the tests run as root, initdb
// and postgres run as the `postgres` OS user (PostgreSQL refuses to run as root).
//
//   const server = await startPostgres()   // {url, port, dir, user, password, database, sql(), ...}
//   await server.restart()                  // immediate shutdown (SIGQUIT), then start again
//   await server.halt(); await server.start()
//   await server.stop()                     // stop and remove the directory
//   const standby = await server.startStandby() // pg_basebackup -R: a streaming hot standby
//   await standby.promote()                 // pg_ctl promote: a primary of its own
import {execFile, execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {existsSync, readdirSync} from 'node:fs'
import {chown} from 'node:fs/promises'
import {join} from 'node:path'

import {removeTempDir, tempDir, waitFor} from './cli.mjs'
import {daemon, freePort} from './servers.mjs'

const TEST_USER = 'dlq_test'
const TEST_DATABASE = 'dlq_test'

/** The newest installed PostgreSQL's bin directory (Debian's layout), else pg_config's. */
function binDir() {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : []
  if (versions.length > 0) return join(root, versions.sort((a, b) => Number(b) - Number(a))[0], 'bin')
  try {
    const dir = execFileSync('pg_config', ['--bindir'], {encoding: 'utf8'}).trim()
    if (existsSync(join(dir, 'initdb'))) return dir
  } catch {}
  throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no pg_config --bindir)')
}

/** Who runs the server: ourselves, or the `postgres` OS user when we are root. */
async function serverUser() {
  if (process.getuid?.() !== 0) return {}
  const id = (flag) =>
    new Promise((resolve, reject) => execFile('id', [flag, 'postgres'], (error, stdout) => (error ? reject(new Error('running as root needs a "postgres" OS user')) : resolve(Number(stdout.trim())))))
  return {uid: await id('-u'), gid: await id('-g')}
}

function exec(file, args, options = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, {timeout: 60_000, ...options}, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')}: ${error.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

/**
 * Starts a PostgreSQL server (`config`: more `name=value` settings for postgres -c). Resolves
 * once it accepts connections. The returned `url` logs in as
 * the test user with its password: postgres://dlq_test:PASSWORD@127.0.0.1:PORT/dlq_test.
 */
export async function startPostgres({config = []} = {}) {
  const bin = binDir()
  const owner = await serverUser()
  const dir = await tempDir('dlq-pg-') // removed at exit too, should stop() never run
  if (owner.uid !== undefined) await chown(dir, owner.uid, owner.gid)
  const data = join(dir, 'data')
  const port = await freePort()
  const password = randomBytes(12).toString('base64url')
  const asServer = serverOptions(owner)

  // Superuser: local (socket) trust only, for the fixture's own SQL; TCP needs a password.
  // initdb's pg_hba.conf also lets the superuser replicate over the socket (`local replication
  // all trust`), which is how a standby of this server streams (startStandby()).
  await exec(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '--auth-local=trust', '--auth-host=scram-sha-256'], asServer)
  const server = serverOn({bin, owner, dir, data, port, config})
  await server.start()
  await server.sql(`CREATE ROLE ${TEST_USER} LOGIN PASSWORD '${password}'`, 'postgres')
  await server.sql(`CREATE DATABASE ${TEST_DATABASE} OWNER ${TEST_USER}`, 'postgres')

  const urlOf = (p) => `postgres://${TEST_USER}:${password}@127.0.0.1:${p}/${TEST_DATABASE}`
  return {
    ...server,
    user: TEST_USER,
    password,
    database: TEST_DATABASE,
    url: urlOf(port),
    /** The URL without its password (give it by DLQ_PASSWORD, ?passwordFile=, PGPASSWORD…). */
    bareUrl: `postgres://${TEST_USER}@127.0.0.1:${port}/${TEST_DATABASE}`,
    /**
     * A hot standby of this server, streaming from it over its Unix socket (pg_basebackup -R: the
     * replication connection is in postgresql.auto.conf, standby.signal marks it), on a port and in
     * a directory of its own. Same users and passwords: `url` logs in as the test user.
     */
    async startStandby({config: standbyConfig = config} = {}) {
      const standbyDir = await tempDir('dlq-pg-standby-')
      if (owner.uid !== undefined) await chown(standbyDir, owner.uid, owner.gid)
      const standbyData = join(standbyDir, 'data')
      await exec(join(bin, 'pg_basebackup'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-D', standbyData, '-R', '-X', 'stream', '--no-sync', '-c', 'fast'], asServer)
      const standbyPort = await freePort()
      const standby = serverOn({bin, owner, dir: standbyDir, data: standbyData, port: standbyPort, config: standbyConfig})
      await standby.start()
      return {...standby, url: urlOf(standbyPort)}
    },
  }
}

const serverOptions = (owner) => ({...owner, env: {...process.env, LC_ALL: 'C', TZ: 'UTC'}})

/** A PostgreSQL server on an existing data directory: start, stop, SQL as the superuser. */
function serverOn({bin, owner, dir, data, port, config}) {
  const asServer = serverOptions(owner)
  let server
  /** Runs SQL as the superuser over the Unix socket; resolves with psql's unaligned output. */
  const sql = (text, database = TEST_DATABASE) =>
    exec(join(bin, 'psql'), ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', database, '-c', text])
  const begin = async () => {
    server = daemon(join(bin, 'postgres'), [
      '-D', data, '-p', String(port),
      '-c', 'listen_addresses=127.0.0.1',
      '-c', `unix_socket_directories=${dir}`,
      '-c', 'fsync=off', // tests only: the data need not survive the machine, only the server
      '-c', 'full_page_writes=off',
      '-c', 'max_connections=200',
      '-c', 'shared_buffers=32MB',
      '-c', 'logging_collector=off',
      ...config.flatMap((setting) => ['-c', setting]), // later settings win: e.g. fsync=on
    ], asServer)
    await waitFor(() => isReady(bin, dir, port), {timeoutMs: 30_000, intervalMs: 50, what: `postgres on port ${port} (${server.output()})`})
  }
  return {
    port,
    dir,
    /** The data directory (pg_hba.conf, server.crt…); files the server reads must be owned by `owner`. */
    data,
    owner,
    sql,
    pid: () => server.child.pid,
    /** Immediate shutdown (pg_ctl stop -m immediate): every session is cut as by a crash; the data stays. */
    async halt() {
      await server.stop('SIGQUIT')
    },
    async start() {
      await begin()
    },
    async restart() {
      await server.stop('SIGQUIT')
      await begin()
    },
    async stop() {
      await server?.stop('SIGQUIT')
      await removeTempDir(dir)
    },
    /** pg_ctl promote, waiting until the server accepts writes. */
    async promote() {
      await exec(join(bin, 'pg_ctl'), ['promote', '-D', data, '-w', '-t', '60'], asServer)
    },
  }
}

async function isReady(bin, dir, port) {
  try {
    await exec(join(bin, 'pg_isready'), ['-q', '-h', dir, '-p', String(port), '-d', 'postgres'], {timeout: 5000})
    return true
  } catch {
    return false
  }
}

/** The conformance entry for PostgreSQL: one server per suite file's describe block. */
export const postgresBackend = {
  name: 'postgres',
  async setup() {
    const server = await startPostgres()
    return {url: server.url, teardown: () => server.stop()}
  },
}

/**
 * PostgreSQL through a multi-host URL that names a hot standby first, then the primary: every
 * connection goes through dlq's host loop and its read-write check. Only when asked for by name
 * (DLQ_TEST_BACKENDS=postgres-multihost).
 */
export const postgresMultiHostBackend = {
  name: 'postgres-multihost',
  async setup() {
    const primary = await startPostgres()
    const standby = await primary.startStandby()
    return {
      url: primary.url.replace(`127.0.0.1:${primary.port}`, `127.0.0.1:${standby.port},127.0.0.1:${primary.port}`),
      async teardown() {
        await standby.stop()
        await primary.stop()
      },
    }
  },
}
