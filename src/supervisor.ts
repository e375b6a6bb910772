// The process supervisor of `dlq lock run` (SPEC §2). It guarantees:
// - the command runs without a shell, stdio inherited, in dlq's own process group and session, so
//   it keeps the controlling terminal: /dev/tty prompts (sudo, ssh, gpg) work, and Ctrl-C, Ctrl-Z
//   and fg reach the whole job, dlq and command together, as under flock;
// - SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to dlq go to every process of the command (the terminal's
//   own Ctrl-C and Ctrl-\ already reached them: those are not sent twice, see signals.ts);
// - the lease is renewed every ttl/3; when it is lost (renewal refused, or no renewal succeeded
//   before the lease ran out, or the backend reports loss) every process of the command gets
//   SIGTERM, then SIGKILL after the kill grace, so no grandchild goes on believing it holds the
//   lock (unlike consul lock: hashicorp/consul#2022), and the result is exit 70;
// - if dlq dies or is stopped, its watchdog (watchdog.ts) stops them, SIGKILL no later than the
//   lease's end whatever the grace;
// - Ctrl-Z suspends the job; the lease is renewed once more, and dlq says how long the job may stay
//   suspended: a stopped dlq renews nothing, and its watchdog ends the command at the lease's end;
// - the lease is released only after the command has exited, on every path.
import {spawn} from 'node:child_process'
import {constants} from 'node:os'

import type {Lease, LockDriver} from './backends/types.js'
import {formatDuration} from './duration.js'
import {LockLostError, toDlqError} from './errors.js'
import {fromTerminal, type SignalRouter} from './signals.js'
import {deadlineMarginMs, termLead, type Watchdog} from './watchdog.js'

export interface Supervision {
  command: string
  args: string[]
  env: Record<string, string>
  lease: Lease
  locks: LockDriver
  killGraceMs: number
  /** Signals held since the lock was taken; forwarded to the command once it runs. */
  signals: SignalRouter
  /** dlq's own messages that are always printed (lost lock, release trouble). */
  say: (line: string) => void
  /** dlq's notices that --quiet silences (a suspended job's lease). */
  notice: (line: string) => void
  /** The command's watchdog (watchdog.ts), marked DLQ_LOCK_OWNER=<owner>, not yet told of a lease. */
  watchdog: Watchdog
}

export interface Outcome {
  exitCode: number
  lost?: string
}

const signalNumber = (name: string) => constants.signals[name as NodeJS.Signals] ?? 0

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  error?: NodeJS.ErrnoException
}

