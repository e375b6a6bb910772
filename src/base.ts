// The base of every dlq command: global flags, backend resolution, and the one place where an
// error becomes a line on stderr (or a JSON object with --json) and an exit code (SPEC §4).
import {Command} from '@oclif/core/command'
import * as Flags from '@oclif/core/flags'
import type * as Interfaces from '@oclif/core/interfaces'

import type {Backend} from './backends/types.js'
import {DlqError, ExitCode, outputError} from './errors.js'
import {jsonText, note, readerGone} from './output.js'
import {Session} from './session.js'

export abstract class DlqCommand extends Command {
  static enableJsonFlag = true

  static baseFlags = {
    backend: Flags.string({
      char: 'b',
      summary: 'Backend URL: file:///dir, redis://…, redis+sentinel://…, redis+cluster://…, zk://…, postgres://… (default: $DLQ_BACKEND, else file:// in $XDG_STATE_HOME/dlq or ~/.local/state/dlq).',
      helpValue: 'URL',
      helpGroup: 'GLOBAL',
    }),
    verbose: Flags.boolean({summary: 'Log each backend round trip to stderr.', helpGroup: 'GLOBAL'}),
    color: Flags.boolean({summary: 'Colour output on a terminal (--no-color, or NO_COLOR, turns it off).', allowNo: true, default: true, helpGroup: 'GLOBAL'}),
  }

  protected readonly session = new Session()
  private outputFailure?: Error
  private outputReported = false

  override async init(): Promise<void> {
    await super.init()
    // oclif's own listener rethrows every stdout error but EPIPE, which crashes dlq with a stack
    // trace of the bundle. A failed write (a full disk) is one line and exit 74 instead; EPIPE is
    // for the commands to handle (pop keeps what it could not write, acquire releases its lease).
    process.stdout.removeAllListeners('error')
    process.stdout.on('error', (error: Error) => {
      this.outputFailure ??= error
      if (this.reportOutputFailure()) process.exitCode = ExitCode.output
    })
  }

  /** Reports, once, a stdout that failed other than by its reader going away; true if it did. */
  private reportOutputFailure(): boolean {
    const error = this.outputFailure
    if (!error || readerGone(error)) return false
    if (!this.outputReported) this.report(outputError(error))
    return true
  }

  /** An error, or a "not now" outcome, as one line on stderr (a JSON object with --json). */
  protected report(failure: DlqError): void {
    if (failure.exitCode === ExitCode.output) this.outputReported = true
    if (this.jsonEnabled()) process.stderr.write(`${JSON.stringify(failure.toJSON())}\n`)
    else note(failure.line())
  }

  /** --json's answer on stdout: fencing tokens (BigInts) as exact integers (output.ts). */
  protected override logJson(json: unknown): void {
    process.stdout.write(`${jsonText(json, true)}\n`)
  }

  protected log2(line: string): void {
    this.session.log2(line)
  }

  protected async backend(flag: string | undefined, verbose: boolean): Promise<Backend> {
    return this.session.backend(flag, verbose)
  }

  protected async closeBackend(): Promise<void> {
    await this.session.closeBackend()
  }

  /** Ends the process now with `code` (after closing the backend): no handle can keep dlq alive. */
  protected async finish(code: number): Promise<never> {
    return this.session.finish(code === 0 && this.reportOutputFailure() ? ExitCode.output : code)
  }

  protected override async catch(error: Interfaces.CommandError): Promise<void> {
    const failure = this.session.failure(error)
    if (failure.exitCode !== ExitCode.output || !this.outputReported) this.report(failure)
    await this.finish(failure.exitCode)
  }
}
