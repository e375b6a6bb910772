// Conformance: reader/writer locks, `--shared` (SPEC §2), against every backend. Shared holders hold
// together, an exclusive holder alone; a waiting exclusive request keeps newly arriving shared ones
// out (writer preference); fencing tokens strictly increase whatever the mode; `lock status` shows
// each holder's mode.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {oneErrorLine, shUntil, stillFalse, tempDir, uniqueName, waitFor} from '../support/cli.mjs'

const SH0 = 'dlq-test-sh'
const readText = (path) => readFile(path, 'utf8').catch(() => '')

const statusOf = async (dlq, key) => {
  const r = await dlq.run(['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks
}

const acquire = async (dlq, key, ...flags) => {
  const r = await dlq.run(['lock', 'acquire', '--key', key, '--ttl', '60s', '--wait', '0', '--json', ...flags])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout)
}

const release = async (dlq, key, token) => {
  const r = await dlq.run(['lock', 'release', '--key', key, '--token', token])
  assert.equal(r.code, 0, r.stderr)
}

/**
 * Until `child` waits for `key` as the backend sees it: counted in `lock status` where the backend
 * can tell (waiters, queue), else (file) once its --verbose log shows an acquisition found busy.
 */
const untilWaiting = (dlq, key, child, what) =>
  waitFor(async () => {
    if (child.exited) throw new Error(`it exited: ${child.stderrText()}`)
    const [lock] = await statusOf(dlq, key)
    if (lock === undefined) return false
    if (lock.queue !== null) return lock.queue.length >= 1
    if (lock.waiters !== null) return lock.waiters >= 1
    return /: busy/.test(child.stderrText())
  }, {what})

for (const backend of backends) {
  describe(`shared locks [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})

    it('lock acquire --shared twice: both hold, status shows two shared holders, an exclusive request gets 75; release --token frees them', async () => {
      const key = uniqueName('readers')
      const first = await acquire(ctx.dlq, key, '--shared')
      const second = await acquire(ctx.dlq, key, '--shared')
      assert.ok(BigInt(second.fencingToken) > BigInt(first.fencingToken), `fencing tokens increase: ${first.fencingToken} then ${second.fencingToken}`)

      const [lock] = await statusOf(ctx.dlq, key)
      assert.deepEqual(lock.holders.map((h) => [h.token, h.mode]), [[first.token, 'shared'], [second.token, 'shared']])
      const table = await ctx.dlq.run(['lock', 'status', '--key', key])
      assert.equal(table.code, 0, table.stderr)
      assert.match(table.stdout, /\bMODE\b/)
      assert.equal(table.stdout.split('\n').filter((line) => /\bshared\b/.test(line)).length, 2, table.stdout)

      const writer = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--wait', '0'])
      assert.equal(writer.code, 75, writer.stderr)
      assert.match(oneErrorLine(writer, assert), /held \(shared\) by/)

      await release(ctx.dlq, key, first.token)
      const stillHeld = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--wait', '0'])
      assert.equal(stillHeld.code, 75, 'one shared holder is enough to keep a writer out')
      await release(ctx.dlq, key, second.token)

      const exclusive = await acquire(ctx.dlq, key)
      assert.ok(BigInt(exclusive.fencingToken) > BigInt(second.fencingToken))
      const [held] = await statusOf(ctx.dlq, key)
      assert.deepEqual(held.holders.map((h) => h.mode), ['exclusive'])
      const reader = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--shared', '--wait', '0'])
      assert.equal(reader.code, 75, 'a shared request waits for an exclusive holder')
      oneErrorLine(reader, assert)
      await release(ctx.dlq, key, exclusive.token)
      assert.deepEqual(await statusOf(ctx.dlq, key), [])
    })

    it('two lock run --shared commands are inside at once', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('together')
      // Each says it is in, then waits until the other one is in too: only possible together.
      const script = `touch "$1/in-$2"; ${shUntil('[ -e "$1/in-$3" ]', 20)}; [ -e "$1/in-$3" ]`
      const [a, b] = await Promise.all([
        ctx.dlq.run(['lock', 'run', '--key', key, '--shared', '--wait', '30s', '--', 'sh', '-c', script, SH0, dir, 'a', 'b'], {timeoutMs: 40_000}),
        ctx.dlq.run(['lock', 'run', '--key', key, '--shared', '--wait', '30s', '--', 'sh', '-c', script, SH0, dir, 'b', 'a'], {timeoutMs: 40_000}),
      ])
      assert.equal(a.code, 0, a.stderr)
      assert.equal(b.code, 0, b.stderr)
    })

    it('an exclusive lock run waits for every shared holder to release, then runs', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('writer-waits')
      const readers = [await acquire(ctx.dlq, key, '--shared'), await acquire(ctx.dlq, key, '--shared')]
      const writer = ctx.dlq.spawn(['lock', 'run', '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo in > "$1/writer"', SH0, dir], {t, timeoutMs: 70_000})
      const ran = () => existsSync(join(dir, 'writer'))
      await stillFalse(ran, {forMs: 500, what: 'the writer ran beside two shared holders'})
      await release(ctx.dlq, key, readers[0].token)
      await stillFalse(ran, {forMs: 300, what: 'the writer ran beside one shared holder'})
      await release(ctx.dlq, key, readers[1].token)
      const {code, stderr} = await writer.result
      assert.equal(code, 0, stderr)
      assert.ok(ran())
    })

    it('a shared lock run waits for the exclusive holder, then runs', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('reader-waits')
      const holder = await acquire(ctx.dlq, key)
      const reader = ctx.dlq.spawn(['lock', 'run', '--key', key, '--shared', '--wait', '60s', '--', 'sh', '-c', 'echo in > "$1/reader"', SH0, dir], {t, timeoutMs: 70_000})
      const ran = () => existsSync(join(dir, 'reader'))
      await stillFalse(ran, {forMs: 500, what: 'the reader ran beside the exclusive holder'})
      await release(ctx.dlq, key, holder.token)
      const {code, stderr} = await reader.result
      assert.equal(code, 0, stderr)
      assert.ok(ran())
    })

    it('writer preference: once an exclusive request waits, a new shared one waits behind it (75 with --wait 0), and runs after it', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('no-starving')
      const log = join(dir, 'log')
      const reader = await acquire(ctx.dlq, key, '--shared')
      const writer = ctx.dlq.spawn(['lock', 'run', '--verbose', '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo writer >> "$1"', SH0, log], {t, timeoutMs: 70_000})
      await untilWaiting(ctx.dlq, key, writer, 'the exclusive request to wait')

      const newcomer = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--shared', '--wait', '0'])
      assert.equal(newcomer.code, 75, `a shared request admitted past a waiting writer: ${newcomer.stderr}${newcomer.stdout}`)
      oneErrorLine(newcomer, assert)
      const late = ctx.dlq.spawn(['lock', 'run', '--key', key, '--shared', '--wait', '60s', '--', 'sh', '-c', 'echo reader >> "$1"', SH0, log], {t, timeoutMs: 70_000})
      await stillFalse(async () => (await readText(log)) !== '', {forMs: 500, what: 'a command ran while the first reader held'})

      await release(ctx.dlq, key, reader.token)
      const [w, r] = await Promise.all([writer.result, late.result])
      assert.equal(w.code, 0, w.stderr)
      assert.equal(r.code, 0, r.stderr)
      assert.equal(await readText(log), 'writer\nreader\n', 'the writer that waited first runs first')
    })

    it('a writer that gives up its wait lets the shared requests behind it in', async (t) => {
      const key = uniqueName('writer-gives-up')
      const reader = await acquire(ctx.dlq, key, '--shared')
      const writer = ctx.dlq.spawn(['lock', 'run', '--verbose', '--key', key, '--wait', '60s', '--', 'true'], {t, timeoutMs: 70_000})
      await untilWaiting(ctx.dlq, key, writer, 'the exclusive request to wait')
      const blocked = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--shared', '--wait', '0'])
      assert.equal(blocked.code, 75, blocked.stderr)
      writer.kill('SIGINT')
      const gone = await writer.result
      assert.equal(gone.code, 130, gone.stderr)
      // Let go at once (not at the end of its place's time): a shared request is admitted again.
      const second = await acquire(ctx.dlq, key, '--shared')
      const [lock] = await statusOf(ctx.dlq, key)
      assert.deepEqual(lock.holders.map((h) => h.token).sort(), [reader.token, second.token].sort())
      await release(ctx.dlq, key, reader.token)
      await release(ctx.dlq, key, second.token)
    })

    it('DLQ_FENCING_TOKEN strictly increases across shared and exclusive acquisitions alike', async () => {
      const key = uniqueName('fencing')
      const tokens = []
      for (const mode of [['--shared'], [], ['--shared'], ['--shared'], [], []]) {
        const r = await ctx.dlq.run(['lock', 'run', '--key', key, ...mode, '--', 'sh', '-c', 'printf %s "$DLQ_FENCING_TOKEN"'])
        assert.equal(r.code, 0, r.stderr)
        assert.match(r.stdout, /^\d+$/)
        tokens.push(BigInt(r.stdout))
      }
      for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `token ${tokens[i]} after ${tokens[i - 1]}`)
    })

    it('--shared with --limit above 1 is a usage error (64), one line; --limit 1 is allowed', async () => {
      const key = uniqueName('shared-limit')
      for (const args of [['lock', 'run', '--key', key, '--shared', '--limit', '2', '--', 'true'], ['lock', 'acquire', '--key', key, '--shared', '--limit', '3']]) {
        const r = await ctx.dlq.run(args)
        assert.equal(r.code, 64, r.stderr)
        assert.match(oneErrorLine(r, assert), /--shared and --limit/)
      }
      const ok = await ctx.dlq.run(['lock', 'run', '--key', key, '--shared', '--limit', '1', '--', 'true'])
      assert.equal(ok.code, 0, ok.stderr)
    })
  })
}
