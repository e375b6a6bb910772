// Real servers for the backend tests: each starts on a free loopback port in a temporary directory,
// is waited on until it answers, and is stopped (and its directory removed) by stop(). Nothing here
// touches a server that is already running or any address but 127.0.0.1.
import {spawn} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {createServer, connect} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {waitFor} from './cli.mjs'

/** A port nobody listens on right now, from the kernel. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Resolves true once something accepts TCP connections on 127.0.0.1:port. */
export function accepts(port) {
  return new Promise((resolve) => {
    const socket = connect({host: '127.0.0.1', port})
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/** Spawns a server process that dies with the test process, and a stop() that ends it. */
export function daemon(command, args, options = {}) {
  const child = spawn(command, args, {stdio: ['ignore', 'pipe', 'pipe'], ...options})
  let output = ''
  child.stdout?.on('data', (d) => (output = (output + d).slice(-4000)))
  child.stderr?.on('data', (d) => (output = (output + d).slice(-4000)))
  const onExit = () => child.kill('SIGKILL')
  process.on('exit', onExit)
  return {
    child,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      process.off('exit', onExit)
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}

/**
 * redis-server on a free port. `config` lines are appended to its config file (e.g. ACL users,
 * TLS). Returns {port, dir, url, stop, restart}.
 */
export async function startRedis({config = [], tlsPort = false} = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'dlq-redis-'))
  const port = await freePort()
  const lines = [`bind 127.0.0.1`, `port ${tlsPort ? 0 : port}`, `dir ${dir}`, `save ""`, `appendonly no`, `protected-mode yes`, ...config]
  if (tlsPort) lines.push(`tls-port ${port}`)
  await writeFile(join(dir, 'redis.conf'), lines.join('\n') + '\n', {mode: 0o600})
  let server
  const begin = async () => {
    server = daemon('redis-server', [join(dir, 'redis.conf')])
    await waitFor(() => accepts(port), {timeoutMs: 10_000, what: `redis-server on port ${port} (${server.output()})`})
  }
  await begin()
  return {
    port,
    dir,
    url: `${tlsPort ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
    pid: () => server.child.pid,
    async restart() {
      await server.stop()
      await begin()
    },
    async stop() {
      await server.stop()
      await rm(dir, {recursive: true, force: true})
    },
  }
}

/** The conformance entry for Redis: one redis-server per suite file. */
export const redisBackend = {
  name: 'redis',
  async setup() {
    const server = await startRedis()
    return {url: server.url, teardown: () => server.stop()}
  },
}

const redisCliReply = async (port, ...args) => {
  const {execFile} = await import('node:child_process')
  return new Promise((resolve) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8', timeout: 5000}, (error, stdout) => resolve(error ? '' : stdout))
  })
}

/** Makes a CA and a certificate for 127.0.0.1 (IP SAN) it signed, in `dir`: ca.crt, server.crt, server.key. */
export async function makeCertificates(dir) {
  const {execFileSync} = await import('node:child_process')
  const ssl = (...args) => execFileSync('openssl', args, {cwd: dir, stdio: 'ignore'})
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=dlq test CA')
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf')
  return {ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key')}
}

/**
 * A master, one replica and three Sentinels (quorum 2) watching them as "mymaster", each on a free
 * port in a temporary directory. Sentinel notices a dead master after 1 s (down-after-milliseconds)
 * and promotes the replica. Options:
 *   auth: {user, password, sentinelPassword}: the data nodes admit only that ACL user (and
 *         replicate as it; the Sentinels monitor as it), the Sentinels ask for sentinelPassword
 *         (requirepass, which they also use with each other).
 *   tls:  {ca, cert, key} (makeCertificates): every server, Sentinels too, speaks only TLS, and
 *         replicates and monitors over TLS.
 * Returns {master, replica, sentinelPorts, url(scheme?), cli(port, ...args) (redis-cli with the
 * right credentials and TLS, sync), promoted(port): waits until the Sentinels name that port as
 * the master, stop}.
 */
export async function startSentinels({name = 'mymaster', auth, tls} = {}) {
  const tlsLines = tls ? [`tls-cert-file ${tls.cert}`, `tls-key-file ${tls.key}`, `tls-ca-cert-file ${tls.ca}`, 'tls-auth-clients no', 'tls-replication yes'] : []
  const dataAuth = auth ? ['user default off', `user ${auth.user} on >${auth.password} ~* &* +@all`, `masteruser ${auth.user}`, `masterauth ${auth.password}`] : []
  const tlsArgs = tls ? ['--tls', '--cacert', tls.ca] : []
  const dataArgs = [...tlsArgs, ...(auth ? ['--user', auth.user, '--pass', auth.password, '--no-auth-warning'] : [])]
  const sentinelArgs = [...tlsArgs, ...(auth?.sentinelPassword ? ['-a', auth.sentinelPassword, '--no-auth-warning'] : [])]
  const dataReply = (port, ...args) => redisCliReply(port, ...dataArgs, ...args)
  const sentinelReply = (port, ...args) => redisCliReply(port, ...sentinelArgs, ...args)
  const master = await startRedis({tlsPort: Boolean(tls), config: [...tlsLines, ...dataAuth]})
  const replica = await startRedis({tlsPort: Boolean(tls), config: [...tlsLines, ...dataAuth, `replicaof 127.0.0.1 ${master.port}`]})
  const stops = [() => replica.stop(), () => master.stop()]
  try {
    await waitFor(async () => /master_link_status:up/.test(await dataReply(replica.port, 'INFO', 'replication')), {timeoutMs: 15_000, what: 'the replica to sync with the master'})
    // Started after the replica is online: a Sentinel's first INFO of the master lists it.
    const sentinels = []
    for (let i = 0; i < 3; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'dlq-sentinel-'))
      const port = await freePort()
      await writeFile(join(dir, 'sentinel.conf'), [
        'bind 127.0.0.1', tls ? 'port 0' : `port ${port}`, `dir ${dir}`,
        ...(tls ? [`tls-port ${port}`, ...tlsLines] : []),
        ...(auth?.sentinelPassword ? [`requirepass ${auth.sentinelPassword}`] : []),
        `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
        ...(auth ? [`sentinel auth-user ${name} ${auth.user}`, `sentinel auth-pass ${name} ${auth.password}`] : []),
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 10000`,
        `sentinel parallel-syncs ${name} 1`,
      ].join('\n') + '\n', {mode: 0o600})
      const server = daemon('redis-server', [join(dir, 'sentinel.conf'), '--sentinel'])
      sentinels.push({port, dir, server})
      stops.unshift(async () => {
        await server.stop()
        await rm(dir, {recursive: true, force: true})
      })
    }
    for (const {port, server} of sentinels) {
      await waitFor(() => accepts(port), {timeoutMs: 10_000, what: `Sentinel on port ${port} (${server.output()})`})
    }
    // Ready for a failover: every Sentinel knows the replica and the two other Sentinels.
    for (const {port} of sentinels) {
      await waitFor(async () => (await sentinelReply(port, 'SENTINEL', 'REPLICAS', name)).includes(String(replica.port)), {timeoutMs: 20_000, what: `Sentinel ${port} to know the replica`})
      await waitFor(async () => (await sentinelReply(port, 'SENTINEL', 'SENTINELS', name)).split('\n').filter((l) => l === 'runid').length === 2, {timeoutMs: 20_000, what: `Sentinel ${port} to know the other two`})
    }
    const sentinelPorts = sentinels.map((s) => s.port)
    const {execFileSync} = await import('node:child_process')
    return {
      master,
      replica,
      name,
      sentinelPorts,
      url: (scheme = tls ? 'rediss+sentinel' : 'redis+sentinel') => `${scheme}://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${name}`,
      /** redis-cli against a data node (or, with sentinel: true, a Sentinel), sync; its stdout. */
      cli: (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...(sentinelPorts.includes(port) ? sentinelArgs : dataArgs), ...args], {encoding: 'utf8', timeout: 5000}),
      /** Waits until every Sentinel names `port` as the master. */
      async promoted(port, timeoutMs = 30_000) {
        for (const s of sentinelPorts) {
          await waitFor(async () => (await sentinelReply(s, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)).split('\n')[1] === String(port), {timeoutMs, what: `Sentinel ${s} to name port ${port} the master`})
        }
        await waitFor(async () => /role:master/.test(await dataReply(port, 'INFO', 'replication')), {timeoutMs, what: `port ${port} to be a master`})
      },
      async stop() {
        for (const stop of stops) await stop()
      },
    }
  } catch (error) {
    for (const stop of stops) await stop().catch(() => {})
    throw error
  }
}

