// A stand-in for dlq around the watchdog (dist/watchdog.js), for its own tests: it starts a
// Watchdog, spawns `sh -c SCRIPT` with the mark in its environment as dlq spawns its command (same
// process group), and turns the lines it reads on stdin into the watchdog's protocol:
//   lease MS | stop MS | sig NAME | end
// It prints `pid N T` once the command runs (T: when it sent the first lease line, epoch ms), `stopping` and `gone` as the watchdog reports them, and
// `exit CODE SIGNAL` when the command exits. The test can SIGSTOP or SIGKILL it as it would dlq.
//
//   node watched.mjs MARK GRACE_MS LEAD_MS LEASE_MS SCRIPT [ARGS...]
import {spawn} from 'node:child_process'
import {createInterface} from 'node:readline'

// Node's test runner runs every file under test/ once as a test of its own, without arguments.
if (process.argv.length < 7) process.exit(0)
const {Watchdog} = await import(new URL('../../dist/watchdog.js', import.meta.url).href)
const [mark, graceMs, leadMs, leaseMs, script, ...args] = process.argv.slice(2)
const say = (line) => process.stdout.write(`${line}\n`)
// DLQ_TEST_WATCHDOG_SHELL: the shell to run the watchdog with, /bin/sh when unset.
const watchdog = Watchdog.alone({mark, graceMs: Number(graceMs), leadMs: Number(leadMs), onStopping: () => say('stopping'), shell: process.env.DLQ_TEST_WATCHDOG_SHELL || undefined})
const leaseSentAt = Date.now()
watchdog.lease(Number(leaseMs))
const [name, value] = [mark.slice(0, mark.indexOf('=')), mark.slice(mark.indexOf('=') + 1)]
const child = spawn('sh', ['-c', script, 'watched-sh', ...args], {stdio: ['ignore', 'inherit', 'inherit'], env: {...process.env, [name]: value}})
watchdog.command(child.pid)
say(`pid ${child.pid} ${leaseSentAt}`)
child.on('exit', (code, signal) => say(`exit ${code} ${signal}`))
void watchdog.gone.then(() => say('gone'))
const keepAlive = setInterval(() => {}, 1 << 30)
for await (const line of createInterface({input: process.stdin})) {
  const [word, arg] = line.split(' ')
  if (word === 'lease') watchdog.lease(Number(arg))
  else if (word === 'stop') watchdog.stop(Number(arg))
  else if (word === 'sig') watchdog.signal(arg)
  else if (word === 'end') {
    watchdog.end()
    clearInterval(keepAlive)
  }
}
