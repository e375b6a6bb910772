// How a wait polls where it cannot LISTEN: behind a transaction pooler (?pooling=transaction) a
// LISTEN registers on whichever server session ran it, and the notification goes to whichever
// client that session serves next, so dlq does not listen there at all. A waiter asks again after
// a pause that starts short (a release soon after the wait began is seen within milliseconds) and
// grows by half each time up to a cap, with ±20% jitter so waiters that started together spread
// out. Between two polls a waiter holds no server session: a transaction pooler lends it one per
// transaction, and behind a session pooler (?pooling=session) dlq disconnects while it waits
// (Connection.idle), since there even an idle client connection pins a server connection.

export class PollBackoff {
  private nextMs: number

  constructor(private readonly firstMs: number, private readonly capMs: number) {
    this.nextMs = firstMs
  }

  /** The pause before the next poll, at most `capMs` (this time's cap, if smaller than the usual). */
  next(capMs = this.capMs): number {
    const ms = Math.min(this.nextMs, capMs, this.capMs)
    this.nextMs = Math.min(this.nextMs * 1.5, this.capMs)
    return Math.max(1, Math.round(ms * (0.8 + 0.4 * Math.random())))
  }

  /** Something happened (a message came): start short again. */
  reset(): void {
    this.nextMs = this.firstMs
  }
}

/**
 * A lock waiter's cap: the waiters of one key together poll about 40 times a second (so the first
 * poll after a release comes some 25 ms later, and the server sees a steady trickle however many
 * wait), each at least every second and at most 20 times a second.
 */
export const lockPollCapMs = (waiters: number): number => Math.min(lockPollMaxMs, Math.max(50, 25 * waiters))
export const lockPollMaxMs = 1000

/** A blocked pop or tail --follow: no count of the others, so a fixed cap (10 light polls a second). */
export const queuePollCapMs = 100
