import {DlqCommand} from '../../base.js'
import {formatDuration} from '../../duration.js'
import {DlqError} from '../../errors.js'
import {checkExitCode, checkLimit, checkShared, checkTtl, checkWait, describeHolders, holderInfo, leaseJson, newOwner, waitingForLock} from '../../holding.js'
import {conflictFlag, keyFlag, limitFlag, nonblockFlag, sharedFlag, ttlFlag, waitFlag} from '../../lockflags.js'
import {checkName} from '../../names.js'
import {jsonText, readerGone, writeOut} from '../../output.js'
import {signalExitCode} from '../../signals.js'
import {WaitingLine} from '../../waiting.js'

export default class LockAcquire extends DlqCommand {
  static summary = 'Take a lock that outlives this process; print its owner token.'
  static description = `For pipelines whose steps are separate processes. The lease stays for --ttl and then simply expires: nothing renews it unless you run "lock renew". Release it with "lock release --token". Exit 75 (--conflict-exit-code) when not acquired within --wait. While it waits on a terminal, a line on stderr says for how long and who holds the lock.`
  static examples = [
    {description: 'Take the deploy lock for a pipeline whose steps are separate processes.', command: 'TOKEN=$(<%= config.bin %> lock acquire --key deploy --ttl 30m)'},
    {description: 'In a later step: extend it, then release it when done.', command: '<%= config.bin %> lock renew --key deploy --token "$TOKEN"'},
    '<%= config.bin %> lock release --key deploy --token "$TOKEN"',
    {description: 'A reader lock for a pipeline that only reads what deploys write: shared with other readers.', command: 'TOKEN=$(<%= config.bin %> lock acquire --key deploy --shared --ttl 10m)'},
  ]

  static flags = {
    key: keyFlag,
    ttl: ttlFlag('Lease length; nothing renews it unless you run "lock renew".'),
    wait: waitFlag('forever'),
    nonblock: nonblockFlag,
    limit: limitFlag,
    shared: sharedFlag,
    'conflict-exit-code': conflictFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(LockAcquire)
    const key = checkName(flags.key, 'key')
    const ttlMs = checkTtl(flags.ttl)
    const waitMs = checkWait(flags.wait, flags.nonblock, 'forever')
    const limit = checkLimit(flags.limit)
    const shared = checkShared(flags.shared, limit)
    const conflictExitCode = checkExitCode(flags['conflict-exit-code'], 'conflict-exit-code')
    const backend = await this.backend(flags.backend, flags.verbose)
    const owner = newOwner()
    const abort = new AbortController()
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, () => abort.abort())
    const waiting = WaitingLine.onTerminal()
    const lease = await backend.locks
      .acquire({
        key, owner, ttlMs, limit, shared, waitMs, signal: abort.signal, holder: holderInfo('dlq lock acquire'),
        onWaiting: waiting && ((holders) => waiting.show(() => waitingForLock(key, waiting.waitedMs, holders))),
      })
      .finally(() => waiting?.clear())
    if (!lease) {
      const [state] = await backend.locks.status(key)
      this.report(new DlqError(conflictExitCode, `lock ${JSON.stringify(key)} not acquired within ${formatDuration(waitMs)}`, describeHolders(state?.holders ?? [])))
      return this.finish(conflictExitCode)
    }
    await backend.locks.detach?.(key, owner)
    const result = leaseJson(lease)
    try {
      await writeOut(process.stdout, this.jsonEnabled() ? `${jsonText(result, true)}\n` : `${owner}\n`)
    } catch (error) {
      // Nobody got the token, so nobody could renew or release the lease: let it go now rather
      // than leave the key held until its TTL.
      await backend.locks.release(key, owner)
      if (readerGone(error)) return this.finish(signalExitCode('SIGPIPE'))
      throw error
    }
    await this.closeBackend()
  }
}
