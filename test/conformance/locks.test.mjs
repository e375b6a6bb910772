// Conformance: `dlq lock run` (SPEC §2, §4) against every backend in test/support/backends.mjs.
// Every test uses its own key, so the tests of one backend share one instance and run concurrently.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {backends, useBackend} from '../support/backends.mjs'
import {isAlive, killPid, oneErrorLine, run, shForAWhile, shUntil, stillFalse, tempDir, trackPid, uniqueName, waitFor} from '../support/cli.mjs'

// `sh -c SCRIPT NAME ARGS…`: NAME ($0) is unique in the command line, because dlq must pass
// arguments through verbatim (see the "verbatim" test) and this suite tests one thing at a time.
const SH0 = 'dlq-test-sh'
const readText = (path) => readFile(path, 'utf8').catch(() => '')
const readPid = async (path) => {
  const text = (await readText(path)).trim()
  return /^\d+$/.test(text) ? trackPid(text) : undefined
}
const statusOf = async (dlq, key) => {
  const r = await dlq.run(['lock', 'status', '--key', key, '--json'])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout).locks
}
/** With --verbose, dlq logs its backend and then every round trip: a 2nd line means acquire began. */
const waitUntilWaiting = (child, what) =>
  waitFor(() => !child.exited && child.stderrText().split('\n').filter((l) => l.startsWith('dlq: ')).length >= 2, {what})

