// Conformance: dlq's own secret stays with dlq (SPEC §2, issue 11 item 6). DLQ_PASSWORD opens the
// backend and reaches nothing dlq starts: not the command of `lock run`, not a `pop --exec`
// handler, not the watchdog; everything else in the environment does (README). Against every
// backend in test/support/backends.mjs, each made to need the password where it can.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {existsSync, readdirSync, readFileSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {run, shUntil, spawnDlq, tempDir, uniqueName, waitFor} from '../support/cli.mjs'

const SH0 = 'dlq-test-sh'

/** The backend's URL without a password, and a password it needs (where the backend can need one). */
function needingPassword(name, url) {
  const password = `pw-${randomUUID()}`
  switch (name) {
    case 'postgres':
    case 'postgres-multihost': {
      // The fixture's user logs in with a password (SCRAM): take it out of the URL (by hand: WHATWG
      // URL cannot parse a host list).
      const [userinfo, user, given] = /^postgres:\/\/([^:@/]+):([^@]*)@/.exec(url)
      return {url: url.replace(userinfo, `postgres://${user}@`), password: decodeURIComponent(given), required: true}
    }
    case 'redis': {
      const parsed = new URL(url)
      // This file's own server (one per describe): from now on it wants the password.
      execFileSync('redis-cli', ['-h', parsed.hostname, '-p', parsed.port, 'CONFIG', 'SET', 'requirepass', password])
      return {url, password, required: true}
    }
    case 'zookeeper':
      // Digest auth as alice, under a root of this test's own (its nodes get alice's ACL).
      return {url: url.replace(/^zk:\/\//, 'zk://alice@').replace(/\/dlq$/, `/${uniqueName('secrets')}`), password, required: false}
    default:
      return {url, password, required: false}
  }
}

/** Every live process below `pid`, found through /proc. */
function descendants(pid) {
  const children = new Map()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
    } catch {} // gone meanwhile
  }
  const found = []
  const queue = [pid]
  while (queue.length > 0) for (const child of children.get(queue.shift()) ?? []) found.push(child), queue.push(child)
  return found
}

/** The environments of the processes below `pid`, as {pid, command, env} (those still there). */
function environmentsBelow(pid) {
  return descendants(pid).flatMap((child) => {
    try {
      return [{pid: child, command: readFileSync(`/proc/${child}/cmdline`, 'utf8').replaceAll('\0', ' '), env: readFileSync(`/proc/${child}/environ`, 'utf8').split('\0')}]
    } catch {
      return []
    }
  })
}

const holdsSecret = (lines, password) => lines.some((line) => line.startsWith('DLQ_PASSWORD=') || line.includes(password))

for (const backend of backends) {
  describe(`secrets [${backend.name}]`, {concurrency: 2}, () => {
    const ctx = useBackend(backend, {before, after})
    let secret
    before(() => {
      secret = needingPassword(backend.name, ctx.instance.url)
    })
    const env = (extra = {}) => ({DLQ_BACKEND: secret.url, DLQ_PASSWORD: secret.password, DLQ_TEST_MARK: 'inherited', ...extra})

    it('lock run: DLQ_PASSWORD opens the backend, but neither the command nor anything else dlq starts (the watchdog) has it; the rest of the environment is inherited', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('secret')
      const dlq = spawnDlq(['lock', 'run', '--key', key, '--', 'sh', '-c', `env > "$1/env.tmp" && mv "$1/env.tmp" "$1/env"; ${shUntil('[ -e "$1/go" ]')}`, SH0, dir], {env: env(), t})
      await waitFor(() => existsSync(join(dir, 'env')), {what: 'the command to start'})
      const below = environmentsBelow(dlq.pid)
      // The command (sh, and its sleep) and the watchdog: everything dlq started is there now.
      assert.ok(below.length >= 2, `the command and the watchdog below dlq: ${JSON.stringify(below.map((p) => p.command))}`)
      for (const process of below) assert.ok(!holdsSecret(process.env, secret.password), `${process.command} (pid ${process.pid}) has DLQ_PASSWORD`)
      await writeFile(join(dir, 'go'), '')
      const r = await dlq.result
      assert.equal(r.code, 0, r.stderr)
      const seen = (await readFile(join(dir, 'env'), 'utf8')).split('\n')
      assert.ok(!holdsSecret(seen, secret.password), 'the command has DLQ_PASSWORD')
      for (const line of ['DLQ_TEST_MARK=inherited', `DLQ_BACKEND=${secret.url}`, `DLQ_LOCK_KEY=${key}`]) assert.ok(seen.includes(line), `the command lacks ${line}`)
    })

    it('pop --exec: the handler has DLQ_MESSAGE_ID and the rest of the environment, not DLQ_PASSWORD', async (t) => {
      const dir = await tempDir(t)
      const queue = uniqueName('secret')
      const pushed = await run(['queue', 'push', '--queue', queue, 'm1'], {env: env()})
      assert.equal(pushed.code, 0, pushed.stderr)
      const dlq = spawnDlq(['queue', 'pop', '--queue', queue, '--exec', '--', 'sh', '-c', `cat >/dev/null; env > "$1/env.tmp" && mv "$1/env.tmp" "$1/env"; ${shUntil('[ -e "$1/go" ]')}`, SH0, dir], {env: env(), t})
      await waitFor(() => existsSync(join(dir, 'env')), {what: 'the handler to start'})
      const below = environmentsBelow(dlq.pid)
      assert.ok(below.length >= 1, 'the handler below dlq')
      for (const process of below) assert.ok(!holdsSecret(process.env, secret.password), `${process.command} (pid ${process.pid}) has DLQ_PASSWORD`)
      await writeFile(join(dir, 'go'), '')
      const r = await dlq.result
      assert.equal(r.code, 0, r.stderr)
      const seen = (await readFile(join(dir, 'env'), 'utf8')).split('\n')
      assert.ok(!holdsSecret(seen, secret.password), 'the handler has DLQ_PASSWORD')
      assert.ok(seen.includes('DLQ_TEST_MARK=inherited') && seen.some((l) => l.startsWith('DLQ_MESSAGE_ID=')), seen.join(' '))
    })

    it('the password was needed where the backend can need one, and is never printed, even with --verbose', async () => {
      const key = uniqueName('secret')
      if (secret.required) {
        const without = await run(['lock', 'run', '--key', key, '--', 'true'], {env: env({DLQ_PASSWORD: ''})})
        assert.equal(without.code, 69, `without DLQ_PASSWORD: ${without.stderr}`)
      }
      const r = await run(['lock', 'run', '--verbose', '--key', key, '--', 'true'], {env: env()})
      assert.equal(r.code, 0, r.stderr)
      assert.ok(!(r.stdout + r.stderr).includes(secret.password), r.stderr)
    })
  })
}
