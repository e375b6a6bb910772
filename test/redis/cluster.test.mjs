// Redis Cluster (redis+cluster://): three masters that the tests start and join on free loopback
// ports; locks and queues on every node, status across all of them, and a slot migrated while a
// lock on it is held. Then three masters with a replica each: a master killed (SIGKILL) under a
// waiting lock run and queued messages, its replica promoted; a master and its replica killed
// (CLUSTERDOWN).
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {oneErrorLine, run, shUntil, spawnDlq, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {startCluster} from '../support/servers.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const redisCli = (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8'}).trim()

/** The node of `cluster` that serves `key`'s slot. */
function ownerOf(cluster, key) {
  const slot = Number(redisCli(cluster.nodes[0].port, 'CLUSTER', 'KEYSLOT', key))
  for (const node of cluster.nodes) {
    const lines = redisCli(node.port, 'CLUSTER', 'NODES').split('\n')
    const mine = lines.find((l) => l.includes('myself'))
    const ranges = mine.split(' ').slice(8)
    if (ranges.some((r) => {
      const [from, to = from] = r.split('-').map(Number)
      return slot >= from && slot <= to
    })) return {node, slot}
  }
  throw new Error(`no node serves slot ${slot}`)
}

describe('redis+cluster', () => {
  let cluster
  before(async () => {
    cluster = await startCluster()
  })
  after(() => cluster?.stop())

  it('locks and queues land on every master, and lock status / queue status list them all', async () => {
    const keys = Array.from({length: 12}, () => uniqueName('ck'))
    const queues = Array.from({length: 12}, () => uniqueName('cq'))
    for (const key of keys) {
      const r = await cli(cluster.url, ['lock', 'acquire', '--key', key, '--ttl', '2m'])
      assert.equal(r.code, 0, r.stderr)
    }
    for (const queue of queues) {
      const r = await cli(cluster.url, ['queue', 'push', '--queue', queue, `m-${queue}`])
      assert.equal(r.code, 0, r.stderr)
    }
    for (const node of cluster.nodes) assert.ok(Number(redisCli(node.port, 'DBSIZE')) > 0, `node ${node.port} holds none of the keys`)
    const locks = JSON.parse((await cli(cluster.url, ['lock', 'status', '--json'])).stdout).locks.map((l) => l.key)
    for (const key of keys) assert.ok(locks.includes(key), `lock status lists ${key}`)
    const stats = JSON.parse((await cli(cluster.url, ['queue', 'status', '--json'])).stdout)
    const names = (stats.queues ?? stats).map((q) => q.queue)
    for (const queue of queues) assert.ok(names.includes(queue), `queue status lists ${queue}`)
    for (const queue of queues) {
      const r = await cli(cluster.url, ['queue', 'pop', '--queue', queue])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, `m-${queue}\n`)
    }
  })

  it('waiting works on a cluster: a pop --wait is woken by a push, a lock run --wait gets the lock once it is released', async (t) => {
    const queue = uniqueName('cw')
    const pop = spawnDlq(['queue', 'pop', '-b', cluster.url, '--queue', queue, '--wait', '30s'], {t, timeoutMs: 40_000})
    const {node} = ownerOf(cluster, `{dlq:q:${queue}}:stream`)
    await waitFor(() => /blocked_clients:1/.test(redisCli(node.port, 'INFO', 'clients')), {what: 'the pop to block on its node'})
    assert.equal((await cli(cluster.url, ['queue', 'push', '--queue', queue, 'woken'])).code, 0)
    const popped = await pop.result
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'woken\n')

    const key = uniqueName('cw')
    const acquired = await cli(cluster.url, ['lock', 'acquire', '--key', key, '--ttl', '60s'])
    assert.equal(acquired.code, 0, acquired.stderr)
    const waiter = spawnDlq(['lock', 'run', '-b', cluster.url, '--key', key, '--wait', '30s', '--', 'echo', 'got it'], {t, timeoutMs: 40_000})
    const owner = ownerOf(cluster, `{dlq:l:${key}}:waiters`).node
    await waitFor(() => redisCli(owner.port, 'ZCARD', `{dlq:l:${key}}:waiters`) === '1', {what: 'the waiter to wait'})
    assert.equal((await cli(cluster.url, ['lock', 'release', '--key', key, '--token', acquired.stdout.trim()])).code, 0)
    const r = await waiter.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'got it\n')
  })

  it('redis:// to one node, for a key another node serves: exit 69 naming the redirection, not an internal error', async () => {
    let key
    do key = uniqueName('other')
    while (ownerOf(cluster, `{dlq:q:${key}}:stream`).node === cluster.nodes[0])
    const r = await cli(`redis://127.0.0.1:${cluster.nodes[0].port}`, ['queue', 'push', '--queue', key, 'x'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /MOVED.*redis\+cluster/)
  })

  it('a slot migrated while its lock is held: renewals follow it (MOVED), the command runs to the end, the next token is larger', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('move')
    const holders = `{dlq:l:${key}}:holders`
    const holder = spawnDlq(['lock', 'run', '-b', cluster.url, '--key', key, '--ttl', '3s', '--', 'sh', '-c', `echo $DLQ_FENCING_TOKEN > "$1/token"; ${shUntil('[ -e "$1/go" ]', 40)}`, 'x', dir], {t, timeoutMs: 45_000})
    await waitFor(() => existsSync(join(dir, 'token')), {what: 'the command to start'})
    const {node: source, slot} = ownerOf(cluster, holders)
    const target = cluster.nodes.find((n) => n !== source)
    redisCli(target.port, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', source.id)
    redisCli(source.port, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', target.id)
    const moving = redisCli(source.port, 'CLUSTER', 'GETKEYSINSLOT', String(slot), '1000').split('\n').filter(Boolean)
    if (moving.length > 0) redisCli(source.port, 'MIGRATE', '127.0.0.1', String(target.port), '', '0', '5000', 'KEYS', ...moving)
    for (const node of [target, source, ...cluster.nodes.filter((n) => n !== source && n !== target)]) redisCli(node.port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', target.id)
    const movedAt = Date.now()
    // A renewal after the move reached the new owner: the lease there ends past movedAt + ttl.
    await waitFor(() => {
      const [, expiry] = redisCli(target.port, 'ZRANGE', holders, '0', '-1', 'WITHSCORES').split('\n')
      return Number(expiry) > movedAt + 3000
    }, {what: 'a renewal on the node the slot moved to', timeoutMs: 10_000})
    assert.equal(holder.exited, false, holder.stderrText())
    await writeFile(join(dir, 'go'), '')
    const r = await holder.result
    assert.equal(r.code, 0, r.stderr)
    const next = await cli(cluster.url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(next.code, 0, next.stderr)
    const token = BigInt(execFileSync('cat', [join(dir, 'token')], {encoding: 'utf8'}).trim())
    assert.ok(BigInt(next.stdout.trim()) > token)
  })

  it('?replicas=1 on masters without replicas: WAIT goes to the key\'s node and the push is exit 69', async () => {
    const r = await cli(`${cluster.url}?replicas=1&replicaTimeout=200ms`, ['queue', 'push', '--queue', uniqueName('cr'), 'x'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /not confirmed by 1 replica.*0 had it/)
  })

  it('a path or an unknown parameter in a cluster URL is a usage error (64)', async () => {
    for (const url of [`${cluster.url}/1`, `${cluster.url}?sentinel=x`]) {
      const r = await cli(url, ['lock', 'status'])
      assert.equal(r.code, 64, `${url}: ${r.stderr}`)
      oneErrorLine(r, assert)
    }
  })
})

/** The master serving `key`'s slot, among the nodes still running, and its replica. */
function masterOf(cluster, key) {
  const slot = Number(redisCli(cluster.nodes.find((n) => !n.killed).port, 'CLUSTER', 'KEYSLOT', key))
  const master = cluster.nodes.find((node) => !node.killed && redisCli(node.port, 'CLUSTER', 'NODES').split('\n').find((l) => l.includes('myself')).split(' ').slice(8).some((r) => {
    const [from, to = from] = r.split('-').map(Number)
    return slot >= from && slot <= to
  }))
  return {master, replica: cluster.nodes.find((n) => n.masterId === master?.id)}
}

/** A name whose lock (or queue) keys hash to a slot that `master` serves. */
function nameOn(cluster, master, label, tag) {
  for (;;) {
    const name = uniqueName(label)
    if (masterOf(cluster, `{dlq:${tag}:${name}}:x`).master === master) return name
  }
}

const killNode = (cluster, node) => {
  node.killed = true
  process.kill(node.pid(), 'SIGKILL')
}

describe('redis+cluster: a master dies and its replica takes over', () => {
  let cluster
  before(async () => {
    // cluster-node-timeout 1000: the replica is promoted a second or two after its master died.
    cluster = await startCluster({masters: 3, replicas: 1, nodeTimeoutMs: 1000})
  })
  after(() => cluster?.stop())

  it('a waiting lock run gets the lock on the promoted replica with a larger token, a pop --wait gets every acknowledged push', async (t) => {
    const master = cluster.nodes.find((n) => !n.masterId)
    const key = nameOn(cluster, master, 'cf', 'l')
    const queue = nameOn(cluster, master, 'cf', 'q')
    const {replica} = masterOf(cluster, `{dlq:l:${key}}:x`)
    assert.ok(replica, 'the master has a replica')
    // Exit 0 after WAIT: the replica has each of these before the push returns.
    const bodies = Array.from({length: 50}, (_v, i) => `m${i}`)
    for (let i = 0; i < bodies.length; i += 10) {
      const pushed = await cli(cluster.url, ['queue', 'push', '--queue', queue, ...bodies.slice(i, i + 10)])
      assert.equal(pushed.code, 0, pushed.stderr)
    }
    // The lease outlives the failover (a second or two) unless the holder renews: it does not.
    const held = await cli(cluster.url, ['lock', 'acquire', '--key', key, '--ttl', '6s', '--json'])
    assert.equal(held.code, 0, held.stderr)
    const before = BigInt(JSON.parse(held.stdout).fencingToken)
    const waiter = spawnDlq(['lock', 'run', '-b', cluster.url, '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'], {t, timeoutMs: 60_000})
    await waitFor(() => redisCli(master.port, 'ZCARD', `{dlq:l:${key}}:waiters`) === '1', {what: `the lock run to wait (${waiter.stderrText()}; ${redisCli(master.port, 'KEYS', '*')})`})
    killNode(cluster, master)
    // The pop starts while the slot has no master: it must wait for the promotion, not fail.
    const pop = spawnDlq(['queue', 'pop', '-b', cluster.url, '--queue', queue, '--count', '50', '--wait', '60s'], {t, timeoutMs: 60_000})
    await waitFor(() => /role:master/.test(redisCli(replica.port, 'INFO', 'replication')), {what: 'the replica to be promoted', timeoutMs: 30_000})
    const popped = await pop.result
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, bodies.map((b) => `${b}\n`).join(''), 'every acknowledged push, in order, after the failover')
    const r = await waiter.result
    assert.equal(r.code, 0, r.stderr)
    const after = BigInt(r.stdout.trim())
    assert.ok(after > before, `the token after the failover (${after}) must exceed the one before (${before})`)
    const next = await cli(cluster.url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'sh', '-c', 'echo $DLQ_FENCING_TOKEN'])
    assert.equal(next.code, 0, next.stderr)
    assert.ok(BigInt(next.stdout.trim()) > after)
  })

  it('a master and its replica both dead: the cluster is down, and dlq says CLUSTERDOWN with exit 69 and one line', async () => {
    const master = cluster.nodes.find((n) => !n.killed && !n.masterId && cluster.nodes.some((r) => r.masterId === n.id && !r.killed))
    const replica = cluster.nodes.find((n) => n.masterId === master.id)
    const alive = cluster.nodes.find((n) => !n.killed && n !== master && n !== replica && !n.masterId)
    const queue = nameOn(cluster, alive, 'down', 'q')
    killNode(cluster, replica)
    killNode(cluster, master)
    await waitFor(() => /cluster_state:fail/.test(redisCli(alive.port, 'CLUSTER', 'INFO')), {what: 'the cluster to be down', timeoutMs: 20_000})
    for (const args of [['queue', 'push', '--queue', queue, 'x'], ['lock', 'run', '--key', uniqueName('down'), '--wait', '0', '--', 'echo', 'ran']]) {
      const r = await cli(cluster.url, args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      assert.equal(r.stdout, '')
      assert.match(oneErrorLine(r, assert), /CLUSTERDOWN/)
    }
  })
})
