// A real PgBouncer in front of a test PostgreSQL (test/support/postgres.mjs): its own directory, a
// free loopback port, a generated ini with PgBouncer's defaults except what the test names
// (pool_mode, the pool's size). Clients log in with md5 against a userlist holding the test
// user's password, which PgBouncer also uses for its own (SCRAM) login to the server. PgBouncer
// refuses to run as root: as root, it runs as the server's OS user (the `postgres` user).
//
//   const bouncer = await startPgBouncer(server, {poolMode: 'transaction', poolSize: 10})
//   bouncer.url        // postgres://dlq_test:PASSWORD@127.0.0.1:PORT/dlq_test
//   await bouncer.show('SERVERS')   // the admin console's SHOW, as rows of objects
//   await bouncer.stop()
import {chown, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {removeTempDir, tempDir, waitFor} from './cli.mjs'
import {startPostgres} from './postgres.mjs'
import {accepts, daemon, freePort} from './servers.mjs'

const BIN = '/usr/sbin/pgbouncer'

/** Starts PgBouncer in front of `server`; resolves once it accepts connections. */
export async function startPgBouncer(server, {poolMode = 'session', poolSize = 10, settings = {}} = {}) {
  const dir = await tempDir('dlq-pgbouncer-')
  const port = await freePort()
  const ini = join(dir, 'pgbouncer.ini')
  const userlist = join(dir, 'userlist.txt')
  await writeFile(userlist, `"${server.user}" "${server.password}"\n`, {mode: 0o600})
  // Only what a test must set; everything else (ignore_startup_parameters, max_prepared_statements,
  // server_reset_query…) is PgBouncer's default, as dlq must work with it.
  const lines = [
    '[databases]',
    `${server.database} = host=127.0.0.1 port=${server.port} dbname=${server.database}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = md5',
    `auth_file = ${userlist}`,
    `admin_users = ${server.user}`,
    `pool_mode = ${poolMode}`,
    `default_pool_size = ${poolSize}`,
    'max_client_conn = 500',
    `logfile = ${join(dir, 'pgbouncer.log')}`,
    ...Object.entries(settings).map(([name, value]) => `${name} = ${value}`),
  ]
  await writeFile(ini, lines.join('\n') + '\n', {mode: 0o600})
  const {uid, gid} = server.owner
  if (uid !== undefined) for (const file of [dir, ini, userlist]) await chown(file, uid, gid)
  const bouncer = daemon(BIN, [ini], uid === undefined ? {} : {uid, gid})
  await waitFor(() => accepts(port), {timeoutMs: 15_000, what: `pgbouncer on port ${port} (${bouncer.output()})`})

  const base = `postgres://${server.user}:${server.password}@127.0.0.1:${port}`
  return {
    port,
    dir,
    url: `${base}/${server.database}`,
    /** The admin console's SHOW WHAT (POOLS, SERVERS, CLIENTS…): rows as objects. */
    async show(what) {
      const {default: pg} = await import('pg')
      const admin = new pg.Client({connectionString: `${base}/pgbouncer`})
      await admin.connect()
      try {
        // The console speaks only the simple query protocol: a query without parameters.
        return (await admin.query(`SHOW ${what}`)).rows
      } finally {
        await admin.end()
      }
    },
    async stop() {
      await bouncer.stop('SIGINT') // SIGINT: PgBouncer's immediate shutdown
      await removeTempDir(dir)
    },
  }
}

/** A conformance entry (test/support/backends.mjs): PostgreSQL behind PgBouncer in `poolMode`, with ?pooling= saying so. */
export const pgbouncerBackend = (poolMode) => ({
  name: `pgbouncer-${poolMode}`,
  async setup() {
    const server = await startPostgres()
    const bouncer = await startPgBouncer(server, {poolMode, poolSize: 10})
    return {
      url: `${bouncer.url}?pooling=${poolMode}`,
      async teardown() {
        await bouncer.stop()
        await server.stop()
      },
    }
  },
})