for (const backend of backends) {
  describe(`lock run [${backend.name}]`, {concurrency: 4}, () => {
    const ctx = useBackend(backend, {before, after})

    it('racing lock run processes never overlap: a read-sleep-write counter ends exact', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('race')
      await writeFile(join(dir, 'counter'), '0\n')
      // mkdir is atomic: a second holder inside at the same time is recorded in "overlaps".
      const script = 'mkdir "$1/inside" 2>/dev/null || echo overlap >> "$1/overlaps"; n=$(cat "$1/counter"); sleep 0.02; echo $((n + 1)) > "$1/counter"; rmdir "$1/inside" 2>/dev/null; true'
      const workers = 8
      const rounds = 4
      const results = await Promise.all(Array.from({length: workers}, async () => {
        const codes = []
        for (let i = 0; i < rounds; i++) {
          const r = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '60s', '--', 'sh', '-c', script, SH0, dir], {timeoutMs: 60_000})
          codes.push(r.code === 0 ? 0 : `${r.code}: ${r.stderr}`)
        }
        return codes
      }))
      assert.deepEqual(results.flat(), Array(workers * rounds).fill(0))
      assert.equal(existsSync(join(dir, 'overlaps')), false, 'two holders were inside at once')
      assert.equal((await readText(join(dir, 'counter'))).trim(), String(workers * rounds))
    })

    it("exits with the command's exit code, and the command's stdout flows untouched", async () => {
      const r = await ctx.dlq.run(['lock', 'run', '--key', uniqueName('code'), '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'])
      assert.equal(r.code, 3)
      assert.equal(r.stdout, 'out\n')
      assert.ok(r.stderrLines.includes('err'), r.stderr)
    })

    it("passes the command's arguments verbatim: repeated words, a second --, words that look like dlq flags", async () => {
      const key = uniqueName('argv')
      const cases = [
        ['a', 'b', 'a'],
        ['sh', '-c', 'x', 'sh'],
        ['a', '--', 'b'],
        ['--key', 'zz', '--wait', '0'],
        ['-0', '--json', '-q'],
      ]
      const got = []
      for (const words of cases) {
        const r = await ctx.dlq.run(['lock', 'run', '--key', key, '--', 'printf', '[%s]', ...words])
        got.push(`${r.code} ${r.stdout}`)
      }
      assert.deepEqual(got, cases.map((words) => `0 ${words.map((w) => `[${w}]`).join('')}`))
    })

    it('a command that cannot start gives 127 (not found) or 126 (not executable), one line, and leaves the lock free', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('nostart')
      const missing = await ctx.dlq.run(['lock', 'run', '--key', key, '--', join(dir, 'no-such-command')])
      assert.equal(missing.code, 127, missing.stderr)
      assert.match(oneErrorLine(missing, assert), /not found/)
      await writeFile(join(dir, 'plain'), 'echo hi\n', {mode: 0o644})
      const plain = await ctx.dlq.run(['lock', 'run', '--key', key, '--', join(dir, 'plain')])
      assert.equal(plain.code, 126, plain.stderr)
      assert.match(oneErrorLine(plain, assert), /permission denied/)
      assert.deepEqual(await statusOf(ctx.dlq, key), [])
    })

    it('a command killed by signal 9 gives exit 137', async () => {
      const r = await ctx.dlq.run(['lock', 'run', '--key', uniqueName('sig'), '--', 'sh', '-c', 'kill -9 $$'])
      assert.equal(r.signal, null, 'dlq itself must exit, not die')
      assert.equal(r.code, 137)
    })

    it('--wait 0 on a held key exits 75 (or --conflict-exit-code) with one stderr line, without running the command', async () => {
      const key = uniqueName('held')
      const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      const token = held.stdout.trim()

      const busy = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'echo', 'ran'])
      assert.equal(busy.code, 75)
      assert.equal(busy.stdout, '', 'the command must not have run')
      oneErrorLine(busy, assert)

      const custom = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--conflict-exit-code', '9', '--', 'echo', 'ran'])
      assert.equal(custom.code, 9)
      assert.equal(custom.stdout, '')
      oneErrorLine(custom, assert)

      // flock's spellings: -n is --wait 0, -E N is --conflict-exit-code N (lock acquire too).
      const flock = await ctx.dlq.run(['lock', 'run', '--key', key, '-n', '-E', '9', '--', 'echo', 'ran'])
      assert.equal(flock.code, 9, flock.stderr)
      assert.equal(flock.stdout, '')
      oneErrorLine(flock, assert)
      const acquireN = await ctx.dlq.run(['lock', 'acquire', '--key', key, '-n', '-E', '8'])
      assert.equal(acquireN.code, 8, acquireN.stderr)
      const disagree = await ctx.dlq.run(['lock', 'run', '--key', key, '-n', '--wait', '5s', '--', 'echo', 'ran'])
      assert.equal(disagree.code, 64, disagree.stderr)
      assert.match(disagree.stderr, /-n and --wait disagree/)
      oneErrorLine(disagree, assert)

      const short = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '300ms', '--', 'echo', 'ran'])
      assert.equal(short.code, 75)
      assert.ok(short.ms >= 300, `gave up after ${short.ms}ms, before --wait 300ms`)

      const released = await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])
      assert.equal(released.code, 0, released.stderr)
      const free = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'echo', 'ran'])
      assert.equal(free.code, 0, free.stderr)
      assert.equal(free.stdout, 'ran\n')
    })

    it('--limit 3 lets exactly 3 holders in at once; a 4th with --wait 0 gets 75', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('sem')
      // Each holder marks itself inside, records how many are inside, and stays until "go" exists.
      const script = [
        'touch "$1/in.$$"',
        'ls "$1" | grep -c "^in\\." >> "$1/counts"',
        shUntil('[ -e "$1/go" ]'),
        'sleep 0.1',
        'rm "$1/in.$$"',
      ].join('; ')
      const holders = Array.from({length: 6}, () =>
        ctx.dlq.spawn(['lock', 'run', '--key', key, '--limit', '3', '--ttl', '5s', '--wait', '30s', '--', 'sh', '-c', script, SH0, dir], {timeoutMs: 40_000, t}))
      const inside = () => readdir(dir).then((names) => names.filter((n) => n.startsWith('in.')).length)
      await waitFor(async () => (await inside()) >= 3, {what: '3 holders inside', timeoutMs: 10_000})

      const fourth = await ctx.dlq.run(['lock', 'run', '--key', key, '--limit', '3', '--wait', '0', '--', 'echo', 'ran'])
      assert.equal(fourth.code, 75, fourth.stderr)
      assert.equal(fourth.stdout, '')
      const [state] = await statusOf(ctx.dlq, key)
      assert.equal(state?.holders?.length, 3, JSON.stringify(state))
      assert.equal(await inside(), 3)

      await writeFile(join(dir, 'go'), '')
      const results = await Promise.all(holders.map((h) => h.result))
      assert.deepEqual(results.map((r) => r.code), Array(6).fill(0), results.map((r) => r.stderr).join(''))
      const counts = (await readText(join(dir, 'counts'))).trim().split('\n').map(Number)
      assert.equal(counts.length, 6)
      assert.equal(Math.max(...counts), 3, `holders inside at once: ${counts}`)
    })

    it('sets DLQ_LOCK_KEY, DLQ_LOCK_OWNER and a DLQ_FENCING_TOKEN that strictly increases with every acquisition', async () => {
      const key = uniqueName('fence')
      const show = ['sh', '-c', 'printf "%s|%s|%s\\n" "$DLQ_LOCK_KEY" "$DLQ_LOCK_OWNER" "$DLQ_FENCING_TOKEN"']
      const seen = []
      const record = (r) => {
        assert.equal(r.code, 0, r.stderr)
        const [k, owner, token] = r.stdout.trim().split('|')
        assert.equal(k, key)
        assert.match(owner, /\S/, 'DLQ_LOCK_OWNER is set')
        assert.match(token, /^\d+$/, `DLQ_FENCING_TOKEN is an integer: ${token}`)
        seen.push({owner, token: BigInt(token)})
      }
      record(await ctx.dlq.run(['lock', 'run', '--key', key, '--', ...show]))
      record(await ctx.dlq.run(['lock', 'run', '--key', key, '--', ...show]))
      // The backend may also come from DLQ_BACKEND instead of -b.
      record(await run(['lock', 'run', '--key', key, '--', ...show], {env: {DLQ_BACKEND: ctx.dlq.url}}))
      // An acquisition by `lock acquire`, broken by --force, still advances the counter.
      const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s', '--json'])
      assert.equal(acquired.code, 0, acquired.stderr)
      const middle = BigInt(JSON.parse(acquired.stdout).fencingToken)
      assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--force'])).code, 0)
      record(await ctx.dlq.run(['lock', 'run', '--key', key, '--', ...show]))

      const tokens = [...seen.slice(0, 3).map((s) => s.token), middle, seen[3].token]
      for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `fencing tokens must strictly increase: ${tokens.join(', ')}`)
      assert.equal(new Set(seen.map((s) => s.owner)).size, seen.length, 'every holding has its own owner id')
    })

    it('renews the lease while the command runs longer than --ttl', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('renew')
      // --ttl 3s: renewals every second, so a loaded machine's slow round trip is not a lost lease.
      const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '3s', '--', 'sh', '-c', `echo > "$1/ready"; ${shUntil('[ -e "$1/go" ]')}`, SH0, dir], {t})
      await waitFor(() => existsSync(join(dir, 'ready')), {what: 'the command to start'})
      // A waiter that would take the lock the moment the lease lapsed waits 2.5 TTLs in vain.
      const waiter = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '7500ms', '--', 'echo', 'got it'])
      assert.equal(waiter.code, 75, `the lock was free while its holder ran: ${waiter.stdout}${waiter.stderr}`)
      assert.ok(waiter.ms >= 7500)
      const [state] = await statusOf(ctx.dlq, key)
      if (!state) {
        const lost = await holder.result
        assert.fail(`the holder lost its lease: exit ${lost.code}: ${lost.stderr}`)
      }
      // status lists live leases only; renewed, the lease ends more than a TTL after it was taken.
      const [{acquiredAt, expiresAt}] = state.holders
      assert.ok(Date.parse(expiresAt) > Date.parse(acquiredAt) + 3000, `renewed: acquired ${acquiredAt}, expires ${expiresAt}`)
      await writeFile(join(dir, 'go'), '')
      const r = await holder.result
      assert.equal(r.code, 0, r.stderr)
    })

    it('kill -9 of dlq (not of the command) frees the lock within its TTL', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('crash')
      const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '1s', '--', 'sh', '-c', 'exec >/dev/null 2>&1 </dev/null; echo $$ > "$1/pid"; exec sleep 20', SH0, dir], {t})
      const orphan = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start'})
      t.after(() => killPid(orphan))
      const waiter = ctx.dlq.spawn(['lock', 'run', '--key', key, '--wait', '10s', '--verbose', '--', 'sh', '-c', 'echo > "$1/acquired"', SH0, dir], {t})
      await waitUntilWaiting(waiter, 'the second lock run to start waiting')
      assert.equal(existsSync(join(dir, 'acquired')), false, 'the lock was taken while its holder lived')
      assert.ok(holder.kill('SIGKILL'))
      const killedAt = Date.now()
      await waitFor(() => existsSync(join(dir, 'acquired')), {what: 'the waiter to acquire', timeoutMs: 6000})
      const took = Date.now() - killedAt
      assert.ok(took <= 2000, `acquired ${took}ms after the kill; the TTL is 1s`)
      const r = await waiter.result
      assert.equal(r.code, 0, r.stderr)
      killPid(orphan)
    })

    it('SIGSTOP of dlq past its TTL: the watchdog stops the command at the lease end while dlq stays stopped; dlq exits 70 once continued', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('frozen')
      const holder = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '1s', '--kill-grace', '1s', '--', 'sh', '-c', 'echo $$ > "$1/pid"; exec sleep 30', SH0, dir], {t})
      const pid = await waitFor(() => readPid(join(dir, 'pid')), {what: 'the command to start'})
      t.after(() => killPid(pid))
      t.after(() => void holder.kill('SIGCONT'))
      assert.ok(holder.kill('SIGSTOP'))
      // The next holder's command checks that the frozen holder's command is gone (a zombie, since
      // its stopped parent cannot reap it, counts as gone): the lease's end, not a time, is the bound.
      const gone = 'state=$(cut -d" " -f3 "/proc/$1/stat" 2>/dev/null); [ -z "$state" ] || [ "$state" = Z ] || { echo "pid $1 runs ($state)"; exit 9; }'
      const waiter = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '10s', '--', 'sh', '-c', gone, SH0, String(pid)])
      assert.equal(waiter.code, 0, `the old command ran beside the next holder's: ${waiter.stdout}${waiter.stderr}`)
      await waitFor(() => !isAlive(pid), {what: "the frozen dlq's command to be stopped", timeoutMs: 5000})
      assert.ok(holder.kill('SIGCONT'))
      const r = await holder.result
      assert.equal(r.code, 70, r.stderr)
      assert.ok(r.stderrLines.some((l) => /^dlq: .*\blost\b/i.test(l)), r.stderr)
      assert.deepEqual(await statusOf(ctx.dlq, key), [])
    })

    it('SIGTERM to dlq is forwarded to the command; dlq exits with its code and the lock is free afterwards', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('term')
      const script = `trap 'echo term > "$1/trapped"; exit 9' TERM; echo $$ > "$1/ready"; ${shForAWhile()}`
      const child = ctx.dlq.spawn(['lock', 'run', '--key', key, '--', 'sh', '-c', script, SH0, dir], {t})
      const pid = await waitFor(() => readPid(join(dir, 'ready')), {what: 'the command to start'})
      t.after(() => killPid(pid))
      // The command runs, and dlq with it, holding the lock (the next test covers a signal that
      // arrives at the very moment the command starts).
      await stillFalse(() => child.exited, {forMs: 200, what: 'dlq exiting while its command runs'})
      assert.equal((await statusOf(ctx.dlq, key))[0]?.holders.length, 1)
      child.kill('SIGTERM')
      const r = await child.result
      assert.equal(r.signal, null, `dlq died of ${r.signal} instead of forwarding it`)
      assert.equal(r.code, 9, r.stderr)
      assert.equal((await readText(join(dir, 'trapped'))).trim(), 'term')
      assert.deepEqual(await statusOf(ctx.dlq, key), [])
      const again = await ctx.dlq.run(['lock', 'run', '--key', key, '--wait', '0', '--', 'true'])
      assert.equal(again.code, 0, again.stderr)
    })

    it('SIGTERM that arrives the moment the command has started is forwarded too (10 tries)', async (t) => {
      // The command itself signals dlq ($PPID) as its first act: the earliest moment a signal can
      // come once the command runs. dlq must forward it (exit 9 from the trap), never die of it.
      const keys = Array.from({length: 10}, () => uniqueName('term-early'))
      const outcomes = await Promise.all(keys.map(async (key) => {
        const dir = await tempDir(t)
        const script = `trap 'exit 9' TERM; echo $$ > "$1/pid"; kill -TERM $PPID; ${shForAWhile(10)}`
        const r = await ctx.dlq.run(['lock', 'run', '--key', key, '--', 'sh', '-c', script, SH0, dir])
        const pid = await readPid(join(dir, 'pid'))
        const orphaned = pid !== undefined && isAlive(pid)
        if (pid !== undefined) killPid(pid)
        if (r.signal) return `dlq died of ${r.signal}${orphaned ? ', its command left running' : ''}`
        return r.code === 9 ? 'ok' : `exit ${r.code}: ${r.stderr}`
      }))
      const all = await ctx.dlq.run(['lock', 'status', '--json'])
      const held = new Set(JSON.parse(all.stdout).locks.map((l) => l.key))
      assert.deepEqual(outcomes.map((o, i) => (held.has(keys[i]) ? `${o}, lock left held` : o)), Array(10).fill('ok'))
    })

    it('SIGINT while waiting for a held lock cancels the wait at once (130) and leaves nothing held', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('cancel')
      const held = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '30s'])
      assert.equal(held.code, 0, held.stderr)
      const token = held.stdout.trim()
      const waiter = ctx.dlq.spawn(['lock', 'run', '--key', key, '--wait', '30s', '--verbose', '--', 'sh', '-c', 'echo > "$1/ran"', SH0, dir], {t})
      await waitUntilWaiting(waiter, 'the waiter to start acquiring')
      await stillFalse(() => waiter.exited, {forMs: 200, what: 'the waiter exiting while the lock is held'})
      const sentAt = Date.now()
      waiter.kill('SIGINT')
      const r = await waiter.result
      const took = Date.now() - sentAt
      assert.equal(r.signal, null, `dlq died of ${r.signal} instead of exiting 130`)
      assert.equal(r.code, 130, r.stderr)
      assert.ok(took < 2000, `the wait ended ${took}ms after SIGINT`)
      assert.equal(existsSync(join(dir, 'ran')), false, 'the command must not run')

      const [state, ...others] = await statusOf(ctx.dlq, key)
      assert.equal(others.length, 0)
      assert.deepEqual(state.holders.map((h) => h.owner), [token], 'only the real holder holds the key')
      assert.equal((await ctx.dlq.run(['lock', 'release', '--key', key, '--token', token])).code, 0)
      assert.deepEqual(await statusOf(ctx.dlq, key), [], 'nothing of the cancelled waiter is left')
    })

    // The command no longer has a process group of its own (it keeps dlq's, and so the terminal):
    // "the whole group" is now every process of the command, which the watchdog finds.
    it("lock release --force under a running command: SIGTERM to every process of the command, exit 70, a line saying the lock was lost", async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('lost')
      const script = 'sleep 20 & echo $! > "$1/grandchild"; echo $$ > "$1/child"; wait'
      // --ttl 3s: a backend that learns of the loss only when renewing (every ttl/3) notices within 1s.
      const child = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '3s', '--kill-grace', '10s', '--', 'sh', '-c', script, SH0, dir], {t})
      const grandchild = await waitFor(() => readPid(join(dir, 'grandchild')), {what: 'the grandchild to start'})
      const direct = await waitFor(() => readPid(join(dir, 'child')), {what: 'the command to start'})
      t.after(() => killPid(grandchild))
      assert.ok(isAlive(grandchild))

      const forced = await ctx.dlq.run(['lock', 'release', '--key', key, '--force'])
      assert.equal(forced.code, 0, forced.stderr)
      const releasedAt = Date.now()
      const r = await child.result
      const took = Date.now() - releasedAt
      assert.equal(r.code, 70, r.stderr)
      assert.ok(r.stderrLines.some((l) => /^dlq: .*\blost\b/i.test(l)), `a line saying the lock was lost:\n${r.stderr}`)
      // (Seen once in CI at 10 s, on Redis, not reproduced since: the message says what dlq said
      // and which of the command's processes were still there.)
      assert.ok(took < 5000, `dlq exited ${took}ms after the force release: it must notice by its next renewal (1s) and not wait out the 10s kill grace once the group died of SIGTERM; command alive: ${isAlive(direct)}, grandchild alive: ${isAlive(grandchild)}; dlq said:\n${r.stderr}`)
      await waitFor(() => !isAlive(direct), {what: 'the command to be gone', timeoutMs: 2000})
      await waitFor(() => !isAlive(grandchild), {what: "the command's background grandchild to be gone", timeoutMs: 2000})
    })

    it('--kill-grace 1s: a command that ignores SIGTERM after its lock was lost is SIGKILLed, exit 70', async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('grace')
      const script = `trap "" TERM; echo $$ > "$1/child"; ${shForAWhile()}`
      const child = ctx.dlq.spawn(['lock', 'run', '--key', key, '--ttl', '3s', '--kill-grace', '1s', '--', 'sh', '-c', script, SH0, dir], {t})
      const pid = await waitFor(() => readPid(join(dir, 'child')), {what: 'the command to start'})
      t.after(() => killPid(pid))
      const forcedAt = Date.now()
      const forced = await ctx.dlq.run(['lock', 'release', '--key', key, '--force'])
      assert.equal(forced.code, 0, forced.stderr)
      const releasedAt = Date.now()
      const r = await child.result
      const now = Date.now()
      assert.equal(r.code, 70, r.stderr)
      assert.ok(r.stderrLines.some((l) => /^dlq: .*\blost\b/i.test(l)), r.stderr)
      assert.ok(now - forcedAt >= 1000, `dlq ended ${now - forcedAt}ms after the release began: before the 1s grace`)
      assert.ok(now - releasedAt < 5000, `dlq took ${now - releasedAt}ms after the release to stop a command with a 1s grace`)
      await waitFor(() => !isAlive(pid), {what: 'the TERM-ignoring command to be killed', timeoutMs: 2000})
    })
  })
}
