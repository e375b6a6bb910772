// The watchdog of a supervised command (`lock run`'s command, a `pop --exec` handler). It
// guarantees: whether dlq is alive, dead (kill -9) or stopped (SIGSTOP, a suspended job), every
// process of the command is stopped, SIGKILL included, no later than the lease's end, however long
// the kill grace; and the processes it signals are all of the command's and nothing else.
//
// The command runs in dlq's own process group and session (so it keeps the terminal: /dev/tty,
// Ctrl-C, Ctrl-Z and fg work as under flock), so a process group can no longer name "the command
// and everything it started". The watchdog finds them instead as: the command's pid (checked by
// its start time against reuse), every process whose environment carries the command's mark
// (DLQ_LOCK_OWNER=…, inherited by whatever the command starts, even re-parented orphans and
// processes in sessions of their own), and their descendants (for children that cleared their
// environment: env -i, sudo). Before each look it freezes (SIGSTOP) the processes it knows already
// (by pid and start time: the command from the start), so that none exits or forks meanwhile: a
// child that cleared its environment is found through its parent, which must still be there. Then
// it sends SIGTERM and SIGCONT, or SIGKILL, to all of them, and looks again for any it missed.
//
// It is a small /bin/sh loop in a session of its own (no Ctrl-C or Ctrl-Z for dlq's job reaches
// it), holding a pipe from dlq. Its clock is /proc/uptime; its state, the lines dlq writes:
//   lease T    the lease ends at T, ms on the clock of /proc/uptime (before the spawn, after each
//              renewal; absolute, so a watchdog slow to read it is not misled)
//   pid N      the command's pid
//   sig NAME   forward signal NAME to the command's processes: those it knows (the command)
//              at once, then the others a look at /proc finds (a look costs 0.4 s at load 20)
//   stop MS    dlq lost the lock: SIGTERM (and SIGCONT) now, SIGKILL after MS, report "gone"
//   ok         the command has exited: end the watch
// and what it reports back on its stdout:
//   stopping   dlq was stopped as the lease ran out, and the watchdog stopped the command itself
//   gone       after a stop, none of the command's processes is left (or they were SIGKILLed)
// When the lease runs out with no newer "lease" line, the watchdog looks at dlq: stopped (state T)
// "lead" ms before the end, it sends SIGTERM and SIGCONT then, and SIGKILL at the end; a running
// dlq handles its own lost lock. End of file means dlq died: SIGTERM at once, SIGKILL after the
// grace or at the lease's end, whichever is first. Once the watchdog has begun to stop the command
// no later line can call it off: its timer ignores SIGTERM from that point on (a timer that could
// be cancelled half-way would leave a command that was sent SIGTERM, ignored it, and was never
// sent SIGKILL).
import {spawn, type ChildProcess} from 'node:child_process'
import {readFileSync} from 'node:fs'

