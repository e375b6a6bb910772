// Names → paths for the file backend, and the directory rules that keep them safe:
// - a key or queue name becomes ONE path component: bytes outside [A-Za-z0-9_-] (and a leading
//   dot) are %XX-encoded, so `../../etc/passwd` is `..%2F..%2Fetc%2Fpasswd`, never a path; names
//   whose encoding exceeds 200 bytes become a prefix plus a SHA-256, with the real name in `name`;
// - every directory dlq creates is checked with lstat, so a planted symlink is refused, never followed;
// - files are 0600 and directories 0700, or 0660/2770 when the base directory is setgid (shared by a group).
import {lstat, mkdir, readFile, writeFile, chmod} from 'node:fs/promises'
import {join} from 'node:path'

import {crypto} from '../../builtins.js'
import {unavailable} from '../../errors.js'
import {percentDecode, percentEncode} from '../names.js'

const maxComponent = 200
const hashed = /^(.*)~([0-9a-f]{32})$/

export function encodeName(name: string): string {
  const out = percentEncode(name)
  if (out.length <= maxComponent) return out
  const digest = crypto().createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 32)
  return `${out.slice(0, 150).replace(/%[0-9A-F]?$/, '')}~${digest}`
}

export async function decodeName(dir: string, component: string): Promise<string> {
  if (hashed.test(component)) return readFile(join(dir, component, 'name'), 'utf8')
  return percentDecode(component)
}

export interface Modes {
  dir: number
  file: number
  /** A group-shared directory: modes must be set explicitly, past the umask. */
  shared: boolean
}

export async function modesFor(base: string): Promise<Modes> {
  const info = await lstat(base)
  const shared = (info.mode & 0o2000) !== 0
  return shared ? {dir: 0o2770, file: 0o660, shared} : {dir: 0o700, file: 0o600, shared}
}

const known = new Set<string>()

const unsafePath = (path: string, isLink: boolean) =>
  unavailable(`unsafe path ${path}`, isLink ? 'it is a symbolic link' : 'it is not a directory', 'dlq never follows links inside its directory; remove it')

/** For readers (status): does `path` exist as a real directory? A symlink there is refused, not followed. */
export async function existingDir(path: string): Promise<boolean> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (info === undefined) return false
  if (!info.isDirectory()) throw unsafePath(path, info.isSymbolicLink())
  return true
}

/** mkdir -p of `parts` below `base`, refusing any component that is a symlink or not a directory. */
export async function safeDir(base: string, parts: string[], modes: Modes, realName?: string): Promise<string> {
  let path = base
  for (const part of parts) {
    path = join(path, part)
    if (known.has(path)) continue
    try {
      await mkdir(path, {mode: modes.dir})
      if (modes.shared) await chmod(path, modes.dir)
      if (realName !== undefined && part === parts.at(-1) && hashed.test(part)) {
        await writeFile(join(path, 'name'), realName, {mode: modes.file})
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const info = await lstat(path)
    if (!info.isDirectory()) throw unsafePath(path, info.isSymbolicLink())
    known.add(path)
  }
  return path
}
