// Signals sent to dlq (SIGINT, SIGTERM, SIGHUP, SIGQUIT), routed by phase, so that none is lost and
// none kills dlq behind the command's back: while dlq waits, a signal cancels the wait; from the
// moment a command is about to run, signals are held and then forwarded to it, including those
// that arrive between taking the lock and starting the command.
import {readFileSync} from 'node:fs'
import {constants} from 'node:os'

export const forwardedSignals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const
export type ForwardedSignal = (typeof forwardedSignals)[number]

/** The exit code of a process killed by `signal`, as shells report it. */
export const signalExitCode = (signal: NodeJS.Signals) => 128 + (constants.signals[signal] ?? 0)

export class SignalRouter {
  /** The first signal received, if any. */
  first?: ForwardedSignal
  private readonly abort = new AbortController()
  private holding = false
  private readonly held: ForwardedSignal[] = []
  private target?: (signal: ForwardedSignal) => void
  private unless?: (signal: ForwardedSignal) => boolean
  private readonly handlers = forwardedSignals.map((signal) => {
    const handler = () => this.receive(signal)
    process.on(signal, handler)
    return () => process.off(signal, handler)
  })

  /** Aborted by the first signal received while waiting. */
  get signal(): AbortSignal {
    return this.abort.signal
  }

  private receive(signal: ForwardedSignal): void {
    this.first ??= signal
    if (this.target) {
      if (!this.unless?.(signal)) this.target(signal)
    } else if (this.holding) this.held.push(signal)
    else this.abort.abort()
  }

  /** From now on, keep signals for the command about to start instead of cancelling. */
  hold(): void {
    this.holding = true
  }

  /**
   * Sends held and future signals to `target` (every process of the command), except a future one
   * for which `unless` says true (the terminal's, which reached the command already). A held one
   * came before the command existed: it always goes.
   */
  forwardTo(target: ((signal: ForwardedSignal) => void) | undefined, unless?: (signal: ForwardedSignal) => boolean): void {
    this.target = target
    this.unless = unless
    if (target) for (const signal of this.held.splice(0)) target(signal)
  }

  /** Back to cancelling: for a worker between two messages. */
  waitAgain(): void {
    this.holding = false
    this.target = undefined
    if (this.held.splice(0).length > 0 || this.first) this.abort.abort()
  }

  dispose(): void {
    for (const off of this.handlers) off()
  }
}

/**
 * Did `signal` most likely come from dlq's terminal, which sent it to dlq's whole job, the command
 * included (it runs in dlq's process group)? True for SIGINT and SIGQUIT (Ctrl-C, Ctrl-\) while
 * dlq's process group is its terminal's foreground group: forwarding those would deliver them
 * twice, which a command that traps SIGINT (a shell script's cleanup, Python's KeyboardInterrupt)
 * would run twice. Node cannot see the sender (sudo reads si_code for the same decision), so a
 * SIGINT that someone sends to dlq's pid alone while it is in the foreground is not forwarded.
 */
export function fromTerminal(signal: NodeJS.Signals): boolean {
  if (signal !== 'SIGINT' && signal !== 'SIGQUIT') return false
  try {
    const stat = readFileSync('/proc/self/stat', 'latin1')
    const [, , pgrp, , , tpgid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return tpgid !== '-1' && tpgid === pgrp
  } catch {
    return false
  }
}

