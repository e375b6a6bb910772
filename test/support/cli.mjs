// Helpers that run the built dlq exactly as a user would: `node bin/run.cjs ARGS…`, no shell, with a
// per-call deadline that kills the process (and its process group) and fails the test instead of
// hanging. Nothing here sleeps "to let something happen": waitFor() polls a condition with a deadline.
import {spawn} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {mkdtemp, readdir, rm} from 'node:fs/promises'
import {constants as osConstants, tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as delay} from 'node:timers/promises'
import {fileURLToPath} from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const BIN = join(ROOT, 'bin', 'run.cjs')
export const NODE = process.execPath

const DEFAULT_TIMEOUT_MS = 20_000

// Every process started here, and every pid a test reported (orphaned commands), is killed when the
// test file's process exits, whatever happened to the test.
const live = new Set()
const pids = new Set()
const dirs = new Set()

// A private state directory, so that a test that forgot --backend never touches the real default.
// Made on first use: Node 20's runner also loads this module as a test file of its own.
let privateState
function stateDir() {
  if (privateState === undefined) {
    privateState = mkdtempSync(join(tmpdir(), 'dlq-test-state-'))
    dirs.add(privateState)
  }
  return privateState
}

process.on('exit', () => {
  for (const child of live) killGroup(child.pid, 'SIGKILL')
  for (const pid of pids) killPid(pid, 'SIGKILL')
  for (const dir of dirs) {
    try {
      rmSync(dir, {recursive: true, force: true})
    } catch {}
  }
})

/** The environment dlq runs with: the caller's, no DLQ_BACKEND unless given, no colours. */
export function dlqEnv(extra = {}) {
  const env = {...process.env, NO_COLOR: '1', XDG_STATE_HOME: stateDir()}
  delete env.DLQ_BACKEND
  delete env.DLQ_PASSWORD
  delete env.FORCE_COLOR
  return {...env, ...extra}
}

function killGroup(pid, signal) {
  if (!pid) return
  try {
    process.kill(-pid, signal)
  } catch {
    killPid(pid, signal)
  }
}

/** Signals a pid, and its process group if it leads one (commands under `lock run` do). */
export function killPid(pid, signal = 'SIGKILL') {
  pid = Number(pid)
  if (!Number.isInteger(pid) || pid <= 1) return false // never 0, -1 or init: those mean "everyone"
  let hit = false
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, signal)
      hit = true
    } catch {}
  }
  return hit
}

/** Remember a pid (an orphaned command) to SIGKILL when the test file ends. */
export function trackPid(pid) {
  const n = Number(pid)
  if (Number.isInteger(n) && n > 1) pids.add(n)
  return n
}

const show = (args) => args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')
const clip = (s, n = 2000) => (s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s)

/**
 * Starts `dlq ARGS…` and returns its ChildProcess (for signal tests), with:
 *   child.result      Promise of {code, signal, stdout, stdoutBuffer, stderr, stderrLines, ms}
 *   child.stdoutText() / child.stderrText() / child.stdoutBuffer()   what arrived so far
 *   child.exited      true once the process has exited
 * opts: input (string | Buffer | Readable; stdin is closed at once when absent), env (added to
 * dlqEnv()), cwd, timeoutMs (the process group is SIGKILLed and `result` rejects past it), t (the
 * test's context: the process is SIGKILLed after the test if it is still running then).
 */
