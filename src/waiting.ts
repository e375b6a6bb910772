// The waiting line (SPEC §2): while dlq waits on a terminal (lock run, lock acquire, queue pop
// --wait), one line on stderr says for how long and for what, rewritten in place every second
// ("\r", erase the line, write it again) and erased when the wait ends. It is cut to the
// terminal's width, one column spare: a line that wrapped would leave its first rows on the screen,
// where the next "\r" cannot reach them. The changing part comes first, so a cut takes the detail.
// Long work (a push of a million lines, a large pop --count) shows its progress the same way, from
// a second into the work: `progressLine`.
const refreshMs = 1000

/** The progress line of long work, from a second into it: on a terminal only, never on a pipe. */
export function progressLine(wanted: boolean, describe: (elapsedMs: number) => string): WaitingLine | undefined {
  const line = WaitingLine.onTerminal(wanted)
  line?.showAfter(refreshMs, () => describe(line.waitedMs))
  return line
}

/** "1,234,567 messages (45,678/s)": a count and its rate over `elapsedMs`. */
export function countAndRate(count: number, what: string, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? Math.round((count * 1000) / elapsedMs) : 0
  return `${count.toLocaleString('en-US')} ${what} (${rate.toLocaleString('en-US')}/s)`
}

export class WaitingLine {
  private describe?: () => string
  private timer?: NodeJS.Timeout
  private delay?: NodeJS.Timeout
  private shown = false
  private readonly started = Date.now()

  private constructor(private readonly stream: NodeJS.WriteStream) {}

  /** A line on stderr if it is a terminal and `wanted`, else nothing. */
  static onTerminal(wanted = true): WaitingLine | undefined {
    return wanted && process.stderr.isTTY ? new WaitingLine(process.stderr) : undefined
  }

  /** How long the wait has lasted so far. */
  get waitedMs(): number {
    return Date.now() - this.started
  }

  /** Shows `describe()` now, and again every second until clear(). */
  show(describe: () => string): void {
    this.describe = describe
    clearTimeout(this.delay)
    this.render()
    this.timer ??= setInterval(() => this.render(), refreshMs).unref()
  }

  /** The same, once the wait has lasted `ms` (a wait that ends sooner shows nothing). */
  showAfter(ms: number, describe: () => string): void {
    clearTimeout(this.delay)
    this.delay = setTimeout(() => this.show(describe), ms).unref()
  }

  /** Erases the line (if shown) and stops refreshing it. */
  clear(): void {
    clearTimeout(this.delay)
    clearInterval(this.timer)
    this.timer = undefined
    if (this.shown) this.stream.write('\r\u001B[2K')
    this.shown = false
  }

  private render(): void {
    if (!this.describe) return
    this.shown = true
    this.stream.write(`\r\u001B[2K${fitWidth(this.describe(), (this.stream.columns || 80) - 1)}`)
  }
}

/**
 * `text` in at most `columns` terminal columns: control characters (a holder's command may hold a
 * newline) become spaces, wide characters (CJK, emoji) count two, combining marks none; what does
 * not fit is cut and ends in "…".
 */
export function fitWidth(text: string, columns: number): string {
  // eslint-disable-next-line no-control-regex
  const characters = [...text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ')]
  const widths = characters.map((character) => charWidth(character.codePointAt(0)!))
  if (widths.reduce((sum, w) => sum + w, 0) <= columns) return characters.join('')
  let out = ''
  let width = 0
  for (const [i, character] of characters.entries()) {
    if (width + widths[i] > columns - 1) break
    out += character
    width += widths[i]
  }
  return `${out}…`
}

function charWidth(code: number): number {
  if ((code >= 0x300 && code <= 0x36f) || (code >= 0x200b && code <= 0x200f) || (code >= 0xfe00 && code <= 0xfe0f)) return 0
  const wide =
    (code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0x303e) || (code >= 0x3041 && code <= 0x33ff) ||
    (code >= 0x3400 && code <= 0x4dbf) || (code >= 0x4e00 && code <= 0x9fff) || (code >= 0xa000 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) || (code >= 0xfe30 && code <= 0xfe4f) ||
    (code >= 0xff00 && code <= 0xff60) || (code >= 0xffe0 && code <= 0xffe6) || (code >= 0x1f300 && code <= 0x1f64f) ||
    (code >= 0x1f900 && code <= 0x1f9ff) || (code >= 0x20000 && code <= 0x3fffd)
  return wide ? 2 : 1
}
