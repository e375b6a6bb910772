// Redis failover section of `npm run bench` (issue 12's third target): how soon after Sentinel
// promotes the replica a waiting `dlq lock run --wait 60s` runs its command.
//
// Each run starts a group of its own (master, replica, three Sentinels with down-after 1 s, as the
// Sentinel tests do: test/support/servers.mjs), then: a holder `lock run --ttl 2s` whose command
// sleeps; a waiter `lock run --wait 60s` whose command writes the time it started; the master and the
// holder (its whole process group) killed together with SIGKILL. Measured from the first
// +switch-master any Sentinel publishes to the waiter's command starting. Sentinel's detection
// (down-after, the vote) comes before the switch and is reported apart; so is what was left of the
// dead holder's lease on the promoted replica, which the waiter must outwait whatever dlq does.
import {spawn, spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {createRequire} from 'node:module'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {waitFor} from '../test/support/cli.mjs'
import {startSentinels} from '../test/support/servers.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const FAILOVER_RUNS = 3
const HOLDER_TTL = '2s'

const redisCli = (port, ...args) => spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {encoding: 'utf8', timeout: 5000}).stdout ?? ''

/** Resolves with the time of the first +switch-master any of the Sentinels publishes. */
async function switchMaster(sentinelPorts) {
  const {Redis} = createRequire(join(ROOT, 'package.json'))('ioredis')
  const clients = sentinelPorts.map((port) => new Redis({host: '127.0.0.1', port, lazyConnect: true}))
  let resolveSwitch
  const switched = new Promise((resolve) => (resolveSwitch = resolve))
  for (const client of clients) {
    client.on('error', () => {})
    client.on('message', () => resolveSwitch(performance.timeOrigin + performance.now()))
    await client.connect()
    await client.subscribe('+switch-master')
  }
  return {switched, close: () => clients.forEach((client) => client.disconnect())}
}

async function failoverOnce(dlq, env) {
  const group = await startSentinels()
  const dir = mkdtempSync(join(tmpdir(), 'dlq-bench-failover-'))
  const children = []
  const watch = await switchMaster(group.sentinelPorts)
  try {
    const key = 'failover'
    const url = group.url()
    const holder = spawn(dlq, ['lock', 'run', '-b', url, '--key', key, '--ttl', HOLDER_TTL, '--', 'sh', '-c', 'touch "$1/held"; exec sleep 600', 'x', dir], {env, stdio: 'ignore', detached: true})
    children.push(holder)
    await waitFor(() => existsSync(join(dir, 'held')), {what: 'the holder to run', timeoutMs: 20_000})
    const waiter = spawn(dlq, ['lock', 'run', '-b', url, '--key', key, '--wait', '60s', '--', 'sh', '-c', 'date +%s%N > "$1/started"', 'x', dir], {env, stdio: ['ignore', 'ignore', 'pipe']})
    children.push(waiter)
    let waiterErr = ''
    waiter.stderr.on('data', (d) => (waiterErr += d))
    const waiterExit = new Promise((resolve) => waiter.once('exit', (code) => resolve(code)))
    await waitFor(() => redisCli(group.master.port, 'ZCARD', `{dlq:l:${key}}:waiters`).trim() === '1', {what: 'the waiter to wait', timeoutMs: 20_000})
    // The lease as the replica has it (dlq WAITs for the replica on every acquisition and renewal).
    const leaseEnd = () => Number(redisCli(group.replica.port, 'ZRANGE', `{dlq:l:${key}}:holders`, '0', '0', 'WITHSCORES').split('\n')[1] ?? Number.NaN)
    const killedAt = performance.timeOrigin + performance.now()
    process.kill(-holder.pid, 'SIGKILL')
    process.kill(group.master.pid(), 'SIGKILL')
    const leaseEndsAt = leaseEnd()
    const switchedAt = await Promise.race([watch.switched, new Promise((resolve) => setTimeout(() => resolve(Number.NaN), 60_000))])
    const code = await Promise.race([waiterExit, new Promise((resolve) => setTimeout(() => resolve('timeout'), 70_000))])
    if (code !== 0) throw new Error(`the waiter: exit ${code}: ${waiterErr.trim().split('\n').slice(-2).join(' | ')}`)
    const startedAt = Number(BigInt(readFileSync(join(dir, 'started'), 'utf8').trim()) / 1000n) / 1000
    return {detectMs: switchedAt - killedAt, lockMs: startedAt - switchedAt, leaseLeftMs: Math.max(0, leaseEndsAt - switchedAt), afterLeaseMs: startedAt - Math.max(switchedAt, leaseEndsAt)}
  } finally {
    watch.close()
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await group.stop()
    rmSync(dir, {recursive: true, force: true})
  }
}

export async function benchRedisFailover({dlq, benchEnv, fmt, median}) {
  const runs = []
  for (let i = 0; i < FAILOVER_RUNS; i++) runs.push(await failoverOnce(dlq, benchEnv))
  const column = (field) => runs.map((r) => r[field])
  const cell = (field) => `${fmt(median(column(field)), 0)} (${column(field).map((v) => fmt(v, 0)).join(', ')})`
  const worst = Math.max(...column('lockMs'))
  return {
    title: `(d2) Redis behind Sentinel — a waiting lock run through a failover (${FAILOVER_RUNS} runs, each a new master + replica + 3 Sentinels)`,
    table: {
      header: ['measure', 'median ms (each run)'],
      rows: [
        ['master and holder SIGKILLed → first +switch-master (Sentinel: down-after 1 s, vote)', cell('detectMs')],
        ['+switch-master → the waiter\'s command runs', cell('lockMs')],
        ['  of which the dead holder\'s lease still had to run on the new master', cell('leaseLeftMs')],
        ['  after both the switch and the lease\'s end', cell('afterLeaseMs')],
      ],
    },
    verdicts: [{ok: worst <= 5000, target: 'a waiting lock run --wait 60s gets the lock within 5 s of Sentinel promoting the replica (every run)', measured: `${fmt(worst, 0)} ms at worst`}],
    notes: [`the holder's --ttl ${HOLDER_TTL}: its lease, confirmed on the replica by WAIT, outlives the master by up to that; the waiter cannot have the lock before it ends.`],
  }
}
