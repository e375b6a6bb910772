// Conformance: the waiting line (SPEC §2, issue 11 item 8). On a terminal, while dlq waits (lock
// run, lock acquire, queue pop --wait, a worker between messages), one line says for how long
// and for what; it is refreshed in place, cut to the terminal's width, and erased when the wait
// ends, so an 80-column terminal keeps no stale rows. Run on a real pseudo-terminal (script(1)),
// whose screen is modelled in test/support/terminal.mjs; against every backend.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {shUntil, stillFalse, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {onTerminal, screenOf, widthOf} from '../support/terminal.mjs'
import {pushArgs} from '../support/queues.mjs'

const COLUMNS = 80
const SH0 = 'dlq-test-sh'
// Long enough, and wide enough (CJK takes two columns), that an uncut line would wrap.
const longName = (label) => `${uniqueName(label)}-漢字の鍵-${'x'.repeat(60)}`

/** The waiting lines as drawn: every piece of output between two \r that holds one, without its erase. */
const waitingLines = (output) => output.split('\r').map((piece) => piece.replaceAll('\u001b[2K', '').replace(/\n$/, '')).filter((piece) => piece.includes('dlq: waiting'))

/** Waits until the waiting line was drawn at least twice (it is refreshed while dlq waits). */
const refreshed = (terminal, what) => waitFor(() => waitingLines(terminal.output()).length >= 2, {timeoutMs: 15_000, what: `the waiting line of ${what}, twice: ${JSON.stringify(terminal.output().slice(-300))}`})

function checkScreen(output, what, expectedRow) {
  const lines = waitingLines(output)
  assert.ok(lines.length >= 2, `${what}: the waiting line was drawn ${lines.length} times`)
  for (const line of lines) assert.ok(widthOf(line) <= COLUMNS - 1, `${what}: a waiting line of ${widthOf(line)} columns on an ${COLUMNS}-column terminal: ${line}`)
  assert.ok(lines.some((line) => line.endsWith('…')), `${what}: the long line was cut to fit: ${lines[0]}`)
  const screen = screenOf(output, COLUMNS)
  assert.deepEqual(screen.filter((row) => row.includes('waiting') || row.includes('x'.repeat(20))), [], `${what}: rows left on the screen:\n${screen.join('\n')}`)
  assert.ok(screen.some((row) => expectedRow.test(row)), `${what}: the screen shows ${expectedRow}:\n${screen.join('\n')}`)
}

for (const backend of backends) {
  describe(`the waiting line [${backend.name}]`, {concurrency: 2}, () => {
    const ctx = useBackend(backend, {before, after})

    it('lock run and lock acquire on an 80-column terminal: refreshed, cut to fit, and gone once the lock is taken', async (t) => {
      for (const [what, waiter, expectedRow] of [
        ['lock run', (key) => ['lock', 'run', '-b', ctx.dlq.url, '--key', key, '--', 'echo', 'ran'], /^ran$/],
        ['lock acquire', (key) => ['lock', 'acquire', '-b', ctx.dlq.url, '--key', key, '--wait', '30s'], /^\S+-\S+-\S+$/],
      ]) {
        const dir = await tempDir(t)
        const key = longName('wait')
        // A holder whose command line is long too: the line describes it.
        const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--', 'sh', '-c', `touch "$1/held"; ${shUntil('[ -e "$1/go" ]')}`, SH0, dir, 'a long argument '.repeat(5)], {t})
        await waitFor(() => existsSync(join(dir, 'held')), {what: 'the holder'})
        const terminal = onTerminal(waiter(key), {columns: COLUMNS, t})
        await refreshed(terminal, what)
        await writeFile(join(dir, 'go'), '')
        assert.equal((await holder.result).code, 0)
        const {code, output} = await terminal.result
        assert.equal(code, 0, `${what}: ${output}`)
        checkScreen(output, what, expectedRow)
      }
    })

    it('queue pop --wait and a worker waiting for its next message: the line on a terminal, gone when the message comes; none on a pipe', async (t) => {
      for (const [what, flags, expectedRow] of [
        ['queue pop --wait', ['--wait', '30s'], /^first$/],
        ['queue pop --exec', ['--wait', '30s', '--count', '1', '--exec', '--', 'sed', 's/^/handled /'], /^handled first$/],
      ]) {
        const queue = longName('pop')
        const terminal = onTerminal(['queue', 'pop', '-b', ctx.dlq.url, '--queue', queue, ...flags], {columns: COLUMNS, t})
        await refreshed(terminal, what)
        await pushArgs(ctx.dlq, queue, ['first'])
        const {code, output} = await terminal.result
        assert.equal(code, 0, `${what}: ${output}`)
        checkScreen(output, what, expectedRow)
      }
      // Not a terminal: no line at all (stderr stays clean for scripts).
      const queue = uniqueName('pop-pipe')
      const popper = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--wait', '30s'], {t})
      await stillFalse(() => popper.stderrText() !== '', {forMs: 1500, what: 'a waiting line on a pipe'}) // long past the moment it would show
      await pushArgs(ctx.dlq, queue, ['first'])
      const r = await popper.result
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'first\n')
      assert.equal(r.stderr, '')
    })
  })
}
