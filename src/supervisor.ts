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

// If dlq itself dies (kill -9), its lease runs out while the command would go on unprotected. A
// tiny watcher outside the command's group holds a pipe from dlq: end of file without "ok" means
// dlq is gone, and the command's group gets SIGTERM, then SIGKILL after the grace.
const reaperScript = 'read -r word; [ "$word" = ok ] && exit 0; kill -TERM -"$1" 2>/dev/null || exit 0; sleep "$2"; kill -KILL -"$1" 2>/dev/null; exit 0'

function startReaper(pgid: number, graceMs: number): ChildProcess | undefined {
  try {
    const reaper = spawn('/bin/sh', ['-c', reaperScript, 'dlq-reaper', String(pgid), String(Math.ceil(graceMs / 1000))], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true, // its own session: a Ctrl-C for dlq does not reach it
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

export async function supervise(job: Supervision): Promise<Outcome> {
  const {execa} = await import('execa') // only lock run pays for loading it
  const child = execa(job.command, job.args, {
    stdio: 'inherit',
    detached: true, // its own process group: lost-lock kills reach grandchildren too
    reject: false,
    env: job.env,
    cleanup: false, // dlq decides when the command dies; never behind its back
  })
  const pid = child.pid
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

  const reaper = pid === undefined ? undefined : startReaper(pid, job.killGraceMs)

  job.signals.forwardTo(killGroup)

  let lost: string | undefined
  let lease = job.lease
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
    const deadline = Date.now() + job.killGraceMs
    // Grandchildren outlive a direct child that exits at once: keep the whole group in view.
    const check = () => {
      if (!groupAlive()) return
      if (Date.now() >= deadline) {
        killGroup('SIGKILL')
        killedHard = true // cannot be ignored; what remains are zombies awaiting their reaper
        groupDone?.()
      } else killTimer = setTimeout(check, Math.min(50, Math.max(1, deadline - Date.now())))
    }
    killTimer = setTimeout(check, Math.min(50, job.killGraceMs))
  }

  // However a renewal hangs (server paused, partition), the lease is over at its expiry.
  let expiryTimer: NodeJS.Timeout | undefined
  const armExpiry = () => {
    clearTimeout(expiryTimer)
    expiryTimer = setTimeout(() => loseLock('no renewal succeeded before the lease expired (backend unreachable?)'), Math.max(0, lease.expiresAt.getTime() - Date.now()))
  }
  armExpiry()

  const renewEvery = Math.max(1, Math.floor(lease.ttlMs / 3))
  const renew = async () => {
    try {
      lease = await job.locks.renew(lease.key, lease.owner, lease.ttlMs)
      if (lost === undefined) armExpiry()
    } catch (error) {
      if (error instanceof LockLostError) return loseLock(error.why)
      // Backend trouble: keep trying while the lease lasts; past its expiry, assume it is gone.
      if (Date.now() >= lease.expiresAt.getTime()) return loseLock(`could not renew before the lease expired: ${toDlqError(error).why}`)
    }
    if (lost === undefined) {
      renewTimer = setTimeout(() => void renew(), Math.max(1, Math.min(renewEvery, lease.expiresAt.getTime() - Date.now())))
    }
  }
  renewTimer = setTimeout(() => void renew(), renewEvery)
  const stopWatching = job.locks.watchLoss?.(lease, loseLock)

  const result = await child
  clearTimeout(renewTimer)
  clearTimeout(expiryTimer)
  stopWatching?.()
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
  if (result.failed && result.exitCode === undefined && result.signal === undefined) {
    // Not started at all: the shells' convention.
    const code = (result as {code?: string}).code
    job.say(`dlq: cannot run ${JSON.stringify(job.command)}: ${code === 'ENOENT' ? 'command not found' : result.shortMessage}`)
    exitCode = code === 'ENOENT' ? 127 : 126
  } else if (result.signal) exitCode = 128 + signalNumber(result.signal)
  else exitCode = result.exitCode ?? 1

  try {
    if (lost === undefined) await job.locks.release(lease.key, lease.owner)
  } catch (error) {
    job.say(`dlq: could not release lock ${JSON.stringify(lease.key)}: ${toDlqError(error).why} (it expires by itself at ${lease.expiresAt.toISOString()})`)
  }
  return lost === undefined ? {exitCode} : {exitCode: 70, lost}
}
