// What only the Redis backend has: authentication, TLS, and honest behaviour when the server goes
// away. Against real redis-server processes on free loopback ports.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFile, writeFile} from 'node:fs/promises'
import {connect} from 'node:net'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {oneErrorLine, run, shUntil, spawnDlq, tempDir, trackPid, uniqueName, waitFor, isAlive} from '../support/cli.mjs'
import {freePort, startRedis} from '../support/servers.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const redisCli = (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8'})

describe('redis: connection and credentials', () => {
  let server
  before(async () => {
    server = await startRedis({config: ['user default off', 'user alice on >s3cret-pw ~* &* +@all']})
  })
  after(() => server?.stop())

  it('an ACL user with a password in the URL works', async () => {
    const r = await cli(`redis://alice:s3cret-pw@127.0.0.1:${server.port}`, ['lock', 'run', '--key', uniqueName(), '--', 'echo', 'in'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'in\n')
  })

  it('the password may come from DLQ_PASSWORD or ?passwordFile=', async (t) => {
    const env = await cli(`redis://alice@127.0.0.1:${server.port}`, ['queue', 'push', '--queue', uniqueName(), 'x'], {env: {DLQ_PASSWORD: 's3cret-pw'}})
    assert.equal(env.code, 0, env.stderr)
    const dir = await tempDir(t)
    await writeFile(join(dir, 'pw'), 's3cret-pw\n', {mode: 0o600})
    const file = await cli(`redis://alice@127.0.0.1:${server.port}?passwordFile=${join(dir, 'pw')}`, ['lock', 'status'])
    assert.equal(file.code, 0, file.stderr)
  })

  it('a wrong password is exit 69, and no password is ever printed, even with --verbose', async () => {
    const r = await cli(`redis://alice:wrong-pw-123@127.0.0.1:${server.port}`, ['lock', 'run', '--verbose', '--key', 'k', '--', 'true'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(r.stderr, /authentication refused/)
    assert.doesNotMatch(r.stdout + r.stderr, /wrong-pw-123/)
    assert.match(r.stderr, /alice:\*\*\*@/)
    const plain = await cli(`redis://alice:wrong-pw-123@127.0.0.1:${server.port}`, ['lock', 'status'])
    oneErrorLine(plain, assert)
    assert.doesNotMatch(plain.stderr, /wrong-pw-123/)
  })

  it('the right password is not printed either', async () => {
    const r = await cli(`redis://alice:s3cret-pw@127.0.0.1:${server.port}`, ['lock', 'run', '--verbose', '--key', uniqueName(), '--', 'true'])
    assert.equal(r.code, 0, r.stderr)
    assert.doesNotMatch(r.stdout + r.stderr, /s3cret-pw/)
  })

  it('a database index the server does not have is exit 69, and nothing lands in database 0', async () => {
    const queue = uniqueName('nodb')
    const r = await cli(`redis://alice:s3cret-pw@127.0.0.1:${server.port}/99999`, ['queue', 'push', '--queue', queue, 'lost?'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /cannot use database 99999 .*DB index is out of range/)
    assert.doesNotMatch(r.stderr, /s3cret-pw/)
    assert.equal(redisCli(server.port, '--user', 'alice', '--pass', 's3cret-pw', '--no-auth-warning', 'EXISTS', `{dlq:q:${queue}}:stream`).trim(), '0')
    const other = await cli(`redis://alice:s3cret-pw@127.0.0.1:${server.port}/3`, ['queue', 'push', '--queue', queue, 'kept'])
    assert.equal(other.code, 0, other.stderr)
    assert.equal(redisCli(server.port, '--user', 'alice', '--pass', 's3cret-pw', '--no-auth-warning', '-n', '3', 'EXISTS', `{dlq:q:${queue}}:stream`).trim(), '1')
  })

  it('an unreachable server is exit 69 with one line, quickly', async () => {
    const port = await freePort()
    const r = await cli(`redis://127.0.0.1:${port}`, ['lock', 'run', '--key', 'k', '--', 'true'])
    assert.equal(r.code, 69, r.stderr)
    oneErrorLine(r, assert)
    assert.match(r.stderr, /cannot connect/)
  })
})

describe('redis: TLS (rediss://)', () => {
  let server
  let dir
  before(async () => {
    dir = await tempDir()
    const ssl = (...args) => execFileSync('openssl', args, {cwd: dir, stdio: 'ignore'})
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=dlq test CA')
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
    await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf')
    server = await startRedis({tlsPort: true, config: [`tls-cert-file ${dir}/server.crt`, `tls-key-file ${dir}/server.key`, `tls-ca-cert-file ${dir}/ca.crt`, 'tls-auth-clients no']})
  })
  after(() => server?.stop())

  it('works with the CA given by ?ca=, and refuses an untrusted certificate with exit 69', async () => {
    const ok = await cli(`rediss://127.0.0.1:${server.port}?ca=${dir}/ca.crt`, ['lock', 'run', '--key', uniqueName(), '--', 'echo', 'tls'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout, 'tls\n')
    const refused = await cli(`rediss://127.0.0.1:${server.port}`, ['lock', 'status'])
    assert.equal(refused.code, 69, refused.stderr)
    oneErrorLine(refused, assert)
    assert.match(refused.stderr, /certificate/)
  })
})

// A server that restarts loads its data before it serves: every command meanwhile is answered
// LOADING. Loading is slowed (key-load-delay, microseconds per key: minutes for these keys) until
// the test has seen what it wanted, then sped up (CONFIG SET works while loading).
describe('redis: a server loading its data (LOADING)', () => {
  let server
  before(async () => {
    server = await startRedis({config: ['enable-debug-command local', 'key-load-delay 100', 'loading-process-events-interval-bytes 1024']})
  })
  after(() => server?.stop())

  it('dlq against a loading server: exit 69 at once with one line naming LOADING, --wait or not; once loaded, the data is there', async () => {
    const queue = uniqueName('loading')
    assert.equal((await cli(server.url, ['queue', 'push', '--queue', queue, 'kept'])).code, 0)
    redisCli(server.port, 'DEBUG', 'POPULATE', '200000')
    redisCli(server.port, 'SAVE')
    await server.restart()
    const loading = () => /^loading:1/m.test(redisCli(server.port, 'INFO', 'persistence'))
    await waitFor(loading, {what: 'the server to be loading'})
    for (const args of [['queue', 'pop', '--queue', queue, '--wait', '30s'], ['lock', 'run', '--key', uniqueName('loading'), '--wait', '30s', '--', 'echo', 'ran'], ['queue', 'push', '--queue', queue, 'more']]) {
      const r = await cli(server.url, args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      assert.equal(r.stdout, '')
      assert.match(oneErrorLine(r, assert), /loading its data: LOADING/)
      assert.ok(r.ms < 10_000, `${args.join(' ')} took ${r.ms} ms: it waited`)
    }
    assert.ok(loading(), 'the server was still loading after the three commands: they saw it loading')
    redisCli(server.port, 'CONFIG', 'SET', 'key-load-delay', '0')
    await waitFor(() => !loading(), {what: 'the server to finish loading', timeoutMs: 60_000, intervalMs: 100})
    const popped = await cli(server.url, ['queue', 'pop', '--queue', queue])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'kept\n')
  })
})

describe('redis: losing the lock', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  it('the lock deleted under a running command: the command is stopped, exit 70', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('del')
    const child = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--ttl', '1500ms', '--kill-grace', '1s', '--', 'sh', '-c', 'echo $$ > "$1/pid"; sleep 30', 'x', dir])
    await waitFor(async () => /^\d+/.test(await readFile(join(dir, 'pid'), 'utf8').catch(() => '')), {what: 'the command to start'})
    const pid = trackPid((await readFile(join(dir, 'pid'), 'utf8')).trim())
    redisCli(server.port, 'DEL', `{dlq:l:${key}}:holders`)
    const r = await child.result
    assert.equal(r.code, 70, r.stderr)
    assert.match(r.stderr, /lost/)
    assert.equal(isAlive(pid), false)
  })

  // --ttl 60s: the next renewal is 20 s away, so a stop within 2 s can only come from the holder
  // hearing the release on the key's channel.
  it('lock release --force under a long lease: the holder hears it and stops the command at once, exit 70', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('forced')
    const child = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--ttl', '60s', '--kill-grace', '10s', '--', 'sh', '-c', 'echo $$ > "$1/pid"; sleep 30', 'x', dir], {t})
    await waitFor(async () => /^\d+/.test(await readFile(join(dir, 'pid'), 'utf8').catch(() => '')), {what: 'the command to start'})
    const pid = trackPid((await readFile(join(dir, 'pid'), 'utf8')).trim())
    const forced = await cli(server.url, ['lock', 'release', '--key', key, '--force'])
    assert.equal(forced.code, 0, forced.stderr)
    await waitFor(() => !isAlive(pid), {what: 'the command to be stopped after the force release', timeoutMs: 2000})
    const r = await child.result
    assert.equal(r.code, 70, r.stderr)
    assert.match(oneErrorLine(r, assert), /lost: .*force-released/)
  })

  it('another holder of a semaphore releasing (which publishes too) does not stop a holder whose lease stands', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('sem')
    const holder = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--limit', '2', '--ttl', '60s', '--', 'sh', '-c', `echo $$ > "$1/pid"; ${shUntil('[ -e "$1/done" ]')}`, 'x', dir], {t})
    await waitFor(async () => /^\d+/.test(await readFile(join(dir, 'pid'), 'utf8').catch(() => '')), {what: 'the first holder to start'})
    await waitFor(() => redisCli(server.port, 'PUBSUB', 'NUMSUB', `{dlq:l:${key}}:released`).split('\n')[1] === '1', {what: 'the holder to listen on the key\'s channel'})
    const other = await cli(server.url, ['lock', 'run', '--key', key, '--limit', '2', '--wait', '0', '--', 'true'])
    assert.equal(other.code, 0, other.stderr)
    // The release's message reached the holder: its check found its lease and went on. Its own
    // release at the end must still find the lease, which a wrong loss would have dropped.
    const [state] = JSON.parse((await cli(server.url, ['lock', 'status', '--key', key, '--json'])).stdout).locks
    assert.equal(state.holders.length, 1)
    await writeFile(join(dir, 'done'), '')
    const r = await holder.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
  })

  it('a server restart (no persistence) mid-hold: the lease is gone, so the command is stopped (70); nothing hangs', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('restart')
    const child = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--ttl', '2s', '--kill-grace', '500ms', '--', 'sh', '-c', 'echo $$ > "$1/pid"; sleep 30', 'x', dir], {timeoutMs: 20_000})
    await waitFor(async () => /^\d+/.test(await readFile(join(dir, 'pid'), 'utf8').catch(() => '')), {what: 'the command to start'})
    trackPid((await readFile(join(dir, 'pid'), 'utf8')).trim())
    await server.restart()
    const r = await child.result
    assert.equal(r.code, 70, r.stderr)
    assert.ok(r.ms < 10_000, `took ${r.ms}ms`)
    // The key is usable again at once: the restarted server has no lease.
    const again = await cli(server.url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
    assert.equal(again.code, 0, again.stderr)
  })

  it('fencing tokens go on increasing across a restart that lost the counter (no persistence)', async () => {
    const key = uniqueName('fence')
    const token = async () => {
      const r = await cli(server.url, ['lock', 'run', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
      assert.equal(r.code, 0, r.stderr)
      return BigInt(r.stdout.trim())
    }
    const before = [await token(), await token()]
    await server.restart() // save "" and appendonly no: the counter is gone
    const after = [await token(), await token()]
    const all = [...before, ...after]
    for (let i = 1; i < all.length; i++) assert.ok(all[i] > all[i - 1], `fencing tokens must strictly increase: ${all.join(', ')}`)
  })

  it('a fence counter ahead of the server clock (tokens given in one microsecond, a clock set back) is counted on from, never reused', async () => {
    const key = uniqueName('ahead')
    const ahead = 9_000_000_000_000_000n // above the clock in microseconds until the year 2255
    redisCli(server.port, 'SET', `{dlq:l:${key}}:fence`, String(ahead))
    const tokens = []
    for (let i = 0; i < 2; i++) {
      const r = await cli(server.url, ['lock', 'run', '--key', key, '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
      assert.equal(r.code, 0, r.stderr)
      tokens.push(BigInt(r.stdout.trim()))
    }
    assert.deepEqual(tokens, [ahead + 1n, ahead + 2n])
  })

  it('the waiters set of a key goes away by itself once no waiter is left (a waiter killed mid-wait)', async (t) => {
    const key = uniqueName('gone-waiter')
    const waiters = `{dlq:l:${key}}:waiters`
    assert.equal((await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '60s'])).code, 0)
    const waiter = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--wait', '60s', '--', 'true'], {t, timeoutMs: 30_000})
    await waitFor(() => redisCli(server.port, 'ZCARD', waiters).trim() === '1', {what: 'the waiter to wait'})
    const ttl = Number(redisCli(server.port, 'PTTL', waiters))
    assert.ok(ttl > 0 && ttl <= 5000, `the waiters set expires with its last waiter (PTTL ${ttl})`)
    waiter.kill('SIGKILL')
    await waitFor(() => redisCli(server.port, 'EXISTS', waiters).trim() === '0', {what: 'the waiters set to expire', timeoutMs: 10_000})
  })

  it('a paused server (SIGSTOP past the TTL): the holder stops its command within TTL + grace', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('pause')
    const child = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--ttl', '1500ms', '--kill-grace', '500ms', '--', 'sh', '-c', 'echo $$ > "$1/pid"; sleep 30', 'x', dir], {timeoutMs: 20_000})
    await waitFor(async () => /^\d+/.test(await readFile(join(dir, 'pid'), 'utf8').catch(() => '')), {what: 'the command to start'})
    trackPid((await readFile(join(dir, 'pid'), 'utf8')).trim())
    const paused = Date.now()
    process.kill(server.pid(), 'SIGSTOP')
    try {
      const r = await child.result
      assert.equal(r.code, 70, r.stderr)
      assert.ok(Date.now() - paused < 1500 + 500 + 1500, `stopped ${Date.now() - paused}ms after the pause`)
    } finally {
      process.kill(server.pid(), 'SIGCONT')
    }
  })
  it('a waiter answered only after its lease would have ended (server paused past the TTL) gives the lease back and waits on: its command runs, no "lock lost"', async (t) => {
    const key = uniqueName('late-grant')
    assert.equal((await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '3s'])).code, 0)
    // ?connectTimeout=20s: the pause below must be shorter than the waiter's command timeout. With
    // the default (5 s, as long as the pause) a try sent as the pause began timed out before the
    // server answered, and that is exit 69 by design (a server that stops answering), not this case.
    const waiter = spawnDlq(['lock', 'run', '-b', `${server.url}?connectTimeout=20s`, '--key', key, '--ttl', '1500ms', '--wait', '30s', '--', 'echo', 'ran'], {t, timeoutMs: 30_000})
    await waitFor(() => redisCli(server.port, 'ZCARD', `{dlq:l:${key}}:waiters`).trim() === '1', {what: 'the waiter to wait'})
    // Paused across the first lease's end: the waiter's try then is answered 3 s late, when the
    // lease it was granted had less left than dlq can vouch for (before, dlq ran the command
    // only to stop it at once, and exited 70 having done nothing).
    process.kill(server.pid(), 'SIGSTOP')
    try {
      await new Promise((resolve) => setTimeout(resolve, 5000))
    } finally {
      process.kill(server.pid(), 'SIGCONT')
    }
    const r = await waiter.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'ran\n')
    assert.doesNotMatch(r.stderr, /lost/)
  })
})

