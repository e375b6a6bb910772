// Every --json output, on every outcome, has the shape its man page documents (SPEC §5; issue 15):
// the shapes are read from man/dlq-*.1 (test/support/shapes.mjs), so the pages and the program
// cannot drift apart unnoticed. Against every backend.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {uniqueName, waitFor} from '../support/cli.mjs'
import {documentedShapes, whichShape} from '../support/shapes.mjs'

/** The JSON values in `text`: one (oclif prints a command's result indented over several lines), or one per line. */
function jsonValues(text) {
  try {
    return [JSON.parse(text)]
  } catch {
    return text.split('\n').filter(Boolean).map((line) => JSON.parse(line))
  }
}

/** Asserts that every JSON value in `text` has one of `page`'s shapes; returns the indexes. */
function assertDocumented(text, page) {
  const shapes = documentedShapes(page)
  assert.ok(text.trim() !== '', `no JSON from ${page}`)
  return jsonValues(text).map((value) => {
    const {index, errors} = whichShape(value, shapes)
    assert.ok(index >= 0, `${page}: ${JSON.stringify(value)}\ndoes not match any documented shape:\n${errors?.map((e, i) => `  shape ${i}: ${e.join('; ')}`).join('\n')}`)
    return index
  })
}
const ERROR = (page) => documentedShapes(page).length - 1 // the error object is each page's last shape

for (const backend of backends) {
  describe(`--json output has the documented shapes [${backend.name}]`, {concurrency: 3}, () => {
    const ctx = useBackend(backend, {before, after})

    it('lock acquire, renew, status (a holder and a waiter), release, and acquire of a held key (exit 75)', async (t) => {
      const key = uniqueName('shape')
      const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s', '--json'])
      assert.equal(acquired.code, 0, acquired.stderr)
      assert.deepEqual(assertDocumented(acquired.stdout, 'dlq-lock-acquire'), [0])
      const {token} = JSON.parse(acquired.stdout)

      const renewed = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', token, '--json'])
      assert.equal(renewed.code, 0, renewed.stderr)
      assert.deepEqual(assertDocumented(renewed.stdout, 'dlq-lock-renew'), [0])

      const busy = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--wait', '0', '--json'])
      assert.equal(busy.code, 75, busy.stderr)
      assert.deepEqual(assertDocumented(busy.stderr, 'dlq-lock-acquire'), [ERROR('dlq-lock-acquire')])

      const waiter = ctx.dlq.spawn(['lock', 'run', '--key', key, '--wait', '60s', '--', 'true'], {t})
      const status = await waitFor(async () => {
        const r = await ctx.dlq.run(['lock', 'status', '--key', key, '--json'])
        assert.equal(r.code, 0, r.stderr)
        const [lock] = JSON.parse(r.stdout).locks
        return lock !== undefined && (lock.waiters === null || lock.waiters >= 1) && (lock.queue === null || lock.queue.length >= 1) ? r : undefined
      }, {what: 'lock status to show the waiter'})
      assert.deepEqual(assertDocumented(status.stdout, 'dlq-lock-status'), [0])
      const all = await ctx.dlq.run(['lock', 'status', '--json'])
      assertDocumented(all.stdout, 'dlq-lock-status')

      const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token, '--json'])
      assert.equal(released.code, 0, released.stderr)
      assert.deepEqual(assertDocumented(released.stdout, 'dlq-lock-release'), [0])
      assert.equal((await waiter.result).code, 0)
    })

    it('lock run: a warning, then the outcome, each a documented object; not acquired (exit 75) is the error object', async () => {
      const key = uniqueName('shape-run')
      const ran = await ctx.dlq.run(['lock', 'run', '--key', key, '--ttl', '2s', '--kill-grace', '5s', '--json', '--', 'sh', '-c', 'exit 3'])
      assert.equal(ran.code, 3, ran.stderr)
      assert.deepEqual(assertDocumented(ran.stderr, 'dlq-lock-run'), [1, 0], 'the kill-grace warning, then the outcome')
      assert.equal(JSON.parse(ran.stderrLines.at(-1)).exitCode, 3)

      const holder = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--json'])
      assert.equal(holder.code, 0, holder.stderr)
      const busy = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--json', '--', 'true'])
      assert.equal(busy.code, 75, busy.stderr)
      assert.deepEqual(assertDocumented(busy.stderr, 'dlq-lock-run'), [ERROR('dlq-lock-run')])
    })

    it('queue push, tail, pop (text and binary bodies), status, redrive, purge, delete, and a pop of an empty queue (exit 75)', async () => {
      const queue = uniqueName('shape-q')
      const pushed = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--json'], {input: Buffer.from('text\n\xff\xfe binary\n', 'latin1')})
      assert.equal(pushed.code, 0, pushed.stderr)
      assert.deepEqual(assertDocumented(pushed.stdout, 'dlq-queue-push'), [0])

      const tail = await ctx.dlq.run(['queue', 'tail', '--queue', queue, '--json'])
      assert.equal(tail.code, 0, tail.stderr)
      assert.deepEqual(assertDocumented(tail.stdout, 'dlq-queue-tail'), [0, 1], 'a text body, then a binary one')

      const status = await ctx.dlq.run(['queue', 'status', '--json'])
      assert.equal(status.code, 0, status.stderr)
      assertDocumented(status.stdout, 'dlq-queue-status')
      const one = await ctx.dlq.run(['queue', 'status', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(one.stdout, 'dlq-queue-status'), [0])
      assert.equal(JSON.parse(one.stdout).queues[0].waiting, 2)

      const popped = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '2', '--json'])
      assert.equal(popped.code, 0, popped.stderr)
      assert.deepEqual(assertDocumented(popped.stdout, 'dlq-queue-pop'), [0, 1])

      const empty = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--json'])
      assert.equal(empty.code, 75, empty.stderr)
      assert.deepEqual(assertDocumented(empty.stderr, 'dlq-queue-pop'), [ERROR('dlq-queue-pop')])
      const redriven = await ctx.dlq.run(['queue', 'redrive', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(redriven.stdout, 'dlq-queue-redrive'), [0])
      const purged = await ctx.dlq.run(['queue', 'purge', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(purged.stdout, 'dlq-queue-purge'), [0])
      const drained = await ctx.dlq.run(['queue', 'status', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(drained.stdout, 'dlq-queue-status'), [0])
      assert.equal(JSON.parse(drained.stdout).queues[0]?.oldestAgeMs ?? null, null)
      const later = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--delay', '1h', '--json', 'later'])
      assert.deepEqual(assertDocumented(later.stdout, 'dlq-queue-push'), [0])
      const delayed = await ctx.dlq.run(['queue', 'status', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(delayed.stdout, 'dlq-queue-status'), [0])
      assert.equal(JSON.parse(delayed.stdout).queues[0].delayed, 1)
      const deleted = await ctx.dlq.run(['queue', 'delete', '--queue', queue, '--json'])
      assert.equal(deleted.code, 0, deleted.stderr)
      assert.deepEqual(assertDocumented(deleted.stdout, 'dlq-queue-delete'), [0])
      const none = await ctx.dlq.run(['queue', 'delete', '--queue', queue, '--json'])
      assert.deepEqual(assertDocumented(none.stdout, 'dlq-queue-delete'), [0])
    })
  })
}
