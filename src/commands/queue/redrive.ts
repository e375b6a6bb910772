import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {redrive} from '../../chores.js'
import {usageError} from '../../errors.js'
import {checkName} from '../../names.js'
import {queueFlag} from '../../queueflags.js'

export default class QueueRedrive extends DlqCommand {
  static summary = 'Move dead letters from QUEUE.dead back to QUEUE.'
  static description = `Takes the waiting messages of QUEUE.dead (all, or the first --count), oldest first, and pushes them to the end of QUEUE in that order as new messages: their attempts start again from the first. At-least-once like every delivery: a redrive killed between its push and its removal from QUEUE.dead leaves that batch in both queues (at most 1000 messages). Exit 0, also when there was nothing to move.`
  static examples = ['<%= config.bin %> queue redrive --queue jobs', '<%= config.bin %> queue redrive --queue jobs --count 10 --json']

  static flags = {
    queue: queueFlag,
    count: Flags.integer({char: 'n', summary: 'Move at most this many (default: all).', helpValue: 'N'}),
  }

  async run(): Promise<{queue: string; from: string; moved: number}> {
    const {flags} = await this.parse(QueueRedrive)
    const queue = checkName(flags.queue, 'queue')
    const from = checkName(`${queue}.dead`, 'queue')
    if (flags.count !== undefined && flags.count < 1) throw usageError('bad --count', String(flags.count), '1 or more messages')
    const backend = await this.backend(flags.backend, flags.verbose)
    const [dead] = await backend.queues.stats(from)
    const moved = dead === undefined || dead.waiting === 0 ? 0 : await redrive(backend.queues, queue, flags.count ?? Infinity)
    await this.closeBackend()
    if (!this.jsonEnabled()) process.stderr.write(`dlq: moved ${moved} message${moved === 1 ? '' : 's'} from ${JSON.stringify(from)} to ${JSON.stringify(queue)}\n`)
    return {queue, from, moved}
  }
}
