import {spawn} from 'node:child_process'

import * as Flags from '@oclif/core/flags'

import {refuseStray, splitAtDashes} from '../../argv.js'
import type {Backend, Message, ReserveRequest} from '../../backends/types.js'
import {DlqCommand} from '../../base.js'
import {formatDuration, parseDuration} from '../../duration.js'
import {cannotRun, notNow, toDlqError, usageError} from '../../errors.js'
import {newOwner} from '../../holding.js'
import {checkName} from '../../names.js'
import {readerGone, writeOut} from '../../output.js'
import {nullFlag, queueFlag, render} from '../../queueflags.js'
import {fromTerminal, SignalRouter, signalExitCode} from '../../signals.js'
import {countAndRate, progressLine, WaitingLine} from '../../waiting.js'
import {deadlineMarginMs, termLead, WatchdogShell} from '../../watchdog.js'
import {retryDelay} from '../../worker/backoff.js'

/**
 * How many messages a pop reserves, writes and settles at a time: its memory and what it holds
 * reserved, whatever --count (a driver cuts a batch further where its server needs it: Redis).
 */
const popBatch = 1000

/** A handler whose worker died gets SIGTERM, and SIGKILL after this, or when its message would be redelivered. */
const handlerKillGraceMs = 10_000

export default class QueuePop extends DlqCommand {
  static summary = 'Take messages off a queue, or work through them with --exec.'
  static description = `Reserves up to --count messages (invisible to others for --visibility; while --wait waits on a terminal, a line on stderr says for how long; a --count over 1000 into a file or pipe shows its progress there), writes each to stdout with its delimiter, and deletes each only once it was written. A pop killed in between loses nothing: the message becomes visible again. A pop of a queue nobody pushed to creates nothing; with --wait it waits for the push that makes the queue. Messages pushed with --delay or --at are not taken before their time. A message written into a pipe counts as delivered; use --exec when processing must succeed.

A large --count is taken a batch at a time (reserve, write, delete, next), so memory and what is held reserved stay one batch. If the backend fails after some messages were written, those are delivered: dlq exits 0 and says on stderr how many it wrote and what failed (if their deletion is what failed, they may be delivered again once --visibility ends: at-least-once). A failure before anything was written is exit 69 as usual.

Worker mode (--exec -- CMD...): for each message run CMD with the body on stdin and DLQ_MESSAGE_ID, DLQ_MESSAGE_ATTEMPT in its environment; exit 0 acks, anything else returns the message for retry, and after --max-attempts deliveries it moves to the dead-letter queue QUEUE.dead. A failed message is delivered again only after --retry-delay (default 1s), doubled per failed attempt up to 5m (or up to --retry-delay, if longer), plus up to 25% at random so that messages that failed together do not all come back at once; it is never retried sooner. Meanwhile it stays reserved (queue status counts it in flight) and the worker goes on with other messages; --retry-delay 0 returns it at once. --concurrency N runs up to N handlers at once, each with a message of its own and its own reservation (extended while it runs), under the worker's one watchdog; a signal goes to every handler running, and no new one starts. It stops after --count messages in all if given, else once no message arrived within --wait (each of the N waits for its next one on its own). Exit 75 when no message arrived at all within --wait. A handler that cannot be started (not found: 127, not executable: 126) stops the worker at once, and the message stays in the queue as it was, its attempt not counted. Should the worker die or be stopped, its watchdog stops the handler and everything it started (SIGTERM at once, SIGKILL before the message can be redelivered).`
  static examples = [
    '<%= config.bin %> queue pop --queue jobs',
    '<%= config.bin %> queue pop --queue jobs --count 100 --wait 30s > batch.txt',
    {description: 'A worker that handles messages for an hour after the last one.', command: '<%= config.bin %> queue pop --queue jobs --wait 1h --exec -- ./handle.sh'},
    {description: 'Eight handlers at once; a failed message comes back after 10s, then 20s, 40s...', command: '<%= config.bin %> queue pop --queue jobs --wait 1h --concurrency 8 --retry-delay 10s --exec -- ./handle.sh'},
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
    concurrency: Flags.integer({summary: 'With --exec: how many handlers may run at once, each with a message of its own.', default: 1, helpValue: 'N'}),
    'retry-delay': Flags.string({summary: 'With --exec: how long a failed message waits before its next delivery; doubles per attempt up to 5m, plus up to 25% at random; 0 retries at once.', default: '1s', helpValue: 'DURATION'}),
    null: nullFlag,
  }

