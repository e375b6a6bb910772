// The watchdog (src/watchdog.ts) on its own, through a stand-in for dlq (test/support/watched.mjs)
// that the tests kill or stop as they would dlq. What it must guarantee: the command's processes
// (the command, its children, orphans that left for a session of their own, children that cleared
// their environment) and nothing else are stopped, SIGKILL no later than the lease's end whatever
// the grace; once it has begun to stop them, no later lease line calls that off.
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {describe, it} from 'node:test'

import {isAlive, killPid, NODE, ROOT, shForAWhile, stillFalse, tempDir, trackPid, waitFor} from '../support/cli.mjs'

const WATCHED = join(ROOT, 'test', 'support', 'watched.mjs')
// How late the test itself may notice a death on a busy machine (the former watchdog's SIGKILL came
// the whole 10 s grace late).
const NOTICE_MS = 1000

const readPid = async (path) => {
  const text = (await readFile(path, 'utf8').catch(() => '')).trim()
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}
const readText = (path) => readFile(path, 'utf8').catch(() => '')

/**
 * Starts the stand-in: `sh -c SCRIPT` under a watchdog told the lease ends leaseMs from now.
 * SCRIPT gets the directory as $1 (then `args`) and should write its pids there. Resolves once the
 * command runs.
 */
async function watched(t, {script, dir, args = [], graceMs = 10_000, leadMs = 500, leaseMs = 2000, mark = `DLQ_LOCK_OWNER=${randomUUID()}`}) {
  const proc = spawn(NODE, [WATCHED, mark, String(graceMs), String(leadMs), String(leaseMs), script, dir, ...args], {stdio: ['pipe', 'pipe', 'inherit'], detached: true})
  let out = ''
  proc.stdout.on('data', (chunk) => {
    out += chunk
  })
  proc.stdin.on('error', () => {})
  // Its process group holds the command too: a deadline or a failed test takes them all.
  t.after(() => killPid(proc.pid))
  const [, pid, leaseAt] = await waitFor(() => /^pid (\d+) (\d+)$/m.exec(out), {what: 'the stand-in to start its command'})
  trackPid(pid)
  return {
    proc,
    pid: Number(pid),
    leaseEnd: Number(leaseAt) + leaseMs,
    mark,
    lines: () => out.split('\n').filter(Boolean),
    tell: (line) => proc.stdin.write(`${line}\n`),
  }
}

