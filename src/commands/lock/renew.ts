import {DlqCommand} from '../../base.js'
import {LockLostError, notNow} from '../../errors.js'
import {checkTtl, describeHolders, leaseJson} from '../../holding.js'
import {keyFlag} from '../../lockflags.js'
import * as Flags from '@oclif/core/flags'
import {checkName} from '../../names.js'

export default class LockRenew extends DlqCommand {
  static summary = 'Extend a lease taken with "lock acquire".'
  static description = 'Extends the lease to now + --ttl (by default the TTL it was taken with) if TOKEN still holds KEY; otherwise exit 75 and say who holds it now.'
  static examples = ['<%= config.bin %> lock renew --key deploy --token "$TOKEN" --ttl 30m']

  static flags = {
    key: keyFlag,
    token: Flags.string({char: 't', summary: 'Owner token printed by "lock acquire".', required: true, helpValue: 'TOKEN'}),
    ttl: Flags.string({summary: 'New lease length from now (default: the TTL the lease was taken with).', helpValue: 'DURATION'}),
  }

  async run(): Promise<ReturnType<typeof leaseJson>> {
    const {flags} = await this.parse(LockRenew)
    const key = checkName(flags.key, 'key')
    const ttlMs = flags.ttl === undefined ? undefined : checkTtl(flags.ttl)
    const backend = await this.backend(flags.backend, flags.verbose)
    try {
      const lease = await backend.locks.renew(key, flags.token, ttlMs)
      await this.closeBackend()
      return leaseJson(lease)
    } catch (error) {
      if (!(error instanceof LockLostError)) throw error
      const [state] = await backend.locks.status(key)
      throw notNow(`lock ${JSON.stringify(key)} not renewed`, `token ${flags.token} does not hold it`, describeHolders(state?.holders ?? []))
    }
  }
}
