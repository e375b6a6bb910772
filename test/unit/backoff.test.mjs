// The retry delays of `queue pop --exec --retry-delay` (src/worker/backoff.ts): never shorter than
// the doubled delay, doubling stops at the cap, the jitter only lengthens and by at most its share.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'

import {jitterShare, maxRetryDelayMs, retryDelay} from '../../dist/worker/backoff.js'

const lowest = () => 0
const highest = () => 0.999999

describe('retryDelay', () => {
  it('doubles per failed attempt from --retry-delay, jitter aside', () => {
    assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelay(1000, n, lowest)), [1000, 2000, 4000, 8000, 16_000])
  })

  it('adds up to its share at random, never takes away', () => {
    for (const attempt of [1, 2, 6]) {
      const base = 1000 * 2 ** (attempt - 1)
      assert.equal(retryDelay(1000, attempt, lowest), base)
      assert.ok(retryDelay(1000, attempt, highest) <= base * (1 + jitterShare))
      assert.ok(retryDelay(1000, attempt, highest) > base * (1 + jitterShare * 0.99))
      for (let i = 0; i < 100; i++) {
        const delay = retryDelay(1000, attempt)
        assert.ok(delay >= base && delay <= base * (1 + jitterShare), `${delay} for attempt ${attempt}`)
      }
    }
  })

  it(`stops doubling at ${maxRetryDelayMs / 60_000}m, or at --retry-delay when that is longer`, () => {
    assert.equal(retryDelay(1000, 30, lowest), maxRetryDelayMs)
    assert.equal(retryDelay(1000, 10_000, lowest), maxRetryDelayMs)
    assert.equal(retryDelay(10 * 60_000, 3, lowest), 10 * 60_000)
  })

  it('0 retries at once, whatever the attempt', () => {
    assert.deepEqual([1, 2, 50].map((n) => retryDelay(0, n)), [0, 0, 0])
  })
})
