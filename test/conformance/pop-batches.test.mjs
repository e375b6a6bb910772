// Conformance: `queue pop --count N` streams (issue 16). It takes a batch, writes it, settles it,
// then takes the next, so its memory and what it holds reserved are one batch whatever N, and a
// reader that stops early leaves the rest in the queue, untouched. Every backend.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {uniqueName, waitFor, stillFalse} from '../support/cli.mjs'
import {pushInput, queueStats} from '../support/queues.mjs'

const batch = 1000 // what pop takes at a time (popBatch in src/commands/queue/pop.ts)
const numbered = (count, size) => Array.from({length: count}, (_v, i) => `${i + 1} ${'x'.repeat(size)}`)
const lines = (text) => (text === '' ? [] : text.slice(0, -1).split('\n'))

for (const backend of backends) {
  describe(`pop batches [${backend.name}]`, {concurrency: 2}, () => {
    const ctx = useBackend(backend, {before, after})

    it('a pop --count 4000 holds at most one batch reserved while its reader is slow, and delivers all 4000 in order', async (t) => {
      const queue = uniqueName('stream')
      const bodies = numbered(4000, 200) // a batch is more than a pipe holds: dlq waits on its reader
      await pushInput(ctx.dlq, queue, bodies.join('\n') + '\n')
      const pop = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '4000'], {t, timeoutMs: 120_000})
      pop.stdout.pause()
      await waitFor(async () => (await queueStats(ctx.dlq, queue)).inFlight > 0, {timeoutMs: 60_000, what: 'a batch reserved'})
      // Blocked on its reader: nothing more is reserved meanwhile.
      await stillFalse(async () => (await queueStats(ctx.dlq, queue)).inFlight > batch, {forMs: 1000, what: 'more than a batch reserved'})
      pop.stdout.resume()
      const r = await pop.result
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(lines(r.stdout), bodies)
      const left = await queueStats(ctx.dlq, queue)
      assert.deepEqual([left.waiting, left.inFlight], [0, 0])
    })

    it('a --count beyond what is waiting takes it all and exits 0; the next pop finds the queue empty', async () => {
      const queue = uniqueName('short')
      const bodies = numbered(2500, 1)
      await pushInput(ctx.dlq, queue, bodies.join('\n') + '\n')
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '9000'], {timeoutMs: 60_000})
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(lines(r.stdout), bodies)
      assert.equal((await ctx.dlq.run(['queue', 'pop', '--queue', queue])).code, 75)
    })

    it('a reader that stops after 1500 lines: what it did not read of the batch is back in the queue at once, the later batches were never taken', async () => {
      const queue = uniqueName('head')
      const bodies = numbered(3500, 200)
      await pushInput(ctx.dlq, queue, bodies.join('\n') + '\n')
      const pop = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '3500'], {timeoutMs: 60_000})
      let got = ''
      await new Promise((resolve) => {
        pop.stdout.on('data', (chunk) => {
          got += chunk
          if (lines(got.slice(0, got.lastIndexOf('\n') + 1)).length >= 1500) {
            pop.stdout.destroy() // like `| head -1500`
            resolve()
          }
        })
      })
      const r = await pop.result
      assert.equal(r.code, 141, r.stderr) // 128 + SIGPIPE, quietly (SPEC §4)
      const left = await queueStats(ctx.dlq, queue)
      assert.equal(left.inFlight, 0)
      // What was written into the pipe counts as delivered (at least the 1500 read); nothing is lost.
      assert.ok(left.waiting >= 3500 - 2 * batch && left.waiting <= 2000, JSON.stringify(left))
    })
  })
}
