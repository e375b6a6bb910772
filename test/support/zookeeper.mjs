// Real ZooKeeper servers for the tests: ZooKeeper 3.8 from the Debian package `zookeeper` (the jar
// in /usr/share/java), one JVM per server, on free loopback ports, with its data in a temporary
// directory that stop() removes. A small tickTime lets sessions be as short as 200 ms, so that
// session loss can be tested within a few seconds.
import {createRequire} from 'node:module'
import {readdirSync, readFileSync, readlinkSync} from 'node:fs'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {connect} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {ROOT, waitFor} from './cli.mjs'
import {daemon, freePort} from './servers.mjs'

const CLASSPATH = '/etc/zookeeper/conf:/usr/share/java/zookeeper.jar'
// A small heap and the quick JIT tier: test servers start faster and leave the CPU to the tests.
const JVM = ['-Xmx256m', '-Xss512k', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Dzookeeper.admin.enableServer=false']

/** Sends a four-letter word (srvr, ruok, …) and resolves with the reply ('' when nobody answers). */
export function fourLetters(port, word, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = connect({host: '127.0.0.1', port})
    let reply = ''
    const timer = setTimeout(() => socket.destroy(), timeoutMs)
    socket.on('connect', () => socket.end(word))
    socket.on('data', (chunk) => (reply += chunk))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(reply)
    })
  })
}

/**
 * The TCP connections process `pid` has open, as {local, remote} ports (Linux /proc: its socket
 * inodes, looked up in /proc/PID/net/tcp).
 */
export function tcpConnectionsOf(pid) {
  const inodes = new Set()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
      if (inode) inodes.add(inode)
    } catch {}
  }
  const port = (address) => parseInt(address.split(':')[1], 16)
  return readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1).map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length > 9 && inodes.has(fields[9]))
    .map((fields) => ({local: port(fields[1]), remote: port(fields[2])}))
}

/** The local ports of process `pid`'s connections to any of `serverPorts`: a dlq's side of its sessions. */
export const clientPortsOf = (pid, serverPorts) => tcpConnectionsOf(pid).filter((c) => serverPorts.includes(c.remote)).map((c) => c.local)

/**
 * Which server (index into `ports`) has process `pid`'s session: the one whose `cons` four-letter
 * word lists a connection from one of its client ports ("/127.0.0.1:PORT[1](queued=…,sid=…)").
 * undefined while it has none established (connecting, or between servers).
 */
export async function serverOfClient(pid, ports) {
  const mine = clientPortsOf(pid, ports)
  if (mine.length === 0) return undefined
  const replies = await Promise.all(ports.map((port) => fourLetters(port, 'cons')))
  const index = replies.findIndex((reply) => mine.some((local) => new RegExp(`:${local}\\[\\d+\\]\\(`).test(reply)))
  return index === -1 ? undefined : index
}

/** Serving requests: standalone, or part of a quorum (leader or follower). */
const serving = async (port) => /^Mode: (standalone|leader|follower)$/m.test(await fourLetters(port, 'srvr'))

/**
 * Starts `servers` ZooKeeper servers (1 = standalone, 3 = an ensemble) and waits until each serves.
 * Returns {url, urlFor(root, userinfo), connectString, ports, dir, pid(i), kill(i), pause(i),
 * resume(i), start(i), stop()} where i indexes the servers (0-based) and url is `zk://…/dlq` naming
 * all of them. forceSync: fsync every write, as production servers do (the bench); tests skip it.
 */
