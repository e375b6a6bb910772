// What only the PostgreSQL backend has: credentials as libpq finds them, the schema created on
// first use (also by several dlq processes at once), ?schema= isolation, waiters in `lock status`,
// and honest behaviour when the server restarts or stays down. Against real PostgreSQL servers
// started on free loopback ports (test/support/postgres.mjs).
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {chmod, chown, copyFile, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {isAlive, oneErrorLine, run, spawnDlq, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {startPostgres} from '../support/postgres.mjs'

const {migrations, schemaOf} = await import('../../dist/backends/postgres/connection.js')
/** The schema version this dlq migrates to. */
const latest = migrations(schemaOf('dlq')).at(-1).version

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const spawnCli = (url, args, opts) => spawnDlq([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const withParams = (url, params) => `${url}${url.includes('?') ? '&' : '?'}${new URLSearchParams(params)}`
const statusOf = async (url, key) => {
  const r = await cli(url, ['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks
}
const readPid = async (path) => {
  const text = (await readFile(path, 'utf8').catch(() => '')).trim()
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}

// Three servers, one per block; the blocks run side by side (most of the time is waiting).
describe('postgres backend', {concurrency: 3}, () => {
  describe('postgres: connection, credentials and schema', {concurrency: 4}, () => {
    let server
    before(async () => {
      server = await startPostgres()
    })
    after(() => server?.stop())

    it('a command loads pg without node\'s fetch (pg\'s Cloudflare check reads the Response global: undici, 25 ms of every start)', async (t) => {
      const dir = await tempDir(t)
      const list = join(dir, 'modules')
      const preload = join(import.meta.dirname, '..', 'support', 'loaded-modules.cjs')
      const r = await cli(server.url, ['queue', 'status'], {env: {NODE_OPTIONS: `--require ${preload}`, DLQ_TEST_LOADED_MODULES: list}})
      assert.equal(r.code, 0, r.stderr)
      const loaded = (await readFile(list, 'utf8')).split('\n')
      assert.ok(loaded.some((m) => /^NativeModule net$/.test(m)), 'the list names no module dlq surely loads: the preload did not run')
      assert.deepEqual(loaded.filter((m) => /undici|fetch/.test(m)), [])
    })

    it('an unreachable server is exit 69 with one line, quickly', async () => {
      // Port 1 of loopback, not a free port found a moment ago: another test's server may take
      // that one meanwhile (ZooKeeper there never answers PostgreSQL, and the connect times out).
      const r = await cli('postgres://nobody:pw@127.0.0.1:1/db', ['lock', 'run', '--key', 'k', '--', 'true'])
      assert.equal(r.code, 69, r.stderr)
      oneErrorLine(r, assert)
      assert.match(r.stderr, /cannot connect/)
      assert.ok(r.ms < 5000, `took ${r.ms}ms`)
    })

    it('a wrong password is exit 69, and no password is ever printed, even with --verbose', async () => {
      const wrong = `postgres://${server.user}:wrong-pw-4711@127.0.0.1:${server.port}/${server.database}`
      const verbose = await cli(wrong, ['lock', 'run', '--verbose', '--key', 'k', '--', 'true'])
      assert.equal(verbose.code, 69, verbose.stderr)
      assert.match(verbose.stderr, /authentication refused/)
      assert.match(verbose.stderr, /dlq_test:\*\*\*@/)
      assert.doesNotMatch(verbose.stdout + verbose.stderr, /wrong-pw-4711/)
      const plain = await cli(wrong, ['queue', 'push', '--queue', 'q', 'm'])
      assert.equal(plain.code, 69)
      oneErrorLine(plain, assert)
      assert.doesNotMatch(plain.stderr, /wrong-pw-4711/)
      const viaEnv = await cli(server.bareUrl, ['lock', 'status', '--verbose'], {env: {DLQ_PASSWORD: 'wrong-pw-4711'}})
      assert.equal(viaEnv.code, 69)
      assert.doesNotMatch(viaEnv.stdout + viaEnv.stderr, /wrong-pw-4711/)
    })

    it('the right password is not printed either, with --verbose or --json', async () => {
      const r = await cli(server.url, ['lock', 'run', '--verbose', '--key', uniqueName(), '--', 'true'])
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stderr, /dlq_test:\*\*\*@/)
      const json = await cli(server.url, ['queue', 'push', '--json', '--verbose', '--queue', uniqueName(), 'm'])
      assert.equal(json.code, 0, json.stderr)
      assert.ok(!(r.stdout + r.stderr + json.stdout + json.stderr).includes(server.password), 'the password was printed')
    })

    it('the password may come from DLQ_PASSWORD, ?passwordFile=, PGPASSWORD or a private password file, as libpq reads it', async (t) => {
      const dir = await tempDir(t)
      const check = async (what, url, env) => {
        const r = await cli(url, ['lock', 'run', '--key', uniqueName(), '--', 'true'], {env})
        assert.equal(r.code, 0, `${what}: ${r.stderr}`)
      }
      await check('DLQ_PASSWORD', server.bareUrl, {DLQ_PASSWORD: server.password})
      await writeFile(join(dir, 'pw'), `${server.password}\n`, {mode: 0o600})
      await check('?passwordFile=', withParams(server.bareUrl, {passwordFile: join(dir, 'pw')}), {})
      await check('PGPASSWORD', server.bareUrl, {PGPASSWORD: server.password})
      const line = `# host:port:database:user:password\nelsewhere:5432:*:*:nope\n127.0.0.1:${server.port}:${server.database}:${server.user}:${server.password}\n`
      await writeFile(join(dir, 'pgpass'), line, {mode: 0o600})
      await check('PGPASSFILE', server.bareUrl, {PGPASSFILE: join(dir, 'pgpass')})
      // libpq ignores a password file others can read: then no password, exit 69.
      await writeFile(join(dir, 'open-pgpass'), line, {mode: 0o644})
      const ignored = await cli(server.bareUrl, ['lock', 'status'], {env: {PGPASSFILE: join(dir, 'open-pgpass')}})
      assert.equal(ignored.code, 69, ignored.stderr)
      oneErrorLine(ignored, assert)
      assert.match(ignored.stderr, /no.* password|password.*none/i)
    })

    it('a Unix socket, as libpq URIs name one: postgres:///DB?host=/dir&port=P&user=U', async () => {
      const r = await cli(`postgres:///${server.database}?${new URLSearchParams({host: server.dir, port: server.port, user: server.user})}`, ['lock', 'run', '--key', uniqueName(), '--', 'echo', 'via the socket'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'via the socket\n')
    })

    it('a database that does not exist is 69; an unknown ?parameter= or a bad ?schema= is 64', async () => {
      const missing = await cli(`postgres://${server.user}:${server.password}@127.0.0.1:${server.port}/no_such_db`, ['lock', 'status'])
      assert.equal(missing.code, 69, missing.stderr)
      oneErrorLine(missing, assert)
      for (const params of [{shema: 'x'}, {schema: 'bad-name'}, {schema: '1x'}, {sslmode: 'sometimes'}]) {
        const r = await cli(withParams(server.url, params), ['lock', 'status'])
        assert.equal(r.code, 64, `${JSON.stringify(params)}: ${r.stderr}`)
        oneErrorLine(r, assert)
        assert.ok(!r.stderr.includes(server.password), 'the password was printed')
      }
    })

    it('the schema is created on first use by several dlq processes at once: all succeed, one row per version', async () => {
      const schema = `race_${uniqueName().replace(/-/g, '_')}`
      const url = withParams(server.url, {schema})
      const commands = [
        ['lock', 'status'], ['lock', 'run', '--key', 'k', '--wait', '10s', '--', 'true'], ['queue', 'push', '--queue', 'q', 'm1'],
        ['queue', 'status'], ['lock', 'run', '--key', 'k', '--wait', '10s', '--', 'true'], ['queue', 'push', '--queue', 'q', 'm2'],
      ]
      const results = await Promise.all(commands.map((args) => cli(url, args, {timeoutMs: 30_000})))
      assert.deepEqual(results.map((r) => r.code), commands.map(() => 0), results.map((r) => r.stderr).join(''))
      assert.equal((await server.sql(`SELECT count(*) || ':' || max(version) FROM ${schema}.schema_version`)).trim(), `${latest}:${latest}`)
      const popped = await cli(url, ['queue', 'pop', '--queue', 'q', '--count', '10'])
      assert.deepEqual(popped.stdout.split('\n').filter(Boolean).sort(), ['m1', 'm2'])
    })

    it('?schema= keeps locks and queues apart', async () => {
      const [a, b] = ['iso_a', 'iso_b'].map((schema) => withParams(server.url, {schema}))
      const key = uniqueName('k')
      const held = await cli(a, ['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      assert.equal((await cli(a, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 75, 'held in schema a')
      assert.equal((await cli(b, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 0, 'free in schema b')
      assert.deepEqual(await statusOf(b, key), [])
      await cli(a, ['queue', 'push', '--queue', 'q', 'in a'])
      assert.equal((await cli(b, ['queue', 'pop', '--queue', 'q'])).code, 75, 'schema b has no message')
      assert.equal((await cli(a, ['queue', 'pop', '--queue', 'q'])).stdout, 'in a\n')
      const tables = await server.sql(`SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN ('iso_a', 'iso_b', 'dlq') AND table_name = 'leases' ORDER BY 1`)
      assert.deepEqual(tables.trim().split('\n'), ['dlq.leases', 'iso_a.leases', 'iso_b.leases'])
    })

    it('a database whose default isolation is REPEATABLE READ: --limit 1 still lets one holder in at a time', async (t) => {
      // Under a snapshot taken before the advisory lock was granted, an acquirer would miss the
      // lease committed by the one it waited for: dlq's sessions insist on READ COMMITTED.
      await server.sql('CREATE DATABASE snapshot_db OWNER dlq_test', 'postgres')
      await server.sql("ALTER DATABASE snapshot_db SET default_transaction_isolation = 'repeatable read'", 'postgres')
      const url = server.url.replace(/\/dlq_test$/, '/snapshot_db')
      const dir = await tempDir(t)
      const script = 'mkdir "$1/inside" 2>/dev/null || echo overlap >> "$1/overlaps"; sleep 0.05; rmdir "$1/inside" 2>/dev/null; true'
      const racers = Array.from({length: 8}, () => cli(url, ['lock', 'run', '--key', 'k', '--wait', '30s', '--', 'sh', '-c', script, 'dlq-test-sh', dir], {timeoutMs: 40_000}))
      const results = await Promise.all(racers)
      assert.deepEqual(results.map((r) => r.code), Array(8).fill(0), results.map((r) => r.stderr).join(''))
      assert.equal(await readFile(join(dir, 'overlaps'), 'utf8').catch(() => ''), '', 'two holders were inside at once')
    })

    it('lock status counts the waiters, and a cancelled waiter leaves none behind', async () => {
      const key = uniqueName('waiters')
      const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      const waiters = [1, 2].map(() => spawnCli(server.url, ['lock', 'run', '--key', key, '--wait', '30s', '--', 'true']))
      await waitFor(async () => (await statusOf(server.url, key))[0]?.waiters === 2, {what: 'lock status to count 2 waiters', timeoutMs: 10_000})
      for (const waiter of waiters) waiter.kill('SIGINT')
      for (const waiter of waiters) assert.equal((await waiter.result).code, 130)
      const [state] = await statusOf(server.url, key)
      assert.equal(state.waiters, 0)
      assert.deepEqual(state.holders.map((h) => h.owner), [held.stdout.trim()])
    })

    it('keys and queue names are bound as parameters: SQL in a name is just a name', async () => {
      const name = "x'); DROP TABLE dlq.leases; --"
      const r = await cli(server.url, ['lock', 'run', `--key=${name}`, '--', 'printenv', 'DLQ_LOCK_KEY'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, `${name}\n`)
      await cli(server.url, ['queue', 'push', `--queue=${name}`, 'body'])
      assert.equal((await cli(server.url, ['queue', 'pop', `--queue=${name}`])).stdout, 'body\n')
      assert.equal((await server.sql("SELECT to_regclass('dlq.leases') IS NOT NULL")).trim(), 't', 'dlq.leases is still there')
    })
  })

  describe('postgres: the server restarts or goes away under a held lock', {concurrency: 1}, () => {
    let server
    before(async () => {
      server = await startPostgres()
    })
    after(() => server?.stop())

    it('a restart within the TTL: the lease is in a table, so renewals resume and the command runs on', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('restart')
      const holder = spawnCli(server.url, ['lock', 'run', '--key', key, '--ttl', '12s', '--', 'sh', '-c', 'echo $$ > "$1/pid"; while [ ! -e "$1/go" ]; do sleep 0.05; done', 'dlq-test-sh', dir], {timeoutMs: 40_000})
      await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start', timeoutMs: 10_000})
      const [before] = await statusOf(server.url, key)
      await server.restart()
      const restarted = Date.now()
      // The holder renews every 4s. Only a renewal after the restart can set the expiry past
      // restarted + 12s (the TTL): wait for one.
      await waitFor(async () => {
        const [state] = await statusOf(server.url, key)
        return Date.parse(state?.holders[0]?.expiresAt ?? 0) > restarted + 12_000
      }, {what: 'a renewal after the restart', timeoutMs: 15_000, intervalMs: 250})
      const [after] = await statusOf(server.url, key)
      assert.equal(after.holders[0].fencingToken, before.holders[0].fencingToken, 'the same lease, not a new one')
      assert.equal((await cli(server.url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 75, 'still held')
      assert.equal(holder.exited, false, 'the command runs on')
      await writeFile(join(dir, 'go'), '')
      const r = await holder.result
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(await statusOf(server.url, key), [], 'released at the end')
    })

    it('the server down past the TTL: the command is stopped, exit 70, and nothing hangs', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('down')
      const holder = spawnCli(server.url, ['lock', 'run', '--key', key, '--ttl', '2s', '--kill-grace', '500ms', '--', 'sh', '-c', 'echo $$ > "$1/pid"; sleep 30', 'dlq-test-sh', dir], {timeoutMs: 30_000})
      const pid = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start', timeoutMs: 10_000})
      await server.halt()
      const haltedAt = Date.now()
      let r
      try {
        r = await holder.result
      } finally {
        await server.start()
      }
      assert.equal(r.code, 70, r.stderr)
      assert.match(r.stderr, /lost/)
      assert.ok(Date.now() - haltedAt < 2000 + 500 + 4000, `stopped ${Date.now() - haltedAt}ms after the server went down`)
      assert.equal(isAlive(pid), false, 'the command is gone')
      // Back up: the stale lease expires by itself and the key can be taken again.
      const again = await cli(server.url, ['lock', 'run', '--key', key, '--wait', '10s', '--', 'true'])
      assert.equal(again.code, 0, again.stderr)
    })

    it('a waiter rides out a restart and takes the lock once the holder lets go', async () => {
      const key = uniqueName('waiter')
      const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      const waiter = spawnCli(server.url, ['lock', 'run', '--key', key, '--wait', '30s', '--', 'echo', 'got it'], {timeoutMs: 40_000})
      await waitFor(async () => (await statusOf(server.url, key))[0]?.waiters === 1, {what: 'the waiter to wait', timeoutMs: 10_000})
      await server.restart()
      const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', held.stdout.trim()])
      assert.equal(released.code, 0, released.stderr)
      const r = await waiter.result
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'got it\n')
    })
  })

  describe('postgres: TLS (?sslmode=)', () => {
    let server
    let dir
    before(async () => {
      server = await startPostgres()
      dir = await tempDir()
      const ssl = (...args) => execFileSync('openssl', args, {cwd: dir, stdio: 'ignore'})
      ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=dlq test CA')
      ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
      await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
      ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf')
      for (const file of ['server.crt', 'server.key']) {
        await copyFile(join(dir, file), join(server.data, file))
        await chmod(join(server.data, file), 0o600)
        if (server.owner.uid !== undefined) await chown(join(server.data, file), server.owner.uid, server.owner.gid)
      }
      // TCP logins over TLS only: a connection that did not negotiate TLS finds no pg_hba.conf entry.
      await writeFile(join(server.data, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n')
      await server.sql('ALTER SYSTEM SET ssl = on', 'postgres')
      await server.sql('SELECT pg_reload_conf()', 'postgres')
    })
    after(() => server?.stop())

    it('sslmode=require and verify-full with ?sslrootcert= connect over TLS; without TLS, or with an untrusted certificate, exit 69', async () => {
      for (const params of [{sslmode: 'require'}, {sslmode: 'verify-full', sslrootcert: join(dir, 'ca.crt')}, {sslmode: 'verify-ca', sslrootcert: join(dir, 'ca.crt')}]) {
        const r = await waitFor(async () => {
          const attempt = await cli(withParams(server.url, params), ['lock', 'run', '--key', uniqueName('tls'), '--', 'echo', 'tls'])
          return attempt.code === 0 ? attempt : undefined // the reload that turns TLS on may still be under way
        }, {what: `a TLS connection with ${JSON.stringify(params)}`, timeoutMs: 10_000, intervalMs: 200})
        assert.equal(r.stdout, 'tls\n')
      }
      const plain = await cli(server.url, ['lock', 'status'])
      assert.equal(plain.code, 69, plain.stderr)
      oneErrorLine(plain, assert)
      const untrusted = await cli(withParams(server.url, {sslmode: 'verify-full'}), ['lock', 'status'])
      assert.equal(untrusted.code, 69, untrusted.stderr)
      oneErrorLine(untrusted, assert)
      assert.match(untrusted.stderr, /certificate/)
      assert.ok(!(plain.stderr + untrusted.stderr).includes(server.password), 'the password was printed')
    })
  })
})
