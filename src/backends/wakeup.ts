// The sleep every driver's wait loop needs: cut short by the backend's own wake-up (a watch event,
// a published release, a NOTIFY) or by an abort, and otherwise bounded by the caller's timer.

export class Wakeup {
  /** Set by wake(); the loop clears it before each attempt, so a wake-up during one is not lost. */
  changed = false
  private pending?: () => void

  constructor(private readonly signal: AbortSignal) {
    signal.addEventListener('abort', this.interrupt)
  }

  /** For the backend's notification: something changed, try again now. */
  readonly wake = () => {
    this.changed = true
    this.pending?.()
  }

  private readonly interrupt = () => this.pending?.()

  sleep(ms: number): Promise<void> {
    if (this.signal.aborted) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      const self = this
      function done() {
        clearTimeout(timer)
        self.pending = undefined
        resolve()
      }
      this.pending = done
    })
  }

  dispose(): void {
    this.signal.removeEventListener('abort', this.interrupt)
  }
}
