// Many independent reads (one per key or message) without one round trip after another and
// without all of them at once: `fn` over `items` in order, at most `inFlight` pending at a time.
// The drivers' status scans use it so that their cost follows the keys shown, divided by the
// batch, instead of a round trip (or a thread-pool hop) per key in sequence.
export async function inBatches<T, R>(items: T[], inFlight: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = []
  for (let at = 0; at < items.length; at += inFlight) out.push(...(await Promise.all(items.slice(at, at + inFlight).map(fn))))
  return out
}