export function spawnDlq(args, {input, env, cwd, timeoutMs = DEFAULT_TIMEOUT_MS, t} = {}) {
  const started = Date.now()
  // detached: dlq leads a process group of its own, so a deadline kill takes its helpers too, and a
  // terminal's Ctrl-C for the test run is not what the signal tests send.
  const child = spawn(NODE, [BIN, ...args], {cwd: cwd ?? ROOT, env: dlqEnv(env), stdio: ['pipe', 'pipe', 'pipe'], detached: true})
  live.add(child)
  const out = []
  const err = []
  child.stdout.on('data', (chunk) => out.push(chunk))
  child.stderr.on('data', (chunk) => err.push(chunk))
  child.stdoutBuffer = () => Buffer.concat(out)
  child.stdoutText = () => Buffer.concat(out).toString('utf8')
  child.stderrText = () => Buffer.concat(err).toString('utf8')
  child.exited = false
  child.stdin.on('error', () => {}) // dlq may exit without reading its input
  if (input === undefined) child.stdin.end()
  else if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input)
  else input.pipe(child.stdin)

  child.result = new Promise((resolve, reject) => {
    let settled = false
    let exitInfo
    let graceTimer
    const finish = () => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(graceTimer)
      live.delete(child)
      // A command that outlived dlq may hold these pipes open: let go of them, or this test
      // process could never exit.
      child.stdout.destroy()
      child.stderr.destroy()
      const stdoutBuffer = Buffer.concat(out)
      const stderr = Buffer.concat(err).toString('utf8')
      resolve({
        code: exitInfo.code,
        signal: exitInfo.signal,
        stdout: stdoutBuffer.toString('utf8'),
        stdoutBuffer,
        stderr,
        stderrLines: stderr.split('\n').filter((l) => l !== ''),
        ms: exitInfo.at - started,
      })
    }
    const deadline = setTimeout(() => {
      if (settled) return
      settled = true
      killGroup(child.pid, 'SIGKILL')
      live.delete(child)
      child.stdout.destroy()
      child.stderr.destroy()
      reject(new Error(`dlq ${show(args)} did not exit within ${timeoutMs}ms (killed)\nstdout: ${clip(Buffer.concat(out).toString())}\nstderr: ${clip(Buffer.concat(err).toString())}`))
    }, timeoutMs)
    child.on('error', (error) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      live.delete(child)
      reject(error)
    })
    child.on('exit', (code, signal) => {
      child.exited = true
      exitInfo = {code, signal, at: Date.now()}
      // A command that outlives dlq (kill -9 tests) may keep its stdout open: collect what came,
      // but do not wait for that command to end.
      graceTimer = setTimeout(finish, 500)
    })
    child.on('close', () => {
      if (exitInfo) finish()
    })
  })
  child.result.catch(() => {}) // the test awaits it; never an unhandled rejection meanwhile
  // With the test's context: a test that fails half-way does not leave this process running.
  if (t && typeof t.after === 'function') t.after(() => void (child.exited || killGroup(child.pid, 'SIGKILL')))
  return child
}

/** Runs `dlq ARGS…` to completion: {code, signal, stdout, stdoutBuffer, stderr, stderrLines, ms}. */
export function run(args, opts = {}) {
  return spawnDlq(args, opts).result
}

/** `dlq ARGS…` against backend `url`: the -b goes after the two command words, before any `--`. */
export const withBackend = (url, args) => [...args.slice(0, 2), '-b', url, ...args.slice(2)]
export const runOn = (url, args, opts) => run(withBackend(url, args), opts)
export const spawnOn = (url, args, opts) => spawnDlq(withBackend(url, args), opts)

/** `lock status --key KEY --json` against `url`: its locks (asserts exit 0). */
export async function locksOn(url, key) {
  const r = await runOn(url, ['lock', 'status', '--key', key, '--json'])
  if (r.code !== 0) throw new Error(`lock status exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout).locks
}

/** Runs any program (no shell unless you name one) with a deadline; same result shape as run(). */
export function runProgram(file, args, {input, env, cwd, timeoutMs = DEFAULT_TIMEOUT_MS} = {}) {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {cwd: cwd ?? ROOT, env: dlqEnv(env), stdio: ['pipe', 'pipe', 'pipe'], detached: true})
    live.add(child)
    const out = []
    const err = []
    child.stdout.on('data', (c) => out.push(c))
    child.stderr.on('data', (c) => err.push(c))
    child.stdin.on('error', () => {})
    child.stdin.end(input)
    const deadline = setTimeout(() => {
      killGroup(child.pid, 'SIGKILL')
      live.delete(child)
      reject(new Error(`${file} ${show(args)} did not exit within ${timeoutMs}ms (killed)\nstderr: ${clip(Buffer.concat(err).toString())}`))
    }, timeoutMs)
    child.on('error', (e) => {
      clearTimeout(deadline)
      live.delete(child)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(deadline)
      live.delete(child)
      const stdoutBuffer = Buffer.concat(out)
      const stderr = Buffer.concat(err).toString()
      resolve({code, signal, stdout: stdoutBuffer.toString(), stdoutBuffer, stderr, stderrLines: stderr.split('\n').filter(Boolean), ms: Date.now() - started})
    })
  })
}

/**
 * Polls `predicate` (sync or async) until it returns a truthy value, which is returned. Past the
 * deadline it throws "timed out after Nms waiting for WHAT" (with the last error, if it threw).
 */
export async function waitFor(predicate, {timeoutMs = 10_000, intervalMs = 20, what = 'a condition'} = {}) {
  const deadline = Date.now() + timeoutMs
  let lastError
  for (;;) {
    try {
      const value = await predicate()
      if (value) return value
      lastError = undefined
    } catch (error) {
      lastError = error
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`)
    }
    await delay(intervalMs)
  }
}

