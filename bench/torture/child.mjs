// The command the torture runs under `dlq lock run`: a critical section of fenced writes.
// It says hello to the fenced store (unix socket $TORTURE_STORE) with its fencing token and the
// time, gets its plan back (how many writes, the pauses between them), makes each write and waits
// for the store's verdict, then says goodbye. The store sees its death (kill, SIGTERM) as the
// socket closing. All times are this machine's Date.now(), the clock the harness uses too.
import {connect} from 'node:net'

const socket = connect(process.env.TORTURE_STORE)
const send = (message) => socket.write(`${JSON.stringify({...message, at: Date.now()})}\n`)
const replies = []
let waiting
let buffered = ''
socket.on('data', (chunk) => {
  const lines = (buffered + chunk).split('\n')
  buffered = lines.pop()
  for (const line of lines) {
    if (waiting) {
      const resolve = waiting
      waiting = undefined
      resolve(JSON.parse(line))
    } else replies.push(JSON.parse(line))
  }
})
socket.on('error', () => process.exit(1))
socket.on('close', () => process.exit(1))
const reply = () => (replies.length > 0 ? Promise.resolve(replies.shift()) : new Promise((resolve) => (waiting = resolve)))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

send({t: 'hello', token: process.env.DLQ_FENCING_TOKEN, owner: process.env.DLQ_LOCK_OWNER, pid: process.pid, ppid: process.ppid, shared: process.env.TORTURE_SHARED === '1'})
const {pauses} = await reply()
for (let seq = 0; seq < pauses.length; seq++) {
  send({t: 'write', seq})
  await reply()
  await sleep(pauses[seq])
}
send({t: 'bye'})
socket.removeAllListeners('close')
socket.end(() => process.exit(0))
