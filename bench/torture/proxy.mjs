// A TCP proxy between dlq and its server, for the network faults of the torture: every dlq the
// torture starts talks to a free port of 127.0.0.1 where this proxy forwards bytes to the server,
// so that the network between them can fail while both ends stay up.
//
//   pass       forward both ways as they come
//   stall(pids?)  a partition: nothing is forwarded either way (data, FIN, RST are all held) and
//              the sockets stay open, so each side sees a peer that has gone silent, as when a link
//              or a firewall drops packets; new connections are accepted and held too. With pids,
//              only the connections of those processes (found by their client ports in /proc) are
//              cut off, the others go on: one dlq partitioned from a server the rest still reach.
//              pass() then delivers what was held, in order, as TCP would once the link is back
//   cut()      destroys every current connection with a RST on both sides (a NAT or firewall that
//              forgot its state, a load balancer restarted)
//   drop(on)   while on, a new connection is accepted and reset at once (refused), so clients
//              retry against a server that seems down
//   slow(ms)   each chunk is delivered `ms` later than it arrived, each way (a slow link or an
//              overloaded server), order kept
//
// One queue per direction holds what is not delivered yet; a direction's end (FIN) and its
// close (RST or error) are queued behind its data, so a stalled or slow link cannot reorder them.
//
// The proxy runs in a process of its own (behindProxy): its relays must not wait for the torture's
// own event loop, which stalls for hundreds of milliseconds at a time (processes spawned, /proc
// read, 337 ms at worst on a quiet machine, more in CI). Not a worker thread: terminating one
// whose sockets had been reset mid-connect once spun in node's handle cleanup at 100% CPU and
// never returned, which hung the torture; a process is stopped by SIGKILL whatever it is doing.
import {fork} from 'node:child_process'
import {readdirSync, readFileSync, readlinkSync} from 'node:fs'
import {connect, createServer} from 'node:net'
import {fileURLToPath} from 'node:url'

/** The local TCP ports of the sockets the processes `pids` hold: /proc/PID/fd → inode → /proc/net/tcp. */
function portsOf(pids) {
  const inodes = new Set()
  for (const pid of pids) {
    let fds = []
    try {
      fds = readdirSync(`/proc/${pid}/fd`)
    } catch {}
    for (const fd of fds) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
        if (inode) inodes.add(inode)
      } catch {}
    }
  }
  const ports = new Set()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines = []
    try {
      lines = readFileSync(table, 'utf8').split('\n').slice(1)
    } catch {}
    for (const line of lines) {
      const fields = line.trim().split(/\s+/) // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      if (fields.length > 9 && inodes.has(fields[9])) ports.add(Number.parseInt(fields[1].split(':')[1], 16))
    }
  }
  return ports
}

