// Flags and helpers shared by the lock commands.
import {hostname, userInfo} from 'node:os'

import * as Flags from '@oclif/core/flags'

import type {Holder, HolderInfo} from './backends/types.js'
import {parseDuration, formatDuration} from './duration.js'
import {usageError} from './errors.js'

export const keyFlag = Flags.string({char: 'k', summary: 'Lock key: 1–255 bytes of UTF-8, no control characters.', required: true, helpValue: 'KEY'})
export const ttlFlag = (summary: string) => Flags.string({summary, default: '30s', helpValue: 'DURATION'})
export const waitFlag = (fallback: string) => Flags.string({char: 'w', summary: 'How long to wait for the lock; 0 tries once.', default: fallback, helpValue: 'DURATION'})
export const limitFlag = Flags.integer({summary: 'Semaphore: up to N holders of the key at once.', default: 1, helpValue: 'N'})
export const conflictFlag = Flags.integer({summary: 'Exit code when the lock was not acquired within --wait.', default: 75, min: 0, max: 255, helpValue: 'CODE'})
export const tokenFlag = (summary: string) => Flags.string({char: 't', summary, helpValue: 'TOKEN'})

export function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1) throw usageError('bad --limit', String(limit), 'give a whole number of holders, 1 or more')
  return limit
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
