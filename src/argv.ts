// The words of a command line around its `--` (SPEC §2): after it, the command to run, verbatim;
// before it, every word must belong to a flag. A word that belongs to none (`--wait 10 min`,
// `--key deploy production`) is a usage error, never dropped: dropping it would run the command
// under another lock, or wait another time, than the user wrote.
import {usageError} from './errors.js'

/**
 * The command after the first `--`, verbatim from the raw arguments (oclif's argv can reorder
 * repeated words), and the words oclif kept as arguments that do not belong to it: those before
 * the `--`, in the order written. Without `--`, oclif's arguments are the command.
 */
export function splitAtDashes(raw: string[], parsed: string[]): {command: string[]; stray: string[]} {
  const dashes = raw.indexOf('--')
  if (dashes === -1) return {command: parsed, stray: []}
  const command = raw.slice(dashes + 1)
  // oclif's argv holds the command's words and the stray ones, in some order: take the command's
  // away, word for word, and what is left are the stray words.
  const left = new Map<string, number>()
  for (const word of parsed) left.set(word, (left.get(word) ?? 0) + 1)
  for (const word of command) left.set(word, (left.get(word) ?? 0) - 1)
  const stray = raw.slice(0, dashes).filter((word) => {
    const count = left.get(word) ?? 0
    if (count > 0) left.set(word, count - 1)
    return count > 0
  })
  return {command, stray}
}

/** Exit 64 naming the words before `--` that belong to no flag. */
export function refuseStray(stray: string[]): void {
  if (stray.length === 0) return
  const words = stray.map((word) => JSON.stringify(word)).join(' ')
  throw usageError(`unexpected argument${stray.length === 1 ? '' : 's'} ${words} before --`, `${stray.length === 1 ? 'it belongs' : 'they belong'} to no flag`, 'a flag takes one word, so quote a value with spaces; the command goes after --')
}
