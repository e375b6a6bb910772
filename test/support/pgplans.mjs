// The plans PostgreSQL actually ran, statement by statement, for tests and benchmarks that must
// check what a dlq process made the server do (not what EXPLAIN of a similar query would say):
// auto_explain logs every statement's plan with its actual row counts (EXPLAIN ANALYZE without
// per-node timing), the statements inside dlq's PL/pgSQL functions included, to a log file in the
// server's data directory.
//
//   const server = await startPostgres({config: [...planLogConfig, 'autovacuum=off']})
//   const log = planLog(server)
//   const mark = log.mark(); /* run dlq */ const entries = log.since(mark, 'dlq')
//   for (const node of planNodes(entries[0].plan)) …
import {readFileSync, statSync} from 'node:fs'
import {join} from 'node:path'

const logFile = 'postgresql.log'

/** postgres -c settings: every statement's plan (with actual rows) to data/log/postgresql.log. */
export const planLogConfig = [
  'session_preload_libraries=auto_explain',
  'auto_explain.log_min_duration=0',
  'auto_explain.log_analyze=on',
  'auto_explain.log_timing=off',
  'auto_explain.log_nested_statements=on',
  'auto_explain.log_format=json',
  'logging_collector=on',
  'log_directory=log',
  `log_filename=${logFile}`,
  // Each entry starts with a marker and the session's application_name (dlq's is "dlq").
  'log_line_prefix=@@@[%a] ',
]

/**
 * @typedef {{app: string, durationMs: number, query: string, plan: object, jit?: object, nested: boolean, cpuMs?: number}} PlanEntry
 * `jit`: what the server's JIT compiled for the statement, if it did.
 * `nested`: run inside a function (by a statement that is logged after it, as a whole).
 * `cpuMs`: the server's CPU time (user + system) for a top-level statement, with
 * log_executor_stats=on in the config (for benchmarks: unlike durationMs, it does not count the
 * moments a busy machine ran something else).
 */

export function planLog(server) {
  const path = join(server.data, 'log', logFile)
  const size = () => {
    try {
      return statSync(path).size
    } catch {
      return 0
    }
  }
  return {
    /** Where the log ends now. */
    mark: size,
    /** The plans logged after `mark`, of sessions named `app` if given. */
    since(mark, app) {
      const text = readFileSync(path).subarray(mark).toString('utf8')
      const entries = []
      let pending
      for (const chunk of text.split(/\n(?=@@@\[)/)) {
        const context = /^@@@\[[^\]]*\] CONTEXT:/.test(chunk)
        if (context && entries.length > 0 && /PL\/pgSQL function/.test(chunk)) entries.at(-1).nested = true
        // log_executor_stats: logged before the plan (at the end of the run, the plan at the end of
        // the executor), and followed by the statement's text, so it goes with the next plan of it.
        const usage = /^@@@\[[^\]]*\] DETAIL: {2}! system usage stats:\n\s*!\s+([\d.]+) s user, ([\d.]+) s system/.exec(chunk)
        if (usage) pending = {cpuMs: (Number(usage[1]) + Number(usage[2])) * 1000}
        const statement = /^@@@\[[^\]]*\] STATEMENT: {2}([\s\S]*)$/.exec(chunk)
        if (statement && pending) pending.query = statement[1].replace(/\n\t/g, '\n')
        const m = /^@@@\[([^\]]*)\] LOG: {2}duration: ([\d.]+) ms {2}plan:\n([\s\S]*)$/.exec(chunk)
        if (!m) continue
        const explained = JSON.parse(m[3])
        const entry = {app: m[1], durationMs: Number(m[2]), query: explained['Query Text'], plan: explained.Plan, jit: explained.JIT, nested: false}
        if (pending?.query === entry.query) entry.cpuMs = pending.cpuMs
        pending = undefined
        entries.push(entry)
      }
      return app === undefined ? entries : entries.filter((entry) => entry.app === app)
    },
  }
}

/** Every node of a plan, the root first. */
export function* planNodes(plan) {
  yield plan
  for (const child of plan.Plans ?? []) yield* planNodes(child)
}

/** Rows a node looked at, over all its loops: those it returned and those its filters dropped. */
export const rowsTouched = (node) =>
  ((node['Actual Rows'] ?? 0) + (node['Rows Removed by Filter'] ?? 0) + (node['Rows Removed by Join Filter'] ?? 0) + (node['Rows Removed by Index Recheck'] ?? 0)) * (node['Actual Loops'] ?? 1)
