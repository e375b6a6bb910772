// ZooKeeper high availability (issue 13), on a three-server ensemble this file starts: a holder
// rides through a freeze of its own server (found with the `cons` four-letter word) and through
// the leader's death; with the quorum lost its command is stopped before its session could
// expire, and a waiter that died meanwhile blocks the key no longer than its session timeout once
// the quorum is back. And `?tls` is refused, since node-zookeeper-client cannot speak it.
// Each fault is a real one (SIGSTOP, SIGKILL of a JVM); waits are conditions with deadlines.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {isAlive, killPid, oneErrorLine, run, shUntil, spawnDlq, stillFalse, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'
import {fourLetters, serverOfClient, startZooKeeper} from '../support/zookeeper.mjs'

const cli = (url, args, opts) => run([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const spawnCli = (url, args, opts) => spawnDlq([...args.slice(0, 2), '-b', url, ...args.slice(2)], opts)
const statusOf = async (url, key) => {
  const r = await cli(url, ['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks[0]
}
const readText = async (path) => (await readFile(path, 'utf8').catch(() => '')).trim()
/** A command for `lock run` that writes its pid and fencing token to DIR/NAME.pid|.token, then runs until DIR/NAME.go exists. */
const holding = (dir, name, seconds = 60) => ['sh', '-c', `echo $$ > "$1/${name}.pid"; echo "$DLQ_FENCING_TOKEN" > "$1/${name}.token"; ${shUntil(`[ -e "$1/${name}.go" ]`, seconds)}`, 'zk-test', dir]
const pidOf = async (dir, name) => {
  const text = await readText(join(dir, `${name}.pid`))
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}
const tokenOf = async (dir, name) => BigInt(await readText(join(dir, `${name}.token`)))
/** The `zk: …` lines of a --verbose dlq that tell of its connection (for the figures in the test's diagnostics). */
const connectionLines = (stderr) => stderr.split('\n').filter((l) => /zk: (session to|disconnected|reconnected|no answer|no handshake)|lost/.test(l))

describe('zookeeper HA: a three-server ensemble', () => {
  let ensemble
  before(async () => {
    ensemble = await startZooKeeper({servers: 3})
  })
  after(() => ensemble?.stop())

  // 4 s, the issue's target: whichever server the holder is on, leader or follower. 7 s, a
  // follower as in the issue's report: past the read timeout (1/4 of the 10 s session), so the
  // holder must move to another server and renew there (what failed before: exit 70, session
  // alive). Not the leader for 7 s: a frozen leader stops every write of the ensemble until the
  // followers give up on it (syncLimit × tickTime, 5 s here) and elect another, so a renewal can
  // only go through 5 s and an election into the freeze, too close to a 10 s lease's end for a
  // test on a loaded machine (it did ride through here, with well under a second to spare).
  for (const {freezeMs, followersOnly} of [{freezeMs: 4000, followersOnly: false}, {freezeMs: 7000, followersOnly: true}]) {
    it(`a ${freezeMs / 1000} s freeze (SIGSTOP) of the holder's own server${followersOnly ? ' (a follower)' : ''} costs a --ttl 10s holder nothing: the command runs on, renewals go on`, async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('frozen')
      const url = ensemble.url
      let holderUrl = url
      if (followersOnly) {
        const modes = await Promise.all(ensemble.ports.map(async (port) => /^Mode: (\w+)$/m.exec(await fourLetters(port, 'srvr'))?.[1]))
        const followers = ensemble.ports.filter((_port, i) => modes[i] === 'follower')
        assert.equal(followers.length, 2, `modes: ${modes}`)
        holderUrl = `zk://${followers.map((port) => `127.0.0.1%3A${port}`).join(',')}/dlq`
      }
      const holder = spawnCli(holderUrl, ['lock', 'run', '--verbose', '--key', key, '--ttl', '10s', '--kill-grace', '1s', '--', ...holding(dir, 'h')], {timeoutMs: 90_000, t})
      const pid = await waitFor(() => pidOf(dir, 'h'), {what: 'the command to start', timeoutMs: 20_000})
      // The server that has the holder's session: `cons` lists its connection by client port.
      const frozen = await waitFor(async () => {
        const index = await serverOfClient(holder.pid, ensemble.ports)
        return index === undefined ? undefined : {index}
      }, {what: "the holder's server in cons", timeoutMs: 10_000, intervalMs: 100}).then((found) => found.index)
      const mode = /^Mode: (\w+)$/m.exec(await fourLetters(ensemble.ports[frozen], 'srvr'))?.[1]
      t.diagnostic(`the holder is connected to server ${frozen + 1} (${mode})`)

      ensemble.pause(frozen)
      const pausedAt = Date.now()
      try {
        await stillFalse(() => holder.exited || !isAlive(pid), {forMs: freezeMs, intervalMs: 50, what: 'the holder (or its command) ending during the freeze'})
      } finally {
        ensemble.resume(frozen)
      }
      // A renewal written after the freeze began: its lease ends 10 s after that, on the server's clock.
      await waitFor(async () => Date.parse((await statusOf(url, key))?.holders[0]?.expiresAt ?? 0) > pausedAt + 10_000, {what: 'a renewal after the freeze', timeoutMs: 20_000, intervalMs: 200})
      assert.ok(isAlive(pid) && !holder.exited, `the command must still run: ${holder.stderrText()}`)
      const busy = await cli(url, ['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(busy.code, 75, `the lock is still held: ${busy.stderr}`)
      await writeFile(join(dir, 'h.go'), '')
      const r = await holder.result
      assert.equal(r.code, 0, `the holder finishes normally, no lock lost: ${r.stderr}`)
      assert.doesNotMatch(r.stderr, /lost/)
      if (freezeMs > 2500 + 1000 + 1000) {
        // Past a probe (1/10 of the session in), its read timeout (1/4) and the watchdog's tick: moved on.
        assert.match(r.stderr, /zk: reconnected after \d+ms disconnected \(session kept\)/, 'the holder failed over to another server')
      }
      for (const line of connectionLines(r.stderr)) t.diagnostic(line)
    })
  }

  it('the leader killed while a lock is held and a waiter waits: the holder keeps it, the waiter gets it after the release, tokens strictly increase', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('leader')
    const url = ensemble.url
    const holder = spawnCli(url, ['lock', 'run', '--verbose', '--key', key, '--ttl', '10s', '--', ...holding(dir, 'h')], {timeoutMs: 90_000, t})
    await waitFor(() => pidOf(dir, 'h'), {what: 'the holder to start', timeoutMs: 20_000})
    const waiter = spawnCli(url, ['lock', 'run', '--verbose', '--key', key, '--ttl', '10s', '--wait', '2m', '--', ...holding(dir, 'w', 0)], {timeoutMs: 90_000, t})
    await waitFor(async () => (await statusOf(url, key))?.waiters === 1, {what: 'the waiter to queue up', timeoutMs: 20_000})

    const modes = await Promise.all(ensemble.ports.map(async (port) => /^Mode: (\w+)$/m.exec(await fourLetters(port, 'srvr'))?.[1]))
    const leader = modes.indexOf('leader')
    assert.notEqual(leader, -1, `no leader among ${modes}`)
    await ensemble.kill(leader)
    const killedAt = Date.now()
    try {
      // The two left elect a leader; the holder's renewals go on through one of them.
      await waitFor(async () => Date.parse((await statusOf(url, key))?.holders[0]?.expiresAt ?? 0) > killedAt + 10_000, {what: 'a renewal after the leader died', timeoutMs: 30_000, intervalMs: 200})
      assert.equal(existsSync(join(dir, 'w.pid')), false, 'the waiter got in while the holder held')
      assert.ok(!holder.exited && !waiter.exited, `both still run: ${holder.stderrText()}\n${waiter.stderrText()}`)
      await writeFile(join(dir, 'h.go'), '')
      const h = await holder.result
      assert.equal(h.code, 0, `the holder finishes normally: ${h.stderr}`)
      const w = await waiter.result
      assert.equal(w.code, 0, `the waiter gets the lock after the release: ${w.stderr}`)
      const next = await cli(url, ['lock', 'run', '--key', key, '--wait', '10s', '--', 'sh', '-c', 'echo "$DLQ_FENCING_TOKEN"'])
      assert.equal(next.code, 0, next.stderr)
      const [first, second, third] = [await tokenOf(dir, 'h'), await tokenOf(dir, 'w'), BigInt(next.stdout.trim())]
      assert.ok(first < second && second < third, `tokens must strictly increase: ${first}, ${second}, ${third}`)
      for (const line of connectionLines(h.stderr)) t.diagnostic(`holder: ${line}`)
    } finally {
      await ensemble.start(leader)
    }
  })

  it('quorum lost (2 of 3 stopped) and back: the holder stops its command before its session could expire (exit 70); a waiter SIGKILLed meanwhile blocks the key no longer than its session timeout', async (t) => {
    const dir = await tempDir(t)
    const key = uniqueName('quorum')
    const url = ensemble.url
    const holder = spawnCli(url, ['lock', 'run', '--verbose', '--key', key, '--ttl', '10s', '--kill-grace', '1s', '--', ...holding(dir, 'h')], {timeoutMs: 120_000, t})
    const command = await waitFor(() => pidOf(dir, 'h'), {what: 'the holder to start', timeoutMs: 20_000})
    // The waiter has the default --ttl (30s): its session is 10 s all the same (the issue's 30 s).
    const waiter = spawnCli(url, ['lock', 'run', '--verbose', '--key', key, '--wait', '5m', '--', 'true'], {timeoutMs: 120_000, t})
    await waitFor(async () => (await statusOf(url, key))?.waiters === 1, {what: 'the waiter to queue up', timeoutMs: 20_000})
    const sessionTimeout = Number(/zk: session to .* timeout (\d+)ms/.exec(waiter.stderrText())?.[1])
    assert.equal(sessionTimeout, 10_000, `the waiter's session: ${waiter.stderrText()}`)

    const stopped = [0, 1]
    for (const i of stopped) await ensemble.kill(i)
    const lostQuorumAt = Date.now()
    try {
      killPid(waiter.pid) // and its process group: dlq and anything it started
      await waiter.result
      // dlq gives up 3/4 into the session timeout after the last answer it had, a probe 1/5 in at the latest.
      await waitFor(() => !isAlive(command), {what: "the holder's command to be stopped", timeoutMs: 20_000, intervalMs: 20})
      const stoppedAfter = Date.now() - lostQuorumAt
      const h = await holder.result
      assert.equal(h.code, 70, h.stderr)
      assert.match(h.stderr, /^dlq: lock .* lost: .*(session|lease)/m)
      assert.ok(stoppedAfter < 10_000, `the command was stopped ${stoppedAfter}ms after the quorum was lost; the session timeout is 10s`)
      t.diagnostic(`the holder's command was stopped ${stoppedAfter}ms after the quorum was lost`)
      for (const line of connectionLines(h.stderr)) t.diagnostic(`holder: ${line}`)
    } finally {
      // The quorum is back as soon as one stopped server serves again (it has joined a leader).
      await ensemble.start(stopped[0])
    }
    const backAt = Date.now()
    try {
      // Every session restarts its timeout under the new leader: the dead waiter's node (and the
      // dead holder's, unless its lease is seen expired first) goes within 10 s.
      const next = await cli(url, ['lock', 'run', '--key', key, '--wait', '60s', '--', 'sh', '-c', 'echo "$DLQ_FENCING_TOKEN"'], {timeoutMs: 90_000})
      const freeAfter = Date.now() - backAt
      assert.equal(next.code, 0, next.stderr)
      t.diagnostic(`the key was taken ${freeAfter}ms after the quorum was back (session timeout ${sessionTimeout}ms)`)
      // Its own start-up and the expiry's rounding to the server's tick are the slack.
      assert.ok(freeAfter < sessionTimeout + 3000, `the dead waiter blocked the key ${freeAfter}ms after the quorum was back`)
      assert.ok(BigInt(next.stdout.trim()) > (await tokenOf(dir, 'h')), 'the token after the outage is larger')
    } finally {
      await ensemble.start(stopped[1])
    }
  })

  it('?sessionTimeout= sizes the session whatever --ttl is, and --ttl above 10 s gives a 10 s session', async () => {
    const probe = async (url, ttl) => {
      const r = await cli(url, ['lock', 'run', '--verbose', '--key', uniqueName('timeout'), '--ttl', ttl, '--', 'true'])
      assert.equal(r.code, 0, r.stderr)
      return Number(/zk: session to .* timeout (\d+)ms/.exec(r.stderr)?.[1])
    }
    assert.equal(await probe(ensemble.url, '1m'), 10_000)
    assert.equal(await probe(ensemble.url, '3s'), 3000)
    assert.equal(await probe(`${ensemble.url}?sessionTimeout=20s`, '5s'), 20_000)
  })
})

describe('zookeeper: TLS', () => {
  it('?tls= is exit 64 with one line that says dlq cannot speak TLS to ZooKeeper and where the tunnel recipe is, not a plaintext connection', async () => {
    for (const parameter of ['tls=1', 'ssl=true', 'secure=1']) {
      const r = await run(['lock', 'status', '-b', `zk://127.0.0.1:1/dlq?${parameter}`])
      assert.equal(r.code, 64, r.stderr)
      const line = oneErrorLine(r, assert)
      assert.match(line, /TLS/)
      assert.match(line, /node-zookeeper-client/)
      assert.match(line, /README/)
    }
  })
})
