// What `dlq queue pop` costs (issue 16), for `npm run bench` (section popcosts) or alone:
//
//   node bench/popcosts.mjs [redis|postgres|memory…]
//   DLQ_BENCH_BASELINE=/path/to/another/checkout node bench/popcosts.mjs   # before/after, side by side
//
// - Redis: the server time of each script call a pop makes (SLOWLOG with a threshold of 0 records
//   every command with its duration), for --count 1000 and --count 100000 on a 300,000-message
//   stream; and `queue status` behind 100,000 reservations still running.
// - PostgreSQL: the server time of each statement a pop runs, measured by the server itself
//   (auto_explain, EXPLAIN ANALYZE of exactly what dlq sent, top-level statements only; see
//   test/support/pgplans.mjs), for --count 1000 on a 1,000,000-message queue pushed after the table
//   was analyzed nearly empty (so the planner believes it tiny), and again behind 100,000
//   reservations.
// - Memory: the peak RSS of one `pop --count 1000` and one `pop --count 100000` (GNU time's %M) on
//   the file backend, Redis and PostgreSQL.
// Each build (this checkout, and the baseline if given) gets queues of its own. A baseline whose
// PostgreSQL schema is older uses its own ?schema=. Every server statement is capped at 20 s, so an
// old build's abandoned statement cannot run on under the next measurement.
import {spawnSync} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, rmSync} from 'node:fs'
import os from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

import {planLog, planLogConfig} from '../test/support/pgplans.mjs'
import {startPostgres} from '../test/support/postgres.mjs'
import {startRedis} from '../test/support/servers.mjs'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const NODE = process.execPath
const TIME = '/usr/bin/time'

const REDIS_STREAM = 300_000
const PG_QUEUE = 1_000_000
const HELD = 100_000
const BIG_POP = 100_000
const SMALL_POP = 1000

const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-')
const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-')
const median = (xs) => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[(s.length - 1) >> 1]
}
const sum = (xs) => xs.reduce((a, b) => a + b, 0)
const p99 = (xs) => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)]
}

/** The builds to measure: this checkout, and DLQ_BENCH_BASELINE's if set. */
function builds() {
  const out = [{name: 'this', root: ROOT}]
  const baseline = process.env.DLQ_BENCH_BASELINE
  if (baseline) {
    if (!existsSync(join(baseline, 'bin', 'run.cjs')) || !existsSync(join(baseline, 'dist'))) throw new Error(`DLQ_BENCH_BASELINE=${baseline}: no built dlq there (bin/run.cjs, dist/)`)
    out.push({name: 'baseline', root: resolve(baseline)})
  }
  return out
}

const env = {...process.env, NO_COLOR: '1'}
delete env.DLQ_BACKEND

