// The base of every dlq command: global flags, backend resolution, and the one place where an
// error becomes a line on stderr (or a JSON object with --json) and an exit code (SPEC §4).
import {Command} from '@oclif/core/command'
import * as Flags from '@oclif/core/flags'
import type * as Interfaces from '@oclif/core/interfaces'

import {openBackend, resolveBackendUrl, maskUrl} from './backends/index.js'
import type {Backend} from './backends/types.js'
import {toDlqError} from './errors.js'
import {note} from './output.js'

export abstract class DlqCommand extends Command {
  static enableJsonFlag = true

  static baseFlags = {
    backend: Flags.string({
      char: 'b',
      summary: 'Backend URL: file:///dir, redis://…, zk://…, postgres://… (default: $DLQ_BACKEND, else file:// in $XDG_STATE_HOME/dlq or ~/.local/state/dlq).',
      helpValue: 'URL',
      helpGroup: 'GLOBAL',
    }),
    verbose: Flags.boolean({summary: 'Log each backend round trip to stderr.', helpGroup: 'GLOBAL'}),
    color: Flags.boolean({summary: 'Colour output on a terminal (--no-color, or NO_COLOR, turns it off).', allowNo: true, default: true, helpGroup: 'GLOBAL'}),
  }

  private opened?: Backend
  protected verbose = false

  protected log2(line: string): void {
    if (this.verbose) note(`dlq: ${line}`)
  }

  protected async backend(flag: string | undefined, verbose: boolean): Promise<Backend> {
    this.verbose = verbose
    const {url, isDefault} = resolveBackendUrl(flag)
    this.log2(`backend ${maskUrl(url)}`)
    this.opened = await openBackend(url, {isDefault, log: verbose ? (line) => this.log2(line) : undefined})
    return this.opened
  }

  protected async closeBackend(): Promise<void> {
    const backend = this.opened
    this.opened = undefined
    // Closing is a courtesy to the server: never worth hanging for when it does not answer.
    await Promise.race([backend?.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
  }

  /** Ends the process now with `code` (after closing the backend): no handle can keep dlq alive. */
  protected async finish(code: number): Promise<never> {
    // The close may leave nothing for the event loop to wait on (its timer is unref'd, and a
    // ZooKeeper client whose session just expired never says "disconnected" again): Node then
    // exits by itself before process.exit below, with this code rather than 0.
    process.exitCode = code
    await this.closeBackend()
    process.exit(code)
  }

  protected override async catch(error: Interfaces.CommandError): Promise<void> {
    const failure = toDlqError(error)
    // Even a stack trace never shows a password: any user:password@ in it is masked.
    if (this.verbose || process.argv.includes('--verbose')) process.stderr.write(`${String((error as Error).stack ?? error).replace(/(\/\/[^\s:/@]*:)[^\s@/]*@/g, '$1***@')}\n`)
    if (this.jsonEnabled()) process.stderr.write(`${JSON.stringify(failure.toJSON())}\n`)
    else note(failure.line())
    await this.finish(failure.exitCode)
  }
}
