// The ZooKeeper backend's knowledge of the server's clock (src/backends/zookeeper/clock.ts): a
// write's mtime is the server's clock at some instant between send and reply, so the offset is
// known as a range, and a reply that came after a stall must not make it look exact.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'

import {ServerClock} from '../../dist/backends/zookeeper/clock.js'

describe('ServerClock', () => {
  it('is the local clock, exactly, before any write', () => {
    const clock = new ServerClock()
    assert.equal(clock.known, false)
    assert.deepEqual(clock.now(1000), {earliest: 1000, latest: 1000})
  })

  it('brackets the true offset by a stalled round trip, never a midpoint guess', () => {
    // The server runs 10 s ahead. A write sent at 0 is applied after a 3 s stall of the server
    // (mtime 13000) and answered at once: a midpoint guess would put the server 11.5 s ahead, and
    // a waiter would take others' deadlines as past 1.5 s too early.
    const clock = new ServerClock()
    clock.observe(13_000, 0, 3000)
    const now = clock.now(5000)
    assert.ok(now.earliest <= 15_000 && now.latest >= 15_000, `true server time 15000 in [${now.earliest}, ${now.latest}]`)
    assert.ok(now.latest - now.earliest >= 3000, 'as vague as the stall was long')
    assert.equal(clock.wide, true)
  })

  it('narrows with every write, and a prompt reply makes it exact to that round trip', () => {
    const clock = new ServerClock()
    clock.observe(13_000, 0, 3000) // stalled: server 10 s ahead, range [10000, 13000]
    clock.observe(20_001, 10_000, 10_002) // prompt: range [9999, 10001]
    const now = clock.now(10_002)
    assert.ok(now.latest - now.earliest <= 3, `width ${now.latest - now.earliest}`)
    assert.ok(now.earliest <= 20_002 && now.latest >= 20_002)
    assert.equal(clock.wide, false)
  })

  it('keeps the narrower of old and new bounds, loosened by drift with age', () => {
    const clock = new ServerClock()
    clock.observe(10_001, 0, 2) // [9999, 10001]
    clock.observe(1_010_000, 1_000_000, 1_000_100) // a slow reply a thousand seconds later
    const now = clock.now(1_000_100)
    // 100 ppm of 1000 s is 100 ms each side, still narrower than the slow reply's 100 ms range.
    assert.ok(now.earliest <= 1_010_100 && now.latest >= 1_010_100)
    assert.ok(now.latest - now.earliest <= 101, `width ${now.latest - now.earliest}`)
  })

  it('takes a contradicting write alone (a clock was stepped)', () => {
    const clock = new ServerClock()
    clock.observe(10_001, 0, 2) // server 10 s ahead
    clock.observe(5001, 1000, 1002) // now it is 4 s ahead: stepped back by 6 s
    const now = clock.now(1002)
    assert.ok(now.earliest >= 4999 && now.latest <= 5003, `[${now.earliest}, ${now.latest}]`)
  })

  it('is not wide when the bounds are as narrow as the network allows', () => {
    const clock = new ServerClock()
    clock.observe(10_040, 0, 80) // a remote ensemble: 80 ms round trips
    assert.equal(clock.wide, true, 'one reply slower than 50 ms may have been a stall')
    clock.observe(11_060, 1000, 1080)
    assert.equal(clock.wide, false, 'a second as slow: that is the network')
  })
})