export const watchdogScript = `
trap '' PIPE
mark=$1 grace=$2 lead=$3 dlq=$PPID
pid= start= t= killat= stopping= known= cost=50 proc=
[ -r /proc/uptime ] && [ -r /proc/self/stat ] && proc=1
clock() {
  if [ -z "$proc" ]; then ms=$((($(date +%s) + 1) * 1000)); return; fi
  read -r up _ < /proc/uptime; up=\${up%.*}\${up#*.}; up=\${up#"\${up%%[!0]*}"}; ms=$((\${up:-0} * 10))
}
secs() { s=$(($1 % 1000 + 1000)); s=$(($1 / 1000)).\${s#1}; }
members() {
  if [ -z "$proc" ]; then
    ps -A -o pid= -o ppid= -o stat= 2>/dev/null | awk -v self=$$ -v dlq="$dlq" -v cmd="$pid" '
      { parent[$1] = $2; state[$1] = substr($3, 1, 1) }
      END {
        if (cmd in parent) seed[cmd] = 1
        do { more = 0; for (p in parent) if (!(p in seed) && (parent[p] in seed)) { seed[p] = 1; more = 1 } } while (more)
        for (p in seed) if (p != self && p != dlq && state[p] != "Z") print p ":-"
      }'
    return
  fi
  grep -lszxF -- "$mark" /proc/[0-9]*/environ | awk -v self=$$ -v dlq="$dlq" -v cmd="$pid" -v cmdstart="$start" '
    BEGIN {
      while ((getline line < "-") > 0) { split(line, path, "/"); seed[path[3]] = 1 }
      for (i = 1; i < ARGC; i++) {
        file = ARGV[i] "stat"; stat = ""
        while ((getline line < file) > 0) stat = stat line "\\n"
        close(file)
        pos = 0; rest = stat
        while ((j = index(rest, ") ")) > 0) { pos += j + 1; rest = substr(rest, j + 2) }
        if (!pos) continue
        split(rest, f, " "); p = substr(ARGV[i], 7); sub(/\\/$/, "", p)
        parent[p] = f[2]; state[p] = f[1]; started[p] = f[20]
      }
      if (cmd != "" && (cmd in started) && started[cmd] == cmdstart) seed[cmd] = 1
      do { more = 0; for (p in parent) if (!(p in seed) && (parent[p] in seed)) { seed[p] = 1; more = 1 } } while (more)
      for (p in seed) if ((p in state) && p != self && p != dlq && state[p] != "Z" && state[p] != "X") print p ":" started[p]
    }' /proc/[0-9]*/
}
pids() { r=; for e in $1; do r="$r \${e%%:*}"; done; }
current() {
  cur=
  for e in $known; do
    if [ -z "$proc" ]; then kill -0 \${e%%:*} && cur="$cur \${e%%:*}"; continue; fi
    read -r l < /proc/\${e%%:*}/stat || continue
    set -- \${l##*) }
    [ "$1" != Z ] && [ "\${20}" = "\${e#*:}" ] && cur="$cur \${e%%:*}"
  done 2>/dev/null
}
signal() {
  current; sent=$cur; [ -n "$cur" ] && kill -"$1" $cur 2>/dev/null
  pids "$(members)"; s=
  for p in $r; do case " $sent " in *" $p "*) ;; *) s="$s $p" ;; esac; done
  [ -n "$s" ] && kill -"$1" $s 2>/dev/null
}
term() {
  current; [ -n "$cur" ] && kill -STOP $cur 2>/dev/null
  clock; a=$ms; found=$(members); clock; cost=$((ms - a))
  pids "$found"; [ -n "$cur$r" ] && { kill -TERM $cur $r; kill -CONT $cur $r; } 2>/dev/null
  known="$known $found"
}
finish() {
  current; frozen=$cur; [ -n "$cur" ] && kill -STOP $cur 2>/dev/null
  n=0
  while [ $n -lt 5 ]; do
    pids "$(members)"; new=
    for p in $r; do case " $frozen " in *" $p "*) ;; *) new="$new $p" ;; esac; done
    [ -z "$new" ] && break
    kill -STOP $new; frozen="$frozen $new"; n=$((n + 1))
  done 2>/dev/null
  [ -n "$frozen" ] && kill -KILL $frozen 2>/dev/null
}
wait_gone() {
  clock; end=$((ms + $1)); [ "$2" = hard ] && end=$((end - 2 * cost))
  while :; do
    while current; [ -n "$cur" ]; do
      clock; w=$((end - ms)); [ $w -le 0 ] && return 1
      [ $w -gt 50 ] && w=50
      secs $w; sleep $s
    done
    known=$(members); [ -z "$known" ] && return 0
  done
}
dlq_stopped() {
  if [ -z "$proc" ]; then set -- $(ps -o stat= -p "$dlq" 2>/dev/null); case $1 in T*) return 0 ;; esac; return 1; fi
  read -r l < /proc/$dlq/stat || return 1
  set -- \${l##*) }
  [ "$1" = T ] || [ "$1" = t ]
}
arm() {
  [ -n "$t" ] && kill "$t" 2>/dev/null
  clock; killat=$((ms + $1))
  (
    z=; trap 'kill "$z" 2>/dev/null; exit 0' TERM
    w=$(($1 - lead)); [ $w -gt 0 ] && { secs $w; sleep $s & z=$!; wait "$z"; }
    if dlq_stopped; then
      trap '' TERM
      echo stopping; term
      clock; wait_gone $((killat - ms)) hard || finish
      echo gone; exit 0
    fi
    clock; w=$((killat - 2 * cost - ms)); [ $w -gt 0 ] && { secs $w; sleep $s & z=$!; wait "$z"; }
    if dlq_stopped; then trap '' TERM; echo stopping; finish; echo gone; fi
  ) 2>/dev/null &
  t=$!
}
while read -r word arg; do
  case $word in
    lease) [ -z "$stopping" ] && { clock; arm $((arg - ms)); } ;;
    pid) pid=$arg; start=-
      if [ -n "$proc" ]; then start=; read -r l < /proc/$pid/stat && { set -- \${l##*) }; start=\${20}; }; fi
      [ -n "$start" ] && known="$pid:$start" ;;
    sig) signal "$arg" ;;
    stop) [ -n "$t" ] && kill "$t" 2>/dev/null; t= stopping=1
      term; ( wait_gone "$arg" || finish; echo gone ) & ;;
    ok) [ -n "$t" ] && kill "$t" 2>/dev/null; exit 0 ;;
  esac
done 2>/dev/null
[ -n "$t" ] && kill "$t" 2>/dev/null
[ -n "$stopping" ] && { finish; exit 0; }
term
clock; g=$grace h=
[ -n "$killat" ] && [ $((killat - ms)) -lt $g ] && g=$((killat - ms)) h=hard
wait_gone $g $h || finish
`

/**
 * The watchdog's clock: ms since boot as /proc/uptime says (10 ms steps), or without /proc
 * (macOS), the epoch as `date +%s` says (1 s steps).
 */
