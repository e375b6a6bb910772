// WAIT for replicas (?replicas=N, ?replicaTimeout=): against a master and a replica that the tests
// start; the replica is paused (SIGSTOP) to stand for one that does not confirm.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {after, before, describe, it} from 'node:test'

import {oneErrorLine, run, uniqueName, waitFor} from '../support/cli.mjs'
import {startRedis} from '../support/servers.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const redisCli = (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8'})

describe('redis: WAIT for replicas', () => {
  let master
  let replica
  let lone
  before(async () => {
    master = await startRedis()
    replica = await startRedis({config: [`replicaof 127.0.0.1 ${master.port}`]})
    lone = await startRedis()
    await waitFor(() => /connected_slaves:1/.test(redisCli(master.port, 'INFO', 'replication')) && /master_link_status:up/.test(redisCli(replica.port, 'INFO', 'replication')), {what: 'the replica to sync'})
  })
  after(async () => {
    try {
      process.kill(replica.pid(), 'SIGCONT')
    } catch {}
    await replica?.stop()
    await master?.stop()
    await lone?.stop()
  })

  it('by default a push and a lock are confirmed by the replica before dlq exits 0', async () => {
    const queue = uniqueName('rq')
    const pushed = await cli(master.url, ['queue', 'push', '--queue', queue, 'a', 'b', 'c'])
    assert.equal(pushed.code, 0, pushed.stderr)
    // WAIT returned: the replica has applied the push already, no waiting needed here.
    assert.equal(redisCli(replica.port, 'XLEN', `{dlq:q:${queue}}:stream`).trim(), '3')
    const key = uniqueName('rl')
    const held = await cli(master.url, ['lock', 'acquire', '--key', key, '--ttl', '30s'])
    assert.equal(held.code, 0, held.stderr)
    assert.equal(redisCli(replica.port, 'ZCARD', `{dlq:l:${key}}:holders`).trim(), '1')
  })

  it('a master without replicas is not waited on by default; ?replicas=1 there is exit 69', async () => {
    const queue = uniqueName('lone')
    const pushed = await cli(lone.url, ['queue', 'push', '--queue', queue, 'x'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const strict = await cli(`${lone.url}?replicas=1&replicaTimeout=200ms`, ['queue', 'push', '--queue', queue, 'y'])
    assert.equal(strict.code, 69, strict.stderr)
    assert.match(oneErrorLine(strict, assert), /not confirmed by 1 replica.*0 had it within 200ms/)
  })

  it('a replica that does not confirm: push and lock run are exit 69 naming WAIT, and the lock is left free; ?replicas=0 does not wait', async () => {
    process.kill(replica.pid(), 'SIGSTOP')
    try {
      const queue = uniqueName('stalled')
      const pushed = await cli(`${master.url}?replicaTimeout=300ms`, ['queue', 'push', '--queue', queue, 'x'])
      assert.equal(pushed.code, 69, pushed.stderr)
      assert.match(oneErrorLine(pushed, assert), /push of 1 message .*not confirmed by 1 replica.*WAIT/)
      const key = uniqueName('stalled')
      const locked = await cli(`${master.url}?replicaTimeout=300ms`, ['lock', 'run', '--key', key, '--', 'echo', 'ran'])
      assert.equal(locked.code, 69, locked.stderr)
      assert.equal(locked.stdout, '')
      assert.match(oneErrorLine(locked, assert), /lock .*not confirmed by 1 replica/)
      assert.equal(redisCli(master.port, 'ZCARD', `{dlq:l:${key}}:holders`).trim(), '0', 'the unconfirmed lease was released')
      const unsafe = await cli(`${master.url}?replicas=0`, ['lock', 'run', '--key', key, '--', 'echo', 'ran'])
      assert.equal(unsafe.code, 0, unsafe.stderr)
      assert.equal(unsafe.stdout, 'ran\n')
    } finally {
      process.kill(replica.pid(), 'SIGCONT')
    }
  })

  it('?replicas= must be a whole number and ?replicaTimeout= a duration (64)', async () => {
    for (const query of ['replicas=one', 'replicas=-1', 'replicaTimeout=soon']) {
      const r = await cli(`${master.url}?${query}`, ['lock', 'status'])
      assert.equal(r.code, 64, `${query}: ${r.stderr}`)
      oneErrorLine(r, assert)
    }
  })
})
