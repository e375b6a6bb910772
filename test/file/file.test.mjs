// What only the file backend has: its directory. A directory dlq may not write (by its mode, and on
// a read-only mount), a regular file where the directory should be, and symlinks planted where dlq
// expects its own directories or lock entries, which it must refuse and never follow. Each case:
// one line, exit 69, nothing lost, nothing left locked. (A missing directory: usage.test.mjs.)
//
// Tests run as root (so does CI), and root writes wherever mode bits forbid (CAP_DAC_OVERRIDE).
// So the permission cases run dlq through setpriv(1) (util-linux, on every Debian) with
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from its bounding set: still uid 0 and the
// directory's owner, but held to the mode bits like any other user. The read-only mount uses
// unshare(1) -m: a private mount namespace in which the directory is bind-mounted read-only (EROFS),
// seen by nothing else. Each test first shows that its mechanism really denies a write, so it can
// never pass without testing anything.
import assert from 'node:assert/strict'
import {chmod, lstat, mkdir, open, readdir, readFile, readlink, rm, stat, symlink, unlink, utimes, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {contentOf, currentState, markerName} from '../../dist/backends/file/leases.js'
import {encodeName} from '../../dist/backends/file/paths.js'
import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, NODE, oneErrorLine, runProgram, spawnOn, tempDir, uniqueName, waitFor} from '../support/cli.mjs'
import {drainJson, pushArgs, queueStats} from '../support/queues.mjs'

const withoutDacOverride = ['--bounding-set=-dac_override,-dac_read_search']

/** `dlq ARGS… -b URL` held to the mode bits (see the header). */
const asPlainUser = (url, args) => runProgram('setpriv', [...withoutDacOverride, NODE, BIN, ...args.slice(0, 2), '-b', url, ...args.slice(2)])

/** `dlq ARGS… -b URL` with `dir` mounted read-only, in a mount namespace of its own. */
const onReadOnlyMount = (dir, url, args) => runProgram('unshare', ['-m', 'sh', '-c', 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
  'dlq-test-sh', dir, NODE, BIN, ...args.slice(0, 2), '-b', url, ...args.slice(2)])

const lockCommands = (key) => [
  ['lock', 'run', '--key', key, '--', 'true'],
  ['lock', 'acquire', '--key', key],
  ['lock', 'renew', '--key', key, '--token', 'some-token'],
  ['lock', 'release', '--key', key, '--token', 'some-token'],
  ['lock', 'release', '--key', key, '--force'],
  ['lock', 'status', '--key', key],
  ['lock', 'status'],
]
const queueCommands = (queue) => [
  ['queue', 'push', '--queue', queue, 'more'],
  ['queue', 'pop', '--queue', queue],
  ['queue', 'pop', '--queue', queue, '--exec', '--', 'true'],
  ['queue', 'tail', '--queue', queue],
  ['queue', 'status', '--queue', queue],
  ['queue', 'status'],
]

const statusOf = async (dlq, key) => JSON.parse((await dlq.run(['lock', 'status', '--key', key, '--json'])).stdout).locks

