// A stand-in for a worker around one watchdog shell (dist/watchdog.js WatchdogShell) watching
// several commands at once, for the watchdog's own tests. Command I (1..N) is `sh -c SCRIPT DIR I`
// with its own mark in its environment and a lease of LEASE_MS[I] from now. It turns the lines it
// reads on stdin into the watchdog's protocol:
//   sig I NAME | end I
// and prints `pid I N T` once command I runs (T: when its first lease line was sent, epoch ms).
// The test can SIGSTOP or SIGKILL it as it would dlq. DLQ_TEST_WATCHDOG_SHELL: the shell.
//
//   node watched-many.mjs GRACE_MS LEAD_MS LEASE_MS,LEASE_MS,... SCRIPT DIR
import {spawn} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {createInterface} from 'node:readline'

// Node's test runner runs every file under test/ once as a test of its own, without arguments.
if (process.argv.length < 7) process.exit(0)
const {WatchdogShell} = await import(new URL('../../dist/watchdog.js', import.meta.url).href)
const [graceMs, leadMs, leases, script, dir] = process.argv.slice(2)
const shell = new WatchdogShell({graceMs: Number(graceMs), leadMs: Number(leadMs), shell: process.env.DLQ_TEST_WATCHDOG_SHELL || undefined})
const watchdogs = new Map()
leases.split(',').forEach((leaseMs, index) => {
  const id = index + 1
  const mark = randomUUID()
  const watchdog = shell.watch(`DLQ_HANDLER_ID=${mark}`)
  const leaseSentAt = Date.now()
  watchdog.lease(Number(leaseMs))
  const child = spawn('sh', ['-c', script, 'watched-sh', dir, String(id)], {stdio: ['ignore', 'inherit', 'inherit'], env: {...process.env, DLQ_HANDLER_ID: mark}})
  watchdog.command(child.pid)
  watchdogs.set(String(id), watchdog)
  process.stdout.write(`pid ${id} ${child.pid} ${leaseSentAt}\n`)
})
const keepAlive = setInterval(() => {}, 1 << 30)
for await (const line of createInterface({input: process.stdin})) {
  const [word, id, arg] = line.split(' ')
  if (word === 'sig') watchdogs.get(id)?.signal(arg)
  else if (word === 'end') watchdogs.get(id)?.end()
}
clearInterval(keepAlive)
