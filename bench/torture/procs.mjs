// Process bookkeeping for the torture: every process it starts, directly or through dlq, carries
// TORTURE_RUN=<id> in its environment, so that cleanup can find and end all of them (dlq's
// commands, reapers and handlers included) by pid, and nothing else. Waiting is always on a
// condition with a deadline (waitUntil), never a bare sleep hoping something happened.
import {spawn} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {readdirSync, readFileSync} from 'node:fs'
import {setTimeout as delay} from 'node:timers/promises'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const DLQ = join(ROOT, 'bin', 'run.cjs')
export const NODE = process.execPath
export const RUN_ID = randomUUID()

/** The environment of everything the torture starts: the marker, no inherited backend, no colours. */
export function tortureEnv(extra = {}) {
  const env = {...process.env, NO_COLOR: '1', TORTURE_RUN: RUN_ID, ...extra}
  delete env.DLQ_BACKEND
  delete env.FORCE_COLOR
  return env
}

const live = new Set()

/**
 * Starts a process in a process group of its own (so a kill of the group takes its helpers, and a
 * terminal's Ctrl-C reaches only the torture, which then cleans up). Returns the ChildProcess with
 *   proc.spawnAt, proc.stderrText(), proc.done: Promise<{code, signal, at}>
 */
export function start(command, args, {env, input, onStderrLine} = {}) {
  const proc = spawn(command, args, {env: env ?? tortureEnv(), stdio: ['pipe', 'ignore', 'pipe'], detached: true})
  proc.spawnAt = Date.now()
  live.add(proc)
  let stderr = ''
  let partial = ''
  proc.stderr.on('data', (chunk) => {
    const text = chunk.toString('utf8')
    if (stderr.length < 20_000) stderr += text
    if (onStderrLine) {
      const lines = (partial + text).split('\n')
      partial = lines.pop()
      for (const line of lines) onStderrLine(line, Date.now())
    }
  })
  proc.stderr.on('end', () => partial && onStderrLine?.(partial, Date.now())) // a last line without its newline
  proc.stderrText = () => stderr
  proc.stdin.on('error', () => {})
  if (input === undefined) proc.stdin.end()
  else proc.stdin.end(input)
  proc.done = new Promise((resolve) => {
    proc.on('error', (error) => {
      live.delete(proc)
      resolve({code: null, signal: null, at: Date.now(), error})
    })
    proc.on('exit', (code, signal) => {
      live.delete(proc)
      resolve({code, signal, at: Date.now()})
    })
  })
  return proc
}

/** Runs a dlq command to completion (stdout kept): {code, signal, stdout, stderr, at}. */
export function runDlq(args, {input, timeoutMs = 30_000} = {}) {
  return new Promise((resolve) => {
    const proc = spawn(NODE, [DLQ, ...args], {env: tortureEnv(), stdio: ['pipe', 'pipe', 'pipe'], detached: true})
    live.add(proc)
    const out = []
    const err = []
    proc.stdout.on('data', (c) => out.push(c))
    proc.stderr.on('data', (c) => err.push(c))
    proc.stdin.on('error', () => {})
    proc.stdin.end(input)
    const timer = setTimeout(() => signalGroup(proc.pid, 'SIGKILL'), timeoutMs)
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      live.delete(proc)
      resolve({code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), at: Date.now()})
    })
  })
}

/**
 * Ends the runs `live()` lists: SIGTERM to each one's group (dlq forwards it, an idle wait is
 * cancelled), SIGKILL to whatever is left after 15 s. True if they all ended by themselves.
 */
export async function endRuns(live) {
  for (const run of live()) signalGroup(run.pid, 'SIGTERM')
  const ended = await waitUntil(() => live().length === 0, {timeoutMs: 15_000, intervalMs: 50})
  if (!ended) for (const run of live()) signalGroup(run.pid, 'SIGKILL')
  return ended
}

/** Sends a signal to one pid; false when it is gone. Never 0, -1 or init. */
export function signalPid(pid, signal) {
  if (!Number.isInteger(pid) || pid <= 1) return false
  try {
    process.kill(pid, signal)
    return true
  } catch {
    return false
  }
}

export function signalGroup(pid, signal) {
  if (!Number.isInteger(pid) || pid <= 1) return false
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return signalPid(pid, signal)
  }
}

/** /proc/PID/stat fields we need: state and parent. undefined when the process is gone. */
export function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return {state: rest[0], ppid: Number(rest[1])}
  } catch {
    return undefined
  }
}

/** Alive and not a zombie. */
export function isAlive(pid) {
  const stat = procStat(pid)
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X'
}

/** The direct children of a process (Linux: /proc/PID/task/PID/children). */
export function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** A process and all its descendants, parents first (for SIGSTOP of a server and its workers). */
export function processTree(pid) {
  const out = []
  const walk = (p) => {
    out.push(p)
    for (const c of childrenOf(p)) walk(c)
  }
  walk(pid)
  return out
}

/** Every live process carrying this run's marker in its environment. */
export function markedProcesses() {
  const mine = []
  const marker = Buffer.from(`TORTURE_RUN=${RUN_ID}\0`)
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    try {
      if (readFileSync(`/proc/${name}/environ`).includes(marker) && isAlive(Number(name))) mine.push(Number(name))
    } catch {}
  }
  return mine
}

/**
 * Ends every process this run started: SIGCONT first (a stopped process cannot die of SIGTERM),
 * SIGTERM, then SIGKILL whatever is left after `graceMs`. Returns the pids that needed the SIGKILL.
 */
export async function endAll(graceMs = 3000) {
  const all = () => [...new Set([...[...live].map((p) => p.pid), ...markedProcesses()])].filter((p) => isAlive(p))
  for (const pid of all()) signalPid(pid, 'SIGCONT')
  for (const pid of all()) signalPid(pid, 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (all().length > 0 && Date.now() < deadline) await delay(50)
  const stubborn = all()
  for (const pid of stubborn) signalPid(pid, 'SIGKILL')
  return stubborn
}

/**
 * Polls `predicate` until it returns a truthy value (returned), or `timeoutMs` passes (returns
 * undefined). The caller decides what a timeout means.
 */
export async function waitUntil(predicate, {timeoutMs, intervalMs = 20}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() >= deadline) return undefined
    await delay(Math.min(intervalMs, Math.max(1, deadline - Date.now())))
  }
}

export const randomBetween = (low, high) => low + Math.random() * (high - low)
export const randomInt = (low, high) => Math.floor(randomBetween(low, high + 1))
export const pick = (items) => items[Math.floor(Math.random() * items.length)]
