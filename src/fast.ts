// The fast path of `dlq lock run`, the command cron guards run every minute: bin/run.cjs hands it
// the arguments first, and it runs the lock without loading oclif (about a third of a start's
// time) when it can parse them with certainty. Anything else (--help, --json, an unknown or
// repeated flag, a value that looks like a flag, a missing --) it declines, untouched, and oclif
// parses as usual, with its own messages. What it accepts it reads exactly as oclif would: the
// flags, their short forms, kinds and defaults come from oclif.manifest.json, which the build
// writes from the command's own flag definitions (test/unit/fast.test.mjs holds the two together).
// Every check of a value (durations, key, limit, exit code) is shared code in lockRun(); a word
// before -- that belongs to no flag is refused by the same code as oclif's path (argv.ts).
import {refuseStray} from './argv.js'
import {type LockRunFlags, lockRun} from './lockrun.js'
import {Session} from './session.js'

/** A flag as oclif.manifest.json describes it. */
export interface ManifestFlag {
  name: string
  char?: string
  type: 'boolean' | 'option'
  allowNo?: boolean
  default?: unknown
  required?: boolean
  multiple?: boolean
}

/** Options parsed as integers by oclif (Flags.integer): the manifest does not say which. */
export const integerFlags = new Set(['limit', 'conflict-exit-code'])
/** Flags the fast path leaves to oclif: they change what is printed or parsed. */
const declined = new Set(['json', 'help', 'version'])

/**
 * The flags, the command and the words before -- that belong to no flag (an error for the caller),
 * or undefined when oclif should parse these arguments.
 */
export function parseFast(argv: string[], manifest: Record<string, ManifestFlag>): {flags: Record<string, unknown>; command: string[]; stray: string[]} | undefined {
  const end = argv.indexOf('--')
  if (end === -1 || end === argv.length - 1) return undefined
  const byChar = new Map(Object.values(manifest).filter((f) => f.char).map((f) => [f.char, f]))
  const flags: Record<string, unknown> = {}
  const stray: string[] = []
  for (let i = 0; i < end; i++) {
    const arg = argv[i]
    if (!arg.startsWith('-')) {
      stray.push(arg)
      continue
    }
    let flag: ManifestFlag | undefined
    let value: string | undefined
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
      flag = manifest[name]
      if (eq !== -1) value = arg.slice(eq + 1)
      if (!flag && name.startsWith('no-') && manifest[name.slice(3)]?.allowNo && eq === -1) {
        const negated = manifest[name.slice(3)]
        if (negated.name in flags) return undefined
        flags[negated.name] = false
        continue
      }
    } else if (/^-[A-Za-z]/.test(arg)) {
      flag = byChar.get(arg[1])
      if (arg.length > 2) value = arg.slice(2)
    }
    if (!flag || declined.has(flag.name) || flag.multiple || flag.name in flags) return undefined
    if (flag.type === 'boolean') {
      if (value !== undefined) return undefined
      flags[flag.name] = true
      continue
    }
    if (value === undefined) {
      if (i + 1 >= end) return undefined
      value = argv[++i]
    }
    if (value.startsWith('-') && !/^-\d/.test(value)) return undefined
    if (integerFlags.has(flag.name)) {
      if (!/^-?\d+$/.test(value)) return undefined
      flags[flag.name] = Number(value)
    } else flags[flag.name] = value
  }
  for (const flag of Object.values(manifest)) {
    if (flag.name in flags) continue
    if (flag.required) return undefined
    if (flag.default !== undefined) flags[flag.name] = flag.default
    else if (flag.type === 'boolean') flags[flag.name] = false
  }
  return {flags, command: argv.slice(end + 1), stray}
}

/** Takes over (and ends the process) if it can parse `argv`; false means: run oclif instead. */
export function tryLockRun(argv: string[], manifest: Record<string, ManifestFlag>): boolean {
  const parsed = parseFast(argv, manifest)
  if (!parsed) return false
  const session = new Session()
  Promise.resolve()
    .then(() => {
      refuseStray(parsed.stray)
      return lockRun(parsed.flags as unknown as LockRunFlags, parsed.command, session)
    })
    .catch((error: unknown) => session.fail(error))
  return true
}
