// Shared-lock section of `npm run bench` (issue 14): what a shared (--shared) acquisition costs
// against an exclusive one, on each backend. Acquire+release pairs in one process through dlq's
// driver, on an idle key each (uncontended: the cost of the recipe itself, not of waiting),
// exclusive and shared in interleaved slices in a rotating order so that a burst of load on the
// machine hits both alike; each round is a slice of each several times, its figure the mean pair
// time, and the report takes the median over the rounds. Target: shared ≤ 1.2 × exclusive.
// The servers are the test fixtures' (test/support), started on free loopback ports.
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'

import {allBackends} from '../test/support/backends.mjs'

const ROUNDS = 7
const SLICES_PER_ROUND = 4
const PAIRS_PER_SLICE = 25
const TARGET = 1.2

async function pairs(root, url) {
  const {openBackend} = await import(pathToFileURL(join(root, 'dist/backends/index.js')).href)
  const backend = await openBackend(url)
  const signal = new AbortController().signal
  const holder = {host: 'bench', pid: process.pid, user: 'bench', command: 'bench'}
  let n = 0
  const pair = (shared) => async () => {
    const key = shared ? 'bench-shared' : 'bench-exclusive'
    const lease = await backend.locks.acquire({key, owner: `o${n++}`, ttlMs: 30000, limit: 1, shared, waitMs: 0, signal, holder})
    if (!lease) throw new Error(`${shared ? 'shared' : 'exclusive'}: not acquired`)
    await backend.locks.release(key, lease.owner)
  }
  const candidates = {exclusive: pair(false), shared: pair(true)}
  try {
    for (const run of Object.values(candidates)) for (let i = 0; i < 20; i++) await run() // warm up: connections, scripts, key nodes
    const rounds = {exclusive: [], shared: []}
    for (let round = 0; round < ROUNDS; round++) {
      const spent = {exclusive: 0, shared: 0}
      for (let slice = 0; slice < SLICES_PER_ROUND; slice++) {
        const order = (round + slice) % 2 === 0 ? ['exclusive', 'shared'] : ['shared', 'exclusive']
        for (const name of order) {
          const start = performance.now()
          for (let i = 0; i < PAIRS_PER_SLICE; i++) await candidates[name]()
          spent[name] += performance.now() - start
        }
      }
      for (const name of Object.keys(rounds)) rounds[name].push(spent[name] / (SLICES_PER_ROUND * PAIRS_PER_SLICE))
    }
    return rounds
  } finally {
    await backend.close()
  }
}

export async function benchShared({root, fmt, median}) {
  const rows = []
  const verdicts = []
  for (const backend of allBackends) {
    const instance = await backend.setup()
    try {
      const rounds = await pairs(root, instance.url)
      const ratios = rounds.shared.map((ms, i) => ms / rounds.exclusive[i])
      const ratio = median(ratios)
      rows.push([backend.name, fmt(median(rounds.exclusive), 3), fmt(median(rounds.shared), 3), `${fmt(ratio, 2)} (${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)})`])
      verdicts.push({target: `${backend.name}: a shared pair costs ≤ ${TARGET} × an exclusive one`, ok: ratio <= TARGET, measured: `${fmt(ratio, 2)}×`})
    } finally {
      await instance.teardown()
    }
  }
  return {
    title: `Shared vs exclusive lock pairs (acquire + release, uncontended, in-process driver; median of ${ROUNDS} rounds of ${SLICES_PER_ROUND * PAIRS_PER_SLICE} pairs each)`,
    table: {header: ['backend', 'exclusive ms/pair', 'shared ms/pair', 'shared/exclusive (min-max)'], rows},
    verdicts,
  }
}
