// A release wakes the first waiters in line, not every waiter (issue 16: with fifty waiting, each
// hand-off woke fifty processes). MONITOR shows what the release script publishes, to whom; the
// waiters still all get the lock, one at a time, and readers behind a reader are woken together.
import assert from 'node:assert/strict'
import {execFileSync, spawn} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {run, shUntil, spawnDlq, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {startRedis} from '../support/servers.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const redisCli = (port, ...args) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8'})

/** MONITOR's lines, scripts' own calls included; sync() waits until it has caught up. */
function monitor(port) {
  const child = spawn('redis-cli', ['-p', String(port), 'monitor'], {stdio: ['ignore', 'pipe', 'inherit']})
  let text = ''
  child.stdout.on('data', (chunk) => (text += chunk))
  return {
    async sync() {
      const marker = `sync-${Math.random().toString(36).slice(2)}`
      await waitFor(() => text.includes(marker) || void redisCli(port, 'ECHO', marker), {intervalMs: 100, what: 'MONITOR to catch up'})
      return text
    },
    stop: () => child.kill(),
  }
}

/** The channels the scripts published to, in order. */
const published = (text) => [...text.matchAll(/\[0 lua\] "PUBLISH" "([^"]*)"/gi)].map((m) => m[1])

describe('redis: a release wakes the first waiters in line', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  /** Starts `n` waiting lock runs one after another (each in line before the next); returns them, the holder's token and the waiters' owners in line. */
  async function line(t, key, n, args, dir) {
    const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '60s', '--json'])
    assert.equal(held.code, 0, held.stderr)
    const waiters = []
    for (let i = 0; i < n; i++) {
      waiters.push(spawnDlq(['lock', 'run', '-b', server.url, '--key', key, ...args, '--wait', '60s', '--', 'sh', '-c', `echo ${i} >> "$1/order"; ${shUntil('[ -e "$1/go" ]', 60)}`, 'x', dir], {t, timeoutMs: 90_000}))
      await waitFor(() => redisCli(server.port, 'ZCARD', `{dlq:l:${key}}:line`).trim() === String(i + 1), {what: `waiter ${i} in line`})
    }
    const owners = redisCli(server.port, 'ZRANGE', `{dlq:l:${key}}:line`, '0', '-1').trim().split('\n')
    return {token: JSON.parse(held.stdout).token, waiters, owners}
  }

  it('ten waiting lock runs: a release publishes to the first two in line only; all ten then run in turn', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('line')
    const {token, waiters, owners} = await line(t, key, 10, [], dir)
    const mon = monitor(server.port)
    t.after(() => mon.stop())
    await mon.sync()
    const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', token])
    assert.equal(released.code, 0, released.stderr)
    await waitFor(async () => (await readFile(join(dir, 'order'), 'utf8').catch(() => '')) !== '', {what: 'a waiter to run'})
    assert.deepEqual(published(await mon.sync()), owners.slice(0, 2).map((owner) => `{dlq:l:${key}}:wake:${owner}`))
    assert.ok(['0\n', '1\n'].includes(await readFile(join(dir, 'order'), 'utf8')), 'one of the first two in line runs first')
    // Let every command end: each release wakes the next ones, and every waiter gets its turn.
    execFileSync('touch', [join(dir, 'go')])
    for (const waiter of waiters) assert.equal((await waiter.result).code, 0)
    const order = (await readFile(join(dir, 'order'), 'utf8')).trim().split('\n')
    assert.deepEqual([...order].sort(), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    const channels = published(await mon.sync())
    assert.ok(channels.every((c) => c.startsWith(`{dlq:l:${key}}:wake:`)), `a release published to the key's channel: ${channels}`)
    assert.ok(channels.length <= 2 * 10, `${channels.length} wake-ups for 10 releases`)
  })

  it('readers behind a writer: its release wakes every reader that follows, not two', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('readers')
    const {token, waiters, owners} = await line(t, key, 5, ['--shared'], dir)
    const mon = monitor(server.port)
    t.after(() => mon.stop())
    await mon.sync()
    const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', token])
    assert.equal(released.code, 0, released.stderr)
    // All five hold together (each waits for go, so none has left), woken by the one release.
    await waitFor(async () => (await readFile(join(dir, 'order'), 'utf8').catch(() => '')).trim().split('\n').length === 5, {what: 'all five readers to hold at once', timeoutMs: 10_000})
    assert.deepEqual(published(await mon.sync()), owners.map((owner) => `{dlq:l:${key}}:wake:${owner}`))
    const holders = JSON.parse((await cli(server.url, ['lock', 'status', '--key', key, '--json'])).stdout).locks[0].holders
    assert.equal(holders.length, 5)
    execFileSync('touch', [join(dir, 'go')])
    for (const waiter of waiters) assert.equal((await waiter.result).code, 0)
  })
})
