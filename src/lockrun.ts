// `dlq lock run` itself (SPEC §2), apart from parsing: both the oclif command
// (commands/lock/run.ts) and the fast path (fast.ts) call this with the parsed flags.
import {formatDuration, parseDuration} from './duration.js'
import {DlqError, toDlqError, usageError} from './errors.js'
import {checkExitCode, checkLimit, checkShared, checkTtl, checkWait, describeHolders, holderInfo, newOwner, waitingForLock} from './holding.js'
import {exactInteger, jsonText} from './json.js'
import {checkName} from './names.js'
import type {Session} from './session.js'
import {SignalRouter, signalExitCode} from './signals.js'
import {supervise} from './supervisor.js'
import {WaitingLine} from './waiting.js'
import {deadlineMarginMs, termLead, Watchdog} from './watchdog.js'

export interface LockRunFlags {
  key: string
  wait: string
  /** flock's -n: --wait 0. */
  nonblock?: boolean
  ttl: string
  limit: number
  /** A reader lock. */
  shared?: boolean
  'conflict-exit-code': number
  'kill-grace': string
  quiet: boolean
  backend?: string
  verbose: boolean
  /** oclif's --json (the fast path leaves --json to oclif): "not acquired" as a JSON object. */
  json?: boolean
}

/** Runs `command args…` under the lock and ends the process with the outcome's exit code. */
export async function lockRun(flags: LockRunFlags, [command, ...args]: string[], session: Session): Promise<never> {
    const key = checkName(flags.key, 'key')
    const waitMs = checkWait(flags.wait, flags.nonblock, 'forever')
    const ttlMs = checkTtl(flags.ttl)
    const killGraceMs = parseDuration(flags['kill-grace'], 'kill-grace')
    const limit = checkLimit(flags.limit)
    const shared = checkShared(flags.shared, limit)
    const conflictExitCode = checkExitCode(flags['conflict-exit-code'], 'conflict-exit-code')
    if (!command) throw usageError('no command to run', 'lock run needs a command after --', 'dlq lock run --key KEY -- COMMAND [ARGS...]')
    // With --json, dlq's own lines on stderr are JSON too (stdout is the command's): a warning
    // object per line, and once the command has run, the outcome (below).
    const own = (line: string) => (flags.json ? JSON.stringify({warning: {what: line.replace(/^\n?dlq: (warning: )?/, '')}}) : line)
    const say = (line: string) => {
      if (!flags.quiet) process.stderr.write(`${own(line)}\n`)
    }
    // The watchdog's guarantee (SIGKILL by the lease's end when dlq dies or is stopped) wins over the grace.
    if (killGraceMs >= ttlMs) say(`dlq: warning: --kill-grace ${flags['kill-grace']} is not shorter than --ttl ${flags.ttl}: should dlq die or be stopped, its watchdog SIGKILLs the command at the lease's end, before the grace is over`)

    const backend = await session.backend(flags.backend, flags.verbose)
    // A signal while waiting cancels the wait at once and leaves nothing behind (exit 128+N).
    const signals = new SignalRouter()

    // A lease can come back already spent: the acquisition's reply was held up past the TTL (a
    // server or network stalled while dlq waited, dlq starved). Its command would be stopped at
    // once and dlq would exit 70, "lock lost", having run nothing; so dlq gives such a lease back
    // and waits on, as a new holder, while --wait allows.
    const waitEnd = Date.now() + waitMs
    let owner: string
    let watchdog: Watchdog
    let lease: Awaited<ReturnType<typeof backend.locks.acquire>> | undefined
    for (;;) {
      owner = newOwner()
      const waiting = WaitingLine.onTerminal(!flags.quiet)
      const acquiring = backend.locks
        .acquire({
          key, owner, ttlMs, limit, shared, waitMs: Math.max(0, waitEnd - Date.now()), signal: signals.signal,
          holder: holderInfo([command, ...args].join(' ')),
          onWaiting: waiting && ((holders) => waiting.show(() => waitingForLock(key, waiting.waitedMs, holders))),
        })
        .catch((error: unknown) => {
          if (signals.signal.aborted) return undefined
          throw error
        })
        .finally(() => waiting?.clear())
      // The command's watchdog (watchdog.ts) is spawned while the acquisition is under way rather
      // than after it: a spawn blocks dlq for milliseconds, which would count in every hand-off.
      const watching = Watchdog.alone({mark: `DLQ_LOCK_OWNER=${owner}`, graceMs: killGraceMs, leadMs: termLead(ttlMs, killGraceMs)})
      watchdog = watching
      lease = await acquiring.catch((error: unknown) => {
        watching.end() // no command to watch: it exits quietly rather than look for one
        throw error
      })
      if (!lease || signals.first) break
      const usableUntil = lease.expiresAt.getTime() - deadlineMarginMs(ttlMs) - termLead(ttlMs, killGraceMs)
      if (usableUntil > Date.now()) break
      session.log2(`acquired ${key} with fencing token ${lease.fencingToken} ${Date.now() - usableUntil} ms too late to run the command: giving it back`)
      watchdog.end()
      await backend.locks.release(key, owner).catch(() => {})
      lease = undefined
      if (Date.now() >= waitEnd) break
    }
    if (!lease || signals.first) watchdog.end() // no command to watch
    if (signals.first) {
      if (lease) await backend.locks.release(key, owner).catch(() => {})
      return session.finish(signalExitCode(signals.first))
    }
    signals.hold() // from here on, a signal is for the command: kept until it runs, then forwarded
    if (!lease) {
      // Who holds it is a courtesy: if asking fails, say so rather than "no holder is recorded".
      const holders = await backend.locks.status(key).then(([state]) => describeHolders(state?.holders ?? []), (error: unknown) => {
        const {what, why} = toDlqError(error)
        return `who holds it is unknown (${what}: ${why})`
      })
      const failure = new DlqError(conflictExitCode, `lock ${JSON.stringify(key)} not acquired within ${formatDuration(waitMs)}`, holders)
      if (!flags.quiet) process.stderr.write(`${flags.json ? JSON.stringify(failure.toJSON()) : failure.line()}\n`)
      return session.finish(conflictExitCode)
    }
    session.log2(`acquired ${key} with fencing token ${lease.fencingToken}`)
    const outcome = await supervise({
      command, args, lease, locks: backend.locks, killGraceMs, signals, watchdog,
      say: (line) => process.stderr.write(`${own(line)}\n`), // a lost lock is reported even with --quiet
      notice: say,
      env: {DLQ_LOCK_KEY: key, DLQ_LOCK_OWNER: owner, DLQ_FENCING_TOKEN: lease.fencingToken},
    })
    if (flags.json) process.stderr.write(`${jsonText({key, fencingToken: exactInteger(lease.fencingToken), exitCode: outcome.exitCode, lost: outcome.lost ?? null})}\n`)
    return session.finish(outcome.exitCode)
}