describe('watchdog', {concurrency: 4}, () => {
  it('dlq killed: SIGTERM at once, SIGKILL by the lease\'s end (not after the 10s grace), to the command, its child, and an orphan in a session of its own', async (t) => {
    const dir = await tempDir(t)
    const script = `trap 'echo term >> "$1/terms"' TERM; setsid sh -c 'trap "" TERM; echo $$ > "$1/orphan"; ${shForAWhile(30)}' x "$1" & sleep 30 & echo $! > "$1/child"; echo $$ > "$1/pid"; ${shForAWhile(30)}`
    const w = await watched(t, {script, dir, leaseMs: 3000})
    const orphan = await waitFor(() => readPid(join(dir, 'orphan')), {what: 'the orphan to start'})
    const child = await waitFor(() => readPid(join(dir, 'child')), {what: 'the child to start'})
    w.proc.kill('SIGKILL')
    const killedAt = Date.now()
    await waitFor(() => readText(join(dir, 'terms')), {what: 'the command to get SIGTERM', timeoutMs: 2000})
    const gone = await Promise.all([w.pid, child, orphan].map((pid) => waitFor(() => !isAlive(pid) && Date.now(), {what: `pid ${pid} to be stopped`, timeoutMs: 8000, intervalMs: 10})))
    const late = Math.max(...gone) - w.leaseEnd
    assert.ok(late <= NOTICE_MS, `the last of them died ${late}ms after the lease's end (dlq killed ${w.leaseEnd - killedAt}ms before it)`)
  })

  it('dlq stopped: SIGTERM (with SIGCONT) before the lease\'s end, SIGKILL at its end; reported as "stopping" and "gone"', async (t) => {
    const dir = await tempDir(t)
    const script = `trap 'echo term >> "$1/terms"' TERM; echo $$ > "$1/pid"; ${shForAWhile(30)}`
    // The lead is long and the lease longer: dlq must be stopped before the watchdog looks, however busy the machine.
    const w = await watched(t, {script, dir, leaseMs: 6000, leadMs: 2000})
    w.proc.kill('SIGSTOP')
    t.after(() => w.proc.kill('SIGCONT'))
    await waitFor(() => readText(join(dir, 'terms')), {what: 'the command to get SIGTERM', timeoutMs: 5000})
    const termAt = Date.now()
    assert.ok(termAt >= w.leaseEnd - 2000 - 50, `SIGTERM came ${w.leaseEnd - termAt}ms before the lease's end, earlier than the 2s lead`)
    const goneAt = await waitFor(() => !isAlive(w.pid) && Date.now(), {what: 'the command to be stopped', timeoutMs: 5000, intervalMs: 10})
    assert.ok(goneAt - w.leaseEnd <= NOTICE_MS, `the command died ${goneAt - w.leaseEnd}ms after the lease's end`)
    w.proc.kill('SIGCONT')
    await waitFor(() => w.lines().includes('gone'), {what: 'the report "gone"'})
    assert.ok(w.lines().includes('stopping'), w.lines().join('\n'))
  })

  it('once it has begun to stop the command, a newer lease line (dlq continued and renewed) does not call the SIGKILL off', async (t) => {
    const dir = await tempDir(t)
    // The command takes its SIGTERM and goes on: only the SIGKILL that the watchdog owes it ends it.
    const script = `trap 'echo term >> "$1/terms"' TERM; echo $$ > "$1/pid"; ${shForAWhile(30)}`
    const w = await watched(t, {script, dir, leaseMs: 6000, leadMs: 3000})
    w.proc.kill('SIGSTOP')
    await waitFor(() => readText(join(dir, 'terms')), {what: 'the watchdog to begin the stop', timeoutMs: 5000})
    w.proc.kill('SIGCONT')
    w.tell('lease 30000')
    const goneAt = await waitFor(() => !isAlive(w.pid) && Date.now(), {what: 'the SIGKILL due at the first lease\'s end', timeoutMs: 10_000, intervalMs: 10})
    assert.ok(goneAt - w.leaseEnd <= NOTICE_MS, `the command died ${goneAt - w.leaseEnd}ms after the lease's end`)
  })

  it('a renewed lease and a running dlq: nothing is stopped', async (t) => {
    const dir = await tempDir(t)
    const w = await watched(t, {script: `echo $$ > "$1/pid"; ${shForAWhile(30)}`, dir, leaseMs: 1000, leadMs: 300})
    const renew = setInterval(() => w.tell('lease 1000'), 200)
    t.after(() => clearInterval(renew))
    await stillFalse(() => !isAlive(w.pid), {forMs: 3000, what: 'the command being stopped while its lease was renewed'})
    clearInterval(renew)
    // And a running dlq whose lease lapses handles the loss itself: the watchdog leaves it alone.
    await stillFalse(() => !isAlive(w.pid), {forMs: 2500, what: 'the watchdog stopping the command of a running dlq'})
  })

  it('stop: SIGTERM to every process now and "gone" as soon as they are; SIGKILL after the grace for one that stays; never dlq or its job-mates', async (t) => {
    const dir = await tempDir(t)
    // A job-mate: in dlq's process group (dlq is started detached, so the group is dlq's), not the command's.
    const mate = spawn('sh', ['-c', `echo $$ > "$1/mate"; ${shForAWhile(30)}`, 'mate', dir], {stdio: 'ignore'})
    t.after(() => killPid(mate.pid))
    const script = `sh -c 'trap "" TERM; echo $$ > "$1/stubborn"; ${shForAWhile(30)}' x "$1" & env -i sh -c 'echo $$ > "$1/cleared"; ${shForAWhile(30)}' x "$1" & echo $$ > "$1/pid"; wait`
    const w = await watched(t, {script, dir, leaseMs: 30_000})
    const stubborn = await waitFor(() => readPid(join(dir, 'stubborn')), {what: 'the TERM-ignoring child'})
    const cleared = await waitFor(() => readPid(join(dir, 'cleared')), {what: 'the child without environment'})
    const sentAt = Date.now()
    w.tell('stop 1500')
    await waitFor(() => !isAlive(cleared) && !isAlive(w.pid), {what: 'the command and its environment-less child to die of SIGTERM', timeoutMs: 3000})
    assert.ok(isAlive(stubborn), 'the TERM-ignoring child outlives the SIGTERM')
    await waitFor(() => w.lines().includes('gone'), {what: 'the report "gone"', timeoutMs: 8000})
    const took = Date.now() - sentAt
    assert.ok(took >= 1000 && took < 5000, `"gone" ${took}ms after a stop with a 1.5s grace`)
    assert.equal(isAlive(stubborn), false)
    assert.ok(isAlive(w.proc.pid), 'dlq itself is not stopped')
    assert.ok(isAlive(mate.pid), "dlq's job-mate is not stopped")
  })

  it('sig: a forwarded signal reaches the command and its children, and nothing with another mark', async (t) => {
    const dir = await tempDir(t)
    const mark = `DLQ_LOCK_OWNER=${randomUUID()}`
    const trap = (name) => `trap 'echo ${name} >> "$1/usr1"' USR1; echo > "$1/ready.${name}"; ${shForAWhile(30)}`
    // Another holding's command: a mark that differs in its last character only.
    const other = spawn('sh', ['-c', trap('other'), 'other', dir], {stdio: 'ignore', env: {...process.env, DLQ_LOCK_OWNER: `${mark.slice(15, -1)}x`}})
    t.after(() => killPid(other.pid))
    const script = `sh -c "$2" x "$1" & ${trap('command')}`
    const w = await watched(t, {script, dir, args: [trap('child')], mark, leaseMs: 30_000})
    await waitFor(async () => (await Promise.all(['other', 'child', 'command'].map((name) => readText(join(dir, `ready.${name}`))))).every(Boolean), {what: 'the traps to be set'})
    w.tell('sig USR1')
    await waitFor(async () => (await readText(join(dir, 'usr1'))).split('\n').filter(Boolean).sort().join(' ') === 'child command', {what: 'SIGUSR1 at the command and its child', timeoutMs: 5000})
    assert.doesNotMatch(await readText(join(dir, 'usr1')), /other/)
    w.tell('end')
  })
})