  async run(): Promise<void> {
    const {flags, argv} = await this.parse(QueuePop)
    const queue = checkName(flags.queue, 'queue')
    const {command, stray} = splitAtDashes(this.argv, argv as string[])
    refuseStray(stray)
    const waitMs = parseDuration(flags.wait, 'wait')
    const visibilityMs = parseDuration(flags.visibility, 'visibility')
    if (!Number.isFinite(visibilityMs) || visibilityMs < 100) throw usageError('bad --visibility', flags.visibility, 'a finite duration of at least 100ms')
    if (flags.count !== undefined && flags.count < 1) throw usageError('bad --count', String(flags.count), 'take 1 message or more')
    if (flags['max-attempts'] < 1) throw usageError('bad --max-attempts', String(flags['max-attempts']), '1 or more')
    if (flags.concurrency < 1) throw usageError('bad --concurrency', String(flags.concurrency), '1 or more')
    const retryDelayMs = parseDuration(flags['retry-delay'], 'retry-delay')
    if (!Number.isFinite(retryDelayMs)) throw usageError('bad --retry-delay', flags['retry-delay'], 'a finite duration; 0 retries at once')
    if (flags.exec && command.length === 0) throw usageError('no command for --exec', 'worker mode needs a command after --', 'dlq queue pop --queue Q --exec -- COMMAND')
    if (!flags.exec && command.length > 0) throw usageError('unexpected arguments', command.join(' '), 'to run a command per message, use --exec -- COMMAND')

    const backend = await this.backend(flags.backend, flags.verbose)
    const signals = new SignalRouter()
    const options = {visibilityMs, waitMs, maxAttempts: flags['max-attempts'], signal: signals.signal}
    if (flags.exec) return this.work(backend, queue, command, signals, {...options, count: flags.count, concurrency: flags.concurrency, retryDelayMs})

    const result = await this.take(backend, queue, flags.count ?? 1, signals, options, (message) => render(message, this.jsonEnabled(), flags.null))
    if (result.stopped) this.warnStopped(result.delivered, result.stopped)
    if (signals.first) return this.finish(signalExitCode(signals.first))
    if (result.output !== undefined && !readerGone(result.output)) throw result.output
    if (result.output !== undefined) return this.finish(signalExitCode('SIGPIPE'))
    if (result.delivered === 0 && result.stopped === undefined) {
      this.report(notNow(`queue ${JSON.stringify(queue)} is empty`, `no message within ${formatDuration(waitMs)}`))
      return this.finish(75)
    }
    return this.finish(0)
  }

  /**
   * Takes up to `count` messages a batch at a time: reserve, write each, ack what was written,
   * release the rest, next batch. Memory is one batch whatever --count, and what was written is
   * settled before more is taken. A backend failure before anything was written is thrown (exit
   * 69, nothing delivered); after, it ends the pop early and is reported in `stopped`: what was
   * written is delivered (SPEC §3 is at-least-once: deleted only after it was written, and
   * possibly delivered again when the acknowledgement did not land).
   */
  private async take(backend: Backend, queue: string, count: number, signals: SignalRouter, options: {visibilityMs: number; waitMs: number; maxAttempts: number; signal: AbortSignal}, format: (message: Message) => Buffer): Promise<{delivered: number; output?: unknown; stopped?: {error: unknown; unacknowledged: number}}> {
    let delivered = 0
    // A large --count shows how far it got on a terminal, from the first batch on (before it, the
    // waiting line may be up), unless the messages go to that terminal too.
    let progress: WaitingLine | undefined
    let popped = 0 // messages written so far, acknowledged or not yet
    try {
      while (delivered < count) {
        const want = Math.min(popBatch, count - delivered)
        let messages: Message[]
        try {
          // --wait is for the first message; once some came, a short batch means the queue ran dry.
          messages = await this.reserve(backend, queue, {...options, count: want, waitMs: delivered === 0 ? options.waitMs : 0})
        } catch (error) {
          if (signals.signal.aborted) return {delivered}
          if (delivered === 0) throw error
          return {delivered, stopped: {error, unacknowledged: 0}}
        }
        if (signals.first) {
          await backend.queues.settle(queue, messages, 'release', options.maxAttempts) // never written: not a delivery
          return {delivered}
        }
        if (messages.length === 0) return {delivered}
        progress ??= progressLine(!process.stdout.isTTY && !this.jsonEnabled() && count > popBatch, (ms) => `dlq: popped ${countAndRate(popped, 'messages', ms)} of ${count.toLocaleString('en-US')} from ${JSON.stringify(queue)}`)
        let written = 0
        let output: unknown
        for (const message of messages) {
          if (signals.first) break
          try {
            await writeOut(process.stdout, format(message))
            written++
            popped++
          } catch (error) {
            output = error // the reader is gone, or stdout failed: what was not written stays in the queue
            break
          }
        }
        try {
          await backend.queues.settle(queue, messages.slice(0, written), 'ack', options.maxAttempts)
        } catch (error) {
          if (written === 0) throw error
          await backend.queues.settle(queue, messages.slice(written), 'release', options.maxAttempts).catch(() => {})
          return {delivered: delivered + written, output, stopped: {error, unacknowledged: written}}
        }
        delivered += written
        try {
          await backend.queues.settle(queue, messages.slice(written), 'release', options.maxAttempts)
        } catch (error) {
          // Not written, so not delivered: a failed release only delays them until --visibility ends.
          if (delivered === 0) throw error
          return {delivered, output, stopped: {error, unacknowledged: 0}}
        }
        if (output !== undefined || signals.first || messages.length < want) return {delivered, output}
      }
      return {delivered}
    } finally {
      progress?.clear()
    }
  }

