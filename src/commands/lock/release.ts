import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {notNow, usageError} from '../../errors.js'
import {describeHolders} from '../../holding.js'
import {keyFlag, tokenFlag} from '../../lockflags.js'
import {checkName} from '../../names.js'

export default class LockRelease extends DlqCommand {
  static summary = 'Release a lock: your own (--token) or anyone\'s (--force).'
  static description = `With --token, releases the hold only if that token still holds KEY (compare-and-delete), else exit 75 and say who holds it now. With --force, deletes every hold of KEY: for operators clearing a crashed holder's lease. The fencing counter is kept, so tokens never go backwards.`
  static examples = [
    '<%= config.bin %> lock release --key deploy --token "$TOKEN"',
    {description: 'Clear a stuck lock after checking "dlq lock status".', command: '<%= config.bin %> lock release --key deploy --force'},
  ]

  static flags = {
    key: keyFlag,
    token: {...tokenFlag('Owner token printed by "lock acquire": release only this hold.'), exclusive: ['force']},
    force: Flags.boolean({summary: 'Delete every hold of the key, whoever holds it.', exclusive: ['token']}),
  }

  async run(): Promise<{key: string; released: number}> {
    const {flags} = await this.parse(LockRelease)
    const key = checkName(flags.key, 'key')
    if (!flags.force && !flags.token) {
      throw usageError(`refusing to release ${JSON.stringify(key)}`, 'it may be held by a running command', 'pass --token TOKEN to release your own hold, or --force to break every hold')
    }
    const backend = await this.backend(flags.backend, flags.verbose)
    if (flags.force) {
      const released = await backend.locks.forceRelease(key)
      if (!this.jsonEnabled()) process.stderr.write(`dlq: released ${released} hold${released === 1 ? '' : 's'} of ${JSON.stringify(key)}\n`)
      await this.closeBackend()
      return {key, released}
    }
    if (!(await backend.locks.release(key, flags.token!))) {
      const [state] = await backend.locks.status(key)
      throw notNow(`lock ${JSON.stringify(key)} not released`, `token ${flags.token} does not hold it`, describeHolders(state?.holders ?? []))
    }
    await this.closeBackend()
    return {key, released: 1}
  }
}
