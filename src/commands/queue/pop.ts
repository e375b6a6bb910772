import * as Flags from '@oclif/core/flags'

import type {Backend, Message} from '../../backends/types.js'
import {DlqCommand} from '../../base.js'
import {formatDuration, parseDuration} from '../../duration.js'
import {usageError} from '../../errors.js'
import {newOwner} from '../../holding.js'
import {checkName} from '../../names.js'
import {readerGone, writeOut} from '../../output.js'
import {nullFlag, queueFlag, render} from '../../queueflags.js'
import {commandAfterDashes, fromTerminal, SignalRouter, signalExitCode} from '../../signals.js'
import {termLead, Watchdog} from '../../watchdog.js'

/** A handler whose worker died gets SIGTERM, and SIGKILL after this, or when its message would be redelivered. */
const handlerKillGraceMs = 10_000

export default class QueuePop extends DlqCommand {
  static summary = 'Take messages off a queue, or work through them with --exec.'
  static description = `Reserves up to --count messages (invisible to others for --visibility), writes each to stdout with its delimiter, and deletes each only once it was written. A pop killed in between loses nothing: the message becomes visible again. A message written into a pipe counts as delivered; use --exec when processing must succeed.

Worker mode (--exec -- CMD...): for each message run CMD with the body on stdin and DLQ_MESSAGE_ID, DLQ_MESSAGE_ATTEMPT in its environment; exit 0 acks, anything else returns the message for retry, and after --max-attempts deliveries it moves to the dead-letter queue QUEUE.dead. It stops after --count messages if given, else once no message arrived within --wait. Exit 75 when no message arrived at all within --wait. Should the worker die or be stopped, its watchdog stops the handler and everything it started (SIGTERM at once, SIGKILL before the message can be redelivered).`
  static examples = [
    '<%= config.bin %> queue pop --queue jobs',
    '<%= config.bin %> queue pop --queue jobs --count 100 --wait 30s > batch.txt',
    {description: 'A worker that handles messages for an hour after the last one.', command: '<%= config.bin %> queue pop --queue jobs --wait 1h --exec -- ./handle.sh'},
  ]
  static strict = false
  static usage = 'queue pop --queue QUEUE [FLAGS] [--exec -- COMMAND [ARGS...]]'

  static flags = {
    queue: queueFlag,
    count: Flags.integer({char: 'n', summary: 'How many messages to take (default 1; with --exec: stop after this many, default no limit).', helpValue: 'N'}),
    wait: Flags.string({char: 'w', summary: 'How long to wait for the first message (with --exec: for each next one).', default: '0', helpValue: 'DURATION'}),
    visibility: Flags.string({summary: 'How long a reserved message stays invisible to others before it is redelivered.', default: '30s', helpValue: 'DURATION'}),
    'max-attempts': Flags.integer({summary: 'Deliveries before a message moves to QUEUE.dead.', default: 5, helpValue: 'N'}),
    exec: Flags.boolean({summary: 'Worker mode: run the command after -- once per message, body on stdin.'}),
    null: nullFlag,
  }

  async run(): Promise<void> {
    const {flags, argv} = await this.parse(QueuePop)
    const queue = checkName(flags.queue, 'queue')
    const command = commandAfterDashes(this.argv, argv as string[])
    const waitMs = parseDuration(flags.wait, 'wait')
    const visibilityMs = parseDuration(flags.visibility, 'visibility')
    if (!Number.isFinite(visibilityMs) || visibilityMs < 100) throw usageError('bad --visibility', flags.visibility, 'a finite duration of at least 100ms')
    if (flags.count !== undefined && flags.count < 1) throw usageError('bad --count', String(flags.count), 'take 1 message or more')
    if (flags['max-attempts'] < 1) throw usageError('bad --max-attempts', String(flags['max-attempts']), '1 or more')
    if (flags.exec && command.length === 0) throw usageError('no command for --exec', 'worker mode needs a command after --', 'dlq queue pop --queue Q --exec -- COMMAND')
    if (!flags.exec && command.length > 0) throw usageError('unexpected arguments', command.join(' '), 'to run a command per message, use --exec -- COMMAND')

    const backend = await this.backend(flags.backend, flags.verbose)
    const signals = new SignalRouter()
    const options = {visibilityMs, waitMs, maxAttempts: flags['max-attempts'], signal: signals.signal}
    if (flags.exec) return this.work(backend, queue, command, signals, {...options, count: flags.count})

    const messages = await backend.queues.reserve(queue, {...options, count: flags.count ?? 1}).catch((error: unknown) => {
      if (signals.signal.aborted) return []
      throw error
    })
    if (signals.first) {
      await backend.queues.settle(queue, messages, 'release', options.maxAttempts)
      return this.finish(signalExitCode(signals.first))
    }
    if (messages.length === 0) {
      process.stderr.write(`dlq: queue ${JSON.stringify(queue)} is empty: no message within ${formatDuration(waitMs)}\n`)
      return this.finish(75)
    }
    let written = 0
    let failure: unknown
    for (const message of messages) {
      if (signals.first) break
      try {
        await writeOut(process.stdout, render(message, this.jsonEnabled(), flags.null))
        written++
      } catch (error) {
        failure = error // the reader is gone, or stdout failed: what was not written stays in the queue
        break
      }
    }
    await backend.queues.settle(queue, messages.slice(0, written), 'ack', options.maxAttempts)
    await backend.queues.settle(queue, messages.slice(written), 'release', options.maxAttempts)
    if (signals.first) return this.finish(signalExitCode(signals.first))
    if (failure !== undefined && !readerGone(failure)) throw failure
    return this.finish(failure === undefined ? 0 : signalExitCode('SIGPIPE'))
  }

