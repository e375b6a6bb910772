// The file backend's wait (src/backends/file/watch.ts): how often it tries when nothing wakes it.
import assert from 'node:assert/strict'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {describe, it} from 'node:test'

import {waitFor} from '../../dist/backends/file/watch.js'

const tries = async (dir, ms) => {
  let count = 0
  const value = await waitFor(dir, new AbortController().signal, Date.now() + ms, async () => {
    count++
    return {done: false, value: undefined, next: Number.POSITIVE_INFINITY}
  }, 'timed out')
  return {count, value}
}

describe('file backend: the wait between tries', () => {
  it('a directory that cannot be watched (here: gone) is tried again once a second, not attempt after attempt', async () => {
    const {count, value} = await tries(join(tmpdir(), `dlq-no-such-dir-${process.pid}`), 1500)
    assert.equal(value, 'timed out')
    // The first try, one once the (failed) watch was set up, one after the poll's second, and
    // the last at the deadline.
    assert.ok(count >= 3 && count <= 4, `${count} tries in 1.5 s`)
  })

  it('on a local filesystem the fallback poll is only insurance: no try within 1.5 s without a change', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'dlq-wait-'))
    t.after(() => rm(dir, {recursive: true, force: true}))
    const {count} = await tries(dir, 1500)
    // The first try, the one after arming the watch, the last at the deadline: no poll between
    // (a poll every second, as on NFS, would make it 4).
    assert.equal(count, 3)
  })
})
