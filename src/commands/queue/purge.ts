import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {purge} from '../../chores.js'
import {notNow} from '../../errors.js'
import {checkName} from '../../names.js'
import {queueFlag} from '../../queueflags.js'

export default class QueuePurge extends DlqCommand {
  static summary = 'Drop the waiting messages of a queue.'
  static description = `Deletes every message of QUEUE that is waiting (visible; messages pushed with a delay that are not due yet stay, and queue delete removes everything). Messages in flight (reserved by a running pop or worker) are not touched: without --force the purge refuses (exit 75) while there are any; with --force it drops the waiting ones and leaves those to their workers (acknowledged when handled, back in the queue if not). Messages pushed while the purge runs may be dropped too. QUEUE.dead is a queue of its own: purge it by name. A purge killed half-way loses nothing it did not drop: what it had reserved comes back after a minute.`
  static examples = ['<%= config.bin %> queue purge --queue jobs', '<%= config.bin %> queue purge --queue jobs.dead --force --json']

  static flags = {
    queue: queueFlag,
    force: Flags.boolean({summary: 'Purge even while messages are in flight (those stay with their workers).'}),
  }

  async run(): Promise<{queue: string; purged: number}> {
    const {flags} = await this.parse(QueuePurge)
    const queue = checkName(flags.queue, 'queue')
    const backend = await this.backend(flags.backend, flags.verbose)
    const [stats] = await backend.queues.stats(queue)
    if (stats !== undefined && stats.inFlight > 0 && !flags.force) {
      this.report(notNow(`queue ${JSON.stringify(queue)} not purged`, `${stats.inFlight} message${stats.inFlight === 1 ? ' is' : 's are'} in flight`, 'they belong to running pops or workers; --force drops the waiting ones and leaves those to their workers'))
      return this.finish(75)
    }
    const purged = stats === undefined || stats.waiting === 0 ? 0 : await purge(backend.queues, queue)
    await this.closeBackend()
    if (!this.jsonEnabled()) process.stderr.write(`dlq: purged ${purged} message${purged === 1 ? '' : 's'} from ${JSON.stringify(queue)}\n`)
    return {queue, purged}
  }
}