  /** A pop that delivered messages and then lost its backend: exit 0, and one line saying so. */
  private warnStopped(delivered: number, stopped: {error: unknown; unacknowledged: number}): void {
    const {what, why} = toDlqError(stopped.error)
    const line = stopped.unacknowledged > 0
      ? {what: `queue pop: ${delivered} messages written, but the acknowledgement of the last ${stopped.unacknowledged} failed`, why: `${what}: ${why}`, hint: 'they count as delivered, and may be delivered again once --visibility ends'}
      : {what: `queue pop stopped after ${delivered} messages`, why: `${what}: ${why}`, hint: 'the messages written are delivered and acknowledged; the rest stay in the queue'}
    if (this.jsonEnabled()) process.stderr.write(`${JSON.stringify({warning: {...line, delivered, unacknowledged: stopped.unacknowledged}})}\n`)
    else process.stderr.write(`dlq: ${line.what}: ${line.why} (${line.hint})\n`)
  }

  /** reserve(), with the waiting line on a terminal (waiting.ts) once the wait has lasted a moment. */
  private async reserve(backend: Backend, queue: string, request: ReserveRequest): Promise<Message[]> {
    const waiting = request.waitMs > 0 ? WaitingLine.onTerminal() : undefined
    waiting?.showAfter(250, () => `dlq: waiting ${formatDuration(waiting.waitedMs)} for a message on ${JSON.stringify(queue)}${Number.isFinite(request.waitMs) ? ` (--wait ${formatDuration(request.waitMs)})` : ''}`)
    try {
      return await backend.queues.reserve(queue, request)
    } finally {
      waiting?.clear()
    }
  }

  /**
   * Worker mode: up to --concurrency lanes, each taking one message at a time through COMMAND
   * (acked on exit 0) with its own reservation and extension, all watched by one watchdog shell
   * (a shell per handler cost more forks than the handlers' own), until --count messages
   * were taken in all or its --wait for a next one ran out. A signal stops every lane's wait, goes
   * to every handler running (except what the terminal sent the whole job already: signals.ts), and
   * the worker exits 128+N once they have exited. A handler that cannot start, or a backend that
   * fails, stops the other lanes' waits too; their handlers finish first.
   */
  private async work(backend: Backend, queue: string, command: string[], signals: SignalRouter, options: WorkOptions): Promise<void> {
    const stop = new AbortController()
    const running = new Set<(signal: NodeJS.Signals) => void>()
    signals.forwardTo((signal) => {
      stop.abort()
      if (!fromTerminal(signal)) for (const forward of running) forward(signal)
    })
    let taken = 0 // messages reserved or being reserved, against --count
    let processed = 0
    let failure: unknown
    // One watchdog for all the worker's handlers, started with the first (watchdog.ts).
    let watchdogShell: WatchdogShell | undefined
    const watchdogs = () => (watchdogShell ??= new WatchdogShell({graceMs: handlerKillGraceMs, leadMs: termLead(options.visibilityMs, handlerKillGraceMs)}))
    const lane = async (): Promise<void> => {
      while (!stop.signal.aborted && (options.count === undefined || taken < options.count)) {
        taken++
        // The waiting line only where it cannot be drawn among handlers' output: one lane.
        const request = {...options, count: 1, signal: stop.signal}
        const [message] = await (options.concurrency === 1 ? this.reserve(backend, queue, request) : backend.queues.reserve(queue, request)).catch((error: unknown) => {
          if (stop.signal.aborted) return [] as Message[]
          throw error
        })
        if (!message) {
          taken--
          return
        }
        if (stop.signal.aborted) {
          await backend.queues.settle(queue, [message], 'release', options.maxAttempts) // never started: not a delivery
          return
        }
        await this.handle(backend, queue, command, message, options, running, watchdogs())
        processed++
      }
    }
    await Promise.all(Array.from({length: options.concurrency}, () => lane().catch((error: unknown) => {
      failure ??= error
      stop.abort()
    })))
    watchdogShell?.close()
    signals.dispose()
    if (failure !== undefined) throw failure
    if (signals.first) return this.finish(signalExitCode(signals.first))
    if (processed === 0) {
      this.report(notNow(`queue ${JSON.stringify(queue)} is empty`, `no message within ${formatDuration(options.waitMs)}`))
      return this.finish(75)
    }
    return this.finish(0)
  }

