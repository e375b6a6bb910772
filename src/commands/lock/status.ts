import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {formatDuration} from '../../duration.js'
import {lockStateJson} from '../../holding.js'
import {checkName} from '../../names.js'
import {paint, table} from '../../output.js'

export default class LockStatus extends DlqCommand {
  static summary = 'Show who holds which locks, since when and until when.'
  static description = 'Lists held locks (all, or one key) with each holder: its mode (exclusive, or shared for a --shared holder), owner id, host, pid, user, command, acquired at, expires at, fencing token, and the number of waiters where the backend can tell; on ZooKeeper, whose waiting is fair, also the waiters in the order they will get the lock. A table for people, --json for scripts. Exit 0.'
  static examples = ['<%= config.bin %> lock status', '<%= config.bin %> lock status --key deploy --json']

  static flags = {
    key: Flags.string({char: 'k', summary: 'Only this key.', helpValue: 'KEY'}),
  }

  async run(): Promise<unknown> {
    const {flags} = await this.parse(LockStatus)
    const key = flags.key === undefined ? undefined : checkName(flags.key, 'key')
    const backend = await this.backend(flags.backend, flags.verbose)
    const states = await backend.locks.status(key)
    await this.closeBackend()
    if (this.jsonEnabled()) return {locks: states.map(lockStateJson)}
    if (states.length === 0) {
      process.stderr.write(key === undefined ? 'dlq: no lock is held\n' : `dlq: ${JSON.stringify(key)} is not held\n`)
      return
    }
    const chalk = await paint(process.stdout, flags.color)
    const now = Date.now()
    const rows = states.flatMap((s) => [
      ...s.holders.map((h) => [
        s.key, h.fencingToken, h.mode, `${h.user}@${h.host}`, String(h.pid), formatDuration(now - h.acquiredAt.getTime()) + ' ago',
        `in ${formatDuration(h.expiresAt.getTime() - now)}`, s.waiters === undefined ? '-' : String(s.waiters), h.owner, h.command,
      ]),
      // Where the backend queues fairly, the waiters follow in the order they will get the lock.
      ...(s.queue ?? []).map((w, i) => [
        s.key, `(next ${i + 1})`, '-', `${w.user}@${w.host}`, String(w.pid), `waiting ${formatDuration(now - w.since.getTime())}`, '-', '-', w.owner, w.command,
      ]),
    ])
    // TOKEN is what --token takes (the owner id), FENCING the number DLQ_FENCING_TOKEN carries.
    process.stdout.write(table(['KEY', 'FENCING', 'MODE', 'HOLDER', 'PID', 'ACQUIRED', 'EXPIRES', 'WAITERS', 'TOKEN', 'COMMAND'], rows, chalk.bold))
  }
}
