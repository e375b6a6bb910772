// Many independent reads (one per key or message) without one round trip after another and
// without all of them at once: `fn` over `items`, results in the items' order, at most `inFlight`
// pending at a time. A sliding window, not batches: the next item starts as soon as any one ends,
// so one slow reply does not hold the others back. The drivers' status scans use it so that their
// cost follows the keys shown, divided by the window, instead of a round trip per key. (On
// ZooKeeper the server's own time per read bounds a 10,000-key `lock status` either way.)
export async function inBatches<T, R>(items: T[], inFlight: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const at = next++
      out[at] = await fn(items[at])
    }
  }
  await Promise.all(Array.from({length: Math.min(inFlight, items.length)}, lane))
  return out
}
