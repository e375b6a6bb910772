// One command's dealings with its backend, shared by the oclif commands (base.ts) and the fast
// path of `lock run` (fast.ts): open it (logging round trips with --verbose), close it without
// hanging, end the process, and turn an error into its one line and exit code (SPEC §4).
import {maskUrl, openBackend, resolveBackendUrl} from './backends/index.js'
import {maskUrlsIn} from './backends/url.js'
import type {Backend} from './backends/types.js'
import {type DlqError, toDlqError} from './errors.js'
import {note} from './output.js'

export class Session {
  verbose = false
  private opened?: Backend

  log2(line: string): void {
    if (this.verbose) note(`dlq: ${line}`)
  }

  async backend(flag: string | undefined, verbose: boolean): Promise<Backend> {
    this.verbose = verbose
    const {url, isDefault} = resolveBackendUrl(flag)
    this.log2(`backend ${maskUrl(url)}`)
    this.opened = await openBackend(url, {isDefault, log: verbose ? (line) => this.log2(line) : undefined})
    // dlq's own secret goes no further than its driver, which has read it by now (reconnections
    // reuse what it read): nothing dlq starts (the command, a handler, the watchdog) inherits it.
    delete process.env.DLQ_PASSWORD
    return this.opened
  }

  async closeBackend(): Promise<void> {
    const backend = this.opened
    this.opened = undefined
    // Closing is a courtesy to the server: never worth hanging for when it does not answer.
    await Promise.race([backend?.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
  }

  /** Ends the process now with `code` (after closing the backend): no handle can keep dlq alive. */
  async finish(code: number): Promise<never> {
    // The close may leave nothing for the event loop to wait on (its timer is unref'd, and a
    // ZooKeeper client whose session just expired never says "disconnected" again): Node then
    // exits by itself before process.exit below, with this code rather than 0.
    process.exitCode = code
    await this.closeBackend()
    process.exit(code)
  }

  /** The error as dlq reports it; with --verbose its stack goes first, any password masked. */
  failure(error: unknown): DlqError {
    if (this.verbose || process.argv.includes('--verbose')) process.stderr.write(`${maskUrlsIn(String((error as Error)?.stack ?? error))}\n`)
    return toDlqError(error)
  }

  /** Reports the error as one line and ends with its exit code. */
  async fail(error: unknown): Promise<never> {
    const failure = this.failure(error)
    note(failure.line())
    return this.finish(failure.exitCode)
  }
}
