// `lock run` and `pop --exec` when dlq itself dies or is stopped (SPEC §2): its watchdog stops
// every process of the command, SIGKILL no later than the lease's end whatever --kill-grace says,
// so the next holder (or the next worker of a redelivered message) never runs beside it. Checked
// from the next command's side: it looks for the old processes the moment it starts. The watchdog
// does not depend on the backend: the file backend suffices (test/unit/watchdog.test.mjs has the
// watchdog alone).
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, dlqEnv, isAlive, killPid, NODE, shForAWhile, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {pushArgs} from '../support/queues.mjs'

const SH0 = 'dlq-test-sh'
const readText = (path) => readFile(path, 'utf8').catch(() => '')
const readPids = async (path) => (await readText(path)).split(/\s+/).filter((w) => /^\d+$/.test(w)).map(trackPid)
/** Waits until `path` lists `n` pids. */
const pidsIn = (path, n, what) => waitFor(async () => {
  const pids = await readPids(path)
  return pids.length >= n && pids
}, {what})
// A TERM-ignoring command and a TERM-ignoring grandchild that left for a session of its own (as a
// daemon would): only SIGKILL ends them, and no process group holds them both. Their pids go to $1/pids.
const stubborn = `trap "" TERM; setsid sh -c 'trap "" TERM; echo $$ >> "$1/pids"; ${shForAWhile(30)}' x "$1" & echo $$ >> "$1/pids"; ${shForAWhile(30)}`
// Run by the next holder the moment it starts: names every old process still alive (zombies are
// dead; so is one whose stat cannot be read: a zombie reaped between a test for /proc/PID and the
// read of its stat was once named).
const looksForOld = 'for p in $(cat "$1/pids"); do grep -qv "^[0-9]* ([^)]*) Z" /proc/$p/stat 2>/dev/null && echo "$p"; done; true'

