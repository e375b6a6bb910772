// A release wakes the first waiters in line, not every waiter (issue 16). A listener of the test's
// own hears every channel dlq could notify: the key's and each waiter's. The waiters still all get
// the lock in turn, and readers behind a writer are all woken by its release.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {run, shUntil, spawnDlq, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {startPostgres} from '../support/postgres.mjs'

const {schemaOf} = await import('../../dist/backends/postgres/connection.js')
const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)

describe('postgres: a release wakes the first waiters in line', () => {
  let server
  let listener
  const heard = []
  before(async () => {
    server = await startPostgres()
    const {default: pg} = await import('pg')
    listener = new pg.Client({connectionString: server.url})
    listener.on('error', () => {})
    await listener.connect()
    listener.on('notification', (n) => heard.push(n.channel))
  })
  after(async () => {
    await listener?.end()
    server?.stop()
  })

  /** Starts `n` waiting lock runs one after another (each in line before the next); returns them and their owners in line. */
  async function line(t, key, n, args, dir) {
    const held = await cli(server.url, ['lock', 'acquire', '--key', key, '--ttl', '60s', '--json'])
    assert.equal(held.code, 0, held.stderr)
    const waiters = []
    const count = async () => Number((await server.sql(`SELECT count(*) FROM dlq.lock_waiters WHERE key = '${key}'`)).trim())
    for (let i = 0; i < n; i++) {
      waiters.push(spawnDlq(['lock', 'run', '-b', server.url, '--key', key, ...args, '--wait', '60s', '--', 'sh', '-c', `echo ${i} >> "$1/order"; ${shUntil('[ -e "$1/go" ]', 60)}`, 'x', dir], {t, timeoutMs: 90_000}))
      await waitFor(async () => (await count()) === i + 1, {what: `waiter ${i} in line`})
    }
    const owners = (await server.sql(`SELECT owner FROM dlq.lock_waiters WHERE key = '${key}' ORDER BY since`)).trim().split('\n')
    const schema = schemaOf('dlq')
    for (const owner of owners) await listener.query(`LISTEN "${schema.waiterChannel(key, owner)}"`)
    await listener.query(`LISTEN "${schema.channel('lock', key)}"`)
    return {token: JSON.parse(held.stdout).token, waiters, channels: owners.map((owner) => schema.waiterChannel(key, owner))}
  }

  it('ten waiting lock runs: a release notifies the first two in line only; all ten then run in turn', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('line')
    const {token, waiters, channels} = await line(t, key, 10, [], dir)
    heard.length = 0
    const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', token])
    assert.equal(released.code, 0, released.stderr)
    await waitFor(async () => (await readFile(join(dir, 'order'), 'utf8').catch(() => '')) !== '', {what: 'a waiter to run'})
    await waitFor(() => heard.length >= 2, {what: 'the notifications'})
    assert.deepEqual([...heard].sort(), channels.slice(0, 2).sort())
    assert.ok(['0\n', '1\n'].includes(await readFile(join(dir, 'order'), 'utf8')), 'one of the first two in line runs first')
    execFileSync('touch', [join(dir, 'go')])
    for (const waiter of waiters) assert.equal((await waiter.result).code, 0)
    assert.deepEqual((await readFile(join(dir, 'order'), 'utf8')).trim().split('\n').sort(), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    assert.ok(heard.length <= 2 * 10, `${heard.length} wake-ups for 10 releases`)
  })

  it('readers behind a writer: its release notifies every reader that follows', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('readers')
    const {token, waiters, channels} = await line(t, key, 5, ['--shared'], dir)
    heard.length = 0
    const released = await cli(server.url, ['lock', 'release', '--key', key, '--token', token])
    assert.equal(released.code, 0, released.stderr)
    await waitFor(async () => (await readFile(join(dir, 'order'), 'utf8').catch(() => '')).trim().split('\n').length === 5, {what: 'all five readers to hold at once'})
    await waitFor(() => heard.length >= 5, {what: 'the notifications'})
    assert.deepEqual([...heard].sort(), [...channels].sort())
    execFileSync('touch', [join(dir, 'go')])
    for (const waiter of waiters) assert.equal((await waiter.result).code, 0)
  })
})
