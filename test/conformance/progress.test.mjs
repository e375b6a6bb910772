// Conformance: long work shows its progress on a terminal (issue 15): a push that lasts, and a
// large pop --count whose messages go elsewhere, draw one line on stderr (as the waiting line is
// drawn: refreshed in place, cut to the width, erased at the end); on a pipe, nothing. Run on a
// real pseudo-terminal (script(1)); the work is held open (its input, or its reader) until the
// test has seen the line.
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {PassThrough} from 'node:stream'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {runProgram, shUntil, stillFalse, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {onTerminal, screenOf} from '../support/terminal.mjs'

const COLUMNS = 80
/** The progress lines as drawn: every piece between two \r that holds one, without its erase. */
const progressLines = (output, word) => output.split('\r').map((piece) => piece.replaceAll('\u001b[2K', '').replace(/\n$/, '')).filter((piece) => piece.startsWith(`dlq: ${word}`))
const lines = (from, to) => Array.from({length: to - from}, (_, i) => `message ${String(from + i).padStart(6, '0')} ${'x'.repeat(80)}\n`).join('')

for (const backend of backends) {
  describe(`progress on a terminal [${backend.name}]`, {concurrency: 2}, () => {
    const ctx = useBackend(backend, {before, after})

    it('a push that lasts shows how many messages went so far and at what rate, erased at the end; nothing on a pipe', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('progress-push')
      // 2,500 lines (more than a batch), then the input stays open until the test has seen the line.
      const from = `seq 1 2500; ${shUntil(`[ -e ${join(dir, 'go')} ]`, 30)}; seq 2501 2600`
      const terminal = onTerminal(['queue', 'push', '-b', ctx.dlq.url, '--queue', queue], {columns: COLUMNS, from, t})
      await waitFor(() => progressLines(terminal.output(), 'pushed').some((line) => /^dlq: pushed [1-9][\d,]* messages \([\d,]+\/s\) to "/.test(line)), {timeoutMs: 20_000, what: `the progress line of push: ${JSON.stringify(terminal.output().slice(-300))}`})
      await writeFile(join(dir, 'go'), '')
      const {code, output} = await terminal.result
      assert.equal(code, 0, output)
      assert.deepEqual(screenOf(output, COLUMNS).filter((row) => row.includes('pushed')), [], `the line is erased: ${JSON.stringify(output)}`)
      const status = await ctx.dlq.run(['queue', 'status', '--queue', queue, '--json'])
      assert.equal(JSON.parse(status.stdout).queues[0].waiting, 2600)

      // The same push with stderr on a pipe: nothing on it, however long the push lasts.
      const input = new PassThrough()
      const piped = ctx.dlq.spawn(['queue', 'push', '--queue', uniqueName('progress-pipe')], {input, t})
      input.write(lines(0, 2500))
      await stillFalse(() => piped.stderrText() !== '', {forMs: 1500, what: 'a progress line on a pipe'}) // long past the moment it shows on a terminal
      input.end()
      const r = await piped.result
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stderr, '')
    })

    it('a pop --count into a slow reader shows how many were popped of how many, erased at the end', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('progress-pop')
      const pushed = await ctx.dlq.run(['queue', 'push', '--queue', queue], {input: lines(0, 2500)})
      assert.equal(pushed.code, 0, pushed.stderr)
      // stdout into a FIFO whose reader takes a little, then waits for the test: 2,500 messages of
      // 100 bytes are more than a pipe holds, so the pop lasts until the test has seen its line.
      const fifo = join(dir, 'out')
      assert.equal((await runProgram('mkfifo', [fifo])).code, 0)
      const reader = runProgram('sh', ['-c', `exec 3<"$1"; head -c 100 <&3 >/dev/null; ${shUntil('[ -e "$2" ]', 30)}; cat <&3 >"$3"`, 'dlq-test-sh', fifo, join(dir, 'go'), join(dir, 'rest')])
      const terminal = onTerminal(['queue', 'pop', '-b', ctx.dlq.url, '--queue', queue, '--count', '5000'], {columns: COLUMNS, to: fifo, t})
      await waitFor(() => progressLines(terminal.output(), 'popped').some((line) => /^dlq: popped [1-9][\d,]* messages \([\d,]+\/s\) of 5,000 from "/.test(line)), {timeoutMs: 20_000, what: `the progress line of pop: ${JSON.stringify(terminal.output().slice(-300))}`})
      await writeFile(join(dir, 'go'), '')
      const {code, output} = await terminal.result
      assert.equal(code, 0, output)
      assert.equal((await reader).code, 0)
      assert.deepEqual(screenOf(output, COLUMNS).filter((row) => row.includes('popped')), [], `the line is erased: ${JSON.stringify(output)}`)
      assert.match(await readFile(join(dir, 'rest'), 'utf8'), /message 002499 x+\n$/)
    })
  })
}
