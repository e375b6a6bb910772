// Conformance: the queue chores (SPEC §3, issue 14): `queue redrive` moves dead letters back in
// order with their attempts started again, `queue purge` drops waiting messages and refuses while
// some are in flight unless --force (which leaves those to their workers). Against every backend.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {oneErrorLine, shUntil, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {drainJson, pushArgs, queueStats} from '../support/queues.mjs'

const SH0 = 'dlq-test-sh'

for (const backend of backends) {
  describe(`queue chores [${backend.name}]`, {concurrency: 3}, () => {
    const ctx = useBackend(backend, {before, after})

    it('redrive moves dead letters back to the end of the queue, oldest first, attempts from 1; --count bounds it; nothing to move is exit 0', async () => {
      const queue = uniqueName('redrive')
      await pushArgs(ctx.dlq, queue, ['waiting'])
      const dead = `${queue}-d`
      await pushArgs(ctx.dlq, dead, ['a', 'b', 'c'])
      const failed = await ctx.dlq.run(['queue', 'pop', '--queue', dead, '--max-attempts', '1', '--count', '3', '--exec', '--', 'false'])
      assert.equal(failed.code, 0, failed.stderr)
      assert.deepEqual(await queueStats(ctx.dlq, dead).then((s) => [s.waiting, s.dead]), [0, 3])

      const two = await ctx.dlq.run(['queue', 'redrive', '--queue', dead, '--count', '2'])
      assert.equal(two.code, 0, two.stderr)
      assert.equal(oneErrorLine(two, assert), `dlq: moved 2 messages from "${dead}.dead" to "${dead}"`)
      assert.deepEqual(await queueStats(ctx.dlq, dead).then((s) => [s.waiting, s.dead]), [2, 1])
      const rest = await ctx.dlq.run(['queue', 'redrive', '--queue', dead, '--json'])
      assert.equal(rest.code, 0, rest.stderr)
      assert.deepEqual(JSON.parse(rest.stdout), {queue: dead, from: `${dead}.dead`, moved: 1})
      const popped = await drainJson(ctx.dlq, dead)
      assert.deepEqual(popped.map((m) => [m.body, m.attempts]), [['a', 1], ['b', 1], ['c', 1]])

      const none = await ctx.dlq.run(['queue', 'redrive', '--queue', dead, '--json'])
      assert.equal(none.code, 0, none.stderr)
      assert.equal(JSON.parse(none.stdout).moved, 0)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.dead]), [1, 0], 'another queue is not touched')
    })

    it('purge refuses (75) while a message is in flight, --force drops the waiting ones and leaves that one to its worker', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('purge')
      await pushArgs(ctx.dlq, queue, ['first', 'm2', 'm3', 'm4', 'm5'])
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '1', '--exec', '--', 'sh', '-c', `cat > "$1/body"; ${shUntil('[ -e "$1/go" ]', 30)}`, SH0, dir], {t, timeoutMs: 120_000})
      await waitFor(() => existsSync(join(dir, 'body')), {what: 'the worker to hold the first message'})
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight]), [4, 1])

      const refused = await ctx.dlq.run(['queue', 'purge', '--queue', queue])
      assert.equal(refused.code, 75, refused.stderr)
      assert.match(oneErrorLine(refused, assert), /not purged: 1 message is in flight \(.*--force/)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight]), [4, 1], 'nothing dropped')

      const forced = await ctx.dlq.run(['queue', 'purge', '--queue', queue, '--force', '--json'])
      assert.equal(forced.code, 0, forced.stderr)
      assert.deepEqual(JSON.parse(forced.stdout), {queue, purged: 4})
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight]), [0, 1], 'the one in flight stays with its worker')

      await writeFile(join(dir, 'go'), '')
      assert.equal((await worker.result).code, 0)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 0, 0])
      const again = await ctx.dlq.run(['queue', 'purge', '--queue', queue])
      assert.equal(again.code, 0, again.stderr)
      assert.equal(oneErrorLine(again, assert), `dlq: purged 0 messages from "${queue}"`)
    })

    it('purge and redrive of a queue that never existed change nothing and create nothing', async () => {
      const queue = uniqueName('never')
      for (const args of [['queue', 'purge', '--queue', queue], ['queue', 'redrive', '--queue', queue]]) {
        const r = await ctx.dlq.run([...args, '--json'])
        assert.equal(r.code, 0, r.stderr)
      }
      const all = await ctx.dlq.run(['queue', 'status', '--json'])
      assert.deepEqual(JSON.parse(all.stdout).queues.filter((s) => s.queue.startsWith(queue)), [])
    })
  })
}
