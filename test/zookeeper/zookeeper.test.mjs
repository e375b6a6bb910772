// What only the ZooKeeper backend has: an ensemble that loses a server, a session that is lost
// while the command runs, digest auth, a create whose reply is lost, fair waiting, --limit waiters
// watching the nodes ahead of them, and ZooKeeper's message size limit. Against real ZooKeeper 3.8
// servers on free loopback ports.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {createServer, connect} from 'node:net'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {isAlive, oneErrorLine, run, shUntil, spawnDlq, stillFalse, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {freePort} from '../support/servers.mjs'
import {rawClient, startZooKeeper, tcpConnectionsOf} from '../support/zookeeper.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const spawnCli = (url, args, opts) => spawnDlq([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const readPid = async (path) => {
  const text = (await readFile(path, 'utf8').catch(() => '')).trim()
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}
const statusOf = async (url, key) => {
  const r = await cli(url, ['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks[0]
}
/** The ports of the TCP peers of process `pid`: which server a dlq is connected to. */
const serverPortsOf = (pid) => tcpConnectionsOf(pid).map((c) => c.remote)

// The znode of a key: names are %-encoded as in src/backends/zookeeper/paths.ts (these are plain).
const contendersOf = async (zk, key) => (await zk.children(`/dlq/locks/${key}`)).filter((n) => n.startsWith('c.'))

describe('zookeeper: a three-server ensemble', () => {
  let ensemble
  before(async () => {
    ensemble = await startZooKeeper({servers: 3})
  })
  after(() => ensemble?.stop())

  it('a lock held through the loss of its server stays held (and renewed), its waiter still gets it next; queues keep working', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('ensemble')
    const queue = uniqueName('ensemble-q')
    const url = ensemble.url
    const holder = spawnCli(url, ['lock', 'run', '--key', key, '--ttl', '3s', '--', 'sh', '-c', `echo > "$1/ready"; ${shUntil('[ -e "$1/go" ]', 20)}`, 'zk-test', dir], {timeoutMs: 40_000})
    await waitFor(() => existsSync(join(dir, 'ready')), {what: 'the holder to start', timeoutMs: 10_000})
    assert.equal((await cli(url, ['queue', 'push', '--queue', queue, 'a', 'b', 'c'])).code, 0)

    const waiter = spawnCli(url, ['lock', 'run', '--key', key, '--wait', '30s', '--', 'sh', '-c', 'echo > "$1/waiter"', 'zk-test', dir], {timeoutMs: 40_000})
    await waitFor(async () => (await statusOf(url, key)).waiters === 1, {what: 'the waiter to queue up', timeoutMs: 10_000})

    // Kill the very server the holder is connected to.
    const victim = ensemble.ports.findIndex((port) => serverPortsOf(holder.pid).includes(port))
    assert.notEqual(victim, -1, `the holder is connected to none of ${ensemble.ports}`)
    await ensemble.kill(victim)
    const killedAt = Date.now()

    const busy = await cli(url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
    assert.equal(busy.code, 75, `the lock must still be held after its server died: ${busy.stderr}`)
    const popped = await cli(url, ['queue', 'pop', '--queue', queue, '--count', '10'])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'a\nb\nc\n')
    const popper = spawnCli(url, ['queue', 'pop', '--queue', queue, '--wait', '10s'])
    await stillFalse(() => popper.exited, {forMs: 300, what: 'pop --wait returning from an empty queue'})
    const pushed = await cli(url, ['queue', 'push', '--queue', queue, 'after the crash'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const woken = await popper.result
    assert.equal(woken.code, 0, woken.stderr)
    assert.equal(woken.stdout, 'after the crash\n')

    // Renewals go on through a surviving server: the lease is extended past the kill + its TTL.
    await waitFor(async () => Date.parse((await statusOf(url, key)).holders[0].expiresAt) > killedAt + 3000, {what: 'a renewal after the kill', timeoutMs: 10_000})
    assert.equal(existsSync(join(dir, 'waiter')), false, 'the waiter got in while the holder held')
    await writeFile(join(dir, 'go'), '')
    const r = await holder.result
    assert.equal(r.code, 0, `the holder must finish normally, not lose its lock: ${r.stderr}`)
    const w = await waiter.result
    assert.equal(w.code, 0, `the waiter gets the lock once the holder is done: ${w.stderr}`)
    assert.ok(existsSync(join(dir, 'waiter')))
    const free = await cli(url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
    assert.equal(free.code, 0, free.stderr)
  })
})

describe('zookeeper: losing the session', () => {
  let server
  before(async () => {
    server = await startZooKeeper()
  })
  after(() => server?.stop())

  it('a holder whose only server is paused (SIGSTOP) has its command stopped within the session timeout: exit 70', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('paused')
    // --ttl 2s: the session timeout is 2s too; dlq gives up before the ensemble could expire it.
    const holder = spawnCli(server.url, ['lock', 'run', '--key', key, '--ttl', '2s', '--kill-grace', '500ms', '--', 'sh', '-c', 'echo $$ > "$1/pid"; exec sleep 30', 'zk-test', dir], {timeoutMs: 20_000})
    const pid = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start'})
    server.pause(0)
    const pausedAt = Date.now()
    try {
      await waitFor(() => !isAlive(pid), {what: 'the command to be stopped', timeoutMs: 5000, intervalMs: 10})
      const took = Date.now() - pausedAt
      // dlq gives up 4/5 into the session timeout after the last answer; the rest is scheduling slack.
      assert.ok(took < 2000 + 500, `the command was stopped ${took}ms after the pause; the session timeout is 2s`)
      const r = await holder.result
      assert.equal(r.code, 70, r.stderr)
      assert.match(r.stderr, /^dlq: lock .* lost: .*ZooKeeper/m)
    } finally {
      server.resume(0)
    }
    // The ensemble expires the silent session, and the key is free again.
    const again = await cli(server.url, ['lock', 'run', '--key', key, '--wait', '5s', '--', 'true'])
    assert.equal(again.code, 0, again.stderr)
  })
})

describe('zookeeper: a standalone server', {concurrency: 3}, () => {
  let server
  let zk
  before(async () => {
    server = await startZooKeeper()
    zk = await rawClient(server.connectString)
  })
  after(async () => {
    zk?.close()
    await server?.stop()
  })

  it('digest auth: the password comes from the URL, DLQ_PASSWORD or ?passwordFile=; others are refused with 69; no password is printed', async (t) => {
    const root = `/${uniqueName('secure')}`
    const key = uniqueName('auth')
    const as = (userinfo) => server.urlFor(root, userinfo)
    const ok = await cli(as('alice:s3cret-pw'), ['lock', 'run', '--verbose', '--key', key, '--', 'echo', 'in'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout, 'in\n')
    assert.doesNotMatch(ok.stderr, /s3cret-pw/)
    assert.match(ok.stderr, /alice:\*\*\*@/)

    const env = await cli(as('alice'), ['queue', 'push', '--queue', 'q', 'x'], {env: {DLQ_PASSWORD: 's3cret-pw'}})
    assert.equal(env.code, 0, env.stderr)
    const dir = await tempDir(t)
    await writeFile(join(dir, 'pw'), 's3cret-pw\n', {mode: 0o600})
    const file = await cli(`${as('alice')}?passwordFile=${join(dir, 'pw')}`, ['queue', 'pop', '--queue', 'q'])
    assert.equal(file.code, 0, file.stderr)
    assert.equal(file.stdout, 'x\n')

    for (const [who, url] of [['anonymous', as('')], ['a wrong password', as('alice:wrong-pw-123')]]) {
      const refused = await cli(url, ['lock', 'status', '--verbose'])
      assert.equal(refused.code, 69, `${who}: ${refused.stderr}`)
      assert.match(refused.stderr, /refused access/)
      assert.doesNotMatch(refused.stdout + refused.stderr, /wrong-pw-123/)
      const plain = await cli(url, ['queue', 'push', '--queue', 'q', 'y'])
      assert.equal(plain.code, 69, `${who}: ${plain.stderr}`)
      oneErrorLine(plain, assert)
    }
  })

  it('an unreachable server is exit 69 with one line, within the connect timeout', async () => {
    const port = await freePort()
    const r = await cli(`zk://127.0.0.1:${port}/dlq?connectTimeout=1s`, ['lock', 'run', '--key', 'k', '--', 'true'])
    assert.equal(r.code, 69)
    oneErrorLine(r, assert)
    assert.match(r.stderr, /cannot connect/)
    assert.ok(r.ms < 4000, `took ${r.ms}ms with ?connectTimeout=1s`)
  })

  it('a create whose reply is lost is found again by its owner id: no second node, no self-deadlock', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('lostreply')
    const proxy = await replyDroppingProxy(server.ports[0], (frame) => frame.includes(`/locks/${key}/c.`))
    t.after(() => proxy.close())
    const holder = spawnCli(`zk://127.0.0.1:${proxy.port}/dlq`, ['lock', 'run', '--key', key, '--wait', '5s', '--', 'sh', '-c', `echo > "$1/ready"; ${shUntil('[ -e "$1/go" ]', 10)}`, 'zk-test', dir])
    await waitFor(() => existsSync(join(dir, 'ready')) || holder.exited, {what: 'the holder to start', timeoutMs: 10_000})
    assert.equal(proxy.dropped(), 1, 'the proxy dropped the reply to the create')
    assert.equal((await contendersOf(zk, key)).length, 1, 'exactly one contender node')
    await writeFile(join(dir, 'go'), '')
    const r = await holder.result
    assert.equal(r.code, 0, r.stderr)
  })

  it('waiters acquire in the order they arrived (the queue of sequential nodes is fair)', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('fair')
    const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '30s'])
    assert.equal(held.code, 0, held.stderr)
    const waiters = []
    for (let i = 1; i <= 4; i++) {
      waiters.push(spawnCli(server.url, ['lock', 'run', '--key', key, '--wait', '20s', '--', 'sh', '-c', `echo ${i} >> "$1/order"`, 'zk-test', dir]))
      await waitFor(async () => (await statusOf(server.url, key)).waiters === i, {what: `waiter ${i} to queue up`, timeoutMs: 10_000})
    }
    // lock status lists the waiters in the order they will get the lock.
    const queue = (await statusOf(server.url, key)).queue
    assert.deepEqual(queue.map((w) => w.pid), waiters.map((w) => w.pid))
    const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', held.stdout.trim()])
    assert.equal(released.code, 0, released.stderr)
    const results = await Promise.all(waiters.map((w) => w.result))
    assert.deepEqual(results.map((r) => r.code), [0, 0, 0, 0], results.map((r) => r.stderr).join(''))
    assert.equal(await readFile(join(dir, 'order'), 'utf8'), '1\n2\n3\n4\n')
  })

  it('--limit 2: a waiter takes the slot of any holder ahead that leaves, not only the one it happens to watch', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('window')
    // Each holder writes its name when it gets in, and stays until its own go-file exists.
    const holder = (name) => spawnCli(server.url, ['lock', 'run', '--key', key, '--limit', '2', '--wait', '20s', '--', 'sh', '-c',
      `echo "$2" >> "$1/in"; ${shUntil('[ -e "$1/go-$2" ]', 20)}`, 'zk-test', dir, name])
    const inside = async () => (await readFile(join(dir, 'in'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
    const queued = async (n) => (await zk.children(`/dlq/locks/${key}`).catch(() => [])).length >= n
    const all = []
    for (const name of ['a', 'b', 'c', 'd']) {
      all.push(holder(name))
      await waitFor(() => queued(all.length), {what: `${name} to queue up`, timeoutMs: 10_000})
    }
    await waitFor(async () => (await inside()).length === 2, {what: 'a and b inside'})
    assert.deepEqual(await inside(), ['a', 'b'])
    await writeFile(join(dir, 'go-a'), '')
    await waitFor(async () => (await inside()).length === 3, {what: 'c to take the slot of a'})
    // Now b and c hold and d waits behind them. When c (not b) leaves, d must get in at once.
    await writeFile(join(dir, 'go-c'), '')
    const leftAt = Date.now()
    await waitFor(async () => (await inside()).length === 4, {what: 'd to take the slot of c', timeoutMs: 5000})
    assert.ok(Date.now() - leftAt < 1500, `d got in ${Date.now() - leftAt}ms after c left (a missed wake-up waits for the 3s fallback poll)`)
    assert.deepEqual(await inside(), ['a', 'b', 'c', 'd'])
    for (const name of ['b', 'd']) await writeFile(join(dir, `go-${name}`), '')
    assert.deepEqual((await Promise.all(all.map((h) => h.result))).map((r) => r.code), [0, 0, 0, 0])
  })

  it("messages are limited below ZooKeeper's jute.maxbuffer: 1 MiB is refused with 65, 1 MB round-trips", async () => {
    const queue = uniqueName('big')
    const tooBig = await cli(server.url, ['queue', 'push', '--queue', queue, '--whole'], {input: Buffer.alloc(1024 * 1024, 'x')})
    assert.equal(tooBig.code, 65, tooBig.stderr)
    oneErrorLine(tooBig, assert)
    const body = Buffer.alloc(1_000_000, 'y')
    const pushed = await cli(server.url, ['queue', 'push', '--queue', queue, '--whole'], {input: body})
    assert.equal(pushed.code, 0, pushed.stderr)
    const popped = await cli(server.url, ['queue', 'pop', '--queue', queue])
    assert.equal(popped.code, 0, popped.stderr)
    assert.deepEqual(popped.stdoutBuffer, Buffer.concat([body, Buffer.from('\n')]))
  })
})

/**
 * A TCP proxy to a ZooKeeper server that lets create requests matching `match` (the frame, as a
 * Buffer) reach the server, and drops the reply of the first one that succeeds, cutting the
 * connection: the create happened, its reply was lost. Frames are 4-byte length-prefixed; after
 * the connect request/response, requests start with xid and type (1 = create), replies with xid,
 * zxid and err.
 */
async function replyDroppingProxy(targetPort, match) {
  const framer = () => {
    let pending = Buffer.alloc(0)
    return (chunk) => {
      pending = Buffer.concat([pending, chunk])
      const frames = []
      while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
        const length = 4 + pending.readInt32BE(0)
        frames.push(pending.subarray(0, length))
        pending = pending.subarray(length)
      }
      return frames
    }
  }
  let dropped = 0
  let armed = true
  const sockets = new Set()
  const server = createServer((down) => {
    const up = connect(targetPort, '127.0.0.1')
    sockets.add(down).add(up)
    const cut = () => {
      down.destroy()
      up.destroy()
    }
    const requests = framer()
    const replies = framer()
    const connected = [false, false]
    let dropXid
    down.on('data', (chunk) => {
      for (const frame of requests(chunk)) {
        if (!connected[0]) connected[0] = true
        else if (armed && frame.length >= 12 && frame.readInt32BE(8) === 1 && match(frame)) dropXid = frame.readInt32BE(4)
        up.write(frame)
      }
    })
    up.on('data', (chunk) => {
      for (const frame of replies(chunk)) {
        if (!connected[1]) connected[1] = true
        else if (dropXid !== undefined && frame.readInt32BE(4) === dropXid && frame.readInt32BE(16) === 0) {
          armed = false
          dropped++
          return cut()
        }
        down.write(frame)
      }
    })
    for (const socket of [down, up]) {
      socket.on('error', cut)
      socket.on('close', cut)
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    dropped: () => dropped,
    close: () => {
      for (const socket of sockets) socket.destroy()
      server.close()
    },
  }
}
