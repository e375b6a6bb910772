// What the lock commands share besides their flags (lockflags.ts): checks, owner ids, holder
// records. No oclif here: the fast path of `lock run` (fast.ts) uses these too.
import {hostname, userInfo} from 'node:os'

import type {Holder, HolderInfo, Lease, LockState} from './backends/types.js'
import {parseDuration, formatDuration} from './duration.js'
import {usageError} from './errors.js'
import {exactInteger} from './json.js'

export function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1) throw usageError('bad --limit', String(limit), 'give a whole number of holders, 1 or more')
  return limit
}

/**
 * --shared with --limit N > 1 is refused rather than given a meaning: a reader lock already admits
 * any number of shared holders, and "N exclusive holders beside readers" is neither flock's -s nor
 * a reader/writer lock. (--limit 1, the default, is allowed.)
 */
export function checkShared(shared: boolean | undefined, limit: number): boolean {
  if (shared && limit !== 1) throw usageError('--shared and --limit do not combine', `--limit ${limit} was given with --shared`, 'a shared lock admits any number of shared holders already; drop --limit')
  return shared === true
}

export function checkExitCode(code: number, flag: string): number {
  if (!Number.isInteger(code) || code < 0 || code > 255) throw usageError(`bad --${flag}`, String(code), 'an exit code is 0 to 255')
  return code
}

/** --wait in ms; flock's -n (--nonblock) is --wait 0, and a --wait beside it must say the same. */
export function checkWait(wait: string, nonblock: boolean | undefined, fallback: string): number {
  const waitMs = parseDuration(wait, 'wait')
  if (nonblock && waitMs !== 0 && wait !== fallback) throw usageError('-n and --wait disagree', `-n means --wait 0, and --wait ${wait} was given too`, 'give one of them')
  return nonblock ? 0 : waitMs
}

export function checkTtl(text: string): number {
  const ttl = parseDuration(text, 'ttl')
  if (ttl < 100 || !Number.isFinite(ttl)) throw usageError('bad --ttl', text, 'a lease needs a finite TTL of at least 100ms')
  return ttl
}

/**
 * A unique id for one holding: time, pid and 64 random bits. Not node:crypto's randomUUID, whose
 * module costs more start-up time than a cron guard should pay; the id is not a secret.
 */
export function newOwner(): string {
  const random = () => Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, '0')
  return `${Date.now().toString(36)}-${process.pid.toString(36)}-${random()}${random()}`
}

export function holderInfo(command: string): HolderInfo {
  let user = process.env.USER ?? ''
  try {
    user = userInfo().username
  } catch {
    // no passwd entry (containers): keep $USER
  }
  return {host: hostname(), pid: process.pid, user, command}
}

/** The waiting line of lock run and lock acquire (waiting.ts): the time first, the detail after. */
export const waitingForLock = (key: string, waitedMs: number, holders: Holder[]) =>
  `dlq: waiting ${formatDuration(waitedMs)} for lock ${JSON.stringify(key)}: ${describeHolders(holders)}`

export function describeHolders(holders: Holder[]): string {
  if (holders.length === 0) return 'no holder is recorded'
  const now = Date.now()
  return holders
    .map((h) => `held${h.mode === 'shared' ? ' (shared)' : ''} by ${h.user}@${h.host} pid ${h.pid} (${h.command.slice(0, 60)}) for ${formatDuration(now - h.acquiredAt.getTime())}, fencing token ${h.fencingToken}`)
    .join('; ')
}

// The JSON that the lock commands print (documented in their man pages: scripts/man.mjs). One
// word, one meaning, in every output: `token` is what --token takes (the holding's owner id, also
// `owner`, DLQ_LOCK_OWNER) and `fencingToken` is the integer DLQ_FENCING_TOKEN carries: a Number
// while exact, else a BigInt (json.ts exactInteger), written as an exact JSON integer either way
// (jsonText), since a token may reach 2^63-1.

/** A lease as `lock acquire --json` and `lock renew --json` print it. */
export function leaseJson(lease: Lease): {key: string; token: string; owner: string; fencingToken: number | bigint; expiresAt: string} {
  return {key: lease.key, token: lease.owner, owner: lease.owner, fencingToken: exactInteger(lease.fencingToken), expiresAt: lease.expiresAt.toISOString()}
}

/** A key's holders and waiters as `lock status --json` prints them. */
export function lockStateJson(state: LockState): Record<string, unknown> {
  return {
    key: state.key,
    holders: state.holders.map((h) => ({
      token: h.owner, owner: h.owner, fencingToken: exactInteger(h.fencingToken), mode: h.mode, host: h.host, pid: h.pid, user: h.user, command: h.command,
      acquiredAt: h.acquiredAt.toISOString(), expiresAt: h.expiresAt.toISOString(),
    })),
    // Stable fields: what the backend cannot tell is null, never missing.
    waiters: state.waiters ?? null,
    queue: state.queue?.map((w) => ({owner: w.owner, host: w.host, pid: w.pid, user: w.user, command: w.command, since: w.since.toISOString()})) ?? null,
  }
}