const WATCHED_MANY = join(ROOT, 'test', 'support', 'watched-many.mjs')

/** Starts the worker stand-in: one watchdog shell, a command per lease (ms from now). Resolves once they all run. */
async function watchedMany(t, {script, dir, leases, graceMs = 10_000, leadMs = 500, shell}) {
  const proc = spawn(NODE, [WATCHED_MANY, String(graceMs), String(leadMs), leases.join(','), script, dir], {stdio: ['pipe', 'pipe', 'inherit'], detached: true, env: {...process.env, DLQ_TEST_WATCHDOG_SHELL: shell}})
  let out = ''
  proc.stdout.on('data', (chunk) => {
    out += chunk
  })
  proc.stdin.on('error', () => {})
  t.after(() => killPid(proc.pid))
  const started = await waitFor(() => {
    const lines = [...out.matchAll(/^pid (\d+) (\d+) (\d+)$/gm)]
    return lines.length === leases.length && lines
  }, {what: 'the stand-in to start its commands'})
  const commands = started.map(([, id, pid, leaseAt]) => ({id: Number(id), pid: trackPid(pid), leaseEnd: Number(leaseAt) + leases[Number(id) - 1]}))
  return {proc, commands, tell: (line) => proc.stdin.write(`${line}\n`)}
}

