// Lock keys and queue names (SPEC §2): 1–255 bytes of UTF-8 without control characters.
// Any such name is valid on every backend; backends that map names to paths encode them.
import {readFileSync} from 'node:fs'

import {usageError} from './errors.js'

export function checkName(name: string, what: 'key' | 'queue'): string {
  const bytes = Buffer.byteLength(name, 'utf8')
  const flag = what === 'key' ? '--key' : '--queue'
  if (bytes === 0) throw usageError(`bad ${what}`, `${flag} is empty`, 'give 1 to 255 bytes of UTF-8')
  if (bytes > 255) throw usageError(`bad ${what}`, `${flag} is ${bytes} bytes long`, 'at most 255 bytes')
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) {
    throw usageError(`bad ${what}`, `${flag} ${JSON.stringify(name)} contains a control character`, 'no control characters')
  }
  if (name.includes('\uFFFD') && fromInvalidUtf8(name)) {
    throw usageError(`bad ${what}`, `${flag} ${JSON.stringify(name)} is not valid UTF-8`, 'each invalid byte shows as \uFFFD; convert the name to UTF-8, e.g. with iconv')
  }
  return name
}

/**
 * Node decodes the command line as UTF-8 and puts U+FFFD for every byte that is not, so two
 * different keys ($'\xff' and $'\xfe') would arrive as one and share a lock. A name with U+FFFD is
 * checked against the bytes the kernel holds (/proc/self/cmdline): it came from invalid UTF-8 if
 * an argument that is not valid UTF-8 decodes to it (alone, or after `--key=` or `-k`). Where that
 * cannot be read, a U+FFFD is taken as a replaced byte: refusing is safe, merging is not.
 */
function fromInvalidUtf8(name: string): boolean {
  let raw: Buffer
  try {
    raw = readFileSync('/proc/self/cmdline')
  } catch {
    return true
  }
  const strict = new TextDecoder('utf-8', {fatal: true})
  let start = 0
  for (let end = raw.indexOf(0); end !== -1; start = end + 1, end = raw.indexOf(0, start)) {
    const argument = raw.subarray(start, end)
    try {
      strict.decode(argument)
    } catch {
      const lossy = argument.toString('utf8')
      if (lossy === name || lossy.endsWith(`=${name}`) || lossy === `-k${name}`) return true
    }
  }
  return false
}
