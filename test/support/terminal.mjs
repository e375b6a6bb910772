// A real pseudo-terminal for dlq (util-linux script(1)), and a small model of the screen it draws
// on, for what only a terminal shows: the waiting line. script runs `stty cols C rows R` first, so
// dlq sees a terminal of that size; everything dlq writes (stdout and stderr, both the terminal)
// arrives on script's stdout.
import {spawn} from 'node:child_process'

import {BIN, NODE, dlqEnv, ROOT} from './cli.mjs'

const quote = (word) => `'${String(word).replaceAll("'", "'\\''")}'`

/**
 * Starts `dlq ARGS…` on a terminal of `columns` columns. Returns {child, output(), result} where
 * output() is what reached the terminal so far and result resolves with {code, output}. With
 * `from` (a shell command), dlq's stdin is that command's output instead of the terminal; with
 * `to` (a path), its stdout goes to that file: stderr stays on the terminal.
 */
export function onTerminal(args, {columns = 80, rows = 24, env = {}, t, from, to} = {}) {
  const dlq = `${[NODE, BIN, ...args].map(quote).join(' ')}${to === undefined ? '' : ` > ${quote(to)}`}`
  const command = `stty cols ${columns} rows ${rows} && ${from === undefined ? `exec ${dlq}` : `{ ${from}; } | ${dlq}`}`
  // stdin stays an open pipe: script forwards it to the terminal and would pass an end of file on.
  const child = spawn('script', ['-qfec', command, '/dev/null'], {cwd: ROOT, env: dlqEnv({TERM: 'xterm', ...env}), stdio: ['pipe', 'pipe', 'pipe'], detached: true})
  const chunks = []
  child.stdout.on('data', (chunk) => chunks.push(chunk))
  child.stderr.on('data', (chunk) => chunks.push(chunk))
  const output = () => Buffer.concat(chunks).toString('utf8')
  const result = new Promise((resolve) => child.on('close', (code) => resolve({code, output: output()})))
  const kill = () => {
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }
  if (t) t.after(kill)
  return {child, output, result, kill}
}

/** Columns a character takes (a terminal's view: CJK and emoji two, combining marks none). */
export function columnsOf(character) {
  const code = character.codePointAt(0)
  if (code >= 0x300 && code <= 0x36f) return 0
  if ((code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0xa4cf) || (code >= 0xac00 && code <= 0xd7a3) ||
    (code >= 0xf900 && code <= 0xfaff) || (code >= 0xff00 && code <= 0xff60) || (code >= 0x1f300 && code <= 0x1f64f) || (code >= 0x1f900 && code <= 0x1f9ff)) return 2
  return 1
}

export const widthOf = (text) => [...text].reduce((sum, c) => sum + columnsOf(c), 0)

/**
 * The screen after `output`, as a terminal of `columns` columns draws it: text wraps at the last
 * column (the wrap happens when the next character comes), \r goes to column 0, \n down a row,
 * ESC[2K erases the row, ESC[K (ESC[0K) to its end; other escapes are ignored. Rows, top first.
 */
export function screenOf(output, columns) {
  const rows = [[]]
  let row = 0
  let col = 0
  const chars = [...output]
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]
    if (c === '\r') col = 0
    else if (c === '\n') {
      row++
      rows[row] ??= []
    } else if (c === '\u001b' && chars[i + 1] === '[') {
      let j = i + 2
      let params = ''
      while (j < chars.length && /[0-9;?]/.test(chars[j])) params += chars[j++]
      const final = chars[j]
      if (final === 'K') {
        if (params === '2') rows[row] = []
        else if (params === '' || params === '0') rows[row] = rows[row].slice(0, Math.min(col, columns))
      }
      i = j
    } else if (c >= ' ') {
      const w = columnsOf(c)
      if (col + w > columns) {
        row++
        rows[row] ??= []
        col = 0
      }
      rows[row][col] = c
      for (let k = 1; k < w; k++) rows[row][col + k] = ''
      col += w
    }
  }
  return rows.map((cells) => Array.from(cells, (c) => c ?? ' ').join('').trimEnd())
}