// Bash too where there is one: its `read -t` keeps the time, where dash's loop needs its timer.
for (const shell of ['/bin/sh', ...(existsSync('/bin/bash') ? ['/bin/bash'] : [])]) {
  describe(`one watchdog shell watching several commands (${shell})`, {concurrency: 2}, () => {
    // Each command ignores SIGTERM and notes signals; its pid goes to $1/pid.$2.
    const script = `trap 'echo "term $2" >> "$1/terms"' TERM; trap 'echo "usr1 $2" >> "$1/usr1"' USR1; echo $$ > "$1/pid.$2"; ${shForAWhile(30)}`

    it('a signal and an end for one command leave the others alone; dlq killed: SIGTERM to each still watched, SIGKILL by each one\'s lease\'s end; the ended one is not touched', async (t) => {
      const dir = await tempDir(t)
      const w = await watchedMany(t, {script, dir, leases: [3000, 4500, 30_000], shell})
      w.tell('sig 2 USR1')
      await waitFor(() => readText(join(dir, 'usr1')), {what: 'SIGUSR1 at command 2'})
      w.tell('end 3') // command 3 "exited": what it left running is not the watchdog's
      await stillFalse(async () => (await readText(join(dir, 'usr1'))) !== 'usr1 2\n', {forMs: 300, what: 'the signal reaching another command'})
      w.proc.kill('SIGKILL')
      await waitFor(async () => (await readText(join(dir, 'terms'))).split('\n').filter(Boolean).sort().join(' ') === 'term 1 term 2', {what: 'SIGTERM at commands 1 and 2', timeoutMs: 3000})
      for (const command of w.commands.slice(0, 2)) {
        const goneAt = await waitFor(() => !isAlive(command.pid) && Date.now(), {what: `command ${command.id} to be stopped`, timeoutMs: 8000, intervalMs: 10})
        assert.ok(goneAt - command.leaseEnd <= NOTICE_MS, `command ${command.id} died ${goneAt - command.leaseEnd}ms after its lease's end`)
      }
      assert.ok(isAlive(w.commands[2].pid), 'the command whose watch had ended is left alone')
      assert.doesNotMatch(await readText(join(dir, 'terms')), /term 3/)
    })

    it('dlq stopped: each command gets SIGTERM no sooner than the lead before its own lease\'s end, and SIGKILL by that end', async (t) => {
      const dir = await tempDir(t)
      // A lead long enough that SIGTERM comes well before SIGKILL even when a look at /proc costs 0.5 s.
      const w = await watchedMany(t, {script, dir, leases: [4000, 8000], leadMs: 2500, shell})
      w.proc.kill('SIGSTOP')
      t.after(() => w.proc.kill('SIGCONT'))
      for (const command of w.commands) {
        const termAt = await waitFor(async () => (await readText(join(dir, 'terms'))).includes(`term ${command.id}`) && Date.now(), {what: `SIGTERM at command ${command.id}`, timeoutMs: 10_000, intervalMs: 10})
        assert.ok(termAt >= command.leaseEnd - 2500 - 100 - 50, `command ${command.id}: SIGTERM ${command.leaseEnd - termAt}ms before its lease's end, earlier than the 2.5s lead`)
        const goneAt = await waitFor(() => !isAlive(command.pid) && Date.now(), {what: `command ${command.id} to be stopped`, timeoutMs: 8000, intervalMs: 10})
        assert.ok(goneAt - command.leaseEnd <= NOTICE_MS, `command ${command.id} died ${goneAt - command.leaseEnd}ms after its lease's end`)
      }
    })
  })
}