describe('file backend: a directory dlq may not write', {concurrency: 1}, () => {
  const ctx = useBackend(fileBackend, {before, after})

  it('mode 0555 (dlq held to the mode bits): every command is exit 69 with one line naming the directory; the queue and the held lock are untouched', async (t) => {
    const base = ctx.instance.baseDir
    const queue = uniqueName('ro-queue')
    const key = uniqueName('ro-held')
    await pushArgs(ctx.dlq, queue, ['a', 'b', 'c'])
    const token = (await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '5m'])).stdout.trim()
    await chmod(base, 0o555)
    t.after(() => chmod(base, 0o700))
    const probe = await runProgram('setpriv', [...withoutDacOverride, 'sh', '-c', 'touch "$1/probe"', 'dlq-test-sh', base])
    assert.notEqual(probe.code, 0, 'setpriv without CAP_DAC_OVERRIDE must be denied a write into a 0555 directory')

    for (const args of [...lockCommands(key), ...queueCommands(queue)]) {
      const r = await asPlainUser(ctx.dlq.url, args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      const line = oneErrorLine(r, assert)
      assert.ok(line.includes(`backend directory ${base} is not writable`), `${args.join(' ')}: ${line}`)
      assert.equal(r.stdout, '')
    }

    await chmod(base, 0o700)
    assert.deepEqual((await statusOf(ctx.dlq, key)).map((l) => l.holders.map((h) => h.owner)), [[token]], 'the held lock is still held, by its owner')
    assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['a', 'b', 'c'])
    assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])).code, 0)
    assert.equal((await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 0)
  })

  it("a queue's and the locks' directories not writable (made by another user): 69 with one line; nothing lost, nothing left in flight", async (t) => {
    const base = ctx.instance.baseDir
    const queue = uniqueName('ro-inner')
    const key = uniqueName('ro-inner')
    await pushArgs(ctx.dlq, queue, ['a', 'b', 'c'])
    const queueDir = join(base, 'queues', encodeName(queue))
    const locked = [join(base, 'leases'), join(queueDir, 'new'), join(queueDir, 'cur')]
    await mkdir(locked[0], {recursive: true})
    for (const dir of locked) await chmod(dir, 0o555)
    t.after(() => Promise.all(locked.map((dir) => chmod(dir, 0o700))))

    for (const args of [['queue', 'pop', '--queue', queue], ['queue', 'pop', '--queue', queue, '--count', '10', '--exec', '--', 'true'], ['queue', 'push', '--queue', queue, 'more'], ['lock', 'run', '--key', key, '--', 'true']]) {
      const r = await asPlainUser(ctx.dlq.url, args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), /permission denied/, args.join(' '))
    }
    for (const dir of locked) await chmod(dir, 0o700)
    const stats = await queueStats(ctx.dlq, queue)
    assert.deepEqual([stats.waiting, stats.inFlight], [3, 0], JSON.stringify(stats))
    assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['a', 'b', 'c'])
    assert.deepEqual(await statusOf(ctx.dlq, key), [])
    assert.equal((await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 0)
  })

  it('a read-only mount (EROFS): 69 with one line; the queue and the held lock are untouched', async () => {
    const base = ctx.instance.baseDir
    const queue = uniqueName('erofs')
    const key = uniqueName('erofs')
    await pushArgs(ctx.dlq, queue, ['a', 'b'])
    const token = (await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '5m'])).stdout.trim()
    const probe = await runProgram('unshare', ['-m', 'sh', '-c', 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/probe" 2>/dev/null', 'dlq-test-sh', base])
    assert.equal(probe.code, 0, `a read-only bind mount in a private namespace must deny a write: ${probe.stderr}`)

    for (const args of [['lock', 'run', '--key', key, '--wait', '0', '--', 'true'], ['lock', 'acquire', '--key', uniqueName('erofs')], ['lock', 'release', '--key', key, '--force'], ['queue', 'push', '--queue', queue, 'more'], ['queue', 'pop', '--queue', queue]]) {
      const r = await onReadOnlyMount(base, ctx.dlq.url, args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), /is not writable: EROFS/, args.join(' '))
    }
    assert.deepEqual((await statusOf(ctx.dlq, key)).map((l) => l.holders.map((h) => h.owner)), [[token]])
    assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['a', 'b'])
    assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])).code, 0)
  })

  it('a regular file where the directory should be: 69 with one line', async (t) => {
    const dir = await tempDir(t)
    await writeFile(join(dir, 'not-a-dir'), 'x')
    const r = await runProgram(NODE, [BIN, 'lock', 'run', '-b', `file://${join(dir, 'not-a-dir')}`, '--key', 'k', '--', 'true'])
    assert.equal(r.code, 69, r.stderr)
    assert.match(oneErrorLine(r, assert), /is not a directory/)
  })
})

