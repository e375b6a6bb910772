// DURATION per SPEC §2: `250ms`, `30s`, `5m`, `2h`, `forever`; a bare number is seconds.
import {usageError} from './errors.js'

const units: Record<string, number> = {ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000}
// Longest finite duration accepted: setTimeout's limit is 2^31-1 ms, and the timers that use a
// duration are armed in slices, but a year is already beyond any sensible lease or wait.
const maxMs = 365 * units.d

/** Milliseconds, or Infinity for `forever`. */
export function parseDuration(input: string, flag: string): number {
  const text = input.trim().toLowerCase()
  if (text === 'forever' || text === 'inf' || text === 'infinity') return Number.POSITIVE_INFINITY
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text)
  if (!match) {
    throw usageError(`bad duration for --${flag}`, JSON.stringify(input), 'use e.g. 250ms, 30s, 5m, 2h or forever')
  }
  const ms = Math.round(Number(match[1]) * units[match[2] ?? 's'])
  if (ms > maxMs) throw usageError(`bad duration for --${flag}`, `${input} is longer than a year`, 'use forever')
  return ms
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return 'forever'
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${+(ms / 1000).toFixed(1)}s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`
  return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`
}
