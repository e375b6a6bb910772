// DURATION per SPEC §2: `250ms`, `30s`, `5m`, `2h`, compounds like `1m30s` (what formatDuration
// prints reads back), `forever`; a bare number is seconds.
import {usageError} from './errors.js'

const units: Record<string, number> = {d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1}
const order = ['d', 'h', 'm', 's', 'ms']
// Longest finite duration accepted: setTimeout's limit is 2^31-1 ms, and the timers that use a
// duration are armed in slices, but a year is already beyond any sensible lease or wait.
const maxMs = 365 * units.d

/** Milliseconds, or Infinity for `forever`. */
export function parseDuration(input: string, flag: string): number {
  const text = input.trim().toLowerCase()
  if (text === 'forever' || text === 'inf' || text === 'infinity') return Number.POSITIVE_INFINITY
  const bad = () => usageError(`bad duration for --${flag}`, JSON.stringify(input), 'use e.g. 250ms, 30s, 5m, 1m30s, 2h or forever')
  if (/^\d+(\.\d+)?$/.test(text)) return checked(Math.round(Number(text) * units.s), input, flag)
  // Parts from the largest unit down, each unit at most once: `1m30s`, `2h5m`, `1h0m`, `1.5s`.
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|d|h|m|s))+$/.test(text) ? text.match(/\d+(?:\.\d+)?(?:ms|d|h|m|s)/g)! : undefined
  if (!parts) throw bad()
  let ms = 0
  let last = -1
  for (const part of parts) {
    const [, number, unit] = /^(\d+(?:\.\d+)?)(ms|d|h|m|s)$/.exec(part)!
    const rank = order.indexOf(unit)
    if (rank <= last) throw bad()
    last = rank
    ms += Number(number) * units[unit]
  }
  return checked(Math.round(ms), input, flag)
}

function checked(ms: number, input: string, flag: string): number {
  if (ms > maxMs) throw usageError(`bad duration for --${flag}`, `${input} is longer than a year`, 'use forever')
  return ms
}

/**
 * For people, to the precision shown: 250ms, 1.5s, 1m30s, 2h5m (so that it reads back with
 * parseDuration). Rounded once, to the shown unit, before it is split: 29m59.6s is 30m0s, not 29m60s.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return 'forever'
  if (ms < 0) return `-${formatDuration(-ms)}`
  if (Math.round(ms) < 1000) return `${Math.round(ms)}ms`
  const tenths = Math.round(ms / 100)
  if (tenths < 600) return `${tenths / 10}s`
  const seconds = Math.round(ms / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`
  const minutes = Math.round(ms / 60_000)
  return `${Math.floor(minutes / 60)}h${minutes % 60}m`
}

// TIME for `queue push --at`: ISO 8601 with its offset (`2026-12-02T18:00:00Z`,
// `2026-12-02T19:00:00+01:00`, fractions of a second allowed, a space for the T), or `@` and
// seconds since the epoch as date(1) writes them (`@1700000000`). A time without an offset is
// refused rather than read in some time zone, and so is a date that does not exist (Feb 30th,
// 24:00), which Date.parse would roll over into the next month or day.
const isoTime = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(?:[Zz]|([+-])(\d{2}):?(\d{2}))$/

/** The point in time TIME names. */
export function parseTime(input: string, flag: string): Date {
  const text = input.trim()
  const bad = (why: string) => usageError(`bad time for --${flag}`, why, 'use ISO 8601 with an offset, e.g. 2026-12-02T18:00:00Z or 2026-12-02T19:00+01:00, or @ and epoch seconds, e.g. @1700000000')
  if (/^@\d+(\.\d+)?$/.test(text)) return new Date(Math.round(Number(text.slice(1)) * 1000))
  const m = isoTime.exec(text)
  if (!m) throw bad(/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text) ? `${JSON.stringify(input)} has no offset` : JSON.stringify(input))
  const [, year, month, day, hour, minute, second = '0', fraction = '', sign, offsetHours = '0', offsetMinutes = '0'] = m
  const offsetMs = (sign === '-' ? -1 : 1) * (Number(offsetHours) * 60 + Number(offsetMinutes)) * 60_000
  const wall = Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute), Number(second))
  const back = new Date(wall)
  const exists = back.getUTCFullYear() === Number(year) && back.getUTCMonth() === Number(month) - 1 && back.getUTCDate() === Number(day) &&
    back.getUTCHours() === Number(hour) && back.getUTCMinutes() === Number(minute) && back.getUTCSeconds() === Number(second)
  if (!exists || Number(offsetMinutes) >= 60) throw bad(`${JSON.stringify(input)} is no such time`)
  return new Date(wall - offsetMs + Math.round(Number(`0${fraction}`) * 1000))
}