  /** Worker mode: one message at a time through COMMAND, acked on exit 0. */
  private async work(backend: Backend, queue: string, command: string[], signals: SignalRouter, options: {count?: number; visibilityMs: number; waitMs: number; maxAttempts: number; signal: AbortSignal}): Promise<void> {
    const {execa} = await import('execa')
    let processed = 0
    while ((options.count === undefined || processed < options.count) && !signals.first) {
      const [message] = await backend.queues.reserve(queue, {...options, count: 1}).catch((error: unknown) => {
        if (signals.signal.aborted) return [] as Message[]
        throw error
      })
      if (!message) break
      if (signals.first) {
        await backend.queues.settle(queue, [message], 'release', options.maxAttempts) // never started: not a delivery
        break
      }
      signals.hold()
      const reservedAt = Date.now()
      // When the message would become visible again (1% + 10 ms early, as lock run's deadline).
      const untilRedelivery = (from: number) => from + options.visibilityMs * 0.99 - 10 - Date.now()
      // Should this worker die or be stopped, its watchdog stops the handler before the message can
      // go to another worker (watchdog.ts); a live worker lets its handler finish.
      const handlerId = newOwner()
      const watchdog = new Watchdog({mark: `DLQ_HANDLER_ID=${handlerId}`, graceMs: handlerKillGraceMs, leadMs: termLead(options.visibilityMs, handlerKillGraceMs)})
      watchdog.lease(untilRedelivery(reservedAt))
      // Keep the message reserved while the command works on it, however long that takes.
      const extender = setInterval(() => {
        const at = Date.now()
        void backend.queues.extend(queue, message, options.visibilityMs).then((held) => held && watchdog.lease(untilRedelivery(at)), () => {})
      }, Math.max(50, options.visibilityMs / 3))
      const child = execa(command[0], command.slice(1), {
        input: message.body,
        stdout: 'inherit',
        stderr: 'inherit',
        reject: false,
        env: {DLQ_QUEUE: queue, DLQ_MESSAGE_ID: message.id, DLQ_MESSAGE_ATTEMPT: String(message.attempts), DLQ_HANDLER_ID: handlerId},
      })
      if (child.pid !== undefined) watchdog.command(child.pid)
      // To every process of the handler, except what the terminal sent the whole job already (signals.ts).
      signals.forwardTo((signal) => watchdog.signal(signal) || child.kill(signal), fromTerminal)
      const result = await child
      watchdog.end()
      signals.waitAgain()
      clearInterval(extender)
      const ok = result.exitCode === 0
      await backend.queues.settle(queue, [message], ok ? 'ack' : 'retry', options.maxAttempts)
      if (!ok) {
        const why = result.exitCode === undefined ? (result.signal ? `was killed by ${result.signal}` : `could not start (${result.shortMessage})`) : `exited ${result.exitCode}`
        const next = message.attempts >= options.maxAttempts ? `moved to ${queue}.dead` : 'returned for retry'
        process.stderr.write(`dlq: message ${message.id} (attempt ${message.attempts} of ${options.maxAttempts}): ${command[0]} ${why}; ${next}\n`)
      }
      processed++
    }
    signals.dispose()
    if (signals.first) return this.finish(signalExitCode(signals.first))
    if (processed === 0) {
      process.stderr.write(`dlq: queue ${JSON.stringify(queue)} is empty: no message within ${formatDuration(options.waitMs)}\n`)
      return this.finish(75)
    }
    return this.finish(0)
  }
}