describe('file backend: symlinks planted in its directory are refused, never followed', {concurrency: 1}, () => {
  const ctx = useBackend(fileBackend, {before, after})

  const refusedEverywhere = async (commands, planted) => {
    for (const args of commands) {
      const r = await ctx.dlq.run(args)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      const line = oneErrorLine(r, assert)
      assert.match(line, /unsafe path .*: it is a symbolic link/, args.join(' '))
      assert.ok(line.includes(planted), `${args.join(' ')} names ${planted}: ${line}`)
    }
  }

  it("at a key's lock directory: every lock command is 69 naming it; the link's target stays empty; once removed, the key works", async (t) => {
    const outside = await tempDir(t)
    const key = uniqueName('planted')
    const planted = join(ctx.instance.baseDir, 'leases', encodeName(key))
    await mkdir(join(ctx.instance.baseDir, 'leases'), {recursive: true})
    await symlink(outside, planted)
    await refusedEverywhere(lockCommands(key), planted)
    assert.deepEqual(await readdir(outside), [], 'nothing was written through the link')
    assert.ok((await lstat(planted)).isSymbolicLink(), 'dlq does not remove it either: that is for whoever planted it')
    await unlink(planted)
    assert.equal((await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])).code, 0)
    assert.deepEqual(await statusOf(ctx.dlq, key), [])
  })

  it("at a queue's directory: every queue command is 69 naming it; the link's target stays empty", async (t) => {
    const outside = await tempDir(t)
    const queue = uniqueName('planted')
    const planted = join(ctx.instance.baseDir, 'queues', encodeName(queue))
    await mkdir(join(ctx.instance.baseDir, 'queues'), {recursive: true})
    await symlink(outside, planted)
    await refusedEverywhere(queueCommands(queue), planted)
    assert.deepEqual(await readdir(outside), [])
    await unlink(planted)
    await pushArgs(ctx.dlq, queue, ['works'])
    assert.deepEqual((await drainJson(ctx.dlq, queue)).map((m) => m.body), ['works'])
  })

  it("at a key's lease state (the holders' file): every lock command is 69 naming it, the target is neither read nor written; the key works once its directory is removed", async (t) => {
    const outside = await tempDir(t)
    const victim = join(outside, 'victim')
    await writeFile(victim, JSON.stringify({holders: [{owner: 'forged', expiresMs: 1e15, token: '7'}]}))
    await utimes(victim, 1_000_000, 1_000_000)
    const key = uniqueName('planted-state')
    const keyDir = join(ctx.instance.baseDir, 'leases', encodeName(key))
    await mkdir(keyDir, {recursive: true, mode: 0o700})
    await writeFile(join(keyDir, 'S.6.forged'), '', {mode: 0o600})
    const planted = join(keyDir, 'C.6.forged')
    await symlink(victim, planted)
    await refusedEverywhere(lockCommands(key), planted)
    assert.equal(JSON.parse(await readFile(victim, 'utf8')).holders[0].owner, 'forged', 'not written through the link')
    assert.equal((await stat(victim)).mtimeMs, 1_000_000_000)
    await rm(keyDir, {recursive: true})
    const r = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'printenv', 'DLQ_FENCING_TOKEN'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^\d+\n$/)
    assert.deepEqual(await statusOf(ctx.dlq, key), [])
  })

  it("at dlq's own leases/, locks/ (the former layout) and tmp/ directories: 69 naming them", async (t) => {
    const outside = await tempDir(t)
    const base = ctx.instance.baseDir
    for (const name of ['leases', 'locks', 'tmp']) {
      const planted = join(base, name)
      await rm(planted, {recursive: true, force: true})
      await symlink(outside, planted)
      await refusedEverywhere([['lock', 'run', '--key', uniqueName('k'), '--', 'true']], planted)
      await unlink(planted)
    }
    assert.deepEqual(await readdir(outside), [])
  })
})

