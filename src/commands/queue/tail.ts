import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {usageError} from '../../errors.js'
import {checkName} from '../../names.js'
import {readerGone, writeOut} from '../../output.js'
import {nullFlag, queueFlag, render} from '../../queueflags.js'

export default class QueueTail extends DlqCommand {
  static summary = 'Show the last waiting messages without consuming them.'
  static description = 'Prints the last N waiting messages, oldest first. With --follow, keeps printing messages as they are pushed until interrupted (exit 0). Messages reserved by a pop before tail saw them are not shown, nor are messages pushed with --delay or --at before they are due (--follow never prints those). A tail of a queue nobody pushed to creates nothing; --follow waits for the push that makes it.'
  static examples = ['<%= config.bin %> queue tail --queue jobs -n 20', '<%= config.bin %> queue tail --queue jobs --follow --json']

  static flags = {
    queue: queueFlag,
    lines: Flags.integer({char: 'n', summary: 'How many of the last waiting messages to print.', default: 10, helpValue: 'N'}),
    follow: Flags.boolean({char: 'f', summary: 'Keep printing new messages as they are pushed.'}),
    null: nullFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(QueueTail)
    const queue = checkName(flags.queue, 'queue')
    if (flags.lines < 0) throw usageError('bad -n', String(flags.lines), '0 or more messages')
    const backend = await this.backend(flags.backend, flags.verbose)
    const json = this.jsonEnabled()
    const print = async (messages: {body: Buffer}[]) => {
      for (const message of messages) await writeOut(process.stdout, render(message as never, json, flags.null))
    }
    const abort = new AbortController()
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, () => abort.abort())
    process.stdout.once('error', () => abort.abort())
    const following = flags.follow ? backend.queues.follow(queue, abort.signal, print) : undefined
    try {
      if (flags.lines > 0) await print(await backend.queues.peek(queue, flags.lines))
      await following
    } catch (error) {
      if (!readerGone(error)) throw error
    }
    return this.finish(0)
  }
}
