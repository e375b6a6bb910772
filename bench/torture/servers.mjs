// The servers a torture run owns: started like the tests start them (test/support fixtures: free
// ports on 127.0.0.1, temporary directories), with the three server faults on top:
//   pause()    SIGSTOP of the server and every process under it (PostgreSQL's backends too)
//   resume()   SIGCONT of the same processes
//   restart()  Redis: SIGTERM, then start on the same directory and port (appendonly + fsync
//              always, so what Redis acknowledged survives); ZooKeeper: SIGKILL and start (its
//              transaction log is written before it answers); PostgreSQL: immediate shutdown
//              (SIGQUIT, crash recovery on start). Each resolves once the server serves again.
//   killMaster()  Sentinel only (a master, a replica, three Sentinels): SIGKILL of the master
//              the Sentinels name, wait for them to promote the replica, start the killed server
//              again as the new master's replica, and resolve once it is in sync and every
//              Sentinel counts it as a replica that could be promoted: ready for the next kill.
// A server given by URL is not ours: it gets no faults, and only a loopback URL is accepted.
import {execFileSync} from 'node:child_process'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {createConnection} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {startPostgres} from '../../test/support/postgres.mjs'
import {startRedis, startSentinels} from '../../test/support/servers.mjs'
import {startZooKeeper} from '../../test/support/zookeeper.mjs'
import {processTree, signalPid, waitUntil} from './procs.mjs'

export const BACKENDS = ['file', 'redis', 'zookeeper', 'postgres', 'sentinel']

/** What a server-less or borrowed backend offers: no faults. */
const noFaults = {pause: undefined, resume: undefined, restart: undefined}

/** Pauses a process tree, the root first so it cannot fork new workers meanwhile. */
function pauser(rootPid) {
  let stopped = []
  return {
    pause() {
      stopped = processTree(rootPid())
      for (const pid of stopped) signalPid(pid, 'SIGSTOP')
    },
    resume() {
      for (const pid of stopped.reverse()) signalPid(pid, 'SIGCONT')
      stopped = []
    },
  }
}

/** Starts a backend by name: {name, url, description, pause?, resume?, restart?, stop()}. */
export async function startBackend(name) {
  if (name === 'file') {
    const dir = await mkdtemp(join(tmpdir(), 'dlq-torture-file-'))
    return {name, url: `file://${dir}`, description: `file: in a temporary directory`, ...noFaults, stop: () => rm(dir, {recursive: true, force: true})}
  }
  if (name === 'redis') {
    // Without persistence a restart forgets every lease and the fencing counter: see the README.
    const server = await startRedis({config: ['appendonly yes', 'appendfsync always']})
    return {
      name,
      url: server.url,
      description: `redis-server on 127.0.0.1:${server.port}, appendonly yes, appendfsync always`,
      ...pauser(() => server.pid()),
      restart: () => server.restart(),
      stop: () => server.stop(),
    }
  }
  if (name === 'zookeeper') {
    const server = await startZooKeeper({servers: 1})
    return {
      name,
      url: server.url,
      description: `ZooKeeper 3.8 standalone on ${server.connectString}`,
      ...pauser(() => server.pid(0)),
      async restart() {
        await server.kill(0)
        await server.start(0)
      },
      stop: () => server.stop(),
    }
  }
  if (name === 'postgres') {
    const server = await startPostgres()
    return {
      name,
      url: server.url,
      description: `PostgreSQL on 127.0.0.1:${server.port}`,
      ...pauser(() => server.pid()),
      restart: () => server.restart(),
      stop: () => server.stop(),
    }
  }
  if (name === 'sentinel') return startSentinelBackend()
  throw new Error(`unknown backend ${name}; known: ${BACKENDS.join(', ')}`)
}

const loopback = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])

/** A backend given by URL: used as it is, never faulted. Only loopback servers (or a local directory). */
export function borrowBackend(url) {
  let parsed
  try {
    parsed = new URL(url)
  } catch {
    throw new Error(`--backend ${url}: not a URL, and not one of ${BACKENDS.join(', ')}`)
  }
  const names = {'file:': 'file', 'redis:': 'redis', 'rediss:': 'redis', 'zk:': 'zookeeper', 'postgres:': 'postgres', 'postgresql:': 'postgres'}
  const name = names[parsed.protocol]
  if (!name) throw new Error(`--backend ${url}: unknown scheme ${parsed.protocol}`)
  if (name !== 'file') {
    const hosts = decodeURIComponent(parsed.host).split(',').map((h) => h.replace(/:\d+$/, ''))
    if (!hosts.every((h) => loopback.has(h))) throw new Error(`--backend ${parsed.protocol}//…: the torture only talks to servers on 127.0.0.1 (it was given ${hosts.join(', ')})`)
  }
  const where = name === 'file' ? `file://${decodeURIComponent(parsed.pathname)}` : `${parsed.protocol}//${parsed.host}` // never the password
  return {name, url, description: `${where}, given by URL: server faults skipped (not ours to pause)`, borrowed: true, ...noFaults, stop: async () => {}}
}