export async function startZooKeeper({servers = 1, tickTime = 100, forceSync = false} = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'dlq-zookeeper-'))
  const nodes = []
  for (let i = 0; i < servers; i++) {
    nodes.push({id: i + 1, clientPort: await freePort(), quorumPort: await freePort(), electionPort: await freePort(), dir: join(dir, `server${i + 1}`)})
  }
  for (const node of nodes) {
    await mkdir(join(node.dir, 'data'), {recursive: true})
    const lines = [
      `tickTime=${tickTime}`,
      'initLimit=100',
      'syncLimit=50',
      `dataDir=${join(node.dir, 'data')}`,
      `clientPort=${node.clientPort}`,
      'clientPortAddress=127.0.0.1',
      'admin.enableServer=false',
      '4lw.commands.whitelist=ruok,srvr,stat,cons',
      `minSessionTimeout=${2 * tickTime}`,
      'maxSessionTimeout=60000',
      `forceSync=${forceSync ? 'yes' : 'no'}`,
      'autopurge.purgeInterval=0',
    ]
    if (servers > 1) {
      await writeFile(join(node.dir, 'data', 'myid'), `${node.id}\n`)
      for (const other of nodes) lines.push(`server.${other.id}=127.0.0.1:${other.quorumPort}:${other.electionPort}`)
    }
    node.config = join(node.dir, 'zoo.cfg')
    await writeFile(node.config, lines.join('\n') + '\n')
  }
  const begin = (node) => {
    node.server = daemon('java', [...JVM, '-cp', CLASSPATH, 'org.apache.zookeeper.server.quorum.QuorumPeerMain', node.config], {cwd: node.dir})
  }
  const ready = (node, timeoutMs = 30_000) =>
    waitFor(() => serving(node.clientPort), {timeoutMs, intervalMs: 100, what: `ZooKeeper server ${node.id} on port ${node.clientPort} to serve (${node.server.output().slice(-500)})`})
  for (const node of nodes) begin(node)
  try {
    await Promise.all(nodes.map((node) => ready(node)))
  } catch (error) {
    await Promise.all(nodes.map((node) => node.server.stop('SIGKILL')))
    await rm(dir, {recursive: true, force: true})
    throw error
  }
  const connectString = nodes.map((n) => `127.0.0.1:${n.clientPort}`).join(',')
  return {
    dir,
    ports: nodes.map((n) => n.clientPort),
    connectString,
    // The host list %-encodes its colons: WHATWG URL cannot parse `zk://h:1,h:2` (see the README).
    url: servers === 1 ? `zk://${connectString}/dlq` : `zk://${connectString.replaceAll(':', '%3A')}/dlq`,
    urlFor: (root = '/dlq', userinfo = '') => `zk://${userinfo ? `${userinfo}@` : ''}${connectString.replaceAll(':', servers === 1 ? ':' : '%3A')}${root}`,
    pid: (i) => nodes[i].server.child.pid,
    /** SIGKILL one server (as a crash would). */
    async kill(i) {
      await nodes[i].server.stop('SIGKILL')
    },
    pause: (i) => process.kill(nodes[i].server.child.pid, 'SIGSTOP'),
    resume: (i) => process.kill(nodes[i].server.child.pid, 'SIGCONT'),
    /** Starts a killed server again and waits until it serves. */
    async start(i) {
      begin(nodes[i])
      await ready(nodes[i])
    },
    async stop() {
      for (const node of nodes) {
        try {
          process.kill(node.server.child.pid, 'SIGCONT')
        } catch {}
      }
      await Promise.all(nodes.map((node) => node.server.stop()))
      await rm(dir, {recursive: true, force: true})
    },
  }
}

/** node-zookeeper-client, for tests that look at the znodes themselves. */
export const zookeeperClient = createRequire(join(ROOT, 'package.json'))('node-zookeeper-client')

/** A connected raw client (promise API of the few calls tests need); close() when done. */
export async function rawClient(connectString, {auth} = {}) {
  const client = zookeeperClient.createClient(connectString, {sessionTimeout: 10_000, spinDelay: 100})
  if (auth) client.addAuthInfo('digest', Buffer.from(auth))
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ZooKeeper session to ${connectString}`)), 10_000)
    client.once('connected', () => {
      clearTimeout(timer)
      resolve()
    })
    client.connect()
  })
  const call = (method, ...args) => new Promise((resolve, reject) => client[method](...args, (error, ...results) => (error ? reject(error) : resolve(results))))
  return {
    client,
    children: async (path) => (await call('getChildren', path))[0],
    get: async (path) => (await call('getData', path))[0],
    exists: async (path) => (await call('exists', path))[0],
    remove: (path) => call('remove', path, -1),
    /** Every path below `path`, depth first. */
    async tree(path = '/') {
      const out = []
      const walk = async (at) => {
        let names = []
        try {
          names = await this.children(at)
        } catch {
          return
        }
        for (const name of names) {
          const child = at === '/' ? `/${name}` : `${at}/${name}`
          out.push(child)
          await walk(child)
        }
      }
      await walk(path)
      return out
    },
    close: () => client.close(),
  }
}

/** The conformance entry for ZooKeeper: one standalone server per suite file. */
export const zookeeperBackend = {
  name: 'zookeeper',
  async setup() {
    const server = await startZooKeeper({servers: 1})
    return {
      url: server.url,
      // Names are %-encoded into one znode each: nothing may appear outside the root.
      async escapes() {
        const zk = await rawClient(server.connectString)
        try {
          return (await zk.tree('/')).filter((p) => p !== '/dlq' && !p.startsWith('/dlq/') && p !== '/zookeeper' && !p.startsWith('/zookeeper/'))
        } finally {
          zk.close()
        }
      },
      teardown: () => server.stop(),
    }
  },
}
