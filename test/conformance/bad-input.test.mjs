// Conformance: bad input tried as a new user would (issue 6, item 2), against every backend in
// test/support/backends.mjs. Each case checks the same four things: exactly one clear line on
// stderr (no stack trace, no password), the SPEC §4 exit code, nothing lost (the queue's contents
// afterwards) and nothing left locked (status, or a following `lock run --wait 0`).
//
// Covered elsewhere, not repeated here: unknown schemes, malformed URLs, bad flags, durations,
// --limit 0, --count 0 and invalid names (usage.test.mjs, once: they are refused before any
// backend is opened); wrong passwords (test/redis, test/postgres, test/zookeeper); hostile but
// valid names with `/`, `..` and unicode (lock-admin.test.mjs, queues.test.mjs); `pop | head -1`
// with messages bigger than a pipe (queues.test.mjs); the file backend's directory (test/file).
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {BIN, NODE, oneErrorLine, runProgram, uniqueName} from '../support/cli.mjs'
import {freePort} from '../support/servers.mjs'
import {drainJson, pushArgs, pushInput, queueStats} from '../support/queues.mjs'

const SECRET = 'n0t-pr1nted-pw'

/** The same backend, moved to a port nobody listens on, with a password to look for in the output. */
async function unreachable(url) {
  if (url.startsWith('file:')) return `file:///nonexistent-${uniqueName('dir')}`
  // A host list (postgres-multihost), which WHATWG URL cannot parse: two closed ports instead.
  if (/^postgres:\/\/[^/]*,/.test(url)) {
    return url.replace(/^(postgres:\/\/[^:@/]+):[^@]*@[^/]*\//, `$1:${SECRET}@127.0.0.1:${await freePort()},127.0.0.1:${await freePort()}/`)
  }
  const moved = new URL(url)
  moved.hostname = '127.0.0.1'
  moved.port = String(await freePort())
  moved.username ||= 'dlq_user'
  moved.password = SECRET
  if (moved.protocol === 'zk:') moved.searchParams.set('connectTimeout', '1s')
  return moved.href
}

/** Every command a user might try first, with the words after `-b URL`. */
const everyCommand = (key) => [
  ['lock', 'status'],
  ['lock', 'status', '--key', key],
  ['lock', 'run', '--key', key, '--', 'true'],
  ['lock', 'acquire', '--key', key],
  ['lock', 'renew', '--key', key, '--token', 'some-token'],
  ['lock', 'release', '--key', key, '--token', 'some-token'],
  ['lock', 'release', '--key', key, '--force'],
  ['queue', 'push', '--queue', key, 'message'],
  ['queue', 'pop', '--queue', key],
  ['queue', 'pop', '--queue', key, '--exec', '--', 'true'],
  ['queue', 'tail', '--queue', key],
  ['queue', 'tail', '--queue', key, '--follow'],
  ['queue', 'status'],
]

/** `sh -c SCRIPT` with dlq as "$@": for redirections a test cannot express with spawn's stdio. */
const shWithDlq = (script, url, args, opts) => runProgram('sh', ['-c', script, 'dlq-test-sh', NODE, BIN, args[0], args[1], '-b', url, ...args.slice(2)], opts)

for (const backend of backends) {
  describe(`bad input [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})

    it(`an unreachable ${backend.name === 'file' ? 'directory' : 'server (a closed port on 127.0.0.1)'}: every command is exit 69 with one line, quickly, and no password`, async () => {
      const url = await unreachable(ctx.instance.url)
      const key = uniqueName('unreachable')
      const results = await Promise.all(everyCommand(key).map(async (args) => [args, await run(url, args)]))
      for (const [args, r] of results) {
        const what = `dlq ${args.join(' ')} -b ${url}`
        assert.equal(r.code, 69, `${what}: ${r.stderr}`)
        const line = oneErrorLine(r, assert)
        assert.match(line, backend.name === 'file' ? /does not exist/ : /cannot connect/, what)
        assert.equal(r.stdout, '', what)
        assert.ok(!r.stderr.includes(SECRET), `${what} printed the password: ${r.stderr}`)
        assert.ok(r.ms < 10_000, `${what} took ${r.ms}ms`)
      }
    })

    it('bad keys and queue names (empty, 256 bytes, a newline) are refused with 64 and leave nothing behind', async () => {
      const bad = ['', 'k'.repeat(256), 'line\nbreak']
      const results = await Promise.all(bad.flatMap((name) => [
        ['lock', 'run', `--key=${name}`, '--', 'true'],
        ['lock', 'acquire', `--key=${name}`],
        ['queue', 'push', `--queue=${name}`, 'message'],
      ]).map(async (args) => [args, await ctx.dlq.run(args)]))
      for (const [args, r] of results) {
        assert.equal(r.code, 64, `${JSON.stringify(args)}: ${r.stderr}`)
        assert.match(oneErrorLine(r, assert), /bad (key|queue)/)
      }
      const locks = JSON.parse((await ctx.dlq.run(['lock', 'status', '--json'])).stdout).locks.map((l) => l.key)
      const queues = JSON.parse((await ctx.dlq.run(['queue', 'status', '--json'])).stdout).queues.map((q) => q.queue)
      for (const name of bad) {
        assert.ok(!locks.includes(name) && !queues.includes(name), `${JSON.stringify(name.slice(0, 20))} was created`)
      }
    })

    it('a message over the size limit in the middle of a piped batch: exit 65 naming it; the messages before it are kept, in order, and nothing after it', async () => {
      // 2500 messages before it: more than one batch, so some batches are in flight when it comes.
      const before = Array.from({length: 2500}, (_v, i) => `m${i + 1}`)
      const tooBig = 'X'.repeat(1024 * 1024 + 1)
      for (const [framing, flags, sep] of [['lines', [], '\n'], ['NUL-separated', ['-0'], '\0']]) {
        const queue = uniqueName('oversize')
        const input = [...before, tooBig, 'after-1', 'after-2'].join(sep) + sep
        const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, ...flags], {input, timeoutMs: 30_000})
        assert.equal(r.code, 65, `${framing}: ${r.stderr}`)
        const line = oneErrorLine(r, assert)
        assert.match(line, /message 2501 is too large/, framing)
        assert.match(line, /2500 messages before it were pushed/, framing)
        const stats = await queueStats(ctx.dlq, queue)
        assert.deepEqual([stats.waiting, stats.inFlight], [2500, 0], `${framing}: ${JSON.stringify(stats)}`)
        assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), before, `${framing}: the messages before it, in order`)
      }
      // With --json the error is one JSON object on stderr with the same facts.
      const queue = uniqueName('oversize-json')
      const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--json'], {input: `a\nb\n${tooBig}\nc\n`})
      assert.equal(r.code, 65, r.stderr)
      assert.equal(r.stdout, '')
      assert.equal(r.stderrLines.length, 1, r.stderr)
      const {error} = JSON.parse(r.stderrLines[0])
      assert.equal(error.code, 65)
      assert.match(`${error.what} ${error.hint}`, /message 3 .*the 2 messages before it were pushed/)
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['a', 'b'])
    })

    it('empty stdin: push exits 0 and pushes nothing (lines, -0, --json); --whole pushes one empty message', async () => {
      const queue = uniqueName('empty-stdin')
      for (const flags of [[], ['-0']]) {
        const r = await ctx.dlq.run(['queue', 'push', '--queue', queue, ...flags], {input: ''})
        assert.equal(r.code, 0, r.stderr)
        assert.equal(r.stderr, '')
      }
      const json = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--json'], {input: ''})
      assert.equal(json.code, 0, json.stderr)
      assert.deepEqual(JSON.parse(json.stdout), {queue, count: 0, ids: []})
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, 0)
      // A closed stdin (`<&-`) reads as empty: Node opens /dev/null in its place before dlq runs.
      const closed = await shWithDlq('"$@" <&-', ctx.dlq.url, ['queue', 'push', '--queue', queue])
      assert.equal(closed.code, 0, closed.stderr)
      assert.equal((await queueStats(ctx.dlq, queue)).waiting, 0)
      const whole = await ctx.dlq.run(['queue', 'push', '--queue', queue, '--whole'], {input: ''})
      assert.equal(whole.code, 0, whole.stderr)
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), [''])
    })

    it('stdin closed early (the producer killed mid-line): every complete line is pushed, the cut-off last line too, exit 0', async () => {
      const queue = uniqueName('producer-died')
      const producer = spawn('sh', ['-c', 'printf "one\\ntwo\\nthree\\npartial li"; kill -KILL $$'], {stdio: ['ignore', 'pipe', 'inherit']})
      const died = new Promise((resolve) => producer.on('exit', (_code, signal) => resolve(signal)))
      const r = await ctx.dlq.run(['queue', 'push', '--queue', queue], {input: producer.stdout})
      assert.equal(await died, 'SIGKILL')
      // dlq cannot tell a producer that died from one that ended without a newline (README).
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['one', 'two', 'three', 'partial li'])
    })

    it('pop --exec whose command closes its stdin early: exit 0 still acks; a failure without reading returns the message', async () => {
      const queue = uniqueName('handler-stdin')
      const big = 'B'.repeat(900 * 1024) // far more than a pipe holds: the write to the command fails
      await pushInput(ctx.dlq, queue, `${big}\n${big}\n`)
      const acked = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--exec', '--', 'sh', '-c', 'head -c 10 >/dev/null'])
      assert.equal(acked.code, 0, acked.stderr)
      assert.equal(acked.stderr, '')
      const failed = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--retry-delay', '0', '--exec', '--', 'sh', '-c', 'exit 3'])
      assert.equal(failed.code, 0, failed.stderr)
      assert.match(oneErrorLine(failed, assert), /exited 3; returned for retry/)
      // With --json, that line is a warning object.
      const failedJson = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--count', '1', '--json', '--retry-delay', '0', '--exec', '--', 'sh', '-c', 'exit 4'])
      assert.equal(failedJson.code, 0, failedJson.stderr)
      assert.equal(failedJson.stderrLines.length, 1, failedJson.stderr)
      const {warning} = JSON.parse(failedJson.stderrLines[0])
      assert.deepEqual([warning.attempt, warning.exitCode, warning.signal], [2, 4, null])
      assert.match(warning.what, /exited 4; returned for retry$/)
      const rest = await drainJson(ctx.dlq, queue)
      assert.equal(rest.length, 1, 'the failed message is back in the queue')
      assert.equal(rest[0].body.length, big.length)
      assert.equal(rest[0].attempts, 3)
    })

    it('stdout closed before anything was written: pop exits 141 quietly and every message stays; acquire releases the lease nobody got', async () => {
      const queue = uniqueName('closed-stdout')
      await pushArgs(ctx.dlq, queue, ['a', 'b', 'c'])
      const popper = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--count', '100'])
      popper.stdout.destroy() // the reader has gone before dlq writes a byte
      const popped = await popper.result
      assert.equal(popped.code, 141, popped.stderr)
      assert.equal(popped.stderr, '')
      const stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight], [3, 0], JSON.stringify(stats))

      const key = uniqueName('closed-stdout')
      for (const flags of [[], ['--json']]) {
        const acquirer = ctx.dlq.spawn(['lock', 'acquire', '--key', key, '--ttl', '10m', ...flags])
        acquirer.stdout.destroy()
        const acquired = await acquirer.result
        assert.equal(acquired.code, 141, acquired.stderr)
        assert.equal(acquired.stderr, '')
        const status = await ctx.dlq.run(['lock', 'status', '--key', key, '--json'])
        assert.deepEqual(JSON.parse(status.stdout).locks, [], 'the lease whose token nobody read was released')
      }
      const free = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(free.code, 0, free.stderr)
    })

    it('stdout that cannot be written (>/dev/full): exit 74 with one line; pop keeps the messages, acquire keeps no lease', async () => {
      const queue = uniqueName('full-stdout')
      const key = uniqueName('full-stdout')
      await pushArgs(ctx.dlq, queue, ['a', 'b', 'c'])
      const cases = [
        ['queue', 'pop', '--queue', queue, '--count', '2'],
        ['queue', 'pop', '--queue', queue, '--count', '2', '--json'],
        ['queue', 'tail', '--queue', queue],
        ['queue', 'status'],
        ['lock', 'acquire', '--key', key, '--ttl', '10m'],
        ['lock', 'status', '--json'],
      ]
      for (const args of cases) {
        const r = await shWithDlq('"$@" >/dev/full', ctx.dlq.url, args)
        assert.equal(r.code, 74, `${args.join(' ')}: ${r.stderr}`)
        if (args.includes('--json')) {
          assert.equal(r.stderrLines.length, 1, r.stderr)
          assert.equal(JSON.parse(r.stderrLines[0]).error.code, 74)
        } else {
          assert.match(oneErrorLine(r, assert), /cannot write to stdout: no space left on device/)
        }
      }
      const stats = await queueStats(ctx.dlq, queue)
      assert.deepEqual([stats.waiting, stats.inFlight], [3, 0], JSON.stringify(stats))
      assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['a', 'b', 'c'])
      const free = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(free.code, 0, free.stderr)
    })
  })
}

function run(url, args) {
  return runProgram(NODE, [BIN, args[0], args[1], '-b', url, ...args.slice(2)], {input: ''})
}