/**
 * The opposite of waitFor: asserts that `predicate` stays false for the whole window (e.g. "a pop
 * with --wait 10s on an empty queue is still waiting after 500ms"). Fails as soon as it turns true.
 */
export async function stillFalse(predicate, {forMs, intervalMs = 20, what = 'a condition'}) {
  const end = Date.now() + forMs
  while (Date.now() < end) {
    if (await predicate()) throw new Error(`${what} happened within ${forMs}ms, and should not have`)
    await delay(intervalMs)
  }
}

/** A fresh directory under the OS temp dir; removed after the test `t` (if given) and at exit. */
export async function tempDir(t, prefix = 'dlq-test-') {
  if (typeof t === 'string') [t, prefix] = [undefined, t]
  const dir = await mkdtemp(join(tmpdir(), prefix))
  dirs.add(dir)
  const remove = async () => {
    await rm(dir, {recursive: true, force: true})
    dirs.delete(dir)
  }
  if (t && typeof t.after === 'function') t.after(remove)
  return dir
}

export async function removeTempDir(dir) {
  await rm(dir, {recursive: true, force: true})
  dirs.delete(dir)
}

/** Every path below `dir` (files, directories, links), relative to nothing: absolute paths. */
export async function listRecursive(dir) {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true})
  return entries.map((e) => join(e.parentPath ?? e.path, e.name))
}

/** A name no other test uses: for keys and queues, so tests can share one backend. */
export function uniqueName(label = 't') {
  return `${label}-${randomUUID().slice(0, 12)}`
}

/** Is the process alive? A zombie (exited, not yet reaped) counts as gone. */
export function isAlive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** Has process `pid` installed a handler for `signal` (Linux /proc SigCgt)? */
export function catchesSignal(pid, signal) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const mask = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(status)[1]}`)
    return (mask & (1n << BigInt(osConstants.signals[signal] - 1))) !== 0n
  } catch {
    return false
  }
}

/**
 * The invariants of every dlq error (SPEC §4): exactly one line on stderr, starting with `dlq: `,
 * and no stack trace. Returns that line.
 */
export function oneErrorLine(result, assert) {
  const lines = result.stderrLines
  assert.equal(lines.length, 1, `expected exactly one stderr line, got ${lines.length}:\n${result.stderr}`)
  assert.match(lines[0], /^dlq: /, `stderr line should start with "dlq: ": ${lines[0]}`)
  assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace')
  return lines[0]
}

/**
 * A shell loop for commands run under dlq: wait until `condition` (a shell test) holds, but never
 * longer than maxSeconds, so a command orphaned by a failing test cannot live on.
 */
export function shUntil(condition, maxSeconds = 15) {
  return `i=0; until ${condition} || [ $i -ge ${maxSeconds * 20} ]; do sleep 0.05; i=$((i+1)); done`
}

/** The same, for a command that should just keep running (until signalled) for at most maxSeconds. */
export const shForAWhile = (maxSeconds = 15) => shUntil('false', maxSeconds)