function uptimeMs(): number {
  try {
    return Math.round(Number(readFileSync('/proc/uptime', 'latin1').split(' ')[0]) * 1000)
  } catch {
    return Date.now()
  }
}

// A "forever" kill grace, as the shell's integers take it (a year).
const maxMs = 365 * 86_400_000

/**
 * How long before the lease's end a stopped dlq's watchdog sends SIGTERM (SIGKILL comes at the
 * end): the kill grace, but no more than a third of the TTL. A running dlq renews every ttl/3,
 * so it has sent a newer lease line by then; the look at dlq must come late enough to catch it stopped.
 */
export const termLead = (ttlMs: number, killGraceMs: number) => Math.min(killGraceMs, Math.floor(ttlMs / 3))

/**
 * How long before the backend's deadline (a lease's expiry, a message's redelivery) the watchdog
 * must be done: 1% of the TTL + 10 ms for clock drift (as Redlock allows), and a scheduling
 * allowance of a tenth of the TTL, at most 250 ms, for a shell that must still look at /proc and
 * send SIGKILL on a loaded machine (30 ms, a 2 s TTL's drift margin alone, was once too little).
 */
export const deadlineMarginMs = (ttlMs: number) => ttlMs / 100 + 10 + Math.min(250, ttlMs / 10)

export interface WatchdogOptions {
  /** NAME=VALUE in the environment of the command (and so of everything it starts). */
  mark: string
  /** After SIGTERM, how long until SIGKILL when dlq has died (never past the lease's end). */
  graceMs: number
  /** When dlq is stopped: how long before the lease's end SIGTERM comes (SIGKILL at the end). */
  leadMs: number
  /** The watchdog stopped the command because dlq had been stopped as the lease ran out. */
  onStopping?: () => void
}

/** dlq's side of the watchdog's pipe. Every method is a no-op when the watchdog could not start. */
export class Watchdog {
  private readonly child?: ChildProcess
  private reportGone?: () => void
  /** Resolves once the watchdog reports that a stop is complete (or it has exited). */
  readonly gone = new Promise<void>((resolve) => {
    this.reportGone = resolve
  })

  /** Called when the watchdog stopped the command itself (dlq was stopped as the lease ran out). */
  onStopping?: () => void

  constructor(options: WatchdogOptions) {
    this.onStopping = options.onStopping
    const ms = (value: number) => String(Math.max(0, Math.round(Math.min(value, maxMs))))
    try {
      // The script comes through the environment, so that ps shows `sh -c eval… dlq-watchdog MARK…`.
      this.child = spawn('/bin/sh', ['-c', 'eval "$DLQ_WATCHDOG"', 'dlq-watchdog', options.mark, ms(options.graceMs), ms(options.leadMs)], {
        stdio: ['pipe', 'pipe', 'ignore'],
        detached: true, // its own session: neither a Ctrl-C, a Ctrl-Z nor a SIGSTOP for dlq's job reaches it
        env: {PATH: `${process.env.PATH ?? ''}:/usr/bin:/bin`, LC_ALL: 'C', DLQ_WATCHDOG: watchdogScript}, // none of dlq's secrets
      })
    } catch {
      return
    }
    const child = this.child
    child.on('error', () => this.reportGone?.())
    child.on('exit', () => this.reportGone?.())
    child.stdin?.on('error', () => {})
    let partial = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('latin1')).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (line === 'stopping') this.onStopping?.()
        else if (line === 'gone') this.reportGone?.()
      }
    })
    // Neither the watchdog nor its pipes keep dlq running: dlq ends by process.exit.
    child.unref()
    for (const stream of [child.stdin, child.stdout]) (stream as unknown as {unref?: () => void})?.unref?.()
  }

  get running(): boolean {
    return this.child?.pid !== undefined && this.child.stdin?.writable === true
  }

  private tell(line: string): boolean {
    if (!this.running) return false
    this.child?.stdin?.write(`${line}\n`)
    return true
  }

  /** The lease ends `msLeft` from now. */
  lease(msLeft: number): void {
    this.tell(`lease ${uptimeMs() + Math.max(0, Math.floor(msLeft))}`)
  }

  command(pid: number): void {
    this.tell(`pid ${pid}`)
  }

  /** Sends `signal` to every process of the command; false when there is no watchdog to do it. */
  signal(signal: NodeJS.Signals): boolean {
    return this.tell(`sig ${signal.replace(/^SIG/, '')}`)
  }

  /**
   * SIGTERM (and SIGCONT) to every process of the command now, SIGKILL after `graceMs`; `gone`
   * resolves once none is left. False when there is no watchdog to do it.
   */
  stop(graceMs: number): boolean {
    return this.tell(`stop ${Math.max(0, Math.round(Math.min(graceMs, maxMs)))}`)
  }

  /** The command has exited: the watch ends. */
  end(): void {
    this.tell('ok')
    this.child?.stdin?.end()
  }
}
