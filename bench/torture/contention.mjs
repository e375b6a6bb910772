// The contention mode of the torture: many short critical sections on one key, under CPU load, no
// faults. This is where the former file protocol gave two holders at once and tokens twice (issue
// 10): 10–16 loops of `dlq lock run --wait`, half holding ~150 ms and half not at all, on 2 cores.
//
// Each critical section makes a directory only one holder can make (an overlap is recorded when
// mkdir fails) and appends its DLQ_FENCING_TOKEN to a log while it holds, so the log lists tokens in
// the order the sections ran: they must strictly increase. Every `lock run` must exit 0 and every
// one must appear in the log exactly once.
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {availableParallelism, tmpdir} from 'node:os'
import {join} from 'node:path'

import {DLQ, NODE, start} from './procs.mjs'

const critical = 'mkdir "$0/in" 2>/dev/null || echo "$DLQ_FENCING_TOKEN" >>"$0/overlaps"; echo "$DLQ_FENCING_TOKEN" >>"$0/tokens"; [ "$1" = 0 ] || sleep "$1"; rmdir "$0/in" 2>/dev/null; :'

/**
 * Runs `loops` lock-run loops (half holding `holdMs`, half not at all) and `hogs` busy processes
 * until `acquisitions` lock runs have ended (or `deadline`, a time in ms, has passed).
 */
export async function contention({url, key, acquisitions, deadline, loops = 12, holdMs = 150, hogs = availableParallelism(), stopping = () => false}) {
  const dir = mkdtempSync(join(tmpdir(), 'dlq-contention-'))
  const hogProcs = Array.from({length: hogs}, () => start(NODE, ['-e', 'for (;;) {}']))
  const exits = new Map()
  let started = 0
  const began = Date.now()
  const loop = async (hold) => {
    while (started < acquisitions && Date.now() < deadline && !stopping()) {
      started++
      const proc = start(NODE, [DLQ, 'lock', 'run', '-b', url, '--key', key, '--wait', '120s', '--', 'sh', '-c', critical, dir, hold])
      const {code, signal} = await proc.done
      const outcome = signal ?? String(code)
      exits.set(outcome, (exits.get(outcome) ?? 0) + 1)
      if (outcome !== '0' && exits.get(outcome) === 1) process.stderr.write(`torture: contention: a lock run ended ${outcome}: ${proc.stderrText().trim()}\n`)
    }
  }
  try {
    await Promise.all(Array.from({length: loops}, (_, i) => loop(i % 2 === 0 ? (holdMs / 1000).toFixed(3) : '0')))
  } finally {
    for (const hog of hogProcs) hog.kill('SIGKILL')
    await Promise.all(hogProcs.map((hog) => hog.done))
  }
  const seconds = (Date.now() - began) / 1000
  const read = (name) => (existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8').trim().split('\n').filter(Boolean) : [])
  const tokens = read('tokens').map(BigInt)
  const overlaps = read('overlaps')
  rmSync(dir, {recursive: true, force: true})
  let notIncreasing = 0
  const samples = []
  for (let i = 1; i < tokens.length; i++) {
    if (tokens[i] > tokens[i - 1]) continue
    notIncreasing++
    if (samples.length < 5) samples.push(`token ${tokens[i]} after ${tokens[i - 1]} (critical section ${i + 1})`)
  }
  const ok = exits.get('0') ?? 0
  const checks = [
    {name: 'lock runs that ended 0', figure: `${ok} of ${started}`, limit: `${started}`, ok: ok === started, must: true},
    {name: 'critical sections logged, one per lock run', figure: tokens.length, limit: started, ok: tokens.length === started, must: true},
    {name: 'overlapping critical sections', figure: overlaps.length, limit: 0, ok: overlaps.length === 0, must: true},
    {name: 'tokens not above the one before', figure: notIncreasing, limit: 0, ok: notIncreasing === 0, must: true},
    {name: 'acquisitions per second', figure: (started / seconds).toFixed(1), limit: '-', ok: true, must: false},
  ]
  const facts = `${started} lock runs by ${loops} loops (half holding ${holdMs} ms, half not at all) beside ${hogs} CPU hogs, in ${seconds.toFixed(0)} s; exits ${[...exits].map(([k, v]) => `${k}×${v}`).join(' ')}`
  return {checks, facts, samples: [...samples, ...overlaps.slice(0, 5).map((t) => `overlap: token ${t} ran beside another holder`)]}
}
