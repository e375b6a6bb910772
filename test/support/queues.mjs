// Small queue helpers shared by the queue conformance files (all through the CLI).
import assert from 'node:assert/strict'

/** `queue status --queue Q --json` → {waiting, inFlight, dead} (zeros for a queue never used). */
export async function queueStats(dlq, queue) {
  const r = await dlq.run(['queue', 'status', '--queue', queue, '--json'])
  assert.equal(r.code, 0, `queue status: ${r.stderr}`)
  const all = JSON.parse(r.stdout).queues
  const mine = all.find((s) => s.queue === queue)
  return mine ?? {queue, waiting: 0, inFlight: 0, dead: 0}
}

/** Pushes MESSAGE arguments; asserts exit 0. */
export async function pushArgs(dlq, queue, messages) {
  const r = await dlq.run(['queue', 'push', '--queue', queue, '--', ...messages])
  assert.equal(r.code, 0, `queue push: ${r.stderr}`)
  return r
}

/** Pushes stdin (one message per line unless flags say otherwise); asserts exit 0. */
export async function pushInput(dlq, queue, input, flags = []) {
  const r = await dlq.run(['queue', 'push', '--queue', queue, ...flags], {input})
  assert.equal(r.code, 0, `queue push: ${r.stderr}`)
  return r
}

/** Pops everything waiting with --json; returns the parsed messages (until exit 75). */
export async function drainJson(dlq, queue) {
  const out = []
  for (;;) {
    const r = await dlq.run(['queue', 'pop', '--queue', queue, '--count', '1000', '--json'])
    if (r.code === 75) return out
    assert.equal(r.code, 0, `queue pop: ${r.stderr}`)
    out.push(...r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)))
  }
}
