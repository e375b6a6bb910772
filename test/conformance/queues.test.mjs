// Conformance: `dlq queue push / pop / tail / status` (SPEC §3), against every backend in
// test/support/backends.mjs. Every test uses its own queue, so one backend instance serves them all.
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {BIN, NODE, oneErrorLine, runProgram, stillFalse, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {drainJson, pushArgs, pushInput, queueStats} from '../support/queues.mjs'

const lines = (text) => {
  assert.ok(text === '' || text.endsWith('\n'), `output ends with a newline: ${JSON.stringify(text.slice(-20))}`)
  return text === '' ? [] : text.slice(0, -1).split('\n')
}

for (const backend of backends) {
  describe(`queues [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})

    it('5000 lines pushed by seq, taken by 4 racing `pop --count 100` loops: every message exactly once', async () => {
      const queue = uniqueName('race')
      const total = 5000
      const seq = spawn('seq', ['1', String(total)], {stdio: ['ignore', 'pipe', 'inherit']})
      const seqDone = new Promise((resolve) => seq.on('close', resolve))
      const pushed = await ctx.dlq.run(['queue', 'push', '--queue', queue], {input: seq.stdout, timeoutMs: 30_000})
      assert.equal(await seqDone, 0)
      assert.equal(pushed.code, 0, pushed.stderr)
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, total)

      const popper = async () => {
        const got = []
        for (;;) {
          const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '100'], {timeoutMs: 30_000})
          if (r.code === 75) return got
          assert.equal(r.code, 0, r.stderr)
          const taken = lines(r.stdout)
          assert.ok(taken.length >= 1 && taken.length <= 100, `one pop --count 100 returned ${taken.length} messages`)
          got.push(...taken)
        }
      }
      const all = (await Promise.all([popper(), popper(), popper(), popper()])).flat()
      const counts = new Map()
      for (const m of all) counts.set(m, (counts.get(m) ?? 0) + 1)
      const duplicates = [...counts].filter(([, n]) => n > 1).map(([m]) => m)
      const missing = Array.from({length: total}, (_v, i) => String(i + 1)).filter((m) => !counts.has(m))
      assert.deepEqual({duplicates: duplicates.slice(0, 20), missing: missing.slice(0, 20), extra: all.length - total + missing.length - duplicates.length},
        {duplicates: [], missing: [], extra: 0})
      assert.equal(all.length, total)
      const after = await queueStats(ctx.dlq, queue)
      assert.deepEqual([after.waiting, after.inFlight], [0, 0])
    })

    it('a pop --wait 0 never reports an empty queue while messages are waiting, even with racing poppers', async () => {
      const queue = uniqueName('spurious')
      const total = 200
      await pushInput(ctx.dlq, queue, Array.from({length: total}, (_v, i) => `m${i}\n`).join(''))
      let taken = 0
      const falseEmpties = []
      const popper = async () => {
        for (;;) {
          const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '10'])
          if (r.code === 75) {
            // The 3 other poppers hold at most 30 messages between reserving and printing them.
            if (taken + 30 < total) falseEmpties.push(`exit 75 with only ${taken} of ${total} taken`)
            return
          }
          assert.equal(r.code, 0, r.stderr)
          taken += lines(r.stdout).length
        }
      }
      await Promise.all([popper(), popper(), popper(), popper()])
      assert.equal(taken, total)
      assert.deepEqual(falseEmpties, [])
    })

    it('FIFO for a single popper, across pushes and pop sizes', async () => {
      const queue = uniqueName('fifo')
      const first = Array.from({length: 5}, (_v, i) => `arg-${i}`)
      const second = Array.from({length: 30}, (_v, i) => `line-${i}`)
      await pushArgs(ctx.dlq, queue, first)
      await pushInput(ctx.dlq, queue, second.join('\n') + '\n')
      const got = []
      for (let i = 0; i < 3; i++) {
        const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
        assert.equal(r.code, 0, r.stderr)
        got.push(...lines(r.stdout))
      }
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '7'])
      got.push(...lines(r.stdout))
      const rest = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '100'])
      got.push(...lines(rest.stdout))
      assert.deepEqual(got, [...first, ...second])
    })

    it('arguments are messages, one each; push --json prints their ids', async () => {
      const queue = uniqueName('args')
      const messages = ['one message', 'two', '  three  ', 'ünïcødé ✓', '-looks-like-a-flag']
      const pushed = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--json', '--', ...messages])
      assert.equal(pushed.code, 0, pushed.stderr)
      const ids = JSON.parse(pushed.stdout).ids
      assert.equal(ids.length, messages.length, pushed.stdout)
      const got = await drainJson(ctx.dlq, queue)
      assert.deepEqual(got.map((m) => m.body), messages)
      assert.deepEqual(got.map((m) => m.id), ids)
    })

    it('-0: NUL-framed push and pop round-trip bodies that contain newlines', async () => {
      const queue = uniqueName('nul')
      const bodies = ['line one\nline two\n', 'second', '\ttabbed\r\n', 'last without a trailing NUL']
      await pushInput(ctx.dlq, queue, bodies.join('\0'), ['-0'])
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, bodies.length)
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '-0', '--count', '10'])
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(r.stdoutBuffer, Buffer.from(bodies.map((b) => `${b}\0`).join('')))
    })

    it('--whole: all of stdin is one message, bytes kept exactly', async () => {
      const queue = uniqueName('whole')
      const body = Buffer.concat([Buffer.from('first line\nsecond line\r\n'), Buffer.from([0, 0xff, 0xfe, 0x80]), Buffer.from('\n\n')])
      await pushInput(ctx.dlq, queue, body, ['--whole'])
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, 1)
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(r.stdoutBuffer, Buffer.concat([body, Buffer.from('\n')]))
    })

    it('a trailing \\r is kept as data (CRLF input is not silently converted)', async () => {
      const queue = uniqueName('crlf')
      await pushInput(ctx.dlq, queue, 'a\r\nb\r\nc')
      const got = await drainJson(ctx.dlq, queue)
      assert.deepEqual(got.map((m) => m.body), ['a\r', 'b\r', 'c'])
      await pushInput(ctx.dlq, queue, 'x\r\n')
      const raw = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.deepEqual(raw.stdoutBuffer, Buffer.from('x\r\n'))
    })

    it('an empty queue gives 75 at once with --wait 0, and after the wait with --wait 300ms', async () => {
      const queue = uniqueName('empty')
      const now = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '0'])
      assert.equal(now.code, 75)
      assert.equal(now.stdout, '')
      oneErrorLine(now, assert)
      const dflt = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(dflt.code, 75, 'the default --wait is 0')
      const waited = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '300ms'])
      assert.equal(waited.code, 75)
      assert.equal(waited.stdout, '')
      assert.ok(waited.ms >= 300, `gave up after ${waited.ms}ms, before --wait 300ms`)
      assert.ok(waited.ms < 5000, `took ${waited.ms}ms for --wait 300ms`)
    })

    it('a blocked pop --wait 10s is woken by a push and returns the message well before its wait', async (t) => {
      const queue = uniqueName('wake')
      const popper = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--wait', '10s'], {t})
      await stillFalse(() => popper.exited, {forMs: 600, what: 'pop --wait 10s returning from an empty queue'})
      await pushArgs(ctx.dlq, queue, ['wake up'])
      const pushedAt = Date.now()
      const r = await popper.result
      const took = Date.now() - pushedAt
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'wake up\n')
      assert.ok(took < 2000, `the pop returned ${took}ms after the push`)
    })

    it('tail -n 3 prints the last 3 waiting messages without consuming them', async () => {
      const queue = uniqueName('tail')
      await pushArgs(ctx.dlq, queue, ['1', '2', '3', '4', '5', '6'])
      const r = await ctx.dlq.run(['queue', 'tail', '--queue', queue, '-n', '3'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, '4\n5\n6\n')
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, 6)
      const dflt = await ctx.dlq.run(['queue', 'tail', '--queue', queue])
      assert.equal(dflt.stdout, '1\n2\n3\n4\n5\n6\n', 'the default is the last 10')
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['1', '2', '3', '4', '5', '6'])
    })

    it('tail --follow prints messages pushed after it started, until SIGINT (exit 0)', async (t) => {
      const queue = uniqueName('follow')
      await pushArgs(ctx.dlq, queue, ['old'])
      const tail = ctx.dlq.spawn(['queue', 'tail', '--queue', queue, '--follow'], {t})
      await waitFor(() => tail.stdoutText() === 'old\n', {what: 'tail to print the waiting message'})
      await pushArgs(ctx.dlq, queue, ['new 1', 'new 2'])
      await waitFor(() => tail.stdoutText() === 'old\nnew 1\nnew 2\n', {what: `tail --follow to print the new messages (has: ${JSON.stringify(tail.stdoutText())})`})
      await pushArgs(ctx.dlq, queue, ['new 3'])
      await waitFor(() => tail.stdoutText().endsWith('new 3\n'), {what: 'tail --follow to print a later push'})
      tail.kill('SIGINT')
      const r = await tail.result
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'old\nnew 1\nnew 2\nnew 3\n')
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, 4, 'tail consumed nothing')
    })

    it('pop --json writes one object per line: id, body, enqueuedAt, attempts', async () => {
      const queue = uniqueName('json')
      const startedAt = Date.now()
      await pushArgs(ctx.dlq, queue, ['hello', 'wörld'])
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '5', '--json'])
      assert.equal(r.code, 0, r.stderr)
      const got = lines(r.stdout).map((l) => JSON.parse(l))
      assert.equal(got.length, 2)
      assert.deepEqual(got.map((m) => m.body), ['hello', 'wörld'])
      for (const m of got) {
        assert.equal(typeof m.id, 'string')
        assert.notEqual(m.id, '')
        assert.equal(m.attempts, 1)
        const at = Date.parse(m.enqueuedAt)
        assert.ok(at >= startedAt - 2000 && at <= Date.now() + 2000, `enqueuedAt ${m.enqueuedAt}`)
      }
      assert.notEqual(got[0].id, got[1].id)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight]), [0, 0])
    })

    it('stdout closed early (`pop --count 100 | head -1`): only what was written is gone, no error line', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('epipe')
      // Each message is bigger than a pipe buffer, so head can only have let one through completely.
      const size = 256 * 1024
      const bodies = Array.from({length: 20}, (_v, i) => `m${String(i).padStart(2, '0')}-` + 'x'.repeat(size))
      await pushInput(ctx.dlq, queue, bodies.join('\n') + '\n', [])
      const script = '{ "$1" "$2" queue pop -b "$3" --queue "$4" --count 100 2>"$5"; echo $? >"$6"; } | head -n 1 | cut -c1-4'
      const r = await runProgram('sh', ['-c', script, 'dlq-test-sh', NODE, BIN, ctx.dlq.url, queue, join(dir, 'stderr'), join(dir, 'rc')], {timeoutMs: 20_000})
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'm00-\n')
      const stderr = await readFile(join(dir, 'stderr'), 'utf8')
      const rc = (await readFile(join(dir, 'rc'), 'utf8')).trim()
      assert.equal(stderr, '', `dlq printed on stderr (exit ${rc}): ${stderr}`)
      assert.equal(rc, '141', 'quietly, as a Unix tool killed by SIGPIPE')
      const stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight], [19, 0], `after head -1 took one message, the queue has ${JSON.stringify(stats)}`)
      const rest = await drainJson(ctx.dlq, queue)
      assert.deepEqual(rest.map((m) => m.body.slice(0, 4)), bodies.slice(1).map((b) => b.slice(0, 4)))
    })
  })

  describe(`queue names [${backend.name}]`, {concurrency: 2}, () => {
    const ctx = useBackend(backend, {before, after})

    it('hostile queue names work as names, stay distinct, and create nothing outside the backend', async () => {
      const names = ['../../etc/passwd', '../../../../../../../../tmp/dlq-escaped-queue', 'a/b', 'a%2Fb', '..', '.', 'ключ🔒', 'x'.repeat(255), 'x'.repeat(254) + 'y']
      await Promise.all(names.map((name, i) => pushArgs(ctx.dlq, name, [`body ${i}`])))
      await Promise.all(names.map(async (name, i) => {
        const stats = await queueStats(ctx.dlq, name)
        assert.equal(stats.waiting, 1, `${JSON.stringify(name)}: ${JSON.stringify(stats)}`)
        const r = await ctx.dlq.run(['queue', 'pop', `--queue=${name}`])
        assert.equal(r.code, 0, `pop ${JSON.stringify(name)}: ${r.stderr}`)
        assert.equal(r.stdout, `body ${i}\n`, `queue ${JSON.stringify(name)} has its own message`)
      }))
      if (ctx.instance.escapes) assert.deepEqual(await ctx.instance.escapes(), [], 'paths created outside the backend')
    })
  })
}
