// Names → paths for the file backend, and the rules that keep its directory safe from other local
// users (a shared /var/lock, a 1777 directory, a group's directory):
//
// - A key or queue name becomes ONE path component: bytes outside [A-Za-z0-9_-] (and a leading
//   dot) are %XX-encoded, so `../../etc/passwd` is `..%2F..%2Fetc%2Fpasswd`, never a path; names
//   whose encoding exceeds 200 bytes become a prefix plus a SHA-256, with the real name in a `name`
//   file. A `name` is read without following links, and only if it encodes back to its directory's
//   component, so nobody can make `status` print a file or show a key under another name.
// - Every directory dlq uses is pinned: opened once (below the base with O_NOFOLLOW|O_DIRECTORY),
//   checked with fstat, and from then on reached only as /proc/self/fd/<fd>, so each path dlq
//   hands the kernel resolves one last component from a directory it has already checked. A
//   directory swapped for another, or for a symlink, between the check and the use changes nothing
//   (openat(2)'s discipline, which Node lacks; without /proc, as on macOS, the real path is used and
//   only the checks remain). Messages show the user's path, never /proc (errors.ts: shownPath).
// - Who may own what (refused with exit 69, one line naming the directory and its owner):
//     the base: yours or root's, not writable by anyone else, unless it has the sticky bit (like
//       /tmp: others may add entries there but not move yours), or it is a group's setgid
//       directory (the shared arrangement below), which must not be writable by everyone;
//     below it: yours and writable by you alone, or, in a group's setgid base, owned by a member
//       (the directory's group is the base's) and not writable by everyone. So in a 1777
//       directory the first user's dlq tree is private to that user: others are refused, never
//       taken over.
// - Files are created with O_EXCL|O_NOFOLLOW, mode 0600 (0660 in a group's directory, set with
//   fchmod past the umask, as its directories get 2770): never writable by everyone. Files are read
//   with O_NOFOLLOW|O_NONBLOCK and only if they are regular files (a planted FIFO cannot hang dlq).
import type {Stats} from 'node:fs'
import {closeSync, fstatSync, lstatSync, openSync, readFileSync} from 'node:fs'
import {type FileHandle, mkdir, open, lstat, constants} from 'node:fs/promises'
import {join} from 'node:path'

import {crypto} from '../../builtins.js'
import {showPathAs, unavailable} from '../../errors.js'
import {percentDecode, percentEncode} from '../names.js'

const maxComponent = 200
const hashed = /^(.*)~([0-9a-f]{32})$/

export function encodeName(name: string): string {
  const out = percentEncode(name)
  if (out.length <= maxComponent) return out
  const digest = crypto().createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 32)
  return `${out.slice(0, 150).replace(/%[0-9A-F]?$/, '')}~${digest}`
}

export interface Modes {
  dir: number
  file: number
  /** A group-shared directory: modes must be set explicitly, past the umask. */
  shared: boolean
  /** Whose directories dlq uses: the effective uid. */
  uid: number
  /** In a group's setgid base, its group: directories of that group are the members'. */
  gid?: number
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException).code

// ── Pinned directories ─────────────────────────────────────────────────────────────────────────

/** Pinned path (/proc/self/fd/N) → its open handle; the handle keeps N from being reused. */
const pinned = new Map<string, FileHandle>()
/** Pinned path → the path the user knows. */
const shownPaths = new Map<string, string>()
let viaProc: boolean | undefined

const shown = (path: string) => {
  for (const [pin, real] of shownPaths) if (path === pin || path.startsWith(`${pin}/`)) return real + path.slice(pin.length)
  return path
}

async function pin(handle: FileHandle, path: string): Promise<string> {
  const proc = `/proc/self/fd/${handle.fd}`
  // One probe per process: /proc may be missing (macOS) or not ours to read (a process made
  // undumpable); then dlq works on real paths and keeps only the checks.
  viaProc ??= await lstat(`${proc}/.`).then(() => true, () => false)
  if (!viaProc) {
    await handle.close()
    return path
  }
  pinned.set(proc, handle)
  shownPaths.set(proc, path)
  showPathAs(proc, path)
  return proc
}

