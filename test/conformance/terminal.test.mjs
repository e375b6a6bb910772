// `dlq lock run` on a real terminal (SPEC §2): the command stays in dlq's session with the
// controlling terminal, so /dev/tty prompts work and Ctrl-C, Ctrl-Z and fg behave as under flock.
// The terminal is a pseudo-terminal (test/support/pty.mjs); job control is an interactive bash on
// it. This is the supervisor, not a backend: the file backend suffices, and every case runs on the
// fast path and on oclif's.
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, isAlive, NODE, shForAWhile, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {keys, startPty} from '../support/pty.mjs'

const SH0 = 'dlq-test-sh'
const paths = [['fast path', {}], ['oclif', {DLQ_FAST_PATH: '0'}]]

const readPid = async (path) => {
  const text = (await readFile(path, 'utf8').catch(() => '')).trim()
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}
/** A process's state letter (/proc/PID/stat): S, R, T (stopped), Z; undefined when gone. */
const stateOf = async (pid) => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  return stat?.slice(stat.lastIndexOf(')') + 2)[0]
}

describe('lock run on a terminal', {concurrency: 2}, () => {
  const ctx = useBackend(fileBackend, {before, after})
  const status = async (key) => {
    const r = await ctx.dlq.run(['lock', 'status', '--key', key, '--json'])
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout).locks
  }
  /** An interactive bash on a new terminal, with dlq's backend, node and bin/run.cjs in its environment. */
  const shell = (env, t) => startPty('bash', ['--norc', '--noprofile', '-i'], {env: {...env, DLQ_BACKEND: ctx.dlq.url, NODE, BIN}, t})

  for (const [path, env] of paths) {
    it(`[${path}] a sudo-style /dev/tty prompt (echo off, stdin elsewhere) is answered through the terminal`, async (t) => {
      const script = 'exec </dev/null; stty -echo </dev/tty; printf "Password: " >/dev/tty; IFS= read -r pw </dev/tty; stty echo </dev/tty; printf "\\ngot <%s>\\n" "$pw"'
      const term = startPty(NODE, [BIN, 'lock', 'run', '-b', ctx.dlq.url, '--key', uniqueName('tty'), '--', 'sh', '-c', script, SH0], {env, t})
      await term.expect('Password: ')
      term.type('s3cret words\n')
      const {code, screen} = await term.result
      assert.equal(code, 0, screen)
      assert.match(screen, /got <s3cret words>/)
      assert.doesNotMatch(screen.slice(0, screen.indexOf('got <')), /s3cret/, 'typed with echo off: the prompt had the terminal')
    })

    it(`[${path}] Ctrl-C reaches the command once, not a second time through dlq; dlq exits with the command's code`, async (t) => {
      const dir = await tempDir(t)
      // The INT trap counts; a SIGTERM to dlq, forwarded after any forwarded SIGINT, prints the count.
      const script = `n=0; trap 'n=$((n+1)); echo "int $n"' INT; trap 'echo "ints: $n"; exit 7' TERM; echo $$ > "$1/pid"; echo ready; ${shForAWhile(30)}`
      const term = startPty(NODE, [BIN, 'lock', 'run', '-b', ctx.dlq.url, '--key', uniqueName('ctrl-c'), '--', 'sh', '-c', script, SH0, dir], {env, t})
      let at = await term.expect('ready\r\n')
      term.type(keys.ctrlC)
      at = await term.expect('int 1\r\n', {from: at})
      process.kill(await term.pid, 'SIGTERM')
      const {code, screen} = await term.result
      assert.match(screen.slice(at), /ints: 1\r\n/, `the command saw one SIGINT:\n${screen}`)
      assert.equal(code, 7, screen)
    })

    it(`[${path}] Ctrl-Z suspends the whole job with its lease held, and fg resumes it; the lock is released after`, async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('jobs')
      const term = shell({...env, DIR: dir, KEY: key}, t)
      // `sta""rted`: what the command prints, never the echo of the line typed.
      term.type(`"$NODE" "$BIN" lock run --key "$KEY" -- sh -c 'echo $$ > "$1/pid"; echo sta""rted; IFS= read -r line; echo "got <$line>"' ${SH0} "$DIR"\n`)
      let at = await term.expect('started\r\n')
      const pid = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start'})
      const [held] = await status(key)
      const dlqPid = held.holders[0].pid

      term.type(keys.ctrlZ)
      at = await term.expect(/dlq: job suspended: the lease on lock "[^"]+" is not renewed while it is; resume it \(fg\) within \d/, {from: at})
      at = await term.expect(/\[1\]\+\s+Stopped/, {from: at, what: "bash's report of the stopped job"})
      assert.equal(await stateOf(pid), 'T', 'the command is stopped with the job')
      assert.equal(await stateOf(dlqPid), 'T', 'dlq is stopped with the job')
      const [suspended] = await status(key)
      assert.equal(suspended?.holders[0]?.owner, held.holders[0].owner, 'the lease is still held')
      assert.ok(new Date(suspended.holders[0].expiresAt).getTime() > Date.now() + 10_000, `renewed at the suspension (30s): ${suspended.holders[0].expiresAt}`)

      term.type('fg\n')
      await waitFor(async () => (await stateOf(pid)) !== 'T', {what: 'the command to run again'})
      term.type('typed after fg\n')
      at = await term.expect('got <typed after fg>\r\n', {from: at})
      term.type('echo "rc=$?"\n')
      at = await term.expect(/rc=(\d+)\r\n/, {from: at})
      assert.match(term.screen().slice(0, at), /rc=0\r\n$/)
      assert.deepEqual(await status(key), [], 'released once the command exited')
      term.type('exit\n')
      await term.result
    })

    it(`[${path}] a job suspended past its lease: the command is stopped at the lease's end while the job stays suspended; fg reports the loss, exit 70`, async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('jobs-lost')
      const term = shell({...env, DIR: dir, KEY: key}, t)
      // The command ignores SIGTERM: only SIGKILL ends it.
      term.type(`"$NODE" "$BIN" lock run --key "$KEY" --ttl 2s --kill-grace 1s -- sh -c 'trap "" TERM; echo $$ > "$1/pid"; echo $PPID > "$1/dlq"; echo sta""rted; ${shForAWhile(30)}' ${SH0} "$DIR"\n`)
      let at = await term.expect('started\r\n')
      const pid = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start'})
      const dlqPid = await waitFor(() => readPid(join(dir, 'dlq')), {what: "the command's parent"})
      term.type(keys.ctrlZ)
      at = await term.expect(/\[1\]\+\s+Stopped/, {from: at, what: "bash's report of the stopped job"})

      // Another holder gets the lock once the lease is over, and by then the command is gone.
      const next = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '20s', '--', 'sh', '-c', 'kill -0 "$1" 2>/dev/null && ! grep -q "^[0-9]* ([^)]*) Z" "/proc/$1/stat" && echo overlap; true', SH0, String(pid)])
      assert.equal(next.code, 0, next.stderr)
      assert.equal(next.stdout, '', 'the suspended command was still alive when the next holder ran')
      assert.equal(await stateOf(dlqPid), 'T', 'the job is still suspended')

      term.type('fg\n')
      at = await term.expect(/dlq: lock "[^"]+" lost: the lease (ran out|expired) while the job was suspended/, {from: at})
      term.type('echo "rc=$?"\n')
      at = await term.expect(/rc=(\d+)\r\n/, {from: at})
      assert.match(term.screen().slice(0, at), /rc=70\r\n$/)
      assert.equal(isAlive(pid), false)
      term.type('exit\n')
      await term.result
    })
  }
})
