// Lock keys and queue names (SPEC §2): 1–255 bytes of UTF-8 without control characters.
// Any such name is valid on every backend; backends that map names to paths encode them.
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
  return name
}
