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
