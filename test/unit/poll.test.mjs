// The pauses of a wait that polls behind a pooler (src/backends/postgres/poll.ts): short at
// first, growing by half up to the cap, jittered by at most 20%, and for lock waiters a cap that
// spreads a key's polls over its waiters (about 40 a second together).
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'

import {lockPollCapMs, lockPollMaxMs, PollBackoff, queuePollCapMs} from '../../dist/backends/postgres/poll.js'

describe('PollBackoff', () => {
  it('starts at the first pause, grows 1.5× up to the cap, each within ±20%', () => {
    const backoff = new PollBackoff(5, 50)
    const expected = [5, 7.5, 11.25, 16.875, 25.3125, 37.96875, 50, 50, 50]
    for (const ms of expected) {
      const pause = backoff.next()
      assert.ok(pause >= Math.max(1, Math.floor(ms * 0.8)) && pause <= Math.ceil(ms * 1.2), `${pause} for ${ms}`)
    }
  })

  it('a smaller cap for this pause wins; reset starts short again', () => {
    const backoff = new PollBackoff(5, 1000)
    for (let i = 0; i < 20; i++) backoff.next()
    assert.ok(backoff.next(50) <= 60)
    assert.ok(backoff.next() >= 800)
    backoff.reset()
    assert.ok(backoff.next() <= 6)
  })

  it('lock waiters: 50 ms alone, 25 ms per waiter beyond, at most a second; queues 100 ms', () => {
    assert.equal(lockPollCapMs(1), 50)
    assert.equal(lockPollCapMs(2), 50)
    assert.equal(lockPollCapMs(10), 250)
    assert.equal(lockPollCapMs(50), lockPollMaxMs)
    assert.equal(lockPollMaxMs, 1000)
    assert.equal(queuePollCapMs, 100)
  })
})
