// JSON with exact integers, in a module of its own: lock run's fast path uses it without
// output.ts (and the chalk that comes with it).

/**
 * JSON text in which a BigInt is an exact JSON integer, whatever its size (JSON.stringify refuses
 * BigInts, and a Number would round past 2^53): fencing tokens go up to 2^63-1.
 */
export function jsonText(value: unknown, pretty = false): string {
  // Without BigInts JSON.stringify takes its fast path, which a replacer forfeits: `lock status
  // --json` over 10,000 locks took 70 ms with the replacer and takes 8 without (exactInteger below).
  try {
    return JSON.stringify(value, undefined, pretty ? 2 : undefined)
  } catch (error) {
    if (!(error instanceof TypeError)) throw error // a BigInt somewhere: the exact path below
  }
  // A BigInt becomes a string with a mark no other string can carry (it is new every call), and
  // the mark's quotes are then taken away.
  const mark = `bigint${Math.random().toString(36).slice(2)}x`
  const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${mark}${v}` : v), pretty ? 2 : undefined)
  return text.replaceAll(new RegExp(`"${mark}(-?\\d+)"`, 'g'), '$1')
}

/** An integer given as decimal text, for jsonText: a Number while that is exact, else a BigInt. */
export function exactInteger(text: string): number | bigint {
  const n = Number(text)
  return Number.isSafeInteger(n) ? n : BigInt(text)
}
