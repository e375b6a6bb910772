// What `lock status` costs a Redis server (issue 16): every held lock is read by one script call
// per batch of locks, never a call per lock, whatever the number of keys; checked on the calls the
// server counted (INFO commandstats), not on a time. The batch's reply is one JSON text the
// server builds: the holders it lists must come back exactly (owners, modes, tokens in order,
// expiries), beside the other batches'. Against a real redis-server on a free loopback port.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {after, before, describe, it} from 'node:test'

import {run} from '../support/cli.mjs'
import {startRedis} from '../support/servers.mjs'

const {openBackend} = await import('../../dist/backends/index.js')

const scriptCalls = (port) => {
  const stats = execFileSync('redis-cli', ['-p', String(port), 'INFO', 'commandstats'], {encoding: 'utf8'})
  // A script's first EVALSHA fails with NOSCRIPT and is sent again as EVAL: count the calls that ran.
  return [...stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+),.*rejected_calls=(\d+),failed_calls=(\d+)/gm)].reduce((sum, m) => sum + Number(m[1]) - Number(m[2]) - Number(m[3]), 0)
}

describe('redis: lock status reads locks in batches', {concurrency: 1}, () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  it('450 held keys and a semaphore held twice: three script calls, every holder listed as acquired', async () => {
    const backend = await openBackend(server.url, {})
    const holder = (i) => ({host: `host-${i}`, pid: 1000 + i, user: 'user "quoted" \\ é', command: `cmd\n${i}`})
    const acquire = (key, owner, i, limit = 1, shared = false) => backend.locks.acquire({key, owner, ttlMs: 600_000, waitMs: 0, limit, shared, signal: new AbortController().signal, holder: holder(i)})
    const keys = Array.from({length: 450}, (_v, i) => `held-${String(i).padStart(3, '0')}`)
    const leases = new Map()
    try {
      for (let at = 0; at < keys.length; at += 50) {
        await Promise.all(keys.slice(at, at + 50).map(async (key, j) => leases.set(key, await acquire(key, `owner-${at + j}`, at + j))))
      }
      const first = await acquire('sem', 'sem-b', 1, 2)
      const second = await acquire('sem', 'sem-a', 2, 2)
      const reader = await acquire('readers', 'r"1', 3, 1, true)
      await acquire('released', 'gone', 4)
      await backend.locks.release('released', 'gone')

      execFileSync('redis-cli', ['-p', String(server.port), 'CONFIG', 'RESETSTAT'])
      const r = await run(['lock', 'status', '-b', server.url, '--json'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(scriptCalls(server.port), 3, '452 held locks, 200 a call')
      const locks = JSON.parse(r.stdout).locks
      assert.deepEqual(locks.map((l) => l.key), [...keys, 'readers', 'sem'].sort())
      const one = locks.find((l) => l.key === 'held-123')
      assert.deepEqual(one.holders.map((h) => [h.owner, h.mode, h.host, h.pid, h.user, h.command, h.fencingToken, h.expiresAt]),
        [['owner-123', 'exclusive', 'host-123', 1123, 'user "quoted" \\ é', 'cmd\n123', Number(leases.get('held-123').fencingToken), leases.get('held-123').expiresAt.toISOString()]])
      assert.equal(one.waiters, 0)
      // Two holders of a semaphore, in the order of their fencing tokens (not of their owners).
      const sem = locks.find((l) => l.key === 'sem')
      assert.deepEqual(sem.holders.map((h) => [h.owner, h.fencingToken]), [['sem-b', Number(first.fencingToken)], ['sem-a', Number(second.fencingToken)]])
      assert.deepEqual(locks.find((l) => l.key === 'readers').holders.map((h) => [h.owner, h.mode, h.fencingToken]), [['r"1', 'shared', Number(reader.fencingToken)]])
      assert.ok(locks.every((l) => l.holders.every((h) => Date.parse(h.acquiredAt) <= Date.parse(h.expiresAt))))
    } finally {
      await backend.close()
    }
  })
})