export async function supervise(job: Supervision): Promise<Outcome> {
  let lease = job.lease
  // dlq's deadline comes a little before the backend's (deadlineMarginMs), so the command has its
  // SIGKILL, from dlq or its watchdog, before another holder can get in.
  const deadline = () => lease.expiresAt.getTime() - deadlineMarginMs(lease.ttlMs)
  const timeLeft = () => Math.max(0, deadline() - Date.now())
  const key = JSON.stringify(lease.key)

  let lost: string | undefined
  let suspended = false
  let stopped: Promise<void> | undefined // the stop of a lost lock's command, once begun
  // Why a lease ran out that dlq was not there to renew; its watchdog stopped the command meanwhile.
  const ranOut = () => `the lease ran out while ${suspended ? 'the job was suspended' : 'dlq was stopped or starved'}`
  // Spawned by lockRun while the lock was being acquired (a spawn costs milliseconds that would
  // otherwise count in every hand-off); its mark is DLQ_LOCK_OWNER of this holding.
  const watchdog = job.watchdog
  watchdog.onStopping = () => loseLock(ranOut(), true)
  // Ctrl-Z: the terminal has stopped the command (same process group); dlq renews once more, says
  // how long the job may stay suspended, and stops itself as the terminal meant it to, so that the
  // shell sees the whole job stopped. `fg` continues both; dlq then renews at once. Listening
  // starts before the spawn: a Ctrl-Z may come as soon as the command runs.
  const suspend = async () => {
    if (suspended) return
    suspended = true // until the first renewal after fg: the watchdog's report may come later
    if (lost === undefined) {
      const bound = new Promise((resolve) => setTimeout(resolve, Math.min(1000, timeLeft())))
      await Promise.race([renewOnce(), bound])
      if (lost === undefined) {
        const left = deadline() - termLead(lease.ttlMs, job.killGraceMs) - Date.now()
        const onTerminal = process.stderr.isTTY ? '\n' : '' // after the terminal's "^Z"
        job.notice(`${onTerminal}dlq: job suspended: the lease on lock ${key} is not renewed while it is; resume it (fg) within ${formatDuration(Math.max(0, left))}, or the command is stopped and dlq exits 70`)
      }
    }
    process.off('SIGTSTP', onSuspend) // the default action again: stop
    process.kill(process.pid, 'SIGTSTP')
    process.on('SIGTSTP', onSuspend)
    if (lost === undefined && Date.now() >= deadline()) loseLock(ranOut())
    if (lost !== undefined) return
    clearTimeout(renewTimer)
    await renew()
    suspended = false
  }
  const onSuspend = () => void suspend()
  process.on('SIGTSTP', onSuspend)

  // The watchdog's timer runs before the command does: dlq may be stopped at any instruction, and
  // the command is found by its mark in the environment before the watchdog learns its pid.
  watchdog.lease(timeLeft())
  // node's own spawn (not execa, whose extra work after the spawn costs start-up time). Not
  // detached: the command stays in dlq's process group, on dlq's terminal.
  const child = spawn(job.command, job.args, {stdio: 'inherit', env: {...process.env, ...job.env}})
  const pid = child.pid
  if (pid !== undefined) watchdog.command(pid)
  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (error) => pid === undefined && resolve({code: null, signal: null, error})) // only spawn errors: dlq never kills or messages through `child`
    child.once('exit', (code, signal) => resolve({code, signal}))
  })
  // Without a watchdog (no /bin/sh), only the command's own pid can be signalled.
  const signalCommand = (signal: NodeJS.Signals) => {
    if (pid === undefined || watchdog.signal(signal)) return
    try {
      process.kill(pid, signal)
    } catch {
      // gone already
    }
  }
  job.signals.forwardTo(signalCommand, fromTerminal)

  let renewTimer: NodeJS.Timeout | undefined
  let expiryTimer: NodeJS.Timeout | undefined
  function loseLock(why: string, byWatchdog = false) {
    if (lost !== undefined) return
    lost = why
    clearTimeout(renewTimer)
    clearTimeout(expiryTimer)
    job.say(`dlq: lock ${key} lost: ${why} (${byWatchdog ? 'its watchdog stopped the command' : 'stopping the command'})`)
    if (byWatchdog) stopped = watchdog.gone
    else if (watchdog.stop(job.killGraceMs)) stopped = watchdog.gone
    else stopped = stopDirectChild()
  }
  const stopDirectChild = async () => {
    signalCommand('SIGTERM')
    if (!Number.isFinite(job.killGraceMs)) return
    const grace = new Promise((resolve) => setTimeout(resolve, job.killGraceMs))
    if ((await Promise.race([exited.then(() => 'exited'), grace])) !== 'exited') signalCommand('SIGKILL')
  }

  // A timer that fires this long after it was due: dlq itself was not running (SIGSTOP, starved).
  const lateBy = Math.max(200, lease.ttlMs / 10)
  // Set when the renewal timer fired late, until a renewal succeeds. Continued after a stop past
  // the lease's end, dlq runs both timers at once, the renewal's first: the expiry, due only just
  // before, is not late itself, yet the lease ran out because dlq was stopped.
  let stalled = false
  // However a renewal hangs (server paused, partition), the lease is over at its deadline.
  const armExpiry = () => {
    stalled = false
    clearTimeout(expiryTimer)
    const due = deadline()
    expiryTimer = setTimeout(() => {
      const late = Date.now() - due > lateBy
      loseLock(late || stalled ? ranOut() : 'no renewal succeeded before the lease expired (backend unreachable?)')
    }, timeLeft())
  }
  armExpiry()

  const renewEvery = Math.max(1, Math.floor(lease.ttlMs / 3))
  const renewOnce = async () => {
    try {
      const renewed = await job.locks.renew(lease.key, lease.owner, lease.ttlMs)
      if (lost !== undefined) return
      lease = renewed
      watchdog.lease(timeLeft())
      armExpiry()
    } catch (error) {
      if (error instanceof LockLostError) return loseLock(error.why)
      // Backend trouble: keep trying while the lease lasts; past its expiry, assume it is gone.
      if (Date.now() >= deadline()) return loseLock(`could not renew before the lease expired: ${toDlqError(error).why}`)
    }
  }
  let renewDue = 0
  const scheduleRenewal = (ms: number) => {
    renewDue = Date.now() + ms
    renewTimer = setTimeout(() => {
      if (Date.now() - renewDue > lateBy) stalled = true
      void renew()
    }, ms)
  }
  const renew = async () => {
    await renewOnce()
    if (lost === undefined) {
      clearTimeout(renewTimer)
      scheduleRenewal(Math.max(1, Math.min(renewEvery, deadline() - Date.now())))
    }
  }
  scheduleRenewal(renewEvery)
  const stopWatching = job.locks.watchLoss?.(lease, loseLock)

  const result = await exited
  process.off('SIGTSTP', onSuspend)
  clearTimeout(renewTimer)
  clearTimeout(expiryTimer)
  stopWatching?.()
  // dlq was stopped past the lease's end (SIGSTOP, a suspended VM): the watchdog ended the command.
  if (lost === undefined && Date.now() >= deadline()) {
    lost = ranOut()
    job.say(`dlq: lock ${key} lost: ${lost} (the command was stopped)`)
  }
  // The direct child is gone, but its children may not be: finish the kill grace, then SIGKILL.
  if (stopped) {
    const keepAlive = setInterval(() => {}, 1 << 30) // the watchdog's pipe is unref'd
    await stopped
    clearInterval(keepAlive)
  }
  job.signals.forwardTo(undefined)
  watchdog.end()

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
    job.say(`dlq: could not release lock ${key}: ${toDlqError(error).why} (it expires by itself at ${lease.expiresAt.toISOString()})`)
  }
  return lost === undefined ? {exitCode} : {exitCode: 70, lost}
}