describe('redis: a server that refuses', () => {
  let server
  let replica
  before(async () => {
    server = await startRedis({config: ['maxclients 1']})
    replica = await startRedis({config: [`replicaof 127.0.0.1 ${server.port}`]})
  })
  after(async () => {
    await replica?.stop()
    await server?.stop()
  })

  it('at maxclients: exit 69, one line naming the limit', async (t) => {
    // The replica holds the master's only client slot. Taken again by a raw connection in case
    // the replica's link is between reconnects.
    const socket = connect({host: '127.0.0.1', port: server.port})
    t.after(() => socket.destroy())
    await new Promise((resolve) => socket.once('connect', resolve))
    await waitFor(async () => {
      const r = await cli(server.url, ['lock', 'status'])
      return r.code === 69 && /maxclients/.test(r.stderr) ? r : undefined
    }, {what: 'the server to refuse a client', timeoutMs: 10_000}).then((r) => {
      assert.match(oneErrorLine(r, assert), /max number of clients reached/)
    })
    const push = await cli(server.url, ['queue', 'push', '--queue', uniqueName(), 'x'])
    assert.equal(push.code, 69, push.stderr)
    oneErrorLine(push, assert)
  })

  it('a replica (READONLY): a push or a lock is exit 69 with one line saying so, a pop --wait never exit 0', async () => {
    const push = await cli(replica.url, ['queue', 'push', '--queue', uniqueName(), 'x'])
    assert.equal(push.code, 69, push.stderr)
    assert.match(oneErrorLine(push, assert), /replica.*READONLY/)
    const lock = await cli(replica.url, ['lock', 'run', '--key', uniqueName(), '--wait', '5s', '--', 'true'])
    assert.equal(lock.code, 69, lock.stderr)
    assert.match(oneErrorLine(lock, assert), /READONLY/)
    const pop = await cli(replica.url, ['queue', 'pop', '--queue', uniqueName(), '--wait', '5s'])
    assert.equal(pop.code, 69, pop.stderr)
    assert.equal(pop.stdout, '')
    oneErrorLine(pop, assert)
  })
})

describe('redis: the server dies under a wait', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  it('a waiting pop and a waiting lock run: exit 69 with one line, nothing on stdout (never 0 without a message)', async (t) => {
    const key = uniqueName('dies')
    const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '60s'])
    assert.equal(held.code, 0, held.stderr)
    const pop = spawnDlq(['queue', 'pop', '-b', server.url, '--queue', uniqueName('dies'), '--wait', '60s'], {t})
    const waiter = spawnDlq(['lock', 'run', '-b', server.url, '--key', key, '--wait', '60s', '--', 'echo', 'ran'], {t})
    await waitFor(() => /blocked_clients:1/.test(redisCli(server.port, 'INFO', 'clients')) && redisCli(server.port, 'ZCARD', `{dlq:l:${key}}:waiters`).trim() === '1', {what: 'both to wait'})
    process.kill(server.pid(), 'SIGKILL')
    for (const child of [pop, waiter]) {
      const r = await child.result
      assert.equal(r.code, 69, r.stderr)
      assert.equal(r.stdout, '')
      assert.match(oneErrorLine(r, assert), /lost|closed|connect/i)
      assert.ok(r.ms < 15_000)
    }
  })
})
