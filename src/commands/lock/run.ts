import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {formatDuration, parseDuration} from '../../duration.js'
import {usageError} from '../../errors.js'
import {checkLimit, checkTtl, conflictFlag, describeHolders, holderInfo, keyFlag, limitFlag, newOwner, ttlFlag, waitFlag} from '../../lockflags.js'
import {checkName} from '../../names.js'
import {commandAfterDashes, SignalRouter, signalExitCode} from '../../signals.js'
import {supervise} from '../../supervisor.js'

export default class LockRun extends DlqCommand {
  static summary = 'Run a command while holding a lock.'
  static description = `Waits for the lock KEY (up to --wait), runs COMMAND without a shell while renewing the lease every ttl/3, and releases the lock once COMMAND has exited. dlq exits with COMMAND's exit code (128+N if a signal N killed it), 75 (--conflict-exit-code) if the lock was not acquired in time, and 70 if the lock was lost while COMMAND ran: then COMMAND's whole process group got SIGTERM, and SIGKILL after --kill-grace.

COMMAND's environment gets DLQ_LOCK_KEY, DLQ_LOCK_OWNER and DLQ_FENCING_TOKEN (an integer that increases with every acquisition of KEY, for fencing writes downstream).`
  static examples = [
    {description: 'Guard a cron job: skip this run if the previous one still holds the lock.', command: '<%= config.bin %> lock run --key backup --wait 0 -- /usr/local/bin/backup.sh'},
    {description: 'Serialise deploys, waiting up to 10 minutes for the one before.', command: '<%= config.bin %> lock run --key deploy --wait 10m -- ./deploy.sh production'},
    {description: 'At most 3 concurrent builds, on a shared Redis.', command: '<%= config.bin %> lock run -b redis://ci-redis --key build --limit 3 -- make -j8'},
    {description: 'Use a shell only when you want one.', command: `<%= config.bin %> lock run --key report -- sh -c 'generate | gzip > report.gz'`},
  ]
  static strict = false
  static usage = 'lock run --key KEY [FLAGS] -- COMMAND [ARGS...]'

  static flags = {
    key: keyFlag,
    wait: waitFlag('forever'),
    ttl: ttlFlag('Lease length; renewed every ttl/3 while the command runs.'),
    limit: limitFlag,
    'conflict-exit-code': conflictFlag,
    'kill-grace': Flags.string({summary: 'After SIGTERM to a command whose lock was lost, wait this long before SIGKILL.', default: '10s', helpValue: 'DURATION'}),
    quiet: Flags.boolean({char: 'q', summary: 'Print nothing of dlq\'s own (the command\'s output still flows).'}),
  }

  async run(): Promise<void> {
    const {flags, argv} = await this.parse(LockRun)
    const [command, ...args] = commandAfterDashes(this.argv, argv as string[])
    const key = checkName(flags.key, 'key')
    const waitMs = parseDuration(flags.wait, 'wait')
    const ttlMs = checkTtl(flags.ttl)
    const killGraceMs = parseDuration(flags['kill-grace'], 'kill-grace')
    const limit = checkLimit(flags.limit)
    if (!command) throw usageError('no command to run', 'lock run needs a command after --', 'dlq lock run --key KEY -- COMMAND [ARGS...]')
    const say = (line: string) => {
      if (!flags.quiet) process.stderr.write(`${line}\n`)
    }

    const backend = await this.backend(flags.backend, flags.verbose)
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
      await this.finish(signalExitCode(signals.first))
    }
    signals.hold() // from here on, a signal is for the command: kept until it runs, then forwarded
    if (!lease) {
      const [state] = await backend.locks.status(key).catch(() => [])
      say(`dlq: lock ${JSON.stringify(key)} not acquired within ${formatDuration(waitMs)}: ${describeHolders(state?.holders ?? [])}`)
      await this.finish(flags['conflict-exit-code'])
      return
    }
    this.log2(`acquired ${key} with fencing token ${lease.token}`)
    const outcome = await supervise({
      command, args, lease, locks: backend.locks, killGraceMs, signals,
      say: (line) => process.stderr.write(`${line}\n`), // a lost lock is reported even with --quiet
      env: {DLQ_LOCK_KEY: key, DLQ_LOCK_OWNER: owner, DLQ_FENCING_TOKEN: lease.token},
    })
    await this.finish(outcome.exitCode)
  }
}
