// Conformance: opening a backend (SPEC §1). `?connectTimeout=` is a hard bound on how long dlq
// tries before exit 69, on every scheme, whatever the server does: here a server that accepts the
// connection and never answers (a paused server, a wrong port that belongs to something else), and
// for file: a directory whose first look is stalled (a hung NFS mount, played by strace's injected
// delay). And a URL parameter the scheme does not know (`?conectTimeout=`) is exit 64 on every
// scheme, before anything is tried.
import assert from 'node:assert/strict'
import {mkdir} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {BIN, NODE, oneErrorLine, run, spawnDlq, tempDir, waitFor} from '../support/cli.mjs'

/** Spawns `program args…` (dlq, or strace around dlq) and resolves with the time until dlq's first stderr line, and its result. */
async function timeToFirstLine(args, opts = {}) {
  const started = Date.now()
  const child = spawnDlq(args, {timeoutMs: 60_000, ...opts})
  const lineAt = await waitFor(() => (child.stderrText().includes('\n') ? Date.now() : undefined), {timeoutMs: 45_000, what: `a line from dlq ${args.join(' ')}`})
  return {ms: lineAt - started, result: await child.result}
}

describe('?connectTimeout= is a hard bound on opening a backend, on every scheme', {concurrency: 1}, () => {
  // Accepts every connection and never says a word.
  const held = []
  const silent = createServer((socket) => held.push(socket))
  before(() => new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve)))
  after(() => {
    for (const socket of held) socket.destroy()
    silent.close()
  })

  // Long enough that a driver which spends it twice (ioredis: connect, then PING) stands out from
  // a loaded machine's noise; the allowance on top is what a start costs here, and then some.
  const timeoutMs = 4000
  const slackMs = 2500
  it(`a server that never answers: redis, zk and postgres give up with 69 after ${timeoutMs} ms, not a multiple of it`, async () => {
    const port = silent.address().port
    for (const [scheme, url, refusedUrl] of [
      ['redis', `redis://127.0.0.1:${port}`, 'redis://127.0.0.1:1'],
      ['redis with a password', `redis://:pw@127.0.0.1:${port}`, 'redis://:pw@127.0.0.1:1'],
      ['zk', `zk://127.0.0.1:${port}/dlq`, undefined],
      ['postgres', `postgres://u@127.0.0.1:${port}/db`, 'postgres://u@127.0.0.1:1/db'],
    ]) {
      // What a start and an immediate failure cost on this machine (it may be loaded): the
      // allowance on top of the timeout. ZooKeeper's client retries a refused port until its
      // timeout, so a file: URL that fails at once stands in for it.
      const reference = await timeToFirstLine(['lock', 'status', '-b', refusedUrl ?? 'file:///nonexistent-dlq-dir'])
      assert.ok(reference.result.code === 69, `${scheme} reference: ${reference.result.stderr}`)
      const {ms, result} = await timeToFirstLine(['lock', 'status', '-b', `${url}?connectTimeout=${timeoutMs}ms`])
      assert.equal(result.code, 69, `${scheme}: ${result.stderr}`)
      assert.match(oneErrorLine(result, assert), /cannot connect to .*(no answer|no ZooKeeper server answered) within 4s/, scheme)
      assert.ok(ms >= timeoutMs - 100, `${scheme}: gave up after ${ms} ms, before the ${timeoutMs} ms`)
      assert.ok(ms <= timeoutMs + reference.ms + slackMs, `${scheme}: gave up after ${ms} ms with --connectTimeout ${timeoutMs} ms (a start and a failure take ${reference.ms} ms here)`)
    }
  })

  it('file: a directory whose first look hangs (a hung NFS mount) is 69 after the timeout', async (t) => {
    const dir = await tempDir(t)
    const base = join(dir, 'hung')
    await mkdir(base)
    // Every look at the directory (stat, access, open) stalls for 20 s: strace -P limits the
    // injection to system calls on that path.
    const strace = ['strace', '-f', '-qq', '-o', '/dev/null', '-P', base, '-e', 'trace=%stat,access,faccessat,faccessat2,openat', '-e', 'inject=%stat,access,faccessat,faccessat2,openat:delay_enter=20000000']
    const {spawn} = await import('node:child_process')
    const traced = (url) => {
      const started = Date.now()
      const child = spawn(strace[0], [...strace.slice(1), NODE, BIN, 'lock', 'status', '-b', url], {stdio: ['ignore', 'ignore', 'pipe'], detached: true})
      let stderr = ''
      child.stderr.on('data', (chunk) => (stderr += chunk))
      t.after(() => {
        try {
          process.kill(-child.pid, 'SIGKILL')
        } catch {}
      })
      return {child, stderr: () => stderr, firstLine: () => waitFor(() => (stderr.includes('\n') ? Date.now() - started : undefined), {timeoutMs: 19_000, what: `a line from dlq lock status -b ${url}`})}
    }
    // The same under strace, on a directory that is not there: what a start and a failure cost.
    const reference = await traced('file:///nonexistent-dlq-dir').firstLine()
    const {child, stderr, firstLine} = traced(`file://${base}?connectTimeout=${timeoutMs}ms`)
    const ms = await firstLine()
    assert.match(stderr(), /^dlq: cannot connect to file:\/\/.*: no answer within 4s/)
    assert.ok(ms >= timeoutMs - 100 && ms <= timeoutMs + reference + slackMs, `gave up after ${ms} ms (a start and a failure take ${reference} ms here)`)
    const code = await new Promise((resolve) => child.on('exit', (c) => resolve(c)))
    assert.equal(code, 69)
  })
})

describe('URL parameters: one a scheme does not know is 64 on every scheme, before anything is tried', {concurrency: 4}, () => {
  for (const [url, name] of [
    ['file:///tmp?conectTimeout=1s', 'conectTimeout'],
    ['redis://127.0.0.1:1?conectTimeout=1s', 'conectTimeout'],
    ['redis://127.0.0.1:1?ca=/etc/ssl/ca.pem', 'ca'], // TLS parameters need rediss://
    ['rediss://127.0.0.1:1?ca=/nonexistent&insecure&retries=3', 'retries'],
    ['zk://127.0.0.1:1/dlq?conectTimeout=1s', 'conectTimeout'],
    ['zk://u:s3cret-pw@127.0.0.1:1/dlq?schema=x', 'schema'],
    ['postgres://u:s3cret-pw@127.0.0.1:1/db?conectTimeout=1s', 'conectTimeout'],
  ]) {
    it(url, async () => {
      for (const args of [['lock', 'status'], ['lock', 'run', '--key', 'k', '--', 'echo', 'ran'], ['queue', 'push', '--queue', 'q', 'm']]) {
        for (const how of ['-b', 'DLQ_BACKEND']) {
          const r = how === '-b' ? await run([...args.slice(0, 2), '-b', url, ...args.slice(2)]) : await run(args, {env: {DLQ_BACKEND: url}})
          const what = `${args.join(' ')} (${how} ${url})`
          assert.equal(r.code, 64, `${what}: ${r.stderr}`)
          assert.match(oneErrorLine(r, assert), new RegExp(`unknown parameter \\?${name}= in .* knows .*\\?connectTimeout=`), what)
          assert.doesNotMatch(r.stderr, /s3cret-pw/)
          assert.equal(r.stdout, '', what)
        }
      }
    })
  }

  it('the parameters a scheme knows are taken: file: with ?connectTimeout=', async (t) => {
    const dir = await tempDir(t)
    const r = await run(['lock', 'run', '-b', `file://${dir}?connectTimeout=10s`, '--key', 'k', '--', 'echo', 'ran'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'ran\n')
  })
})
