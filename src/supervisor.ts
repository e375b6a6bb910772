// The process supervisor of `dlq lock run` (SPEC §2). It guarantees:
// - the command runs without a shell, stdio inherited, in a process group of its own;
// - SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to dlq go to that group, as a terminal would send them;
// - the lease is renewed every ttl/3; when it is lost (renewal refused, or no renewal succeeded
//   before the lease ran out, or the backend reports loss) the whole group gets SIGTERM, then
//   SIGKILL after the kill grace, so no grandchild goes on believing it holds the lock
//   (unlike consul lock: hashicorp/consul#2022), and the result is exit 70;
// - the lease is released only after the command has exited, on every path.
import {spawn, type ChildProcess} from 'node:child_process'
import {constants} from 'node:os'

import type {Lease, LockDriver} from './backends/types.js'
import {LockLostError, toDlqError} from './errors.js'
import type {SignalRouter} from './signals.js'

export interface Supervision {
  command: string
  args: string[]
  env: Record<string, string>
  lease: Lease
  locks: LockDriver
  killGraceMs: number
  /** Signals held since the lock was taken; forwarded to the command's group once it runs. */
  signals: SignalRouter
  /** dlq's own messages (lost lock, release trouble). */
  say: (line: string) => void
}

export interface Outcome {
  exitCode: number
  lost?: string
}

const signalNumber = (name: string) => constants.signals[name as NodeJS.Signals] ?? 0

// The lease's watchdog, outside dlq and outside the command's group: a tiny shell that holds a pipe
// from dlq. Each number it reads is the time left on the lease, in seconds (the first is written
// before the command is spawned, the others after each successful renewal); when that runs out
// with no newer line (dlq SIGSTOPped, or starved), the command's group gets SIGTERM, then SIGKILL
// after the grace: a frozen dlq cannot let its command outlive its lease. "pg=N" names the group,
// written right after the spawn; should dlq be stopped before it could write that, the watchdog
// finds the group in /proc: dlq's child that leads a group of its own, other than the watchdog.
// End of file without "ok" means dlq itself died (kill -9): the group is stopped at once the same
// way. "ok" (the command has exited) ends the watch. The timer is a subshell around a background
// sleep that it kills when it is replaced, so no stray sleep lingers.
const reaperScript = `
pg=
scan() {
  for d in /proc/[0-9]*; do
    p=\${d#/proc/}; [ "$p" = "$$" ] && continue
    read -r l < "$d/stat" 2>/dev/null || continue
    set -- \${l##*) }
    [ "$2" = "$PPID" ] && [ "$3" = "$p" ] && { echo "$p"; return; }
  done
}
stop() {
  [ -n "$pg" ] || pg=$(scan)
  [ -n "$pg" ] && kill -TERM -"$pg" 2>/dev/null || exit 0
  sleep "$1" & s=$!; wait "$s"; kill -KILL -"$pg" 2>/dev/null; exit 0
}
t=
while read -r word; do
  case $word in
    ok) [ -n "$t" ] && kill "$t" 2>/dev/null; exit 0 ;;
    pg=*) pg=\${word#pg=} ;;
    *) [ -n "$t" ] && kill "$t" 2>/dev/null
      (trap 'kill "$s" 2>/dev/null; exit 0' TERM; sleep "$word" & s=$!; wait "$s" && stop "$1") & t=$! ;;
  esac
done
[ -n "$t" ] && kill "$t" 2>/dev/null
stop "$1"`

function startReaper(graceMs: number): ChildProcess | undefined {
  try {
    const reaper = spawn('/bin/sh', ['-c', reaperScript, 'dlq-reaper', (graceMs / 1000).toFixed(3)], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true, // its own session: neither a Ctrl-C nor a SIGSTOP for dlq reaches it
    })
    reaper.on('error', () => {})
    reaper.stdin?.on('error', () => {})
    reaper.unref()
    ;(reaper.stdin as unknown as {unref?: () => void})?.unref?.()
    return reaper
  } catch {
    return undefined
  }
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  error?: NodeJS.ErrnoException
}

