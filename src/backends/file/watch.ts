// The file backend's wait: try, and between tries sleep until the directory changes (inotify via
// fs.watch), the attempt's own next time (an expiry, a claim deadline), or the fallback poll that
// only NFS needs (another machine's changes raise no local event).
import {watch, type FSWatcher} from 'node:fs'
import {statfs} from 'node:fs/promises'

import {Wakeup} from '../wakeup.js'

/**
 * Filesystems (statfs f_type) whose every change is made by this machine's kernel, so inotify
 * reports it: ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, ZFS, F2FS, ramfs. There the poll is only
 * insurance (an inotify queue that overflowed) and runs every 5 s; anywhere else (NFS, SMB, FUSE,
 * 9p, cluster filesystems, or a type not known here) every second. Fifty waiters polling every
 * second were fifty reads a second beside the hand-offs they wait for.
 */
const localTypes = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630, 0x2fc12fc1, 0xf2f52010, 0x858458f6])
const localPollMs = 5000
const otherPollMs = 1000

async function fallbackPollMs(dir: string): Promise<number> {
  try {
    return localTypes.has((await statfs(dir)).type) ? localPollMs : otherPollMs
  } catch {
    return otherPollMs
  }
}

export interface Attempt<T> {
  done: boolean
  value: T
  /** When to try again at the latest (ms since the epoch); Infinity for "on a change only". */
  next: number
}

/** What a wait watches: a directory (default: any change wakes it) or a file of its own. */
export interface Watched {
  path: string
  /** The names in `path` whose changes wake the wait (default: every change; a name the platform does not report wakes it too). */
  wakesOn?: (name: string | null) => boolean
}

/**
 * Runs `attempt` until it is done or `deadline` passes; resolves with its value, or `timedOut`.
 * `watched`, asked after every attempt, says what to watch (default: every change in `dir`); when
 * it names something else than the watch armed, the wait moves its watch there and tries again at
 * once, so that no change slips in between.
 */
export async function waitFor<T>(dir: string, signal: AbortSignal, deadline: number, attempt: () => Promise<Attempt<T>>, timedOut: T, watched: () => Watched | Promise<Watched> = () => ({path: dir})): Promise<T> {
  let watcher: FSWatcher | undefined
  let armed: string | undefined // the path watched; set once the watch is armed (or could not be)
  let pollMs: number | undefined
  const wakeup = new Wakeup(signal)
  try {
    for (;;) {
      signal.throwIfAborted()
      wakeup.changed = false
      const result = await attempt()
      if (result.done) return result.value
      const now = Date.now()
      if (now >= deadline) return timedOut
      const target = await watched()
      if (armed !== target.path) {
        pollMs ??= await fallbackPollMs(dir)
        watcher?.close()
        watcher = undefined
        armed = target.path
        try {
          const {wakesOn} = target
          watcher = watch(target.path, {persistent: false}, (event, name) => {
            // A watched file that is removed or replaced ends its watch: arm a new one.
            if (target.path !== dir && event === 'rename') armed = undefined
            if (!wakesOn || wakesOn(name)) wakeup.wake()
          })
          watcher.on('error', () => {
            armed = undefined
            wakeup.wake()
          })
        } catch {
          // inotify exhausted or unsupported: the timers and the poll (every second) still work.
          // (Before, a watch that could not be made was tried again at once, attempt after attempt.)
          pollMs = otherPollMs
        }
        continue // try again now that the watch is armed, so no change slips in between
      }
      if (wakeup.changed) continue
      await wakeup.sleep(Math.max(1, Math.min(deadline - now, result.next - now + 1, pollMs!)))
    }
  } finally {
    watcher?.close()
    wakeup.dispose()
  }
}