/** One dlq run: exit code, wall ms, peak RSS in MB (when GNU time is there), stdout size, stderr's last line. */
function dlq(build, url, args, {input} = {}) {
  const argv = [join(build.root, 'bin', 'run.cjs'), ...args.slice(0, 2), '-b', url, ...args.slice(2)]
  const timed = existsSync(TIME)
  const started = process.hrtime.bigint()
  const r = spawnSync(timed ? TIME : NODE, timed ? ['-f', '%M', NODE, ...argv] : argv, {input, env, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe']})
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  const errLines = String(r.stderr).trim().split('\n')
  const rssKb = timed ? Number(errLines.pop()) : Number.NaN
  return {code: r.status, ms, rssMb: rssKb / 1024, out: r.stdout.length, err: errLines.filter((l) => !/^Command exited/.test(l)).at(-1) ?? ''}
}

const lines = (from, n) => {
  let text = ''
  for (let i = from; i < from + n; i++) text += `message-${i}\n`
  return text
}

/** Pushes n messages in pieces of 100,000 lines (one dlq push each). */
function push(build, url, queue, n) {
  for (let done = 0; done < n; done += 100_000) {
    const r = dlq(build, url, ['queue', 'push', '--queue', queue], {input: lines(done + 1, Math.min(100_000, n - done))})
    if (r.code !== 0) throw new Error(`queue push (${build.name}): exit ${r.code}: ${r.err}`)
  }
}

const outcome = (r) => (r.code === 0 ? '' : ` (exit ${r.code}: ${r.err.slice(0, 80)})`)

// ---------------------------------------------------------------------------------------------

async function redis(log) {
  const server = await startRedis()
  const cli = (...args) => spawnSync('redis-cli', ['-p', String(server.port), ...args], {encoding: 'utf8', maxBuffer: 1 << 28}).stdout
  /** SLOWLOG entries of EVAL/EVALSHA since the last reset: their durations in µs. */
  const scriptMicros = () => {
    const out = []
    const entries = JSON.parse(spawnSync('redis-cli', ['-p', String(server.port), '--json', 'SLOWLOG', 'GET', '-1'], {encoding: 'utf8', maxBuffer: 1 << 28}).stdout || '[]')
    for (const entry of entries) if (/^eval(sha)?$/i.test(String(entry[3]?.[0]))) out.push(Number(entry[2]))
    return out
  }
  /** Waits while the server is still running a script its caller gave up on (it answers BUSY meanwhile). */
  const idle = () => {
    while (!/PONG/.test(cli('PING') ?? '')) spawnSync('sleep', ['0.2'])
  }
  /** CPU seconds the server has used (user + system): the work, without the time it was not running. */
  const cpu = () => {
    const info = cli('INFO', 'cpu') ?? ''
    return Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1])
  }
  const rows = []
  const verdicts = []
  const notes = []
  try {
    cli('CONFIG', 'SET', 'slowlog-log-slower-than', '0')
    cli('CONFIG', 'SET', 'slowlog-max-len', '1000000')
    for (const build of builds()) {
      const queue = `pop-${build.name}`
      log(`redis (${build.name}): pushing ${fmtInt(REDIS_STREAM)}…`)
      push(build, server.url, queue, REDIS_STREAM)
      dlq(build, server.url, ['queue', 'pop', '--queue', queue]) // the scripts loaded: no NOSCRIPT round in the figures
      for (const count of [SMALL_POP, BIG_POP]) {
        cli('SLOWLOG', 'RESET')
        const cpuBefore = cpu()
        const r = dlq(build, server.url, ['queue', 'pop', '--queue', queue, '--count', String(count)])
        idle()
        const cpuMs = (cpu() - cpuBefore) * 1000
        const micros = scriptMicros()
        rows.push(['redis', build.name, `pop --count ${fmtInt(count)}${outcome(r)}`, String(micros.length), fmt(median(micros) / 1000, 2), fmt(p99(micros) / 1000, 2), fmt(Math.max(...micros) / 1000, 2), fmt(sum(micros) / 1000, 1), fmt(cpuMs / micros.length, 2), fmt(r.ms, 0)])
        if (build.name === 'this') verdicts.push({ok: r.code === 0 && median(micros) <= 5000, target: `Redis pop --count ${fmtInt(count)}: script calls of about 1–2 ms, within 5 ms (median; p99 and max count the moments a busy machine ran something else)`, measured: `median ${fmt(median(micros) / 1000, 2)}, p99 ${fmt(p99(micros) / 1000, 2)}, max ${fmt(Math.max(...micros) / 1000, 2)} ms over ${micros.length} calls`})
      }
      // queue status behind reservations still running (a popper that vanished, 1 h visibility).
      const held = `held-${build.name}`
      push(build, server.url, held, HELD)
      dlq(build, server.url, ['queue', 'push', '--queue', held, 'late-1', 'late-2'])
      const {openBackend} = await import(pathToFileURL(join(build.root, 'dist', 'backends', 'index.js')).href)
      const backend = await openBackend(server.url)
      for (let taken = 0; taken < HELD;) taken += (await backend.queues.reserve(held, {count: Math.min(1000, HELD - taken), visibilityMs: 3_600_000, waitMs: 0, maxAttempts: 5, signal: new AbortController().signal})).length
      await backend.close()
      const empty = median([1, 2, 3].map(() => dlq(build, server.url, ['queue', 'status', '--queue', 'nothing-here']).ms))
      const status = median([1, 2, 3].map(() => dlq(build, server.url, ['queue', 'status', '--queue', held]).ms))
      rows.push(['redis', build.name, `queue status, ${fmtInt(HELD)} reserved in front (wall ms; an empty queue: ${fmt(empty, 0)})`, '-', '-', '-', '-', '-', '-', fmt(status, 0)])
    }
    notes.push('server ms from SLOWLOG (threshold 0: every call, its execution time in the server); a script blocks every other client for that long. On a busy machine a call\'s time includes moments the OS ran something else (the max); CPU ms/call is the server\'s CPU time (INFO cpu) over the whole pop divided by its calls, its background work included (it dominates for a few calls).')
    notes.push(`the pops take from a ${fmtInt(REDIS_STREAM)}-entry stream; wall ms includes the process start-up.`)
  } finally {
    await server.stop()
  }
  return {title: 'pop costs: Redis server time per script call', table: {header: ['backend', 'build', 'what', 'calls', 'median ms', 'p99 ms', 'max ms', 'total ms', 'CPU ms/call', 'wall ms'], rows}, verdicts, notes}
}

// ---------------------------------------------------------------------------------------------