/** A master and a replica behind three Sentinels (test/support/servers.mjs), with killMaster(). */
async function startSentinelBackend() {
  const group = await startSentinels()
  const nodes = [group.master, group.replica]
  const cli = (port, ...args) => {
    try {
      return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8', timeout: 5000})
    } catch {
      return ''
    }
  }
  const named = (sentinel) => Number(cli(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', group.name).split('\n')[1])
  const agreed = () => {
    const ports = new Set(group.sentinelPorts.map(named))
    return ports.size === 1 ? nodes.find((n) => ports.has(n.port)) : undefined
  }
  /** Every Sentinel lists `node` as a replica it could promote (no s_down, o_down or disconnected flag). */
  const promotable = (node) => group.sentinelPorts.every((sentinel) => {
    const lines = cli(sentinel, 'SENTINEL', 'REPLICAS', group.name).split('\n')
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] !== 'port' || lines[i + 1] !== String(node.port)) continue
      const flags = lines[lines.indexOf('flags', i) + 1] ?? ''
      return flags === 'slave'
    }
    return false
  })
  // Every failover the Sentinels make, as they announce it (+switch-master on one of them): the
  // kills explain theirs; any other is Sentinel's own, on a machine that stalled a server past
  // down-after (1 s). Redis replicates asynchronously, so such a failover of a live master can
  // lose what it acknowledged: the torture reports it (torture.mjs) rather than blame dlq.
  const switches = []
  const kills = []
  const announcements = createConnection({host: '127.0.0.1', port: group.sentinelPorts[0]}, () => announcements.write('SUBSCRIBE +switch-master\r\n'))
  let pending = ''
  announcements.on('data', (chunk) => {
    const lines = (pending + chunk).split('\r\n')
    pending = lines.pop()
    for (const line of lines) {
      const m = /^\S+ 127\.0\.0\.1 (\d+) 127\.0\.0\.1 (\d+)$/.exec(line)
      if (m) switches.push({at: Date.now(), from: Number(m[1]), to: Number(m[2])})
    }
  })
  announcements.on('error', () => {})
  return {
    name: 'sentinel',
    url: group.url(),
    /** The failovers no kill explains (each kill explains the first switch to the node it promoted). */
    unplannedFailovers() {
      const explained = new Set()
      for (const kill of kills) {
        const at = switches.findIndex((sw, i) => !explained.has(i) && sw.at >= kill.at && sw.to === kill.promoted)
        if (at >= 0) explained.add(at)
      }
      return switches.filter((_sw, i) => !explained.has(i))
    },
    description: `a master and a replica (redis-server on 127.0.0.1:${group.master.port} and :${group.replica.port}) behind three Sentinels (down-after 1 s), no persistence; dlq WAITs for the replica`,
    ...noFaults,
    /**
     * Kills the master once the Sentinels agree on it and could promote the other node (waited
     * for: the last victim may still be syncing); undefined when that does not come within 30 s,
     * and the fault is counted as missed. A slow resync of a restarted node is Redis's and the
     * machine's, not a fault of dlq: it is reported, and the next kill waits for it.
     */
    async killMaster() {
      const ready = await waitUntil(() => {
        const master = agreed()
        const replica = nodes.find((n) => n !== master)
        return master && promotable(replica) ? {master, replica} : undefined
      }, {timeoutMs: 30_000, intervalMs: 100})
      if (!ready) return undefined
      const {master, replica} = ready
      const killedAt = Date.now()
      kills.push({at: killedAt, promoted: replica.port})
      signalPid(master.pid(), 'SIGKILL')
      if (!(await waitUntil(() => agreed() === replica && /^master/.test(cli(replica.port, 'ROLE')), {timeoutMs: 30_000, intervalMs: 100}))) {
        throw new Error(`sentinel torture: port ${replica.port} was not promoted within 30 s of the kill of ${master.port}`)
      }
      const promotedAt = Date.now()
      // Back as the new master's replica (a restart as a master would serve its old data until
      // the Sentinels demote it).
      const conf = `${master.dir}/redis.conf`
      const lines = (await readFile(conf, 'utf8')).split('\n').filter((l) => !/^(replicaof|slaveof)\b/i.test(l.trim()))
      await writeFile(conf, [...lines.filter(Boolean), `replicaof 127.0.0.1 ${replica.port}`].join('\n') + '\n')
      await master.restart()
      const synced = await waitUntil(() => /master_link_status:up/.test(cli(master.port, 'INFO', 'replication')) && promotable(master), {timeoutMs: 30_000, intervalMs: 100})
      const link = /master_link_status:(\w+)/.exec(cli(master.port, 'INFO', 'replication'))?.[1] ?? 'unknown'
      return {killed: master.port, promoted: replica.port, promotedMs: promotedAt - killedAt, readyMs: synced ? Date.now() - killedAt : undefined, link}
    },
    stop: () => {
      announcements.destroy()
      return group.stop()
    },
  }
}
