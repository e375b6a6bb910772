// What the lock commands share besides their flags (lockflags.ts): checks, owner ids, holder
// records. No oclif here: the fast path of `lock run` (fast.ts) uses these too.
import {hostname, userInfo} from 'node:os'

import type {Holder, HolderInfo} from './backends/types.js'
import {parseDuration, formatDuration} from './duration.js'
import {usageError} from './errors.js'

export function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1) throw usageError('bad --limit', String(limit), 'give a whole number of holders, 1 or more')
  return limit
}

export function checkExitCode(code: number, flag: string): number {
  if (!Number.isInteger(code) || code < 0 || code > 255) throw usageError(`bad --${flag}`, String(code), 'an exit code is 0 to 255')
  return code
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

export function describeHolders(holders: Holder[]): string {
  if (holders.length === 0) return 'no holder is recorded'
  const now = Date.now()
  return holders
    .map((h) => `held by ${h.user}@${h.host} pid ${h.pid} (${h.command.slice(0, 60)}) for ${formatDuration(now - h.acquiredAt.getTime())}, token ${h.token}`)
    .join('; ')
}
