// Conformance: a queue's life (SPEC §3, issue 14). A pop, tail or status of a queue nobody pushed
// to creates nothing, while a waiting pop or tail --follow still wakes when a push makes it;
// `queue delete` removes a queue, its messages and its dead letters (refusing while messages are in
// flight unless --force); `queue push --delay` / `--at` keep messages invisible until then, counted
// apart as delayed. Against every backend.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {oneErrorLine, shUntil, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {drainJson, pushArgs, queueStats} from '../support/queues.mjs'

const SH0 = 'dlq-test-sh'

/** The names `queue status --json` lists that start with `prefix`. */
async function listed(dlq, prefix) {
  const r = await dlq.run(['queue', 'status', '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).queues.map((s) => s.queue).filter((name) => name.startsWith(prefix))
}

for (const backend of backends) {
  describe(`queue life [${backend.name}]`, {concurrency: 3}, () => {
    const ctx = useBackend(backend, {before, after})

    it('pop, pop --wait, tail and status of a queue never pushed create nothing', async () => {
      const queue = uniqueName('never')
      const pop = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(pop.code, 75, pop.stderr)
      const waited = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '300ms', '--count', '3', '--exec', '--', 'true'])
      assert.equal(waited.code, 75, waited.stderr)
      const tail = await ctx.dlq.run(['queue', 'tail', '--queue', queue])
      assert.equal(tail.code, 0, tail.stderr)
      assert.equal(tail.stdout, '')
      const one = await ctx.dlq.run(['queue', 'status', '--queue', queue, '--json'])
      assert.deepEqual(JSON.parse(one.stdout).queues, [{queue, waiting: 0, delayed: 0, inFlight: 0, dead: 0, oldestAgeMs: null}])
      assert.deepEqual(await listed(ctx.dlq, queue), [], 'queue status lists no queue that nobody pushed to')
    })

    it('a waiting pop and tail --follow of a queue not made yet create nothing, and wake when a push makes it', async (t) => {
      const queue = uniqueName('later-made')
      const pop = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--wait', '60s', '--json'], {t, timeoutMs: 120_000})
      const tail = ctx.dlq.spawn(['queue', 'tail', '--queue', queue, '--follow'], {t, timeoutMs: 120_000})
      // A pop started after them that waits a while ends after they have set up their waits.
      const probe = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '1s'])
      assert.equal(probe.code, 75, probe.stderr)
      assert.deepEqual(await listed(ctx.dlq, queue), [], 'waiting made no queue')
      assert.equal(pop.exited, false, 'the pop still waits')

      await pushArgs(ctx.dlq, queue, ['hello'])
      const popped = await pop.result
      assert.equal(popped.code, 0, popped.stderr)
      assert.equal(JSON.parse(popped.stdout).body, 'hello')
      await pushArgs(ctx.dlq, queue, ['again'])
      await waitFor(() => tail.stdoutText().includes('again\n'), {timeoutMs: 30_000, what: `tail --follow to print the push (has: ${JSON.stringify(tail.stdoutText())})`})
      tail.kill('SIGINT')
      assert.equal((await tail.result).code, 0)
      assert.deepEqual(await listed(ctx.dlq, queue), [queue])
    })

    it('delete refuses (75) while a message is in flight; --force deletes the queue, its messages and dead letters; a late ack recreates nothing', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('delete')
      await pushArgs(ctx.dlq, queue, ['poison'])
      const buried = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--max-attempts', '1', '--exec', '--', 'false'])
      assert.equal(buried.code, 0, buried.stderr)
      await pushArgs(ctx.dlq, queue, ['held', 'w1', 'w2'])
      const later = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--delay', '1h', 'delayed'])
      assert.equal(later.code, 0, later.stderr)
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '1', '--exec', '--', 'sh', '-c', `cat > "$1/body"; ${shUntil('[ -e "$1/go" ]', 90)}`, SH0, dir], {t, timeoutMs: 120_000})
      await waitFor(() => existsSync(join(dir, 'body')), {timeoutMs: 30_000, what: 'the worker to hold a message'})
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.delayed, s.inFlight, s.dead]), [2, 1, 1, 1])

      const refused = await ctx.dlq.run(['queue', 'delete', '--queue', queue])
      assert.equal(refused.code, 75, refused.stderr)
      assert.match(oneErrorLine(refused, assert), /not deleted: 1 message is in flight \(.*--force/)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.delayed, s.inFlight, s.dead]), [2, 1, 1, 1], 'nothing deleted')

      const forced = await ctx.dlq.run(['queue', 'delete', '--queue', queue, '--force', '--json'])
      assert.equal(forced.code, 0, forced.stderr)
      assert.deepEqual(JSON.parse(forced.stdout), {queue, deleted: true, messages: 4, deadLetters: 1})
      assert.deepEqual(await listed(ctx.dlq, queue), [], 'neither the queue nor its dead letters are listed')

      await writeFile(join(dir, 'go'), '')
      assert.equal((await worker.result).code, 0)
      assert.deepEqual(await listed(ctx.dlq, queue), [], 'the worker\'s ack made no queue')
      const popped = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(popped.code, 75, 'no message is left')

      const again = await ctx.dlq.run(['queue', 'delete', '--queue', queue])
      assert.equal(again.code, 0, again.stderr)
      assert.equal(oneErrorLine(again, assert), `dlq: no queue "${queue}" to delete`)
      await pushArgs(ctx.dlq, queue, ['anew'])
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => [m.body, m.attempts]), [['anew', 1]], 'a push after the delete makes the queue anew')
    })

    it('a pop waiting on a queue when it is deleted gets the message a push makes after the delete', async (t) => {
      const queue = uniqueName('remade')
      await pushArgs(ctx.dlq, queue, ['old'])
      const old = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(old.stdout, 'old\n')
      const pop = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--wait', '60s'], {t, timeoutMs: 120_000})
      const probe = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '1s'])
      assert.equal(probe.code, 75, probe.stderr)
      const deleted = await ctx.dlq.run(['queue', 'delete', '--queue', queue])
      assert.equal(deleted.code, 0, deleted.stderr)
      assert.deepEqual(await listed(ctx.dlq, queue), [])
      assert.equal(pop.exited, false, 'the pop still waits')
      await pushArgs(ctx.dlq, queue, ['after the delete'])
      const r = await pop.result
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'after the delete\n')
    })

    it('delete of an idle queue says what went; another queue is not touched', async () => {
      const queue = uniqueName('idle')
      const other = `${queue}-other`
      await pushArgs(ctx.dlq, queue, ['a', 'b'])
      await pushArgs(ctx.dlq, other, ['c'])
      const r = await ctx.dlq.run(['queue', 'delete', '--queue', queue])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(oneErrorLine(r, assert), `dlq: deleted queue "${queue}" with 2 messages and 0 dead letters`)
      assert.deepEqual(await listed(ctx.dlq, queue), [other])
      assert.deepEqual((await drainJson(ctx.dlq, other)).map((m) => m.body), ['c'])
    })

    it('push --at a future time: invisible to pop and tail, counted as delayed; --at a past time: at once', async () => {
      const queue = uniqueName('at')
      const hour = new Date(Date.now() + 3_600_000).toISOString()
      const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--at', hour, '--json', 'far 1', 'far 2'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(JSON.parse(r.stdout).count, 2)
      await pushArgs(ctx.dlq, queue, ['now'])
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.delayed, s.inFlight]), [1, 2, 0])
      const tail = await ctx.dlq.run(['queue', 'tail', '--queue', queue])
      assert.equal(tail.stdout, 'now\n', 'tail shows only what waits')
      const popped = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '10'])
      assert.equal(popped.code, 0, popped.stderr)
      assert.equal(popped.stdout, 'now\n')
      const empty = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(empty.code, 75, 'the delayed messages stay invisible')
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.delayed, s.inFlight]), [0, 2, 0])

      const past = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--at', `@${Math.floor(Date.now() / 1000) - 60}`, 'past'])
      assert.equal(past.code, 0, past.stderr)
      const now = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(now.stdout, 'past\n', 'a time that has passed is at once')
    })

    it('push --delay: the message comes once due, not before, on its first delivery, to a pop that waits; tail --follow does not print it', async (t) => {
      const queue = uniqueName('delay')
      await pushArgs(ctx.dlq, queue, ['first'])
      const tail = ctx.dlq.spawn(['queue', 'tail', '--queue', queue, '--follow'], {t, timeoutMs: 120_000})
      await waitFor(() => tail.stdoutText() === 'first\n', {timeoutMs: 30_000, what: 'tail to print the waiting message'})
      const pushedAt = Date.now()
      const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--delay', '3s', 'soon'])
      assert.equal(r.code, 0, r.stderr)
      await pushArgs(ctx.dlq, queue, ['after'])
      await waitFor(() => tail.stdoutText() === 'first\nafter\n', {timeoutMs: 30_000, what: `tail --follow to print the later push (has: ${JSON.stringify(tail.stdoutText())})`})

      const got = []
      while (got.length < 3) {
        const popped = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '30s', '--json'])
        assert.equal(popped.code, 0, popped.stderr)
        got.push({...JSON.parse(popped.stdout), at: Date.now()})
      }
      assert.deepEqual(got.map((m) => m.body).sort(), ['after', 'first', 'soon'])
      const soon = got.find((m) => m.body === 'soon')
      assert.equal(soon.attempts, 1)
      assert.ok(soon.at >= pushedAt + 3000, `popped ${soon.at - pushedAt} ms after the push, before its delay of 3 s`)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.delayed, s.inFlight]), [0, 0, 0])
      await pushArgs(ctx.dlq, queue, ['last'])
      await waitFor(() => tail.stdoutText().endsWith('last\n'), {timeoutMs: 30_000, what: `tail --follow to print a push after the due time (has: ${JSON.stringify(tail.stdoutText())}, stderr: ${JSON.stringify(tail.stderrText())})`})
      tail.kill('SIGINT')
      const done = await tail.result
      assert.equal(done.code, 0, done.stderr)
      assert.equal(done.stdout, 'first\nafter\nlast\n', 'the delayed message was never printed by --follow')
    })

    it('bad --delay and --at values, or both at once, are exit 64 with one line, and push nothing', async () => {
      const queue = uniqueName('bad-delay')
      for (const flags of [['--at', 'tomorrow'], ['--at', '2026-12-02T18:00:00'], ['--at', '2026-13-45T18:00Z'], ['--delay', 'soon'], ['--delay', 'forever'], ['--delay', '1s', '--at', '@1700000000']]) {
        const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, ...flags, 'x'])
        assert.equal(r.code, 64, `${flags.join(' ')}: ${r.stderr}`)
        assert.match(oneErrorLine(r, assert), /^dlq: /)
      }
      assert.deepEqual(await listed(ctx.dlq, queue), [])
    })
  })
}
