// Output conventions (SPEC §5): data to stdout, everything else to stderr; colours only on a TTY
// and never with NO_COLOR or --no-color; tables for people, --json for scripts.
import type {ChalkInstance} from 'chalk'

import {outputError} from './errors.js'

export interface OutputOptions {
  color: boolean
  json: boolean
  quiet?: boolean
}

export function colorEnabled(stream: NodeJS.WriteStream, wanted: boolean): boolean {
  return wanted && Boolean(stream.isTTY) && !('NO_COLOR' in process.env && process.env.NO_COLOR !== '')
}

/** chalk is loaded only by commands that print for people, with colour decided here, not by chalk. */
export async function paint(stream: NodeJS.WriteStream, wanted: boolean): Promise<ChalkInstance> {
  const {Chalk} = await import('chalk')
  return new Chalk({level: colorEnabled(stream, wanted) ? 1 : 0})
}

/** Aligned columns; the last column is not padded. */
export function table(header: string[], rows: string[][], bold: (s: string) => string = (s) => s): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ')
  return [bold(line(header)), ...rows.map(line)].join('\n') + '\n'
}

/** The reader of our stdout has gone (`| head -1`): Unix tools stop quietly then. */
export const readerGone = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code === 'EPIPE'

/**
 * Writes and resolves once the bytes were handed to the OS. Rejects with the EPIPE error when the
 * reader has gone (see readerGone), or with an outputError (exit 74) for any other failure.
 */
export function writeOut(stream: NodeJS.WriteStream, data: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => reject(readerGone(error) ? error : outputError(error))
    stream.once('error', fail)
    stream.write(data, (error) => {
      stream.off('error', fail)
      if (error) fail(error)
      else resolve()
    })
  })
}

export {jsonText} from './json.js'

export function note(line: string): void {
  process.stderr.write(`${line}\n`)
}
