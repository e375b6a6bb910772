// `dlq lock run` itself (SPEC §2), apart from parsing: both the oclif command
// (commands/lock/run.ts) and the fast path (fast.ts) call this with the parsed flags.
import {formatDuration, parseDuration} from './duration.js'
import {usageError} from './errors.js'
import {checkExitCode, checkLimit, checkTtl, describeHolders, holderInfo, newOwner} from './holding.js'
import {checkName} from './names.js'
import type {Session} from './session.js'
import {SignalRouter, signalExitCode} from './signals.js'
import {supervise} from './supervisor.js'

export interface LockRunFlags {
  key: string
  wait: string
  ttl: string
  limit: number
  'conflict-exit-code': number
  'kill-grace': string
  quiet: boolean
  backend?: string
  verbose: boolean
}

/** Runs `command args…` under the lock and ends the process with the outcome's exit code. */
export async function lockRun(flags: LockRunFlags, [command, ...args]: string[], session: Session): Promise<never> {
    const key = checkName(flags.key, 'key')
    const waitMs = parseDuration(flags.wait, 'wait')
    const ttlMs = checkTtl(flags.ttl)
    const killGraceMs = parseDuration(flags['kill-grace'], 'kill-grace')
    const limit = checkLimit(flags.limit)
    const conflictExitCode = checkExitCode(flags['conflict-exit-code'], 'conflict-exit-code')
    if (!command) throw usageError('no command to run', 'lock run needs a command after --', 'dlq lock run --key KEY -- COMMAND [ARGS...]')
    const say = (line: string) => {
      if (!flags.quiet) process.stderr.write(`${line}\n`)
    }
    // The watchdog's guarantee (SIGKILL by the lease's end when dlq dies or is stopped) wins over the grace.
    if (killGraceMs >= ttlMs) say(`dlq: warning: --kill-grace ${flags['kill-grace']} is not shorter than --ttl ${flags.ttl}: should dlq die or be stopped, its watchdog SIGKILLs the command at the lease's end, before the grace is over`)

    const backend = await session.backend(flags.backend, flags.verbose)
    // A signal while waiting cancels the wait at once and leaves nothing behind (exit 128+N).
    const signals = new SignalRouter()

    const owner = newOwner()
    const started = Date.now()
    const statusLine = !flags.quiet && process.stderr.isTTY
    let shown = false
    const lease = await backend.locks
      .acquire({
        key, owner, ttlMs, limit, waitMs, signal: signals.signal,
        holder: holderInfo([command, ...args].join(' ')),
        onWaiting: statusLine
          ? (holders) => {
            shown = true
            process.stderr.write(`\r\u001B[2Kdlq: waiting for ${key}: ${describeHolders(holders)}; waited ${formatDuration(Date.now() - started)}`)
          }
          : undefined,
      })
      .catch((error: unknown) => {
        if (signals.signal.aborted) return undefined
        throw error
      })
    if (shown) process.stderr.write('\r\u001B[2K')
    if (signals.first) {
      if (lease) await backend.locks.release(key, owner).catch(() => {})
      return session.finish(signalExitCode(signals.first))
    }
    signals.hold() // from here on, a signal is for the command: kept until it runs, then forwarded
    if (!lease) {
      const [state] = await backend.locks.status(key).catch(() => [])
      say(`dlq: lock ${JSON.stringify(key)} not acquired within ${formatDuration(waitMs)}: ${describeHolders(state?.holders ?? [])}`)
      return session.finish(conflictExitCode)
    }
    session.log2(`acquired ${key} with fencing token ${lease.token}`)
    const outcome = await supervise({
      command, args, lease, locks: backend.locks, killGraceMs, signals,
      say: (line) => process.stderr.write(`${line}\n`), // a lost lock is reported even with --quiet
      notice: say,
      env: {DLQ_LOCK_KEY: key, DLQ_LOCK_OWNER: owner, DLQ_FENCING_TOKEN: lease.token},
    })
    return session.finish(outcome.exitCode)
}
