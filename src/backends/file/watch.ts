// The file backend's wait: try, and between tries sleep until the directory changes (inotify via
// fs.watch), the attempt's own next time (an expiry, a claim deadline), or the slow fallback poll
// that only NFS needs (another machine's changes raise no local event).
import {watch, type FSWatcher} from 'node:fs'

import {Wakeup} from '../wakeup.js'

const fallbackPollMs = 1000

export interface Attempt<T> {
  done: boolean
  value: T
  /** When to try again at the latest (ms since the epoch); Infinity for "on a change only". */
  next: number
}

/**
 * Runs `attempt` until it is done or `deadline` passes; resolves with its value, or `timedOut`.
 * `wakesOn`: the names in `dir` whose changes wake the wait (default: every change; a name the
 * platform does not report wakes it too).
 */
export async function waitFor<T>(dir: string, signal: AbortSignal, deadline: number, attempt: () => Promise<Attempt<T>>, timedOut: T, wakesOn?: (name: string | null) => boolean): Promise<T> {
  let watcher: FSWatcher | undefined
  const wakeup = new Wakeup(signal)
  try {
    for (;;) {
      signal.throwIfAborted()
      wakeup.changed = false
      const result = await attempt()
      if (result.done) return result.value
      const now = Date.now()
      if (now >= deadline) return timedOut
      if (!watcher) {
        try {
          watcher = watch(dir, {persistent: false}, wakesOn ? (_event, name) => wakesOn(name) && wakeup.wake() : wakeup.wake)
          watcher.on('error', () => {})
        } catch {
          // inotify exhausted or unsupported: the timers still work
        }
        continue // try again now that the watch is armed, so no change slips in between
      }
      if (wakeup.changed) continue
      await wakeup.sleep(Math.max(1, Math.min(deadline - now, result.next - now + 1, fallbackPollMs)))
    }
  } finally {
    watcher?.close()
    wakeup.dispose()
  }
}
