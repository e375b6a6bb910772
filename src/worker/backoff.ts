// How long a failed message of `queue pop --exec` waits before its next delivery (--retry-delay):
// exponential backoff with jitter, as SQS redrive policies and pg-boss's retryBackoff do it. The
// delay after the failed attempt n is
//
//   min(base × 2^(n−1), max(base, maxRetryDelayMs)) × (1 + up to jitterShare, at random)
//
// so it is never shorter than the doubled delay (a handler can count on --retry-delay as a lower
// bound), doubling stops at 5 minutes (or at --retry-delay, when that is longer), and the jitter
// only lengthens: messages that failed together (an outage) spread out over the next quarter of
// their delay instead of all coming back in the same instant. 0 retries at once, as before.

/** Where doubling stops, unless --retry-delay itself is longer. */
export const maxRetryDelayMs = 5 * 60_000
/** The most the jitter adds, as a share of the delay. */
export const jitterShare = 0.25

/** The delay before the delivery after failed attempt `attempt` (1 the first), in ms. */
export function retryDelay(baseMs: number, attempt: number, random: () => number = Math.random): number {
  if (baseMs <= 0) return 0
  const cap = Math.max(baseMs, maxRetryDelayMs)
  const doubled = Math.min(cap, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 40))
  return Math.ceil(doubled * (1 + jitterShare * random()))
}
