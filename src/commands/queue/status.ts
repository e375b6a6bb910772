import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {formatDuration} from '../../duration.js'
import {checkName} from '../../names.js'
import {paint, table} from '../../output.js'

export default class QueueStatus extends DlqCommand {
  static summary = 'Show queue depths: waiting, delayed, in flight, dead letters, oldest message age.'
  static description = 'Lists every queue that exists (a push made it and no queue delete removed it; a pop or tail creates none), or the one named with --queue (zeros if it does not exist). WAITING counts the messages a pop may take now, DELAYED those pushed with --delay or --at that are not due yet, IN FLIGHT those reserved by a pop or worker (a failed message waiting out its --retry-delay included), DEAD the messages in QUEUE.dead; OLDEST is the age of the oldest waiting message.'
  static examples = ['<%= config.bin %> queue status', '<%= config.bin %> queue status --queue jobs --json']

  static flags = {
    queue: Flags.string({char: 'q', summary: 'Only this queue.', helpValue: 'QUEUE'}),
  }

  async run(): Promise<unknown> {
    const {flags} = await this.parse(QueueStatus)
    const queue = flags.queue === undefined ? undefined : checkName(flags.queue, 'queue')
    const backend = await this.backend(flags.backend, flags.verbose)
    const stats = await backend.queues.stats(queue)
    await this.closeBackend()
    // Stable fields: no message waiting is an oldestAgeMs of null, not a missing one.
    if (this.jsonEnabled()) return {queues: stats.map((s) => ({...s, oldestAgeMs: s.oldestAgeMs ?? null}))}
    if (stats.length === 0) {
      process.stderr.write('dlq: no queue exists yet\n')
      return
    }
    const chalk = await paint(process.stdout, flags.color)
    const rows = stats.map((s) => [s.queue, String(s.waiting), String(s.delayed), String(s.inFlight), String(s.dead), s.oldestAgeMs === undefined ? '-' : formatDuration(s.oldestAgeMs)])
    process.stdout.write(table(['QUEUE', 'WAITING', 'DELAYED', 'IN FLIGHT', 'DEAD', 'OLDEST'], rows, chalk.bold))
  }
}
