// The file lock protocol from the command's side, with real stalls and kills between dlq's system
// calls (strace's syscall delay and signal injection): whatever a stalled or killed `lock run` does,
// no two commands run at once and every fencing token is new and larger than the ones before it.
// The protocol's system calls: getdents64 lists the key's directory, rename commits a new state,
// unlink collects old ones (leases.ts); nothing else in `lock run` uses them.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, NODE, runProgram, tempDir, uniqueName} from '../support/cli.mjs'

// The critical section: a directory only one holder can make, the token appended in order.
const critical = 'mkdir "$0/in" 2>/dev/null || echo "$DLQ_FENCING_TOKEN" >>"$0/overlaps"; echo "$DLQ_FENCING_TOKEN" >>"$0/tokens"; sleep 0.05; rmdir "$0/in"'

describe('file locks under injected stalls and kills (strace)', {concurrency: 1}, () => {
  const ctx = useBackend(fileBackend, {before, after})

  const lockRun = (key, dir, extra = []) => ['lock', 'run', '-b', ctx.instance.url, '--key', key, '--wait', '60s', ...extra, '--', 'sh', '-c', critical, dir]
  const plain = (key, dir) => runProgram(NODE, [BIN, ...lockRun(key, dir)], {timeoutMs: 90_000})
  const traced = (inject, key, dir, extra) =>
    runProgram('strace', ['-f', '-qq', '-o', '/dev/null', '-e', `inject=${inject}`, NODE, BIN, ...lockRun(key, dir, extra)], {timeoutMs: 90_000})
  const loop = async (n, once) => {
    const results = []
    for (let i = 0; i < n; i++) results.push(await once())
    return results
  }

  /** Every critical section ran alone, and the tokens, in the order the sections ran, strictly increase. */
  async function assertExact(dir, expected) {
    assert.equal(existsSync(join(dir, 'overlaps')), false, `overlapping holders, tokens: ${existsSync(join(dir, 'overlaps')) && (await readFile(join(dir, 'overlaps'), 'utf8'))}`)
    const tokens = (await readFile(join(dir, 'tokens'), 'utf8')).trim().split('\n').map(BigInt)
    assert.equal(tokens.length, expected, 'every lock run got in exactly once')
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `token ${tokens[i]} after ${tokens[i - 1]} (position ${i})`)
  }

  // Each stall: 0.5 s on every such call of one lock run, while two others take and release the key.
  for (const [label, inject] of [
    ['after listing the key (between the scan and the commit)', 'getdents64:delay_exit=500000'],
    ['before committing (the rename of the state marker)', 'rename:delay_enter=500000'],
    ['before collecting old states (a stale collector)', 'unlink:delay_enter=500000'],
  ]) {
    it(`a lock run stalled ${label} never runs beside another holder, and takes a new token`, async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('stall')
      const [stalled, ...others] = await Promise.all([
        loop(2, () => traced(inject, key, dir)),
        loop(4, () => plain(key, dir)),
        loop(4, () => plain(key, dir)),
      ])
      for (const r of [...stalled, ...others.flat()]) assert.equal(r.code, 0, r.stderr)
      await assertExact(dir, 10)
    })
  }

  // A kill at each step: at the list, at the commit, right after it (the first collection), or
  // holding. The key stays usable: the next lock runs get in (after the dead one's lease, at most)
  // with larger tokens, and no command runs beside another.
  for (const [label, inject] of [
    ['while listing', 'getdents64:signal=KILL'],
    ['at its commit', 'rename:signal=KILL'],
    ['right after its commit', 'unlink:signal=KILL'],
  ]) {
    it(`a lock run killed ${label} leaves the key exact and usable`, async (t) => {
      const dir = await tempDir(t)
      const key = uniqueName('kill')
      const [killed, ...others] = await Promise.all([
        traced(inject, key, dir, ['--ttl', '2s']),
        loop(3, () => plain(key, dir)),
        loop(3, () => plain(key, dir)),
      ])
      assert.equal(killed.signal ?? killed.code, killed.signal ? 'SIGKILL' : 137, `strace reports the kill: ${killed.code} ${killed.signal} ${killed.stderr}`)
      for (const r of others.flat()) assert.equal(r.code, 0, r.stderr)
      // The killed run may or may not have run its command (it is killed before or after): the others all did.
      const tokens = (await readFile(join(dir, 'tokens'), 'utf8')).trim().split('\n')
      await assertExact(dir, tokens.length)
      assert.ok(tokens.length >= 6)
      const after = await plain(key, dir)
      assert.equal(after.code, 0, after.stderr)
      await assertExact(dir, tokens.length + 1)
    })
  }
})