export async function supervise(job: Supervision): Promise<Outcome> {
  let lease = job.lease
  // dlq's deadline comes a little before the backend's (1% of the TTL + 10 ms, as Redlock allows
  // for clock drift), so the command normally has its SIGTERM before another holder can get in.
  const deadline = () => lease.expiresAt.getTime() - lease.ttlMs / 100 - 10
  const timeLeft = () => Math.max(0, deadline() - Date.now())
  const reaper = startReaper(job.killGraceMs)
  const tellReaper = (line: string) => reaper?.stdin?.write(`${line}\n`)
  // The watchdog's timer runs before the command does: dlq may be stopped at any instruction.
  tellReaper((timeLeft() / 1000).toFixed(3))
  // node's own spawn (not execa, whose extra work after the spawn only widened the moment before
  // the watchdog learns the group, and costs start-up time).
  const child = spawn(job.command, job.args, {
    stdio: 'inherit',
    detached: true, // its own process group: lost-lock kills reach grandchildren too
    env: {...process.env, ...job.env},
  })
  const pid = child.pid
  tellReaper(pid === undefined ? 'ok' : `pg=${pid}`)
  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (error) => pid === undefined && resolve({code: null, signal: null, error})) // only spawn errors: dlq never kills or messages through `child`
    child.once('exit', (code, signal) => resolve({code, signal}))
  })
  const killGroup = (signal: NodeJS.Signals) => {
    if (pid === undefined) return
    try {
      process.kill(-pid, signal)
    } catch {
      // the group is gone already
    }
  }
  const groupAlive = () => {
    if (pid === undefined) return false
    try {
      process.kill(-pid, 0)
      return true
    } catch {
      return false
    }
  }

  job.signals.forwardTo(killGroup)

  let lost: string | undefined
  let renewTimer: NodeJS.Timeout | undefined
  let killTimer: NodeJS.Timeout | undefined
  let killedHard = false
  let groupDone: (() => void) | undefined
  const loseLock = (why: string) => {
    if (lost !== undefined) return
    lost = why
    clearTimeout(renewTimer)
    clearTimeout(expiryTimer)
    job.say(`dlq: lock ${JSON.stringify(lease.key)} lost: ${why} (stopping the command)`)
    killGroup('SIGTERM')
    const killAt = Date.now() + job.killGraceMs
    // Grandchildren outlive a direct child that exits at once: keep the whole group in view.
    const check = () => {
      if (!groupAlive()) return
      if (Date.now() >= killAt) {
        killGroup('SIGKILL')
        killedHard = true // cannot be ignored; what remains are zombies awaiting their reaper
        groupDone?.()
      } else killTimer = setTimeout(check, Math.min(50, Math.max(1, killAt - Date.now())))
    }
    killTimer = setTimeout(check, Math.min(50, job.killGraceMs))
  }

  // However a renewal hangs (server paused, partition), the lease is over at its deadline.
  let expiryTimer: NodeJS.Timeout | undefined
  const armExpiry = () => {
    clearTimeout(expiryTimer)
    expiryTimer = setTimeout(() => loseLock('no renewal succeeded before the lease expired (backend unreachable, or dlq stopped?)'), timeLeft())
  }
  armExpiry()

  const renewEvery = Math.max(1, Math.floor(lease.ttlMs / 3))
  const renew = async () => {
    try {
      lease = await job.locks.renew(lease.key, lease.owner, lease.ttlMs)
      if (lost === undefined) {
        tellReaper((timeLeft() / 1000).toFixed(3))
        armExpiry()
      }
    } catch (error) {
      if (error instanceof LockLostError) return loseLock(error.why)
      // Backend trouble: keep trying while the lease lasts; past its expiry, assume it is gone.
      if (Date.now() >= deadline()) return loseLock(`could not renew before the lease expired: ${toDlqError(error).why}`)
    }
    if (lost === undefined) {
      renewTimer = setTimeout(() => void renew(), Math.max(1, Math.min(renewEvery, deadline() - Date.now())))
    }
  }
  renewTimer = setTimeout(() => void renew(), renewEvery)
  const stopWatching = job.locks.watchLoss?.(lease, loseLock)

  const result = await exited
  clearTimeout(renewTimer)
  clearTimeout(expiryTimer)
  stopWatching?.()
  // dlq was stopped past the lease's end (SIGSTOP, a suspended VM): the watchdog ended the command.
  if (lost === undefined && Date.now() >= deadline()) {
    lost = 'the lease expired while dlq was not running (stopped or starved)'
    job.say(`dlq: lock ${JSON.stringify(lease.key)} lost: ${lost} (the command was stopped)`)
  }
  if (lost !== undefined && !killedHard && groupAlive()) {
    // The direct child is gone but its group is not: finish the kill grace, then SIGKILL.
    await new Promise<void>((resolve) => {
      groupDone = resolve
      const wait = () => (killedHard || !groupAlive() ? resolve() : setTimeout(wait, 20))
      wait()
    })
  }
  clearTimeout(killTimer)
  job.signals.forwardTo(undefined)
  reaper?.stdin?.end('ok\n')

  let exitCode: number
  if (result.error && pid === undefined) {
    // Not started at all: the shells' convention.
    const notFound = result.error.code === 'ENOENT'
    job.say(`dlq: cannot run ${JSON.stringify(job.command)}: ${notFound ? 'command not found' : result.error.code === 'EACCES' ? 'permission denied' : result.error.message}`)
    exitCode = notFound ? 127 : 126
  } else if (result.signal) exitCode = 128 + signalNumber(result.signal)
  else exitCode = result.code ?? 1

  try {
    if (lost === undefined) await job.locks.release(lease.key, lease.owner)
  } catch (error) {
    job.say(`dlq: could not release lock ${JSON.stringify(lease.key)}: ${toDlqError(error).why} (it expires by itself at ${lease.expiresAt.toISOString()})`)
  }
  return lost === undefined ? {exitCode} : {exitCode: 70, lost}
}
