// What a process knows of the ZooKeeper server's clock. A write's reply carries the node's mtime:
// the leader's clock when it applied the write, somewhere between the request's send and its
// reply. So the offset (server minus local) lies in [mtime - received, mtime - sent]: exact to a
// round trip. A midpoint guess is wrong by half of it, and a round trip that spans a stall (the
// server stopped, a reconnect) makes that seconds: a waiter that guessed high would delete a live
// holder's node, a popper that guessed high would take back a message still being worked on.
// So both bounds are kept, narrowed by every write seen, and each decision takes the safe one:
//   earliest  the server's clock is at least this: to decide that someone else's deadline passed
//   latest    the server's clock is at most this: to set a deadline of one's own
// Clocks drift (100 ppm allowed) and can be stepped: bounds loosen with age, and an observation
// that contradicts them replaces them.

const driftPerMs = 1e-4
/** Bounds wider than this, and than two of the quickest round trips seen, are measured again: one was taken during a stall. */
export const wideMs = 50

export interface ServerTime {
  earliest: number
  latest: number
}

export class ServerClock {
  private low = 0
  private high = 0
  private at?: number
  private quickest = Number.POSITIVE_INFINITY
  private seen = 0

  get known(): boolean {
    return this.at !== undefined
  }

  /** Whether the bounds are too wide to be relied on for long (a stalled measurement). */
  get wide(): boolean {
    const width = this.high - this.low
    return this.at === undefined || (width > wideMs && (this.seen < 2 || width > 2 * this.quickest))
  }

  /** A write applied at server time `mtime`, sent and answered at these local times. */
  observe(mtime: number, sent: number, received: number): void {
    let low = mtime - received
    let high = mtime - sent
    if (this.at !== undefined) {
      const slack = Math.abs(received - this.at) * driftPerMs
      const l = Math.max(low, this.low - slack)
      const h = Math.min(high, this.high + slack)
      if (l <= h) [low, high] = [l, h]
    }
    ;[this.low, this.high, this.at] = [low, high, received]
    this.quickest = Math.min(this.quickest, received - sent)
    this.seen++
  }

  /** Now on the server's clock, as a range (the local clock, exactly, before any write was seen). */
  now(local = Date.now()): ServerTime {
    if (this.at === undefined) return {earliest: local, latest: local}
    const slack = Math.abs(local - this.at) * driftPerMs
    return {earliest: local + this.low - slack, latest: local + this.high + slack}
  }
}
