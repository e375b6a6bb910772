// The backends the conformance suite runs against. Each entry is
//
//   {name, setup: async () => instance}
//
// and setup() resolves with an instance
//
//   {url, teardown: async () => void, escapes?: async () => string[]}
//
// - url: what `dlq -b URL` is given. setup() must hand back a backend that is ready to use: a driver
//   for a server (redis-server, ZooKeeper, PostgreSQL) starts it here on a free loopback port in a
//   temporary directory, waits until it answers, and stops it (and removes its directory) in
//   teardown(). The suites call setup() once per describe block and give every test its own
//   key and queue names, so one server serves a whole test file.
// - escapes (optional): lists what the backend left outside its own storage (the file backend:
//   every path in its sandbox that is not under the base directory). Hostile-name tests assert it
//   is empty where a backend can tell.
//
// Adding a backend is adding one entry to `allBackends` below.
import {mkdir, rm} from 'node:fs/promises'
import {join, sep} from 'node:path'

import {listRecursive, runOn, spawnOn, tempDir} from './cli.mjs'
import {pgbouncerBackend} from './pgbouncer.mjs'
import {postgresBackend, postgresMultiHostBackend} from './postgres.mjs'
import {zookeeperBackend} from './zookeeper.mjs'
import {redisBackend} from './servers.mjs'

export const fileBackend = {
  name: 'file',
  async setup() {
    // The base directory sits three levels down in a sandbox of its own, so that a name that
    // climbs out of it (`../../etc/passwd`) would land inside the sandbox, where escapes() sees it.
    const sandbox = await tempDir('dlq-file-backend-')
    const base = join(sandbox, 'l1', 'l2', 'base')
    await mkdir(base, {recursive: true})
    const allowed = new Set([join(sandbox, 'l1'), join(sandbox, 'l1', 'l2'), base])
    return {
      url: 'file://' + base,
      baseDir: base,
      async escapes() {
        return (await listRecursive(sandbox)).filter((p) => !allowed.has(p) && !p.startsWith(base + sep))
      },
      async teardown() {
        await rm(sandbox, {recursive: true, force: true})
      },
    }
  },
}

// Every backend with a driver. The servers' entries live beside their fixtures (servers.mjs,
// postgres.mjs): each starts its own server on a free loopback port per describe block.
export const allBackends = [fileBackend, redisBackend, zookeeperBackend, postgresBackend]

// PostgreSQL behind PgBouncer, in each pooling mode with its ?pooling=: the same server backend
// through another door, so only when asked for by name (DLQ_TEST_BACKENDS=pgbouncer-transaction).
// PostgreSQL through a multi-host URL, standby first (DLQ_TEST_BACKENDS=postgres-multihost).
export const optionalBackends = [pgbouncerBackend('transaction'), pgbouncerBackend('session'), postgresMultiHostBackend]

// DLQ_TEST_BACKENDS=file,redis runs the suite against those only (default: all of them).
const wanted = (process.env.DLQ_TEST_BACKENDS ?? '').split(',').map((n) => n.trim()).filter(Boolean)
const known = [...allBackends, ...optionalBackends]
for (const name of wanted) {
  if (!known.some((b) => b.name === name)) throw new Error(`DLQ_TEST_BACKENDS names ${name}; known: ${known.map((b) => b.name).join(', ')}`)
}
export const backends = wanted.length === 0 ? allBackends : known.filter((b) => wanted.includes(b.name))

/**
 * A dlq bound to one backend URL: `dlq.run(['lock', 'run', '--key', K, '--', 'true'])` runs
 * `dlq lock run -b URL --key K -- true`. The -b goes after the two command words, before any `--`.
 */
export function bind(url) {
  return {
    url,
    run: (args, opts) => runOn(url, args, opts),
    spawn: (args, opts) => spawnOn(url, args, opts),
  }
}

/**
 * Declares the usual per-backend hooks inside a describe(): set the backend up before its tests,
 * tear it down after. Returns a getter-based handle: `ctx.dlq`, `ctx.instance`.
 */
export function useBackend(backend, {before, after}) {
  const ctx = {instance: undefined, dlq: undefined}
  before(async () => {
    ctx.instance = await backend.setup()
    ctx.dlq = bind(ctx.instance.url)
  })
  after(async () => {
    await ctx.instance?.teardown()
  })
  return ctx
}