  /**
   * One message through COMMAND: its reservation extended and its watchdog fed while the handler
   * runs, then acked, retried (after its --retry-delay) or buried. Throws when the handler could
   * not start, leaving the message as it was. Everything up to the spawn is synchronous, so a
   * signal that stopped the worker after the caller last looked cannot fall in between: the
   * handler is in `running` before the next signal can be handled.
   */
  private async handle(backend: Backend, queue: string, command: string[], message: Message, options: WorkOptions, running: Set<(signal: NodeJS.Signals) => void>, watchdogs: WatchdogShell): Promise<void> {
    const reservedAt = Date.now()
    // When the message would become visible again, early by the margin of lock run's deadline.
    const untilRedelivery = (from: number) => from + options.visibilityMs - deadlineMarginMs(options.visibilityMs) - Date.now()
    // Should this worker die or be stopped, its watchdog stops the handler before the message can
    // go to another worker (watchdog.ts); a live worker lets its handler finish.
    const handlerId = newOwner()
    const watchdog = watchdogs.watch(`DLQ_HANDLER_ID=${handlerId}`)
    watchdog.lease(untilRedelivery(reservedAt))
    // Keep the message reserved while the command works on it, however long that takes.
    let extending: Promise<unknown> = Promise.resolve()
    const extender = setInterval(() => {
      const at = Date.now()
      extending = backend.queues.extend(queue, message, options.visibilityMs).then((held) => held && watchdog.lease(untilRedelivery(at)), () => {})
    }, Math.max(50, options.visibilityMs / 3))
    // node's own spawn, as lock run's supervisor: execa's extra work per spawn (its abort signals,
    // stream bookkeeping) cost the worker's single thread more than the fork itself.
    const child = spawn(command[0], command.slice(1), {
      stdio: ['pipe', 'inherit', 'inherit'],
      env: {...process.env, DLQ_QUEUE: queue, DLQ_MESSAGE_ID: message.id, DLQ_MESSAGE_ATTEMPT: String(message.attempts), DLQ_HANDLER_ID: handlerId},
    })
    const exited = new Promise<HandlerExit>((resolve) => {
      child.once('error', (error: NodeJS.ErrnoException) => child.pid === undefined && resolve({code: null, signal: null, error}))
      child.once('exit', (code, signal) => resolve({code, signal}))
    })
    // A handler that does not read its stdin closes it early: EPIPE is no failure of the message.
    child.stdin?.on('error', () => {})
    child.stdin?.end(message.body)
    if (child.pid !== undefined) watchdog.command(child.pid)
    // To every process of the handler.
    const forward = (signal: NodeJS.Signals) => void (watchdog.signal(signal) || child.kill(signal))
    running.add(forward)
    const result = await exited
    running.delete(forward)
    watchdog.end()
    clearInterval(extender)
    await extending // settled after the last extension, which could otherwise undo a retry's delay
    if (child.pid === undefined) {
      // The handler never started (not found, not executable): that is no delivery. Counted as
      // one, every message would burn its attempts at once and the queue would end up in .dead.
      await backend.queues.settle(queue, [message], 'release', options.maxAttempts)
      throw cannotRun(command[0], result.error?.code, firstLine(result.error?.message ?? 'spawn failed'), `message ${message.id} stays in ${JSON.stringify(queue)}, not counted as an attempt`)
    }
    const ok = result.code === 0
    const last = message.attempts >= options.maxAttempts
    const delayMs = ok || last ? 0 : retryDelay(options.retryDelayMs, message.attempts)
    await backend.queues.settle(queue, [message], ok ? 'ack' : 'retry', options.maxAttempts, {retryDelayMs: delayMs})
    if (!ok) {
      const why = result.signal ? `was killed by ${result.signal}` : `exited ${result.code}`
      const next = last ? `moved to ${queue}.dead` : delayMs > 0 ? `retried in ${formatDuration(delayMs)}` : 'returned for retry'
      const what = `message ${message.id} (attempt ${message.attempts} of ${options.maxAttempts}): ${command[0]} ${why}; ${next}`
      process.stderr.write(this.jsonEnabled() ? `${JSON.stringify({warning: {what, id: message.id, attempt: message.attempts, exitCode: result.code, signal: result.signal, retryDelayMs: last ? null : delayMs}})}\n` : `dlq: ${what}\n`)
    }
  }
}

interface WorkOptions {
  count?: number
  concurrency: number
  visibilityMs: number
  waitMs: number
  maxAttempts: number
  retryDelayMs: number
}

interface HandlerExit {
  code: number | null
  signal: NodeJS.Signals | null
  error?: NodeJS.ErrnoException
}

const firstLine = (text: string) => text.split('\n')[0]
