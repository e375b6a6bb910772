// Conformance: at-least-once delivery and worker mode (`queue pop --exec`), dead letters and
// `queue status` (SPEC §3), against every backend in test/support/backends.mjs.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {killPid, oneErrorLine, shUntil, stillFalse, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {drainJson, pushArgs, queueStats} from '../support/queues.mjs'

// `sh -c SCRIPT NAME ARGS…` with a NAME ($0) that appears nowhere else on the command line.
const SH0 = 'dlq-test-sh'
const readText = (path) => readFile(path, 'utf8').catch(() => '')

for (const backend of backends) {
  describe(`queue workers [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})

    it('a message held by a popper killed with SIGKILL is redelivered after --visibility, with attempts 2', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('redeliver')
      await pushArgs(ctx.dlq, queue, ['precious'])
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--visibility', '1s', '--exec', '--',
        'sh', '-c', 'exec >/dev/null 2>&1 </dev/null; echo $$ > "$1/started"; exec sleep 20', SH0, dir], {t})
      const pid = await waitFor(async () => {
        const text = (await readText(join(dir, 'started'))).trim()
        return /^\d+$/.test(text) && trackPid(text)
      }, {what: 'the worker command to start'})
      t.after(() => killPid(pid))
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight]), [0, 1])
      const gone = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '0'])
      assert.equal(gone.code, 75, 'the reserved message is invisible to others')

      worker.kill('SIGKILL')
      const killedAt = Date.now()
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '8s', '--json'])
      const took = Date.now() - killedAt
      assert.equal(r.code, 0, r.stderr)
      const [message, ...more] = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l))
      assert.equal(more.length, 0)
      assert.equal(message.body, 'precious')
      assert.equal(message.attempts, 2)
      assert.ok(took < 6000, `redelivered ${took}ms after the kill, with --visibility 1s`)
      killPid(pid)
    })

    it('--exec: the command gets the body on stdin, DLQ_MESSAGE_ID and DLQ_MESSAGE_ATTEMPT; exit 0 acks', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('ack')
      const pushed = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--json', '--', 'body one\nwith two lines'])
      assert.equal(pushed.code, 0, pushed.stderr)
      const [id] = JSON.parse(pushed.stdout).ids
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--exec', '--',
        'sh', '-c', 'cat > "$1/body"; printf "%s\\n%s\\n" "$DLQ_MESSAGE_ID" "$DLQ_MESSAGE_ATTEMPT" > "$1/env"', SH0, dir])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(await readText(join(dir, 'body')), 'body one\nwith two lines')
      assert.deepEqual((await readText(join(dir, 'env'))).split('\n').slice(0, 2), [id, '1'])
      const stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight, stats.dead], [0, 0, 0], 'acked: gone for good')
      const empty = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(empty.code, 75)
    })

    it('--exec works through the waiting messages one at a time, in order, then stops (no --count, --wait 0)', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('many')
      await pushArgs(ctx.dlq, queue, ['m1', 'm2', 'm3'])
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--exec', '--',
        'sh', '-c', '{ cat; echo " $DLQ_MESSAGE_ATTEMPT"; } >> "$1/log"', SH0, dir])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(await readText(join(dir, 'log')), 'm1 1\nm2 1\nm3 1\n')
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 0, 0])
    })

    it("--exec passes the command's arguments verbatim: repeated words, words that look like dlq flags", async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('argv')
      await pushArgs(ctx.dlq, queue, ['m1'])
      const log = join(dir, 'log')
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--max-attempts', '1', '--exec', '--',
        'sh', '-c', '{ cat; printf " [%s]" "$@"; echo; } >> "$0"', log, 'a', 'b', 'a', '--queue', 'x'])
      assert.equal(await readText(log), 'm1 [a] [b] [a] [--queue] [x]\n', r.stderr)
      assert.equal(r.code, 0, r.stderr)
    })

    it('--exec --retry-delay 0: a failing command returns the message at once; after --max-attempts 2 it is in Q.dead', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('dead')
      await pushArgs(ctx.dlq, queue, ['poison'])
      const failing = ['sh', '-c', 'cat > /dev/null; echo "$DLQ_MESSAGE_ID $DLQ_MESSAGE_ATTEMPT" >> "$1/attempts"; exit 3', SH0, dir]

      const first = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--max-attempts', '2', '--retry-delay', '0', '--exec', '--', ...failing])
      assert.notEqual(first.code, 75, first.stderr)
      let stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight, stats.dead], [1, 0, 0], 'returned for retry after attempt 1')

      const second = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--max-attempts', '2', '--retry-delay', '0', '--exec', '--', ...failing])
      assert.notEqual(second.code, 75, second.stderr)
      stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight, stats.dead], [0, 0, 1], 'dead after attempt 2')

      const attempts = (await readText(join(dir, 'attempts'))).trim().split('\n').map((l) => l.split(' '))
      assert.equal(attempts.length, 2)
      assert.equal(attempts[0][0], attempts[1][0], 'the same message both times')
      assert.deepEqual(attempts.map((a) => a[1]), ['1', '2'])

      const none = await ctx.dlq.run(['queue', 'pop', '--queue', queue])
      assert.equal(none.code, 75, 'a dead message is not delivered from Q')
      const dead = await drainJson(ctx.dlq, `${queue}.dead`)
      assert.deepEqual(dead.map((m) => m.body), ['poison'])
      assert.equal((await queueStats(ctx.dlq, queue)).dead, 0)
    })

    it('--retry-delay: a failed message comes back only after its delay, doubled per attempt; the worker handles others meanwhile; dead after --max-attempts', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('backoff')
      await pushArgs(ctx.dlq, queue, ['poison', 'fine'])
      // Each run records its start, and a failing one its failure just before it exits: the failure
      // happens before dlq settles the message, so start − failure is at most the real delay.
      const handler = ['sh', '-c', `body=$(cat); echo "start $body $DLQ_MESSAGE_ATTEMPT $(date +%s%3N)" >> "$1/log"
        [ "$body" = fine ] && exit 0
        echo "fail $body $DLQ_MESSAGE_ATTEMPT $(date +%s%3N)" >> "$1/log"; exit 3`, SH0, dir]
      const delayMs = 2000
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '4', '--wait', '1h', '--max-attempts', '3', '--retry-delay', '2s', '--exec', '--', ...handler], {timeoutMs: 90_000})
      assert.equal(r.code, 0, r.stderr)
      const log = (await readText(join(dir, 'log'))).trim().split('\n').map((l) => l.split(' '))
      assert.deepEqual(log.map(([what, body, attempt]) => `${what} ${body} ${attempt}`),
        ['start poison 1', 'fail poison 1', 'start fine 1', 'start poison 2', 'fail poison 2', 'start poison 3', 'fail poison 3'],
        'the second message is handled while the first waits out its delay; three deliveries of the first')
      const at = (what, attempt) => Number(log.find((l) => l[0] === what && l[1] === 'poison' && l[2] === String(attempt))[3])
      const gaps = [at('start', 2) - at('fail', 1), at('start', 3) - at('fail', 2)]
      assert.ok(gaps[0] >= delayMs, `the second attempt started ${gaps[0]}ms after the first failed, with --retry-delay 2s`)
      assert.ok(gaps[1] >= 2 * delayMs, `the third attempt started ${gaps[1]}ms after the second failed: the delay doubles`)
      assert.match(r.stderr, /attempt 1 of 3\): sh exited 3; retried in 2(\.\d)?s\n/)
      assert.match(r.stderr, /attempt 3 of 3\): sh exited 3; moved to .*\.dead\n/)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 0, 1], 'dead after its third delivery')
      assert.deepEqual((await drainJson(ctx.dlq, `${queue}.dead`)).map((m) => m.body), ['poison'])
    })

    it('--retry-delay: a message waiting out its delay counts as in flight and no pop or worker takes it meanwhile', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('later')
      await pushArgs(ctx.dlq, queue, ['again'])
      const failed = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--json', '--retry-delay', '1h', '--exec', '--', 'sh', '-c', 'cat > /dev/null; exit 3'])
      assert.equal(failed.code, 0, failed.stderr)
      const {warning} = JSON.parse(failed.stderrLines[0])
      assert.deepEqual([warning.attempt, warning.exitCode], [1, 3])
      assert.ok(warning.retryDelayMs >= 3_600_000 && warning.retryDelayMs <= 4_500_000, `retryDelayMs ${warning.retryDelayMs}`)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 1, 0])
      const none = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '0'])
      assert.equal(none.code, 75, none.stderr)
      const worker = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--exec', '--', 'sh', '-c', 'touch "$1/ran"', SH0, dir])
      assert.equal(worker.code, 75, worker.stderr)
      assert.equal(existsSync(join(dir, 'ran')), false, 'no handler ran')
      const tail = await ctx.dlq.run(['queue', 'tail', '--queue', queue])
      assert.equal(tail.stdout, '', 'not among the waiting messages')
    })

    // A handler of the --concurrency tests: marks itself running, records its start and how many
    // were running then (itself included), waits for $1/go, unmarks itself, records its end. A
    // fifth handler beside four that wait for go would count five.
    const concurrent = (dir) => ['sh', '-c', `body=$(cat)
      trap 'echo "term $body" >> "$1/log"; rm -f "$1/running.$body"; exit 3' TERM
      touch "$1/running.$body"; echo "start $body $(ls "$1" | grep -c '^running\.')" >> "$1/log"
      ${shUntil('[ -e "$1/go" ]', 60)}
      rm -f "$1/running.$body"; echo "done $body" >> "$1/log"`, SH0, dir]
    const running = async (dir) => (await readdir(dir)).filter((n) => n.startsWith('running.')).length
    const logOf = async (dir) => (await readText(join(dir, 'log'))).trim().split('\n').filter(Boolean).map((l) => l.split(' '))

    it('--concurrency 4 runs four handlers at once and never more, each message once', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('team')
      const bodies = Array.from({length: 10}, (_v, i) => `m${i + 1}`)
      await pushArgs(ctx.dlq, queue, bodies)
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--concurrency', '4', '--exec', '--', ...concurrent(dir)], {t, timeoutMs: 90_000})
      await waitFor(async () => (await running(dir)) === 4, {timeoutMs: 30_000, what: 'four handlers running at once'})
      await stillFalse(async () => (await running(dir)) > 4 || (await logOf(dir)).filter(([what]) => what === 'start').length > 4,
        {forMs: 1000, what: 'a fifth handler starting while four run'})
      await writeFile(join(dir, 'go'), '')
      const r = await worker.result
      assert.equal(r.code, 0, r.stderr)
      const log = await logOf(dir)
      const starts = log.filter(([what]) => what === 'start')
      assert.deepEqual(starts.map(([, body]) => body).sort(), [...bodies].sort(), 'every message handled once')
      assert.deepEqual(log.filter(([what]) => what === 'done').map(([, body]) => body).sort(), [...bodies].sort())
      assert.ok(starts.every(([, , count]) => Number(count) <= 4), `at most four at once: ${starts.map((s) => s.join(' ')).join(', ')}`)
      assert.equal(starts.slice(0, 4).map(([, , count]) => Number(count)).includes(4), true, 'the fourth saw the other three')
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 0, 0])
    })

    it('--concurrency with --count N handles N messages in all; on an empty queue it exits 75', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('team-count')
      await pushArgs(ctx.dlq, queue, ['a', 'b', 'c', 'd', 'e', 'f', 'g'])
      await writeFile(join(dir, 'go'), '')
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--concurrency', '3', '--count', '5', '--exec', '--', ...concurrent(dir)], {timeoutMs: 60_000})
      assert.equal(r.code, 0, r.stderr)
      assert.equal((await logOf(dir)).filter(([what]) => what === 'done').length, 5)
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [2, 0, 0])
      const empty = await ctx.dlq.run(['queue', 'pop', '--queue', uniqueName('team-empty'), '--concurrency', '4', '--exec', '--', 'true'])
      assert.equal(empty.code, 75, empty.stderr)
    })

    it('--concurrency: SIGTERM goes to every running handler, no new one starts, the worker exits 143 once they have', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('team-term')
      await pushArgs(ctx.dlq, queue, ['a', 'b', 'c', 'd', 'e'])
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--concurrency', '3', '--retry-delay', '0', '--exec', '--', ...concurrent(dir)], {t, timeoutMs: 90_000})
      // Their start lines written: each has its trap set.
      await waitFor(async () => (await logOf(dir)).filter(([what]) => what === 'start').length === 3, {timeoutMs: 30_000, what: 'three handlers running at once'})
      worker.kill('SIGTERM')
      const r = await worker.result
      assert.equal(r.code, 143, r.stderr)
      const log = await logOf(dir)
      assert.equal(log.filter(([what]) => what === 'start').length, 3, 'no handler started after the signal')
      assert.equal(log.filter(([what]) => what === 'term').length, 3, 'each running handler got SIGTERM')
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [5, 0, 0], 'the three failed ones returned, two never taken')
    })

    it('--concurrency whose handler cannot start exits 127 with one line; every message stays, no attempt counted', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('team-unstartable')
      await pushArgs(ctx.dlq, queue, ['m1', 'm2', 'm3', 'm4', 'm5'])
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '1h', '--concurrency', '3', '--exec', '--', './hadle.sh'], {cwd: dir})
      assert.equal(r.code, 127, r.stderr)
      assert.match(oneErrorLine(r, assert), /^dlq: cannot run "\.\/hadle\.sh": command not found \(message \S+ stays in /)
      const messages = await drainJson(ctx.dlq, queue)
      assert.deepEqual(messages.map((m) => [m.body, m.attempts]).sort(), ['m1', 'm2', 'm3', 'm4', 'm5'].map((b) => [b, 1]), 'each still on its first delivery')
    })

    it('--exec whose handler cannot start (not found: 127, not executable: 126) exits at once with one line; every message stays, no attempt counted', async (t) => {
      const dir = await tempDir(t)
      await writeFile(join(dir, 'not-executable.sh'), '#!/bin/sh\nexit 0\n', {mode: 0o644})
      const queue = uniqueName('unstartable')
      await pushArgs(ctx.dlq, queue, ['m1', 'm2', 'm3'])
      for (const [handler, code, why] of [['./hadle.sh', 127, 'command not found'], ['./not-executable.sh', 126, 'permission denied'], ['no-such-handler-on-path', 127, 'command not found']]) {
        // --wait 1h and no --count: a worker that went on (or waited for the next message) would
        // outlive the test's deadline.
        const r = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '1h', '--exec', '--', handler, 'arg'], {cwd: dir})
        assert.equal(r.code, code, `${handler}: ${r.stderr}`)
        const line = oneErrorLine(r, assert)
        assert.match(line, new RegExp(`^dlq: cannot run "${handler.replace('.', '\\.')}": ${why} \\(message \\S+ stays in "${queue}", not counted as an attempt\\)$`), handler)
        assert.equal(r.stdout, '')
        const stats = await queueStats(ctx.dlq, queue)
        assert.deepEqual([stats.waiting, stats.inFlight, stats.dead], [3, 0, 0], `${handler}: nothing in flight, nothing dead`)
      }
      const json = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--json', '--exec', '--', './hadle.sh'], {cwd: dir})
      assert.equal(json.code, 127, json.stderr)
      assert.equal(json.stderrLines.length, 1, json.stderr)
      assert.deepEqual([JSON.parse(json.stderrLines[0]).error.code, JSON.parse(json.stderrLines[0]).error.why], [127, 'command not found'])
      const messages = await drainJson(ctx.dlq, queue)
      assert.deepEqual(messages.map((m) => [m.body, m.attempts]), [['m1', 1], ['m2', 1], ['m3', 1]], 'in order, each still on its first delivery')
      assert.equal((await queueStats(ctx.dlq, `${queue}.dead`)).waiting, 0)
    })

    it('a dead letter is delivered from Q.dead as a message of its own, attempts counted afresh', async () => {
      const queue = uniqueName('redead')
      await pushArgs(ctx.dlq, queue, ['poison'])
      const failed = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--max-attempts', '1', '--exec', '--', 'sh', '-c', 'cat > /dev/null; exit 3'])
      assert.notEqual(failed.code, 75, failed.stderr)
      assert.equal((await queueStats(ctx.dlq, queue)).dead, 1, 'dead after its one attempt')
      // Popped with the same --max-attempts, it is delivered (attempt 1), not buried again in Q.dead.dead.
      const r = await ctx.dlq.run(['queue', 'pop', '--queue', `${queue}.dead`, '--max-attempts', '1', '--json'])
      assert.equal(r.code, 0, r.stderr)
      const message = JSON.parse(r.stdout)
      assert.deepEqual([message.body, message.attempts], ['poison', 1])
      assert.deepEqual(await queueStats(ctx.dlq, `${queue}.dead`).then((s) => [s.waiting, s.inFlight, s.dead]), [0, 0, 0])
    })

    it('queue status --json reports waiting, inFlight and dead', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('status')
      await pushArgs(ctx.dlq, queue, ['a', 'b', 'c'])
      assert.deepEqual(await queueStats(ctx.dlq, queue).then((s) => [s.waiting, s.inFlight, s.dead]), [3, 0, 0])
      const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '1', '--exec', '--',
        'sh', '-c', `touch "$1/busy"; ${shUntil('[ -e "$1/go" ]')}`, SH0, dir], {t})
      await waitFor(() => existsSync(join(dir, 'busy')), {what: 'the worker to start'})
      const busy = await queueStats(ctx.dlq, queue)
      assert.deepEqual([busy.waiting, busy.inFlight, busy.dead], [2, 1, 0])
      await writeFile(join(dir, 'go'), '')
      assert.equal((await worker.result).code, 0)
      const done = await queueStats(ctx.dlq, queue)
      assert.deepEqual([done.waiting, done.inFlight, done.dead], [2, 0, 0])

      const failed = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--max-attempts', '1', '--exec', '--', 'false'])
      assert.notEqual(failed.code, 75)
      const dead = await queueStats(ctx.dlq, queue)
      assert.deepEqual([dead.waiting, dead.inFlight, dead.dead], [1, 0, 1])

      const everything = await ctx.dlq.run(['queue', 'status', '--json'])
      assert.equal(everything.code, 0, everything.stderr)
      const mine = JSON.parse(everything.stdout).queues.find((s) => s.queue === queue)
      assert.deepEqual([mine?.waiting, mine?.inFlight, mine?.dead], [1, 0, 1], 'the same numbers in the list of all queues')
    })
  })
}