describe('the watchdog, when dlq dies or is stopped', {concurrency: 3}, () => {
  const ctx = useBackend(fileBackend, {before, after})

  it('kill -9 of lock run (--ttl 2s --kill-grace 10s): the next holder starts only once every process of the command is gone, long before the grace would end', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('kill9')
    const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '2s', '--kill-grace', '10s', '--', 'sh', '-c', stubborn, SH0, dir], {t})
    const old = await pidsIn(join(dir, 'pids'), 2, 'the command and its grandchild to start')
    t.after(() => old.forEach((pid) => killPid(pid)))
    const next = ctx.dlq.spawn(['lock', 'run', '--key', key, '--wait', '30s', '--', 'sh', '-c', looksForOld, SH0, dir], {t, timeoutMs: 40_000})
    assert.ok(holder.kill('SIGKILL'))
    const killedAt = Date.now()
    const r = await next.result
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, '', 'old processes still running when the next holder started')
    assert.ok(Date.now() - killedAt < 6000, `the next holder finished ${Date.now() - killedAt}ms after the kill: the lease is 2s, the grace 10s`)
    assert.deepEqual(old.filter(isAlive), [])
    // dlq said at the start that the grace cannot be honoured in full.
    assert.match((await holder.result).stderr, /^dlq: warning: --kill-grace 10s is not shorter than --ttl 2s/m)
  })

  it('SIGSTOP of lock run (--ttl 2s --kill-grace 10s): the command is SIGKILLed by the lease\'s end while dlq stays stopped; continued, dlq says it lost the lock and exits 70', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('stop')
    const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '2s', '--kill-grace', '10s', '-q', '--', 'sh', '-c', stubborn, SH0, dir], {t})
    const old = await pidsIn(join(dir, 'pids'), 2, 'the command and its grandchild to start')
    t.after(() => old.forEach((pid) => killPid(pid)))
    t.after(() => void holder.kill('SIGCONT'))
    assert.ok(holder.kill('SIGSTOP'))
    const next = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '30s', '--', 'sh', '-c', looksForOld, SH0, dir], {timeoutMs: 40_000})
    assert.equal(next.code, 0, next.stderr)
    assert.equal(next.stdout, '', 'old processes still running when the next holder started')
    assert.ok(holder.kill('SIGCONT'))
    const r = await holder.result
    assert.equal(r.code, 70, r.stderr)
    assert.equal(r.stderrLines.length, 1, r.stderr)
    assert.match(r.stderrLines[0], /^dlq: lock "[^"]+" lost: the lease ran out while dlq was stopped or starved \((its watchdog stopped|stopping) the command\)$/)
  })

  it('once the watchdog has begun to stop the command of a stopped dlq, dlq continued (and renewing) does not save the command from SIGKILL', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('no-reprieve')
    // --ttl 6s: SIGTERM 2s (a third of the TTL) before the lease's end; the command notes it and goes on.
    const script = `trap 'echo term > "$1/term"' TERM; echo $$ >> "$1/pids"; ${shForAWhile(30)}`
    const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '6s', '--kill-grace', '10s', '-q', '--', 'sh', '-c', script, SH0, dir], {t})
    const [pid] = await pidsIn(join(dir, 'pids'), 1, 'the command to start')
    t.after(() => killPid(pid))
    assert.ok(holder.kill('SIGSTOP'))
    await waitFor(() => readText(join(dir, 'term')), {what: 'the watchdog to send SIGTERM', timeoutMs: 10_000})
    assert.ok(holder.kill('SIGCONT'))
    const r = await holder.result
    assert.equal(r.code, 70, r.stderr)
    assert.match(r.stderr, /lost: the lease ran out while dlq was stopped or starved/)
    assert.equal(isAlive(pid), false)
  })

  it('a lost lock stops a grandchild in a session of its own too, but not a process of dlq\'s own job that is not the command\'s', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('lost')
    // sh starts a job-mate in its (and so dlq's) process group, then becomes dlq.
    const script = `${shForAWhile(30)} & echo $! > "$1/mate"; exec "$2" "$3" lock run -b "$4" --key "$5" --ttl 3s --kill-grace 1s -- sh -c "$6" ${SH0} "$1"`
    const job = spawn('sh', ['-c', script, 'job', dir, NODE, BIN, ctx.dlq.url, key, stubborn], {env: dlqEnv(), stdio: ['ignore', 'ignore', 'pipe'], detached: true})
    t.after(() => killPid(job.pid))
    let stderr = ''
    job.stderr.on('data', (chunk) => (stderr += chunk))
    const exited = new Promise((resolve) => job.on('exit', (code) => resolve(code)))
    const old = await pidsIn(join(dir, 'pids'), 2, 'the command and its grandchild to start')
    const [mate] = await pidsIn(join(dir, 'mate'), 1, 'the job-mate to start')
    t.after(() => [...old, mate].forEach((pid) => killPid(pid)))
    const forced = await ctx.dlq.run(['lock', 'release', '--key', key, '--force'])
    assert.equal(forced.code, 0, forced.stderr)
    assert.equal(await exited, 70, stderr)
    assert.match(stderr, /lost/)
    assert.deepEqual(old.filter(isAlive), [], 'every process of the command is gone when dlq exits')
    assert.ok(isAlive(mate), "the job-mate, in dlq's process group but not the command's, is left alone")
  })

  it('warns on one line when --kill-grace is not shorter than --ttl, and not with -q or a shorter grace', async () => {
    const key = uniqueName('warn')
    const warned = await ctx.dlq.run(['lock', 'run', '--key', key, '--ttl', '5s', '--kill-grace', '5s', '--', 'true'])
    assert.equal(warned.code, 0, warned.stderr)
    assert.deepEqual(warned.stderrLines, ["dlq: warning: --kill-grace 5s is not shorter than --ttl 5s: should dlq die or be stopped, its watchdog SIGKILLs the command at the lease's end, before the grace is over"])
    const quiet = await ctx.dlq.run(['lock', 'run', '--key', key, '--ttl', '5s', '--kill-grace', '5s', '-q', '--', 'true'])
    assert.deepEqual([quiet.code, quiet.stderr], [0, ''])
    const shorter = await ctx.dlq.run(['lock', 'run', '--key', key, '--ttl', '5s', '--kill-grace', '4s', '--', 'true'])
    assert.deepEqual([shorter.code, shorter.stderr], [0, ''])
  })

  it('kill -9 of a pop --exec worker: its handler gets SIGTERM at once and is gone before the message goes to the next worker', async (t) => {
    const dir = await tempDir(t)
    const queue = uniqueName('worker')
    await pushArgs(ctx.dlq, queue, ['work'])
    const handler = `trap 'echo term >> "$1/terms"' TERM; setsid sh -c 'trap "" TERM; echo $$ >> "$1/pids"; ${shForAWhile(30)}' x "$1" & echo $$ >> "$1/pids"; ${shForAWhile(30)}`
    const worker = ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--visibility', '2s', '--exec', '--', 'sh', '-c', handler, SH0, dir], {t})
    const old = await pidsIn(join(dir, 'pids'), 2, 'the handler and its grandchild to start')
    t.after(() => old.forEach((pid) => killPid(pid)))
    assert.ok(worker.kill('SIGKILL'))
    await waitFor(() => readText(join(dir, 'terms')), {what: 'the handler to get SIGTERM', timeoutMs: 3000})
    const next = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '20s', '--exec', '--', 'sh', '-c', `cat >/dev/null; ${looksForOld}`, SH0, dir], {timeoutMs: 30_000})
    assert.equal(next.code, 0, next.stderr)
    assert.equal(next.stdout, '', "the dead worker's handler was still running when the message was redelivered")
    assert.deepEqual(old.filter(isAlive), [])
  })

  // One watchdog watches all the handlers of a worker; each handler is still stopped by its own
  // message's redelivery. Four handlers, each with a TERM-ignoring grandchild in a session of its own.
  const fourStubborn = `cat > /dev/null; echo $$ >> "$1/started"; ${stubborn}`
  const fourWorker = (queue, dir, t) => ctx.dlq.spawn(['queue', 'pop', '--queue', queue, '--visibility', '3s', '--concurrency', '4', '--exec', '--', 'sh', '-c', fourStubborn, SH0, dir], {t})
  const nextWorker = (queue, dir) => ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '20s', '--count', '4', '--concurrency', '4', '--exec', '--', 'sh', '-c', `cat >/dev/null; ${looksForOld}`, SH0, dir], {timeoutMs: 40_000})

  /** Stops a --concurrency 4 worker by `signal`; its 8 processes must be SIGKILLed by the leases' end. */
  async function stopFourHandlers(t, name, signal) {
    const dir = await tempDir(t)
    const queue = uniqueName(name)
    await pushArgs(ctx.dlq, queue, ['a', 'b', 'c', 'd'])
    const worker = fourWorker(queue, dir, t)
    const old = await pidsIn(join(dir, 'pids'), 8, 'four handlers and their grandchildren to start')
    t.after(() => old.forEach((pid) => killPid(pid)))
    t.after(() => void worker.kill('SIGCONT'))
    assert.equal((await readPids(join(dir, 'started'))).length, 4)
    assert.ok(worker.kill(signal))
    // Each lease ends at most --visibility after the signal (the last extension came before it).
    const leasesEnd = Date.now() + 3000
    const gone = await Promise.all(old.map((pid) => waitFor(() => !isAlive(pid) && Date.now(), {what: `pid ${pid} to be stopped`, timeoutMs: 10_000, intervalMs: 10})))
    const late = Math.max(...gone) - leasesEnd
    assert.ok(late <= 1000, `the last of the ${old.length} processes died ${late}ms after the leases' end`)
    const next = await nextWorker(queue, dir)
    assert.equal(next.code, 0, next.stderr)
    assert.equal(next.stdout, '', "the stopped worker's handlers were still running when their messages were redelivered")
  }

  it('kill -9 of a pop --exec --concurrency 4 worker: all four handlers and their grandchildren in sessions of their own are SIGKILLed by their messages\' redelivery', async (t) => {
    await stopFourHandlers(t, 'worker4', 'SIGKILL')
  })

  it('SIGSTOP of a pop --exec --concurrency 4 worker: all four handlers and their grandchildren are SIGKILLed by their leases\' end while it stays stopped, and the messages come again', async (t) => {
    await stopFourHandlers(t, 'stop4', 'SIGSTOP')
  })
})