/** Closes a directory pinned by existingDir() (safeDir's stay open for the process's life). */
export async function unpin(path: string): Promise<void> {
  const handle = pinned.get(path)
  if (!handle) return
  pinned.delete(path)
  shownPaths.delete(path)
  await handle.close().catch(() => {})
}

// ── Owners and modes ───────────────────────────────────────────────────────────────────────────

// Names only for messages (NSS is not worth loading): /etc/passwd and /etc/group, else the number.
function nameOf(file: '/etc/passwd' | '/etc/group', id: number): string | undefined {
  try {
    return readFileSync(file, 'utf8').split('\n').find((l) => l.split(':')[2] === String(id))?.split(':')[0]
  } catch {
    return undefined
  }
}
const userName = (uid: number) => `user ${nameOf('/etc/passwd', uid) ?? '?'} (uid ${uid})`
const groupName = (gid: number) => `group ${nameOf('/etc/group', gid) ?? '?'} (gid ${gid})`
const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0')

const sharingHint = 'dlq uses only your own directories, or a group\'s setgid directory: see "Sharing a directory" in the README'

/** The refusal: what is wrong, always with the directory's owner. */
function refuse(path: string, info: Stats, why: string, hint = sharingHint) {
  return unavailable(`unsafe directory ${shown(path)}`, `owned by ${userName(info.uid)}, ${why}`, hint)
}

const unsafePath = (path: string, why: string) =>
  unavailable(`unsafe path ${shown(path)}`, why, 'dlq never follows links or opens anything but its own directories and files there; remove it')

/** What the base directory is, or why dlq will not use it. */
function baseModes(path: string, info: Stats, uid: number): Modes {
  const worldWritable = (info.mode & 0o002) !== 0
  const groupWritable = (info.mode & 0o020) !== 0
  const sticky = (info.mode & 0o1000) !== 0
  if ((info.mode & 0o2000) !== 0) {
    // The shared arrangement: whoever set it up owns it; its group's members share what is in it.
    if (worldWritable) throw refuse(path, info, `setgid and writable by every user (mode ${octal(info.mode)})`, `chmod o-w ${shown(path)}: only its group shares it`)
    return {dir: 0o2770, file: 0o660, shared: true, uid, gid: info.gid}
  }
  if (info.uid !== uid && info.uid !== 0) throw refuse(path, info, 'not by you or root')
  if ((worldWritable || groupWritable) && !sticky) {
    throw refuse(path, info, `writable by ${worldWritable ? 'every user' : groupName(info.gid)} (mode ${octal(info.mode)}) without the sticky bit, so others could move dlq's directories`,
      'chmod go-w for a private directory, chmod +t as on /tmp, or chmod 2770 to share it with its group: see "Sharing a directory" in the README')
  }
  return {dir: 0o700, file: 0o600, shared: false, uid}
}

/** Throws unless a directory below the base is dlq's to use. */
function checkDir(path: string, info: Stats, modes: Modes): void {
  if (!info.isDirectory()) throw unsafePath(path, 'it is not a directory')
  if (modes.gid !== undefined) {
    if ((info.mode & 0o002) !== 0) throw refuse(path, info, `writable by every user (mode ${octal(info.mode)})`)
    if (info.uid !== modes.uid && info.gid !== modes.gid) throw refuse(path, info, `${groupName(info.gid)}, not the shared ${groupName(modes.gid)}`)
    return
  }
  if (info.uid !== modes.uid) throw refuse(path, info, 'not by you')
  if ((info.mode & 0o022) !== 0) throw refuse(path, info, `writable by ${(info.mode & 0o002) !== 0 ? 'every user' : groupName(info.gid)} (mode ${octal(info.mode)})`)
}

