// The servers a torture run owns: started like the tests start them (test/support fixtures: free
// ports on 127.0.0.1, temporary directories), with the three server faults on top:
//   pause()    SIGSTOP of the server and every process under it (PostgreSQL's backends too)
//   resume()   SIGCONT of the same processes
//   restart()  Redis: SIGTERM, then start on the same directory and port (appendonly + fsync
//              always, so what Redis acknowledged survives); ZooKeeper: SIGKILL and start (its
//              transaction log is written before it answers); PostgreSQL: immediate shutdown
//              (SIGQUIT, crash recovery on start). Each resolves once the server serves again.
// A server given by URL is not ours: it gets no faults, and only a loopback URL is accepted.
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {startPostgres} from '../../test/support/postgres.mjs'
import {startRedis} from '../../test/support/servers.mjs'
import {startZooKeeper} from '../../test/support/zookeeper.mjs'
import {processTree, signalPid} from './procs.mjs'

export const BACKENDS = ['file', 'redis', 'zookeeper', 'postgres']

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