/** Starts a proxy in front of host:port. Returns {port, stall(pids?), pass(), cut(), drop(on), slow(ms), connections(), close()}. */
export async function startProxy({host = '127.0.0.1', port}) {
  const connections = new Set()
  const state = {stalled: false, isolated: undefined, refusing: false, delayMs: 0}

  /** One direction of one connection: bytes from `from` are delivered to `to` through a queue. */
  function direction(connection, from, to) {
    const queue = [] // {at, chunk} | {at, end: true} | {at, close: true}
    let timer
    const pump = () => {
      clearTimeout(timer)
      timer = undefined
      if (state.stalled || connection.stalled) return
      const now = Date.now()
      while (queue.length > 0 && queue[0].at <= now) {
        const item = queue.shift()
        if (to.destroyed) continue
        if (item.chunk) to.write(item.chunk)
        else if (item.end) to.end()
        else to.resetAndDestroy()
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0].at - now)
    }
    const add = (item) => {
      queue.push({at: Date.now() + state.delayMs, ...item})
      if (!timer) pump()
    }
    from.on('data', (chunk) => add({chunk}))
    from.on('end', () => add({end: true}))
    from.on('close', (hadError) => hadError && add({close: true}))
    from.on('error', () => {})
    return {pump, clear: () => (clearTimeout(timer), (queue.length = 0))}
  }

  // noDelay: Nagle's algorithm would hold small writes back (up to a delayed ACK, 40 ms) that a
  // direct connection sends at once.
  const server = createServer({allowHalfOpen: true, noDelay: true}, (client) => {
    if (state.refusing) {
      client.on('error', () => {})
      client.resetAndDestroy()
      return
    }
    const upstream = connect({host, port, allowHalfOpen: true, noDelay: true})
    const connection = {client, upstream, stalled: state.isolated !== undefined && portsOf(state.isolated).has(client.remotePort)}
    connection.up = direction(connection, client, upstream)
    connection.down = direction(connection, upstream, client)
    connections.add(connection)
    let closed = 0
    const gone = () => ++closed === 2 && connections.delete(connection)
    client.on('close', gone)
    upstream.on('close', gone)
  })
  server.on('error', () => {})
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })

  const pumpAll = () => {
    for (const c of connections) {
      c.up.pump()
      c.down.pump()
    }
  }
  return {
    port: server.address().port,
    stall(pids) {
      if (pids === undefined) state.stalled = true
      else {
        state.isolated = pids
        const ports = portsOf(pids)
        for (const c of connections) if (ports.has(c.client.remotePort)) c.stalled = true
      }
    },
    pass() {
      Object.assign(state, {stalled: false, isolated: undefined, refusing: false, delayMs: 0})
      for (const c of connections) c.stalled = false
      pumpAll()
    },
    cut() {
      for (const c of connections) {
        c.up.clear()
        c.down.clear()
        for (const socket of [c.client, c.upstream]) if (!socket.destroyed) socket.resetAndDestroy()
      }
      connections.clear()
    },
    drop(on = true) {
      state.refusing = on
    },
    slow(ms) {
      state.delayMs = ms
    },
    connections: () => connections.size,
    /** Stops listening and resets every connection left. */
    async close() {
      this.cut()
      server.close()
    },
  }
}

/**
 * Puts a proxy in front of a backend the torture started (one server: Redis, a standalone
 * ZooKeeper, PostgreSQL) and returns the backend with its URL pointing at the proxy and
 * `network` = the proxy. Any other backend (file, borrowed, several hosts) is returned as it is.
 */
export async function behindProxy(backend) {
  if (backend.borrowed || !['redis', 'zookeeper', 'postgres'].includes(backend.name)) return backend
  const url = new URL(backend.url)
  if (url.host.includes(',') || url.host.includes('%2C')) return backend
  const proxy = await proxyProcess({host: url.hostname, port: Number(url.port)})
  url.port = String(proxy.port)
  return {
    ...backend,
    url: url.toString(),
    network: proxy,
    description: `${backend.description}, through a TCP proxy on 127.0.0.1:${proxy.port}`,
    stop: async () => {
      await proxy.close()
      await backend.stop()
    },
  }
}

/**
 * startProxy in a child process. The controls are sent to it in order and take effect there a
 * moment later; each returns a promise the caller may await (close() does). Should the torture
 * die, the child sees its IPC channel close and exits.
 */
async function proxyProcess(target) {
  const child = fork(fileURLToPath(import.meta.url), [String(target.host), String(target.port)], {stdio: ['ignore', 'inherit', 'inherit', 'ipc']})
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const port = await new Promise((resolve, reject) => {
    child.once('message', (message) => resolve(message.port))
    child.once('error', reject)
    exited.then(() => reject(new Error('the TCP proxy exited before it listened')))
  })
  let next = 0
  const waiting = new Map()
  child.on('message', ({id}) => {
    waiting.get(id)?.()
    waiting.delete(id)
  })
  exited.then(() => {
    for (const resolve of waiting.values()) resolve()
    waiting.clear()
  })
  const send = (op, ...args) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const id = next++
    waiting.set(id, resolve)
    child.send({id, op, args})
  })
  return {
    port,
    stall: (pids) => send('stall', pids),
    pass: () => send('pass'),
    cut: () => send('cut'),
    drop: (on = true) => send('drop', on),
    slow: (ms) => send('slow', ms),
    async close() {
      // Every connection reset, then the process killed: nothing is left to wind down.
      await Promise.race([send('close'), new Promise((resolve) => setTimeout(resolve, 2000))])
      child.kill('SIGKILL')
      await exited
    },
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const proxy = await startProxy({host: process.argv[2], port: Number(process.argv[3])})
  process.on('message', async ({id, op, args}) => {
    await proxy[op](...args)
    process.send({id})
  })
  process.on('disconnect', () => process.exit(0))
  process.send({port: proxy.port})
}
