import * as Flags from '@oclif/core/flags'

import {DlqCommand} from '../../base.js'
import type {PushOptions} from '../../backends/types.js'
import {formatDuration, parseDuration, parseTime} from '../../duration.js'
import {dataError, usageError} from '../../errors.js'
import {batches, type Framing} from '../../framing.js'
import {checkName} from '../../names.js'
import {nullFlag, queueFlag} from '../../queueflags.js'
import {countAndRate, progressLine} from '../../waiting.js'

export default class QueuePush extends DlqCommand {
  static summary = 'Push messages: the arguments, or stdin one message per line.'
  static description = `With arguments, each is one message. Without, stdin is read: one message per line (a trailing \\r is kept as data; an empty line is an empty message), NUL-separated with -0, or all of stdin as one message with --whole. Messages from one push keep their order. Large inputs are streamed in batches. Exit 0 only once every message is durably accepted; a message over the size limit stops the push with exit 65, after the messages before it were pushed. On a terminal, a push that lasts over a second shows on stderr how many messages were accepted so far.

With --delay or --at the messages are delayed: invisible to pop and tail until then, and counted as delayed by queue status. --delay is measured on the backend's clock (Redis TIME, PostgreSQL now(), ZooKeeper's server clock; the file backend has only the local one), as pop's --retry-delay is; --at names a point in time, and one that has passed means at once. --at takes ISO 8601 with an offset (2026-12-24T18:00:00Z, 2026-12-24T19:00+01:00) or @ and seconds since the epoch (@1700000000); a time without an offset is refused. Once due, a delayed message is an ordinary waiting message on its first delivery: it comes ahead of the messages pushed after it; beside those pushed before it that still wait, file and ZooKeeper keep push order, PostgreSQL puts it ahead of them (in due order, as a retried message), Redis too once a pop has read past it while it was not due. tail --follow does not print delayed messages; tail shows them once due. A pop that waits wakes when one comes due.`
  static examples = [
    '<%= config.bin %> queue push --queue jobs "one message" "two"',
    'seq 1 1000 | <%= config.bin %> queue push --queue jobs',
    'find . -name "*.log" -print0 | <%= config.bin %> queue push --queue logs -0',
    '<%= config.bin %> queue push --queue reports --whole < report.json',
    '<%= config.bin %> queue push --queue reminders --delay 10m "check the deploy"',
    '<%= config.bin %> queue push --queue reports --at 2026-12-24T18:00:00Z "send the report"',
  ]
  static strict = false
  static usage = 'queue push --queue QUEUE [FLAGS] [MESSAGE...]'

  static flags = {
    queue: queueFlag,
    null: {...nullFlag, exclusive: ['whole']},
    whole: Flags.boolean({summary: 'All of stdin is one message.', exclusive: ['null']}),
    delay: Flags.string({summary: 'Keep the messages invisible for this long (10m, 1h30m).', helpValue: 'DURATION', exclusive: ['at']}),
    at: Flags.string({summary: 'Keep the messages invisible until then: ISO 8601 with an offset, or @EPOCH-SECONDS.', helpValue: 'TIME', exclusive: ['delay']}),
  }

  async run(): Promise<{queue: string; count: number; ids: string[]}> {
    const {flags, argv} = await this.parse(QueuePush)
    const queue = checkName(flags.queue, 'queue')
    const args = argv as string[]
    const options: PushOptions = {}
    if (flags.delay !== undefined) {
      const ms = parseDuration(flags.delay, 'delay')
      if (!Number.isFinite(ms)) throw usageError('bad duration for --delay', 'a message delayed forever would never come', 'use e.g. 10m or 2h, or --at TIME')
      if (ms > 0) options.delayMs = ms
    }
    if (flags.at !== undefined) {
      const at = parseTime(flags.at, 'at')
      if (at.getTime() > Date.now()) options.at = at
    }
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
          const sent = backend.queues.push(queue, batch, options)
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
    this.log2(`pushed ${count} messages to ${queue}${options.delayMs ? ` delayed ${formatDuration(options.delayMs)}` : options.at ? ` delayed until ${options.at.toISOString()}` : ''}`)
    await this.closeBackend()
    return {queue, count, ids}
  }
}