/** Why a directory could not be opened: undefined if it is missing, else the refusal to throw. */
function openDirFailed(path: string, error: unknown, modes: Modes): undefined {
  if (errorCode(error) === 'ENOENT') return undefined
  // Only to word the message (a rare path, so synchronous): what is there is refused either way.
  const info = lstatSync(path, {throwIfNoEntry: false})
  // Another user's directory dlq may not even open: say whose it is, rather than just "denied".
  if (errorCode(error) === 'EACCES' && info?.isDirectory()) checkDir(path, info, modes)
  if (errorCode(error) === 'ELOOP' || errorCode(error) === 'ENOTDIR') throw unsafePath(path, info?.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a directory')
  throw error
}

const openDirFlags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK

/** Opens a directory below a pinned one, never through a link, and checks it; undefined if missing. */
async function openDir(path: string, modes: Modes): Promise<FileHandle | undefined> {
  let handle: FileHandle
  try {
    handle = await open(path, openDirFlags)
  } catch (error) {
    return openDirFailed(path, error, modes)
  }
  try {
    checkDir(path, await handle.stat(), modes)
    return handle
  } catch (error) {
    await handle.close()
    throw error
  }
}

/** Pins the base directory (following links: it is the path the user gave) and reads its rules. */
export async function pinBase(base: string): Promise<{path: string; modes: Modes}> {
  const handle = await open(base, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NONBLOCK)
  try {
    const modes = baseModes(base, await handle.stat(), process.geteuid?.() ?? 0)
    return {path: await pin(handle, base), modes}
  } catch (error) {
    await handle.close()
    throw error
  }
}

/**
 * For readers (status): the directory at `path` (a name below a pinned directory), pinned and
 * checked, or undefined when there is none. A symlink there is refused, not followed. The caller
 * unpins it when done.
 */
export async function existingDir(path: string, modes: Modes): Promise<string | undefined> {
  const handle = await openDir(path, modes)
  return handle && pin(handle, shown(path))
}

/**
 * existingDir() for a reader that goes through many directories (status over thousands of keys,
 * where the thread pool's hand-offs cost more than the system calls themselves): calls `use` with
 * the directory, checked and pinned as existingDir() does, all synchronously, and closes it after.
 * Undefined when there is none.
 */
export function inExistingDirSync<T>(path: string, modes: Modes, use: (dir: string) => T): T | undefined {
  let fd: number
  try {
    fd = openSync(path, openDirFlags)
  } catch (error) {
    return openDirFailed(path, error, modes)
  }
  try {
    checkDir(path, fstatSync(fd), modes)
    if (!viaProc) return use(path)
    showPathAs(`/proc/self/fd/${fd}`, shown(path))
    return use(`/proc/self/fd/${fd}`)
  } finally {
    closeSync(fd)
  }
}

/** existingDir() down several levels from a pinned directory; the levels between are closed again. */
export async function existingPath(from: string, parts: string[], modes: Modes): Promise<string | undefined> {
  let path: string | undefined = from
  for (const part of parts) {
    const next: string | undefined = await existingDir(join(path, part), modes)
    if (path !== from) await unpin(path)
    path = next
    if (path === undefined) return undefined
  }
  return path
}

/** A new directory at `path` (below a pinned one) with the tree's mode, pinned; EEXIST if there. */
export async function makeDir(path: string, modes: Modes): Promise<string> {
  await mkdir(path, {mode: modes.dir})
  const handle = await openDir(path, modes)
  if (!handle) throw unsafePath(path, 'it vanished while dlq made it')
  // mkdir's mode passed through the umask; a group's directory needs the group's bits whatever it is.
  if (modes.shared) await handle.chmod(modes.dir).catch(() => {})
  return pin(handle, shown(path))
}

/** Unpinned join → pinned path, for safeDir's directories (open for the process's life). */
const known = new Map<string, string>()

/**
 * mkdir -p of `parts` below `base`: each level created or found, checked and pinned for the
 * process's life. `base` must be such a pin too (pinBase's or safeDir's), never one that is
 * unpinned later: its fd number could then be reused under the same cached path.
 */
export async function safeDir(base: string, parts: string[], modes: Modes, realName?: string): Promise<string> {
  let path = base
  for (const part of parts) {
    const next = join(path, part)
    const ready = known.get(next)
    if (ready) {
      path = ready
      continue
    }
    let dir: string | undefined
    try {
      dir = await makeDir(next, modes)
      if (realName !== undefined && part === parts.at(-1) && hashed.test(part)) await writeNewFile(join(dir, 'name'), realName, modes)
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
    }
    dir ??= await existingDir(next, modes)
    if (dir === undefined) throw unsafePath(next, 'it vanished while dlq made it')
    known.set(next, dir)
    path = dir
  }
  return path
}

/**
 * safeDir() for a directory that must already exist: the same pins and checks, but nothing is
 * created; undefined when some level is missing (a queue nobody pushed to).
 */
export async function knownDir(base: string, parts: string[], modes: Modes): Promise<string | undefined> {
  let path = base
  for (const part of parts) {
    const next = join(path, part)
    let dir = known.get(next)
    if (dir === undefined) {
      dir = await existingDir(next, modes)
      if (dir === undefined) return undefined
      known.set(next, dir)
    }
    path = dir
  }
  return path
}

/**
 * Forgets the directories known below `path` (a queue's, after a delete renamed it away), so that
 * the next safeDir() or knownDir() looks again. Their pins stay open: another part of the process
 * may still hold their paths, and a closed fd number could be reused under the same path.
 */
export function forgetDirs(path: string): void {
  for (const next of known.keys()) if (next === path || next.startsWith(`${path}/`)) known.delete(next)
}

// ── Files ──────────────────────────────────────────────────────────────────────────────────────

/** Creates `path` (never through a link, never over anything) with the tree's file mode. */
export async function openNewFile(path: string, modes: Modes): Promise<FileHandle> {
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, modes.file)
  if (modes.shared) await handle.chmod(modes.file).catch(() => {})
  return handle
}

