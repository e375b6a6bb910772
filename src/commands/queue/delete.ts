import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {notNow} from '../../errors.js'
import {checkName} from '../../names.js'
import {queueFlag} from '../../queueflags.js'

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`

export default class QueueDelete extends DlqCommand {
  static summary = 'Delete a queue with all its messages and its dead letters.'
  static description = `Deletes QUEUE and QUEUE.dead with every message they hold: waiting, delayed and dead letters. Afterwards queue status no longer lists QUEUE; a later push creates it anew. Without --force the delete refuses (exit 75) while messages of either queue are in flight (reserved by a running pop or worker, or waiting out a --retry-delay); with --force those go too, and their workers' acknowledgements then change nothing (a failed one is not retried). A pop waiting on QUEUE keeps waiting for the next push. Deleting a queue that does not exist is exit 0 and changes nothing.`
  static examples = ['<%= config.bin %> queue delete --queue jobs', '<%= config.bin %> queue delete --queue jobs --force --json']

  static flags = {
    queue: queueFlag,
    force: Flags.boolean({summary: 'Delete even while messages are in flight (their workers lose them).'}),
  }

  async run(): Promise<{queue: string; deleted: boolean; messages: number; deadLetters: number}> {
    const {flags} = await this.parse(QueueDelete)
    const queue = checkName(flags.queue, 'queue')
    const dead = checkName(`${queue}.dead`, 'queue')
    const backend = await this.backend(flags.backend, flags.verbose)
    const [[mine], [theirs]] = await Promise.all([backend.queues.stats(queue), backend.queues.stats(dead)])
    const inFlight = (mine?.inFlight ?? 0) + (theirs?.inFlight ?? 0)
    if (inFlight > 0 && !flags.force) {
      this.report(notNow(`queue ${JSON.stringify(queue)} not deleted`, `${plural(inFlight, 'message')} ${inFlight === 1 ? 'is' : 'are'} in flight`, 'they belong to running pops or workers; --force deletes them too'))
      return this.finish(75)
    }
    const messages = mine === undefined ? 0 : mine.waiting + mine.delayed + mine.inFlight
    const deadLetters = mine?.dead ?? 0
    const deleted = await backend.queues.deleteQueue(queue)
    await this.closeBackend()
    if (!this.jsonEnabled()) {
      process.stderr.write(deleted
        ? `dlq: deleted queue ${JSON.stringify(queue)} with ${plural(messages, 'message')} and ${plural(deadLetters, 'dead letter')}\n`
        : `dlq: no queue ${JSON.stringify(queue)} to delete\n`)
    }
    return {queue, deleted, messages: deleted ? messages : 0, deadLetters: deleted ? deadLetters : 0}
  }
}
