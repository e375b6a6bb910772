import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import {dataError, usageError} from '../../errors.js'
import {batches, type Framing} from '../../framing.js'
import {checkName} from '../../names.js'
import {nullFlag, queueFlag} from '../../queueflags.js'
import {countAndRate, progressLine} from '../../waiting.js'

export default class QueuePush extends DlqCommand {
  static summary = 'Push messages: the arguments, or stdin one message per line.'
  static description = `With arguments, each is one message. Without, stdin is read: one message per line (a trailing \\r is kept as data; an empty line is an empty message), NUL-separated with -0, or all of stdin as one message with --whole. Messages from one push keep their order. Large inputs are streamed in batches. Exit 0 only once every message is durably accepted; a message over the size limit stops the push with exit 65, after the messages before it were pushed. On a terminal, a push that lasts over a second shows on stderr how many messages were accepted so far.`
  static examples = [
    '<%= config.bin %> queue push --queue jobs "one message" "two"',
    'seq 1 1000 | <%= config.bin %> queue push --queue jobs',
    'find . -name "*.log" -print0 | <%= config.bin %> queue push --queue logs -0',
    '<%= config.bin %> queue push --queue reports --whole < report.json',
  ]
  static strict = false
  static usage = 'queue push --queue QUEUE [FLAGS] [MESSAGE...]'

  static flags = {
    queue: queueFlag,
    null: {...nullFlag, exclusive: ['whole']},
    whole: Flags.boolean({summary: 'All of stdin is one message.', exclusive: ['null']}),
  }

  async run(): Promise<{queue: string; count: number; ids: string[]}> {
    const {flags, argv} = await this.parse(QueuePush)
    const queue = checkName(flags.queue, 'queue')
    const args = argv as string[]
    if (args.length === 0 && process.stdin.isTTY) {
      throw usageError('no messages to push', 'give them as arguments or pipe them on stdin', 'dlq queue push --queue Q MESSAGE...')
    }
    const backend = await this.backend(flags.backend, flags.verbose)
    const limits = {maxMessages: 1000, maxBytes: 4 * 1024 * 1024, maxMessageBytes: backend.queues.maxMessageBytes}
    const keepIds = this.jsonEnabled()
    const ids: string[] = []
    let count = 0
    // Up to pushConcurrency batches in flight (drivers whose connection keeps order), confirmed
    // in order; whatever stops the input, everything before it is confirmed first.
    const window = Math.max(1, backend.queues.pushConcurrency ?? 1)
    const inFlight: Promise<string[]>[] = []
    const confirm = async () => {
      const pushed = await inFlight.shift()!
      count += pushed.length
      if (keepIds) ids.push(...pushed)
    }
    // On a terminal, a push that lasts shows how far it got (stdout carries nothing but --json).
    let accepted = 0 // for the progress line: counted as each batch is accepted, before confirm() gets to it
    const progress = progressLine(!this.jsonEnabled(), (ms) => `dlq: pushed ${countAndRate(accepted, 'messages', ms)} to ${JSON.stringify(queue)}`)
    const pushAll = async (source: AsyncIterable<Buffer[]> | Iterable<Buffer[]>) => {
      try {
        for await (const batch of source) {
          const sent = backend.queues.push(queue, batch)
          // confirm() awaits each in order; when one fails, those after it may fail too (a lost
          // connection fails them all) and must not end dlq as unhandled rejections (exit 1).
          sent.then((pushed) => (accepted += pushed.length), () => {})
          inFlight.push(sent)
          if (inFlight.length >= window) await confirm()
        }
      } finally {
        try {
          while (inFlight.length > 0) await confirm()
        } finally {
          progress?.clear()
        }
      }
    }
    if (args.length > 0) {
      const bodies = args.map((a) => Buffer.from(a, 'utf8'))
      const big = bodies.findIndex((b) => b.length > limits.maxMessageBytes)
      if (big !== -1) throw dataError(`message ${big + 1} is too large`, `${bodies[big].length} bytes, over the limit of ${limits.maxMessageBytes} bytes`, 'nothing was pushed')
      await pushAll([bodies])
    } else {
      const framing: Framing = flags.whole ? 'whole' : flags.null ? 'null' : 'line'
      await pushAll(batches(process.stdin, framing, limits))
    }
    this.log2(`pushed ${count} messages to ${queue}`)
    await this.closeBackend()
    return {queue, count, ids}
  }
}