export async function writeNewFile(path: string, data: string | Buffer, modes: Modes): Promise<void> {
  const handle = await openNewFile(path, modes)
  try {
    await handle.writeFile(data)
  } finally {
    await handle.close()
  }
}

const readFileFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK
const openFileFailed = (path: string, error: unknown) => errorCode(error) === 'ELOOP' ? unsafePath(path, 'it is a symbolic link') : error

function checkRegularFile(path: string, info: Stats, maxBytes?: number): void {
  if (!info.isFile()) throw unsafePath(path, 'it is not a regular file')
  if (maxBytes !== undefined && info.size > maxBytes) throw unsafePath(path, `it is larger than ${maxBytes} bytes`)
}

/** A regular file's content, read without following a link; at most `maxBytes` when given. */
export async function readRegularFile(path: string, maxBytes?: number): Promise<Buffer> {
  let handle: FileHandle
  try {
    handle = await open(path, readFileFlags)
  } catch (error) {
    throw openFileFailed(path, error)
  }
  try {
    checkRegularFile(path, await handle.stat(), maxBytes)
    return await handle.readFile()
  } finally {
    await handle.close()
  }
}

/** readRegularFile() with synchronous calls, for inExistingDirSync()'s readers. */
export function readRegularFileSync(path: string, maxBytes?: number): Buffer {
  let fd: number
  try {
    fd = openSync(path, readFileFlags)
  } catch (error) {
    throw openFileFailed(path, error)
  }
  try {
    checkRegularFile(path, fstatSync(fd), maxBytes)
    return readFileSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * The name a component of `dir` (pinned) stands for; undefined when it cannot be told (a hashed
 * name whose `name` file is missing, or does not encode back to the component). Synchronous: status
 * listings call it for every entry.
 */
export function decodeName(dir: string, component: string, modes: Modes): string | undefined {
  if (!hashed.test(component)) return percentEncode(percentDecode(component)) === component ? percentDecode(component) : undefined
  return inExistingDirSync(join(dir, component), modes, (sub) => {
    try {
      const name = readRegularFileSync(join(sub, 'name'), 1024).toString('utf8')
      return encodeName(name) === component ? name : undefined
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined
      throw error
    }
  })
}