async function postgres(log) {
  // Top-level statements only: their duration includes what runs inside dlq's functions.
  // Buffers that hold the queue and its indexes (the fixture's 32 MB would measure the OS's cache).
  const server = await startPostgres({config: [...planLogConfig, 'auto_explain.log_nested_statements=off', 'log_executor_stats=on', 'autovacuum=off', 'shared_buffers=512MB']})
  const plans = planLog(server)
  const rows = []
  const verdicts = []
  try {
    await server.sql(`ALTER ROLE ${server.user} SET statement_timeout = '20s'`)
    for (const build of builds()) {
      const schema = `bench_${build.name}`
      const url = `${server.url}?schema=${schema}`
      // Statistics from a nearly empty table, then a million pushed: the planner believes the queue tiny.
      push(build, url, 'warm', 2)
      await server.sql(`ANALYZE ${schema}.messages`)
      log(`postgres (${build.name}): pushing ${fmtInt(PG_QUEUE)}…`)
      push(build, url, 'q', PG_QUEUE)
      const measure = (what, args) => {
        const mark = plans.mark()
        const r = dlq(build, url, args)
        const statements = plans.since(mark, 'dlq').filter((e) => /\b(reserve|settle)\(/.test(e.query))
        const ms = statements.map((e) => e.durationMs)
        const cpuMs = statements.map((e) => e.cpuMs ?? Number.NaN)
        rows.push(['postgres', build.name, `${what}${outcome(r)}`, String(ms.length), fmt(median(ms), 2), fmt(Math.max(...ms), 2), fmt(sum(ms), 1), fmt(sum(cpuMs), 1), fmt(r.ms, 0)])
        return {r, totalMs: sum(ms), cpuMs: sum(cpuMs)}
      }
      // queue status --queue: the server time of its one statement, median of 3 (issue 16: independent of the queue's length).
      const statusOf = (what, queue) => {
        const runs = [1, 2, 3].map(() => {
          const mark = plans.mark()
          const r = dlq(build, url, ['queue', 'status', '--queue', queue])
          const statements = plans.since(mark, 'dlq').filter((e) => /stats_of_queue\(/.test(e.query))
          return {r, ms: sum(statements.map((e) => e.durationMs)), cpuMs: sum(statements.map((e) => e.cpuMs ?? Number.NaN)), n: statements.length}
        })
        const ms = median(runs.map((x) => x.ms))
        const cpuMs = median(runs.map((x) => x.cpuMs))
        rows.push(['postgres', build.name, `queue status --queue, ${what}${outcome(runs[1].r)}`, String(runs[1].n), fmt(ms, 2), '-', '-', fmt(cpuMs, 1), fmt(median(runs.map((x) => x.r.ms)), 0)])
        return ms
      }
      const smallStatus = statusOf('2 waiting', 'warm')
      const bigStatus = statusOf(`${fmtInt(PG_QUEUE)} waiting`, 'q')
      if (build.name === 'this') verdicts.push({ok: bigStatus <= 2 * smallStatus + 1, target: `PostgreSQL queue status --queue Q with ${fmtInt(PG_QUEUE)} waiting: within 2× (+1 ms) of a 2-message queue's server time`, measured: `${fmt(bigStatus, 2)} ms vs ${fmt(smallStatus, 2)} ms`})
      const fresh = measure(`pop --count 1000, un-analyzed ${fmtInt(PG_QUEUE)}`, ['queue', 'pop', '--queue', 'q', '--count', '1000'])
      if (build.name === 'this') verdicts.push({ok: fresh.r.code === 0 && fresh.cpuMs < 100, target: `PostgreSQL pop --count 1000 on an un-analyzed ${fmtInt(PG_QUEUE)}-message queue: under 100 ms of server time (CPU)`, measured: `${fmt(fresh.cpuMs, 1)} ms CPU, ${fmt(fresh.totalMs, 1)} ms wall`})
      // A popper that reserved 100,000 (by the build's own driver, 1000 at a time) and vanished.
      const {openBackend} = await import(pathToFileURL(join(build.root, 'dist', 'backends', 'index.js')).href)
      const backend = await openBackend(url)
      for (let taken = 0; taken < HELD;) taken += (await backend.queues.reserve('q', {count: 1000, visibilityMs: 3_600_000, waitMs: 0, maxAttempts: 5, signal: new AbortController().signal})).length
      await backend.close()
      statusOf(`${fmtInt(HELD)} reserved (counted: the cost follows the reservations)`, 'q')
      for (const which of ['first', 'second']) {
        const held = measure(`pop --count 1000, ${fmtInt(HELD)} reserved in front (${which} pop)`, ['queue', 'pop', '--queue', 'q', '--count', '1000'])
        if (build.name === 'this') verdicts.push({ok: held.r.code === 0 && held.cpuMs < 100, target: `PostgreSQL pop --count 1000 behind ${fmtInt(HELD)} reservations (${which} pop): under 100 ms of server time (CPU)`, measured: `${fmt(held.cpuMs, 1)} ms CPU, ${fmt(held.totalMs, 1)} ms wall`})
      }
    }
  } finally {
    await server.stop()
  }
  return {
    title: 'pop costs: PostgreSQL server time per statement',
    table: {header: ['backend', 'build', 'what', 'statements', 'median ms', 'max ms', 'total ms', 'CPU ms', 'dlq wall ms'], rows},
    verdicts,
    notes: [
      'server ms: the duration the server logged for each reserve/settle statement dlq sent (auto_explain with log_analyze, no per-node timing), functions\' inner statements included; CPU ms: the same statements\' CPU time (log_executor_stats), which a busy machine does not inflate.',
      'shared_buffers=512MB, fsync off (the commit\'s flush is not part of a statement\'s time anyway).',
      'statement_timeout is 20 s on this server: an old build\'s statement that would run longer ends there instead of running on after dlq gave up.',
    ],
  }
}

// ---------------------------------------------------------------------------------------------

async function memory(log) {
  if (!existsSync(TIME)) return {title: 'pop costs: memory', table: {header: ['-'], rows: []}, notes: [`${TIME} (GNU time) is not installed: no peak RSS figures`]}
  const redisServer = await startRedis()
  const pgServer = await startPostgres()
  const dir = mkdtempSync(join(os.tmpdir(), 'dlq-bench-popmem-'))
  const rows = []
  const verdicts = []
  try {
    for (const build of builds()) {
      mkdirSync(join(dir, build.name))
      const urls = [['file', `file://${dir}/${build.name}`], ['redis', redisServer.url], ['postgres', `${pgServer.url}?schema=mem_${build.name}`]]
      for (const [backend, url] of urls) {
        const queue = `mem-${build.name}`
        log(`memory (${backend}, ${build.name}): pushing ${fmtInt(SMALL_POP + BIG_POP)}…`)
        push(build, url, queue, SMALL_POP + BIG_POP)
        const small = dlq(build, url, ['queue', 'pop', '--queue', queue, '--count', String(SMALL_POP)])
        const big = dlq(build, url, ['queue', 'pop', '--queue', queue, '--count', String(BIG_POP)])
        rows.push([backend, build.name, `${fmt(small.rssMb, 0)}${outcome(small)}`, `${fmt(big.rssMb, 0)}${outcome(big)}`, fmt(big.rssMb / small.rssMb, 2), fmt(big.ms / 1000, 1)])
        if (build.name === 'this') verdicts.push({ok: big.code === 0 && big.rssMb <= small.rssMb + 64, target: `${backend}: pop --count ${fmtInt(BIG_POP)} within 64 MB of --count ${fmtInt(SMALL_POP)} (one batch in memory, whatever --count)`, measured: `${fmt(small.rssMb, 0)} → ${fmt(big.rssMb, 0)} MB`})
      }
    }
  } finally {
    rmSync(dir, {recursive: true, force: true})
    await redisServer.stop()
    await pgServer.stop()
  }
  return {
    title: `pop costs: peak RSS (MB) of one pop, --count ${fmtInt(SMALL_POP)} vs --count ${fmtInt(BIG_POP)}`,
    table: {header: ['backend', 'build', `--count ${fmtInt(SMALL_POP)}`, `--count ${fmtInt(BIG_POP)}`, 'ratio', `${fmtInt(BIG_POP)}: wall s`], rows},
    verdicts,
    notes: ['messages of ~14 bytes; what remains above the small pop is garbage V8 has not collected yet (the same pop under --max-old-space-size=24 stays near the small figure).'],
  }
}

const SECTIONS = {redis, postgres, memory}

/** For bench.mjs: every section's report; `onReport` sees each as soon as its section ends. */
export async function benchPopCosts({log = () => {}, sections = Object.keys(SECTIONS), onReport = () => {}} = {}) {
  const reports = []
  for (const name of sections) {
    reports.push(await SECTIONS[name](log))
    onReport(reports.at(-1))
  }
  return reports
}

function print(report) {
  console.log(`\n== ${report.title}`)
  const all = [report.table.header, ...report.table.rows].map((row) => row.map(String))
  const widths = report.table.header.map((_h, i) => Math.max(...all.map((row) => (row[i] ?? '').length)))
  for (const row of all) console.log(`  ${row.map((cell, i) => (i === 0 || i === 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd()}`)
  for (const v of report.verdicts ?? []) console.log(`  ${v.ok ? 'PASS' : 'MISS'}  target: ${v.target} — measured ${v.measured}`)
  for (const note of report.notes ?? []) console.log(`  note: ${note}`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const wanted = process.argv.slice(2)
  for (const name of wanted) if (!(name in SECTIONS)) throw new Error(`unknown section ${name} (known: ${Object.keys(SECTIONS).join(', ')})`)
  await benchPopCosts({log: (line) => process.stderr.write(`${line}\n`), sections: wanted.length ? wanted : undefined, onReport: print})
}