describe('file backend: exclusive waiters stand in line', {concurrency: 1}, () => {
  const ctx = useBackend(fileBackend, {before, after})
  /** The owners in the key's line, read from its current state (leases.ts). */
  const line = async (key) => {
    const dir = join(ctx.instance.baseDir, 'leases', encodeName(key))
    const {version, id} = currentState(await readdir(dir))
    const state = JSON.parse(await readFile(join(dir, contentOf(version, id)), 'utf8').catch(() => '{}'))
    return {waiting: state.waiting ?? [], marker: markerName(version, id)}
  }

  it('waiters get the key in the order they arrived; a --wait 0 try does not pass them; recording a place is a quiet commit', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('fair')
    const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
    assert.equal(held.code, 0, held.stderr)
    const waiters = []
    for (let i = 1; i <= 4; i++) {
      waiters.push(spawnOn(ctx.dlq.url, ['lock', 'run', '--key', key, '--wait', '20s', '--', 'sh', '-c', `echo ${i} >> "$1/order"`, 'file-test', dir], {t}))
      await waitFor(async () => (await line(key)).waiting.length === i, {what: `waiter ${i} to stand in line`})
      assert.match((await line(key)).marker, /^S\.\d+\.0/, 'the commit that recorded the place is quiet')
    }
    const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', held.stdout.trim()])
    assert.equal(released.code, 0, released.stderr)
    const results = await Promise.all(waiters.map((w) => w.result))
    assert.deepEqual(results.map((r) => r.code), [0, 0, 0, 0], results.map((r) => r.stderr).join(''))
    assert.equal(await readFile(join(dir, 'order'), 'utf8'), '1\n2\n3\n4\n')
    assert.deepEqual((await line(key)).waiting, [], 'each left the line as it acquired')
  })

  it('a waiter in line sleeps on its own wake-up file, not the key\'s directory; the release that names it touches that file; the file goes when the waiter does', async (t) => {
    const key = uniqueName('wake-file')
    const wakeDir = join(ctx.instance.baseDir, 'wake')
    const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
    assert.equal(held.code, 0, held.stderr)
    const waiter = spawnOn(ctx.dlq.url, ['lock', 'run', '--key', key, '--wait', '20s', '--', 'true'], {t})
    await waitFor(async () => (await line(key)).waiting.length === 1, {what: 'the waiter to stand in line'})
    const [owner] = (await line(key)).waiting.map((w) => w.owner)
    const wakeFile = join(wakeDir, encodeName(owner))
    // The inodes the waiter's inotify watches (/proc/PID/fdinfo of its inotify descriptor).
    const watchedInodes = async () => {
      const inodes = []
      for (const fd of await readdir(`/proc/${waiter.pid}/fd`)) {
        if ((await readlink(`/proc/${waiter.pid}/fd/${fd}`).catch(() => '')) !== 'anon_inode:inotify') continue
        for (const m of (await readFile(`/proc/${waiter.pid}/fdinfo/${fd}`, 'utf8')).matchAll(/^inotify wd:\S+ ino:([0-9a-f]+)/gm)) inodes.push(Number.parseInt(m[1], 16))
      }
      return inodes
    }
    const fileInode = await waitFor(async () => (await stat(wakeFile).catch(() => undefined))?.ino, {what: 'the waiter\'s wake-up file'})
    await waitFor(async () => (await watchedInodes()).join() === String(fileInode), {what: 'the waiter to watch its wake-up file alone'})
    assert.ok(!(await watchedInodes()).includes((await stat(join(ctx.instance.baseDir, 'leases', encodeName(key)))).ino), 'the waiter still watches the key\'s directory')
    // The release names the waiter: it touches the waiter's file (an open with O_TRUNC: a new
    // mtime, which an unlink would not give), and the waiter runs. Read through a descriptor held
    // here, since the waiter removes its file once it has the key.
    const handle = await open(wakeFile, 'r')
    t.after(() => handle.close())
    await utimes(wakeFile, 1, 1) // an old mtime (this wakes the waiter once: it finds the key busy and sleeps on)
    const before = (await handle.stat()).mtimeMs
    const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', held.stdout.trim()])
    assert.equal(released.code, 0, released.stderr)
    const result = await waiter.result
    assert.equal(result.code, 0, result.stderr)
    assert.ok((await handle.stat()).mtimeMs > before, 'the release did not touch the waiter\'s wake-up file')
    assert.deepEqual(await readdir(wakeDir), [], 'the waiter left its wake-up file behind')
  })

  it('a --wait 0 try finds a key with waiters in line busy (75); a waiter killed in line stops blocking within its place\'s 5 s', async (t) => {
    const key = uniqueName('dead-waiter')
    const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
    assert.equal(held.code, 0, held.stderr)
    const waiter = spawnOn(ctx.dlq.url, ['lock', 'run', '--key', key, '--wait', '20s', '--', 'true'], {t})
    await waitFor(async () => (await line(key)).waiting.length === 1, {what: 'the waiter to stand in line'})
    waiter.kill('SIGKILL')
    await waiter.result
    assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--token', held.stdout.trim()])).code, 0)
    const [place] = (await line(key)).waiting
    const sent = Date.now()
    const tried = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
    // Judged by the place's expiry (same clock): a try over before it is behind the dead waiter,
    // one begun after it gets the key; one that straddles it may be either.
    if (Date.now() < place.expiresMs) assert.equal(tried.code, 75, 'the dead waiter\'s place is still live: the try is behind it')
    else if (sent > place.expiresMs) assert.equal(tried.code, 0, tried.stderr)
    else assert.ok([0, 75].includes(tried.code), tried.stderr)
    const started = Date.now()
    const patient = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '20s', '--', 'true'])
    assert.equal(patient.code, 0, patient.stderr)
    assert.ok(Date.now() - started < 10_000, `a waiter behind the dead one got the key ${Date.now() - started} ms later (its place lasts 5 s)`)
  })
})