/**
 * A Redis Cluster of `masters` nodes, each with `replicas` replicas (default none), each node on a
 * free port with a free cluster bus port, slots spread by `redis-cli --cluster create`. A master
 * is judged failed after `nodeTimeoutMs` (cluster-node-timeout), and its replica then promoted.
 * Returns {nodes, url, stop}; each node as startRedis gives it plus its cluster id, and a
 * replica's `masterId`. Ready once every node sees the cluster ok and every replica is in sync.
 */
export async function startCluster({masters = 3, replicas = 0, nodeTimeoutMs = 3000} = {}) {
  const nodes = []
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const busPort = await freePort()
      nodes.push(await startRedis({config: ['cluster-enabled yes', 'cluster-config-file nodes.conf', `cluster-node-timeout ${nodeTimeoutMs}`, `cluster-port ${busPort}`]}))
    }
    const {execFile} = await import('node:child_process')
    await new Promise((resolve, reject) => {
      execFile('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], {timeout: 30_000}, (error, stdout, stderr) => (error ? reject(new Error(`redis-cli --cluster create: ${stdout}${stderr}`)) : resolve()))
    })
    for (const node of nodes) {
      await waitFor(async () => /cluster_state:ok/.test(await redisCliReply(node.port, 'CLUSTER', 'INFO')), {timeoutMs: 20_000, what: `node ${node.port} to see the cluster ok`})
      node.id = (await redisCliReply(node.port, 'CLUSTER', 'MYID')).trim()
    }
    for (const node of nodes) {
      const mine = (await redisCliReply(node.port, 'CLUSTER', 'NODES')).split('\n').find((l) => l.includes('myself'))
      const [, , flags, masterId] = mine.split(' ')
      if (flags.includes('slave')) {
        node.masterId = masterId
        await waitFor(async () => /master_link_status:up/.test(await redisCliReply(node.port, 'INFO', 'replication')), {timeoutMs: 20_000, what: `replica ${node.port} to sync`})
      }
    }
    return {
      nodes,
      url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
      async stop() {
        for (const node of nodes) await node.stop()
      },
    }
  } catch (error) {
    for (const node of nodes) await node.stop().catch(() => {})
    throw error
  }
}
