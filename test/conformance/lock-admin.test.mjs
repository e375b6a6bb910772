// Conformance: holding a lock across steps (`lock acquire / renew / release`), `lock status`, and
// which keys are valid (SPEC §2), against every backend in test/support/backends.mjs.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {oneErrorLine, tempDir, uniqueName, waitFor} from '../support/cli.mjs'

const statusOf = async (dlq, key) => {
  const r = await dlq.run(['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks
}

// Valid keys that a careless file layout would turn into paths, collide, or mangle.
const hostileKeys = [
  '../../etc/passwd',
  '../../../../../../../../tmp/dlq-escaped',
  'a/b',
  'a%2Fb', // must not collide with a/b
  '..',
  '.',
  '.hidden',
  '-starts-with-dash',
  'ключ🔒',
  'spaces and  more spaces',
  'x'.repeat(255),
  'x'.repeat(254) + 'y', // 255 bytes, differs from the one above only at the end
  'é'.repeat(127) + 'x', // 255 bytes of 2-byte characters
]

for (const backend of backends) {
  describe(`lock acquire/renew/release/status [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})
    // `lock status` on the fresh backend, before any test here has taken a lock.
    const fresh = {}
    before(async () => {
      fresh.human = await ctx.dlq.run(['lock', 'status'])
      fresh.json = await ctx.dlq.run(['lock', 'status', '--json'])
      fresh.one = await ctx.dlq.run(['lock', 'status', '--key', 'nothing-here', '--json'])
    })

    it('lock status with no locks exits 0 (people and --json)', () => {
      assert.equal(fresh.human.code, 0, fresh.human.stderr)
      assert.doesNotMatch(fresh.human.stderr, /^\s+at /m)
      assert.equal(fresh.json.code, 0, fresh.json.stderr)
      assert.deepEqual(JSON.parse(fresh.json.stdout).locks, [])
      assert.equal(fresh.one.code, 0, fresh.one.stderr)
      assert.deepEqual(JSON.parse(fresh.one.stdout).locks, [])
    })

    it('lock release without --force or --token refuses with 64 and one line', async () => {
      const key = uniqueName('norelease')
      const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      const r = await ctx.dlq.run(['lock', 'release', '--key', key])
      assert.equal(r.code, 64)
      oneErrorLine(r, assert)
      const [state] = await statusOf(ctx.dlq, key)
      assert.equal(state.holders.length, 1, 'the refused release changed nothing')
    })

    it('acquire prints an owner token; status shows the holder; renew extends it; release --token frees it; a wrong token gets 75', async () => {
      const key = uniqueName('steps')
      const startedAt = Date.now()
      const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(acquired.code, 0, acquired.stderr)
      const lines = acquired.stdout.split('\n').filter(Boolean)
      assert.equal(lines.length, 1, `one token on stdout: ${acquired.stdout}`)
      const token = lines[0]
      assert.match(token, /^\S+$/)

      const locks = await statusOf(ctx.dlq, key)
      assert.equal(locks.length, 1)
      assert.equal(locks[0].key, key)
      assert.equal(locks[0].holders.length, 1)
      const holder = locks[0].holders[0]
      for (const field of ['owner', 'token', 'fencingToken', 'host', 'pid', 'command', 'acquiredAt', 'expiresAt']) {
        assert.ok(holder[field] !== undefined && holder[field] !== '', `holder.${field} is set: ${JSON.stringify(holder)}`)
      }
      assert.equal(holder.owner, token)
      assert.equal(holder.token, token, 'token is what --token takes')
      assert.ok(Number.isSafeInteger(holder.fencingToken) && holder.fencingToken > 0, `the fencing token is an integer: ${holder.fencingToken}`)
      assert.ok(Number.isInteger(Number(holder.pid)))
      const acquiredAt = Date.parse(holder.acquiredAt)
      const expiresAt = Date.parse(holder.expiresAt)
      assert.ok(acquiredAt >= startedAt - 1000 && acquiredAt <= Date.now() + 1000, `acquiredAt ${holder.acquiredAt}`)
      assert.ok(Math.abs(expiresAt - acquiredAt - 30_000) < 2000, `expiresAt ${holder.expiresAt} is acquiredAt + 30s`)

      const renewed = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', token, '--ttl', '90s'])
      assert.equal(renewed.code, 0, renewed.stderr)
      const [afterRenew] = await statusOf(ctx.dlq, key)
      const extended = Date.parse(afterRenew.holders[0].expiresAt)
      assert.ok(extended > expiresAt + 50_000, `renew --ttl 90s moved expiresAt from ${holder.expiresAt} to ${afterRenew.holders[0].expiresAt}`)
      assert.equal(afterRenew.holders[0].fencingToken, holder.fencingToken, 'renewing keeps the fencing token')

      const wrong = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', 'not-the-token'])
      assert.equal(wrong.code, 75)
      oneErrorLine(wrong, assert)
      const wrongRenew = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', 'not-the-token'])
      assert.equal(wrongRenew.code, 75)
      oneErrorLine(wrongRenew, assert)
      assert.equal((await statusOf(ctx.dlq, key))[0]?.holders.length, 1, 'a wrong token released nothing')

      const busy = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--wait', '0'])
      assert.equal(busy.code, 75, 'acquire --wait 0 on a held key')
      assert.equal(busy.stdout, '')

      const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])
      assert.equal(released.code, 0, released.stderr)
      assert.deepEqual(await statusOf(ctx.dlq, key), [])
      const again = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])
      assert.equal(again.code, 75, 'a token that no longer holds the key')
      oneErrorLine(again, assert)
      const free = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(free.code, 0, free.stderr)
    })

    it('"token" is what --token takes and "fencingToken" is DLQ_FENCING_TOKEN, in every output: acquire, renew and status, JSON and table', async () => {
      const key = uniqueName('words')
      const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s', '--json'])
      assert.equal(acquired.code, 0, acquired.stderr)
      const lease = JSON.parse(acquired.stdout)
      assert.deepEqual(Object.keys(lease).sort(), ['expiresAt', 'fencingToken', 'key', 'owner', 'token'])
      assert.equal(lease.owner, lease.token)
      assert.ok(Number.isSafeInteger(lease.fencingToken), `fencingToken is a JSON integer: ${acquired.stdout}`)
      assert.notEqual(String(lease.fencingToken), lease.token)
      // The pipeline from the issue: the token of acquire --json is what renew and release take.
      const renewed = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', lease.token, '--json'])
      assert.equal(renewed.code, 0, renewed.stderr)
      const after = JSON.parse(renewed.stdout)
      assert.deepEqual([after.key, after.token, after.owner, after.fencingToken], [key, lease.token, lease.token, lease.fencingToken])
      const [state] = await statusOf(ctx.dlq, key)
      assert.deepEqual([state.holders[0].token, state.holders[0].fencingToken], [lease.token, lease.fencingToken])
      // The table: TOKEN holds what --token takes, FENCING the number.
      const table = await ctx.dlq.run(['lock', 'status', '--key', key])
      assert.equal(table.code, 0, table.stderr)
      const [header, row] = table.stdout.split('\n')
      const column = (name) => row.slice(header.indexOf(name)).split(/\s+/)[0]
      assert.equal(column('TOKEN'), lease.token, table.stdout)
      assert.equal(column('FENCING'), String(lease.fencingToken), table.stdout)
      // The "not acquired" line names the holder's fencing token as such.
      const busy = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(busy.code, 75)
      assert.match(oneErrorLine(busy, assert), new RegExp(`fencing token ${lease.fencingToken}$`))
      const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', lease.token, '--json'])
      assert.equal(released.code, 0, released.stderr)
      assert.deepEqual(JSON.parse(released.stdout), {key, released: 1})
    })

    it('--json answers in JSON when not now: acquire, lock run (75 or --conflict-exit-code) and pop are one JSON error object on stderr', async () => {
      const key = uniqueName('json-busy')
      const queue = uniqueName('json-empty')
      assert.equal((await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])).code, 0)
      for (const [args, code] of [
        [['lock', 'acquire', '--key', key, '--wait', '0', '--json'], 75],
        [['lock', 'run', '--key', key, '--wait', '0', '--json', '--', 'echo', 'ran'], 75],
        [['lock', 'run', '--key', key, '-w', '0', '--conflict-exit-code', '9', '--json', '--', 'echo', 'ran'], 9],
        [['queue', 'pop', '--queue', queue, '--json'], 75],
        [['queue', 'pop', '--queue', queue, '--json', '--exec', '--', 'cat'], 75],
      ]) {
        const r = await ctx.dlq.run(args)
        assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
        assert.equal(r.stdout, '')
        assert.equal(r.stderrLines.length, 1, r.stderr)
        const {error} = JSON.parse(r.stderrLines[0])
        assert.equal(error.code, code, r.stderr)
        assert.match(error.what, /not acquired within 0ms|is empty/)
      }
    })

    it('lock run --json: stdout stays the command\'s; stderr is JSON only, ending with the outcome (key, fencingToken, exitCode, lost), a lost lock included', async (t) => {
      const key = uniqueName('json-run')
      const ran = await ctx.dlq.run(['lock', 'run', '--key', key, '--json', '--ttl', '1s', '--kill-grace', '2s', '--', 'sh', '-c', 'echo out; exit 3'])
      assert.equal(ran.code, 3, ran.stderr)
      assert.equal(ran.stdout, 'out\n')
      const lines = ran.stderrLines.map((l) => JSON.parse(l))
      assert.match(lines[0].warning.what, /^--kill-grace 2s is not shorter than --ttl 1s/)
      const outcome = lines.at(-1)
      assert.deepEqual(Object.keys(outcome), ['key', 'fencingToken', 'exitCode', 'lost'])
      assert.deepEqual([outcome.key, outcome.exitCode, outcome.lost], [key, 3, null])
      assert.ok(Number.isInteger(outcome.fencingToken) && /"fencingToken":\d+,/.test(ran.stderrLines.at(-1)), ran.stderr)

      const dir = await tempDir(t)
      const child = ctx.dlq.spawn(['lock', 'run', '--key', key, '--json', '--ttl', '3s', '--kill-grace', '1s', '--', 'sh', '-c', 'echo $$ > "$1/child"; exec sleep 30', 'sh', dir], {t})
      await waitFor(() => existsSync(join(dir, 'child')), {what: 'the command to start'})
      assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--force'])).code, 0)
      const lost = await child.result
      assert.equal(lost.code, 70, lost.stderr)
      const parsed = lost.stderrLines.map((l) => JSON.parse(l))
      assert.ok(parsed.slice(0, -1).every((l) => typeof l.warning?.what === 'string'), lost.stderr)
      const end = parsed.at(-1)
      assert.deepEqual([end.key, end.exitCode], [key, 70])
      assert.equal(typeof end.lost, 'string')
      assert.ok(end.fencingToken > outcome.fencingToken, lost.stderr)
    })

    it('an acquired lease nobody renews expires after its TTL, not before', async () => {
      const key = uniqueName('expire')
      const startedAt = Date.now()
      const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '1s', '--json'])
      assert.equal(acquired.code, 0, acquired.stderr)
      const lease = JSON.parse(acquired.stdout)
      const expiresAt = Date.parse(lease.expiresAt)
      assert.ok(expiresAt >= startedAt + 900 && expiresAt <= Date.now() + 1100, `--ttl 1s gave expiresAt ${lease.expiresAt}`)
      // The next holder's command runs only after that expiry (clock in ms from date(1)).
      const r = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '5s', '--', 'date', '+%s%3N'])
      assert.equal(r.code, 0, `the abandoned lease with --ttl 1s was not free within 5s: ${r.stderr}`)
      const ranAt = Number(r.stdout.trim())
      assert.ok(ranAt >= expiresAt - 50, `the next holder ran at ${new Date(ranAt).toISOString()}, before the lease expired at ${lease.expiresAt}`)
      const renew = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', lease.owner])
      assert.equal(renew.code, 75, 'an expired lease cannot be renewed')
    })

    it('hostile keys work as keys, stay distinct, and create nothing outside the backend', async () => {
      // Each key on its own, all keys at once: the keys must not interfere with each other.
      const tokens = await Promise.all(hostileKeys.map(async (key) => {
        // 10m: a machine so loaded that the whole test outlasts a shorter lease must not expire them.
        const r = await ctx.dlq.run(['lock', 'acquire', `--key=${key}`, '--ttl', '10m'])
        assert.equal(r.code, 0, `acquire ${JSON.stringify(key)}: ${r.stderr}`)
        return r.stdout.trim()
      }))
      // `lock run` finds each key held: the same name means the same lock for every command.
      await Promise.all(hostileKeys.map(async (key) => {
        const busy = await ctx.dlq.run(['lock', 'run', `--key=${key}`, '--wait', '0', '--', 'true'])
        assert.equal(busy.code, 75, `${JSON.stringify(key)} is held: ${busy.stderr}`)
      }))
      // `lock status` lists each key under its own name, held by its own owner only.
      const all = await ctx.dlq.run(['lock', 'status', '--json'])
      assert.equal(all.code, 0, all.stderr)
      const listed = new Map(JSON.parse(all.stdout).locks.map((l) => [l.key, l.holders.map((h) => h.owner)]))
      assert.deepEqual(hostileKeys.map((key) => [key, listed.get(key)]), hostileKeys.map((key, i) => [key, [tokens[i]]]))
      assert.deepEqual(await statusOf(ctx.dlq, '../../etc/passwd').then((l) => l.map((s) => s.key)), ['../../etc/passwd'])
      if (ctx.instance.escapes) assert.deepEqual(await ctx.instance.escapes(), [], 'paths created outside the backend')
      await Promise.all(hostileKeys.map(async (key, i) => {
        const r = await ctx.dlq.run(['lock', 'release', `--key=${key}`, '--token', tokens[i]])
        assert.equal(r.code, 0, `release ${JSON.stringify(key)}: ${r.stderr}`)
      }))
      const run = await ctx.dlq.run(['lock', 'run', '--key', '../../etc/passwd', '--wait', '0', '--', 'printenv', 'DLQ_LOCK_KEY'])
      assert.equal(run.code, 0, run.stderr)
      assert.equal(run.stdout, '../../etc/passwd\n')
      if (ctx.instance.escapes) assert.deepEqual(await ctx.instance.escapes(), [], 'paths created outside the backend')
    })
  })
}
