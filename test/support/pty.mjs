// A real pseudo-terminal for tests that need one (/dev/tty prompts, Ctrl-C, Ctrl-Z and fg): the
// command runs as a session leader with the pty as its controlling terminal (test/support/pty-run.py,
// python3's pty module), and the test types into it and waits for what it prints, with deadlines.
import {spawn} from 'node:child_process'
import {join} from 'node:path'

import {dlqEnv, killPid, ROOT, waitFor} from './cli.mjs'

const HELPER = join(ROOT, 'test', 'support', 'pty-run.py')

/** Keys as a terminal sends them (the pty's default settings: ISIG, ICANON). */
export const keys = {ctrlC: '\x03', ctrlZ: '\x1a', ctrlBackslash: '\x1c'}

/**
 * Starts `file args…` on a new pty. Returns
 *   term.pid          the command's pid (a promise)
 *   term.type(text)   types text into the terminal
 *   term.screen()     everything the terminal showed so far (\r\n as the pty writes it)
 *   term.expect(pattern, {from, what, timeoutMs}) waits until the screen (after offset `from`)
 *                     matches, and returns the end offset of the match
 *   term.result       promise of {code, screen}: the command's exit status (128+N for signal N)
 * opts: env (added to the tests' environment), timeoutMs (the helper is killed past it), t.
 */
export function startPty(file, args, {env, timeoutMs = 60_000, t} = {}) {
  const child = spawn('python3', [HELPER, file, ...args], {cwd: ROOT, env: dlqEnv(env), stdio: ['pipe', 'pipe', 'pipe'], detached: true})
  const out = []
  let errText = ''
  child.stdout.on('data', (chunk) => out.push(chunk))
  child.stderr.on('data', (chunk) => {
    errText += chunk.toString('utf8')
  })
  child.stdin.on('error', () => {})
  const screen = () => Buffer.concat(out).toString('utf8')
  const pid = waitFor(() => /^pid (\d+)$/m.exec(errText)?.[1], {what: 'the pty helper to start the command'}).then(Number)
  let commandPid
  pid.then((p) => (commandPid = p), () => {})
  const deadline = setTimeout(() => {
    killPid(commandPid)
    killPid(child.pid)
  }, timeoutMs)
  const result = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(deadline)
      resolve({code: signal ? `helper killed by ${signal} (timed out?)` : code, screen: screen(), stderr: errText})
    })
  })
  const cleanup = () => {
    clearTimeout(deadline)
    killPid(commandPid)
    killPid(child.pid)
  }
  process.on('exit', cleanup)
  if (t && typeof t.after === 'function') t.after(cleanup)
  return {
    pid,
    result,
    screen,
    type: (text) => child.stdin.write(text),
    async expect(pattern, {from = 0, what, timeoutMs: wait = 15_000} = {}) {
      const regex = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern
      try {
        const match = await waitFor(() => regex.exec(screen().slice(from)), {timeoutMs: wait, what: `${what ?? regex} on the terminal`})
        return from + match.index + match[0].length
      } catch (error) {
        throw new Error(`${error.message}; it shows:\n${screen().slice(from)}`)
      }
    },
  }
}
