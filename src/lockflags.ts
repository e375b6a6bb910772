// Flags shared by the lock commands (their checks are in holding.ts).
import * as Flags from '@oclif/core/flags'

export const keyFlag = Flags.string({char: 'k', summary: 'Lock key: 1–255 bytes of UTF-8, no control characters.', required: true, helpValue: 'KEY'})
export const ttlFlag = (summary: string) => Flags.string({summary, default: '30s', helpValue: 'DURATION'})
export const waitFlag = (fallback: string) => Flags.string({char: 'w', summary: 'How long to wait for the lock; 0 tries once.', default: fallback, helpValue: 'DURATION'})
/** flock's spelling of --wait 0 (checkWait in holding.ts). */
export const nonblockFlag = Flags.boolean({char: 'n', summary: "Try once, as flock -n: the same as --wait 0."})
export const limitFlag = Flags.integer({summary: 'Semaphore: up to N holders of the key at once.', default: 1, helpValue: 'N'})
export const conflictFlag = Flags.integer({char: 'E', summary: 'Exit code when the lock was not acquired within --wait (flock -E).', default: 75, helpValue: 'CODE'}) // 0–255: checkExitCode
export const tokenFlag = (summary: string) => Flags.string({char: 't', summary, helpValue: 'TOKEN'})
/** A reader lock (holding.ts checkShared for its one combination that makes no sense, with --limit). */
export const sharedFlag = Flags.boolean({summary: 'Reader lock: shared holders hold together, an exclusive holder alone; once an exclusive one waits, new shared ones wait behind it.'})
