// The watchdog of supervised commands (`lock run`'s command; every `pop --exec` handler of one
// worker). It guarantees, for each command it watches: whether dlq is alive, dead (kill -9) or
// stopped (SIGSTOP, a suspended job), every process of the command is stopped, SIGKILL included,
// no later than that command's lease's end, however long the kill grace; and the processes it
// signals for a command are all of that command's and nothing else.
//
// The command runs in dlq's own process group and session (so it keeps the terminal: /dev/tty,
// Ctrl-C, Ctrl-Z and fg work as under flock), so a process group can no longer name "the command
// and everything it started". The watchdog finds them instead as: the command's pid (checked by
// its start time against reuse), every process whose environment carries the command's mark
// (DLQ_LOCK_OWNER=…, DLQ_HANDLER_ID=…, inherited by whatever the command starts, even re-parented
// orphans and processes in sessions of their own), and their descendants (for children that
// cleared their environment: env -i, sudo). Before each look it freezes (SIGSTOP) the processes it
// knows already (by pid and start time: the command from the start), so that none exits or forks
// meanwhile: a child that cleared its environment is found through its parent, which must still be
// there. Then it sends SIGTERM and SIGCONT, or SIGKILL, to all of them, and looks again for any it
// missed.
//
// It is one small /bin/sh loop per dlq process (a worker's handlers share it: a fork per message,
// of dlq and of the shell's timer, once cost a 2-core machine more than the handlers themselves),
// in a session of its own (no Ctrl-C or Ctrl-Z for dlq's job reaches it), holding a pipe from dlq.
// Its clock is /proc/uptime; its state, the lines dlq writes, each naming a command by a number ID:
//   watch ID MARK  watch a command whose environment will carry MARK (NAME=VALUE), before its spawn
//   lease ID T     its lease ends at T, ms on the clock of /proc/uptime (before the spawn, after each
//                  renewal; absolute, so a watchdog slow to read it is not misled)
//   pid ID N       the command's pid
//   sig ID NAME    forward signal NAME to the command's processes: those it knows (the command)
//                  at once, then the others a look at /proc finds (a look costs 0.4 s at load 20)
//   stop ID MS     dlq lost the lock: SIGTERM (and SIGCONT) now, SIGKILL after MS, report "gone ID"
//   ok ID          the command has exited: its watch ends
// and what it reports back on its stdout:
//   stopping ID    dlq was stopped as the lease ran out, and the watchdog stopped the command itself
//   gone ID        after a stop, none of the command's processes is left (or they were SIGKILLed)
// When a command's lease runs out with no newer "lease" line, the watchdog looks at dlq: stopped
// (state T) "lead" ms before the end, it sends SIGTERM and SIGCONT then, and SIGKILL at the end; a
// running dlq handles its own lost lease. End of file means dlq died: SIGTERM at once to every
// command still watched, SIGKILL after the grace or at the earliest of their leases' ends,
// whichever is first. Commands stopped together are looked for together (one pass over /proc
// for all their marks: four handlers' looks side by side once took a loaded machine past their
// leases' end), and so are those whose looks come due within 100 ms of each other. Once
// the watchdog has begun to stop a command no later line can call it off: that stop runs in a
// subshell of its own that nothing signals (a stop that could be cancelled half-way would leave a
// command that was sent SIGTERM, ignored it, and was never sent SIGKILL).
//
// The loop itself keeps the time: it wakes at the earliest look due (one per command: its lease's
// end less the lead, then its end less twice what a look at /proc costs) without a fork per lease
// line. Where `read` takes a timeout (bash, ksh, zsh, busybox: `read -t`, fractions of a second
// from bash 4 on), that is its clock. dash (Debian's /bin/sh) has none, but a trapped signal ends
// its `read`: a single timer subshell sleeps until the earliest look and then sends SIGALRM every
// 50 ms until the loop has woken (a signal that came just before `read` began would otherwise be
// lost). The timer is forked again only when a look comes due, or a new one is earlier than the
// one it sleeps for (leases grow later, so that is rare): not per message, not per renewal.
import {spawn, type ChildProcess} from 'node:child_process'
import {readFileSync} from 'node:fs'

export const watchdogScript = `
trap '' PIPE
grace=$1 lead=$2 dlq=$PPID main=$$
ids= marks= cmds= killat= known= cost=50 proc= timed= t= tat= woke= partial= next=
[ -r /proc/uptime ] && [ -r /proc/self/stat ] && proc=1
read -r -t 0.01 _ < /dev/null 2>/dev/null
case $? in
  1) timed=fraction ;;
  *) read -r -t 1 _ < /dev/null 2>/dev/null; [ $? -eq 1 ] && timed=seconds ;;
esac
[ -z "$timed" ] && trap 'woke=1' ALRM
clock() {
  if [ -z "$proc" ]; then ms=$((($(date +%s) + 1) * 1000)); return; fi
  read -r up _ < /proc/uptime; up=\${up%.*}\${up#*.}; up=\${up#"\${up%%[!0]*}"}; ms=$((\${up:-0} * 10))
}
secs() { s=$(($1 % 1000 + 1000)); s=$(($1 / 1000)).\${s#1}; }
members() {
  if [ -z "$proc" ]; then
    ps -A -o pid= -o ppid= -o stat= 2>/dev/null | awk -v self=$$ -v dlq="$dlq" -v cmds="$cmds" '
      { parent[$1] = $2; state[$1] = substr($3, 1, 1) }
      END {
        n = split(cmds, c, " "); for (i = 1; i <= n; i++) { split(c[i], pc, ":"); if (pc[1] in parent) seed[pc[1]] = 1 }
        do { more = 0; for (p in parent) if (!(p in seed) && (parent[p] in seed)) { seed[p] = 1; more = 1 } } while (more)
        for (p in seed) if (p != self && p != dlq && state[p] != "Z") print p ":-"
      }'
    return
  fi
  set -- -e "$$ watches no mark"; for m in $marks; do set -- "$@" -e "$m"; done
  grep -lszxF "$@" /proc/[0-9]*/environ | awk -v self=$$ -v dlq="$dlq" -v cmds="$cmds" '
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
      n = split(cmds, c, " "); for (i = 1; i <= n; i++) { split(c[i], pc, ":"); if ((pc[1] in started) && started[pc[1]] == pc[2]) seed[pc[1]] = 1 }
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
use() {
  marks= cmds= known= killat=
  for i in $*; do
    eval "m=\\$m_$i p=\\$p_$i s=\\$s_$i n=\\$n_$i k=\\$k_$i"
    marks="$marks $m" known="$known $n"; [ -n "$p" ] && cmds="$cmds $p:$s"
    if [ -n "$k" ]; then [ -z "$killat" ] || [ "$k" -lt "$killat" ] && killat=$k; fi
  done
}
due() {
  next= stopped= first= last=; clock
  for i in $ids; do
    eval "c=\\$c_$i f=\\$f_$i"
    [ -z "$f" ] && continue
    if [ $((ms + 100)) -ge "$c" ]; then
      [ -z "$stopped" ] && { dlq_stopped && stopped=yes || stopped=no; }
      if [ $stopped = yes ]; then
        eval "f_$i= x_$i=wd"; echo "stopping $i"
        if [ "$f" = 1 ]; then first="$first $i"; else last="$last $i"; fi
        continue
      fi
      if [ "$f" != 1 ]; then eval "f_$i="; continue; fi
      eval "f_$i=2 c_$i=\\$((k_$i - 2 * cost)) c=\\$c_$i"
    fi
    if [ -z "$next" ] || [ "$c" -lt "$next" ]; then next=$c; fi
  done
  if [ -n "$first" ]; then ( use $first; term; clock; wait_gone $((killat - ms)) hard || finish; for i in $first; do echo "gone $i"; done ) & fi
  if [ -n "$last" ]; then ( use $last; finish; for i in $last; do echo "gone $i"; done ) & fi
}
arm() {
  if [ -n "$t" ]; then
    [ -z "$next" ] || [ "$tat" -le "$next" ] && return
    kill "$t" 2>/dev/null
  fi
  t=; [ -z "$next" ] && return
  clock; w=$((next - ms)); [ $w -lt 0 ] && w=0; tat=$next
  (
    z=; trap 'kill "$z" 2>/dev/null; exit 0' TERM
    secs $w; sleep $s & z=$!; wait "$z"
    while kill -ALRM $main; do sleep 0.05 & z=$!; wait "$z"; done
  ) 2>/dev/null &
  t=$!
}
line() {
  if [ -z "$timed" ]; then
    woke=; arm
    read -r l && return 0
    [ -n "$woke" ] || return 1
    clock; [ -n "$t" ] && [ "$ms" -ge "$tat" ] && { kill "$t" 2>/dev/null; t=; }
    l=; return 0
  fi
  if [ -z "$next" ]; then read -r l || return 1; l="$partial$l" partial=; return 0; fi
  clock; w=$((next - ms)); [ $w -lt 10 ] && w=10
  if [ "$timed" = seconds ]; then
    if [ $w -lt 1000 ]; then secs $w; sleep $s; l=; return 0; fi
    s=$((w / 1000))
  else
    secs $w
  fi
  read -r -t $s l; rc=$?
  if [ $rc -gt 128 ]; then partial="$partial$l" l=; return 0; fi
  l="$partial$l" partial=
  [ $rc -eq 0 ]
}
while :; do
  due
  line || break
  word=\${l%% *} l=\${l#* }; id=\${l%% *} arg=\${l#* }
  case $id in ''|*[!0-9]*) continue ;; esac
  case $word in
    watch) ids="$ids $id"; eval "m_$id=\\$arg p_$id= s_$id= n_$id= k_$id= c_$id= f_$id= x_$id=" ;;
    lease) eval "x=\\$x_$id"; [ -z "$x" ] && eval "k_$id=\\$arg c_$id=\\$((arg - lead)) f_$id=1" ;;
    pid) p=$arg s=-
      if [ -n "$proc" ]; then s=; read -r l < /proc/$p/stat && { set -- \${l##*) }; s=\${20}; }; fi
      [ -n "$s" ] && eval "p_$id=\\$p s_$id=\\$s n_$id=\\$p:\\$s" ;;
    sig) use "$id"; signal "$arg" ;;
    stop) use "$id"; eval "f_$id= x_$id=stop"
      term; eval "n_$id=\\$known"; ( wait_gone "$arg" || finish; echo "gone $id" ) & ;;
    ok) r=; for i in $ids; do [ "$i" != "$id" ] && r="$r $i"; done; ids=$r
      unset m_$id p_$id s_$id n_$id k_$id c_$id f_$id x_$id ;;
  esac
done 2>/dev/null
[ -n "$t" ] && kill "$t" 2>/dev/null
rest= stopping=
for i in $ids; do
  eval "x=\\$x_$i"
  case $x in wd) ;; stop) stopping="$stopping $i" ;; *) rest="$rest $i" ;; esac
done
[ -n "$rest" ] && { use $rest; term; }
for i in $stopping; do ( use $i; finish ) & done
if [ -n "$rest" ]; then
  clock; g=$grace h=
  [ -n "$killat" ] && [ $((killat - ms)) -lt $g ] && g=$((killat - ms)) h=hard
  wait_gone $g $h || finish
fi
wait
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

export interface WatchdogShellOptions {
  /** After SIGTERM, how long until SIGKILL when dlq has died (never past the lease's end). */
  graceMs: number
  /** When dlq is stopped: how long before the lease's end SIGTERM comes (SIGKILL at the end). */
  leadMs: number
  /** The shell to run the script with (tests run it under bash as well as /bin/sh). */
  shell?: string
}

export interface WatchdogOptions extends WatchdogShellOptions {
  /** NAME=VALUE in the environment of the command (and so of everything it starts). */
  mark: string
  /** The watchdog stopped the command because dlq had been stopped as the lease ran out. */
  onStopping?: () => void
}

const ms = (value: number) => String(Math.max(0, Math.round(Math.min(value, maxMs))))

/**
 * The watchdog's process: one shell that watches any number of commands (watch()), each by an ID
 * of its own. A worker keeps one for all its handlers; lock run has one for its command.
 */
export class WatchdogShell {
  private readonly child?: ChildProcess
  private readonly watched = new Map<number, Watchdog>()
  private lastId = 0
  private exited = false

  constructor(options: WatchdogShellOptions) {
    try {
      // The script comes through the environment, so that ps shows `sh -c eval… dlq-watchdog GRACE LEAD`.
      this.child = spawn(options.shell ?? '/bin/sh', ['-c', 'eval "$DLQ_WATCHDOG"', 'dlq-watchdog', ms(options.graceMs), ms(options.leadMs)], {
        stdio: ['pipe', 'pipe', 'ignore'],
        detached: true, // its own session: neither a Ctrl-C, a Ctrl-Z nor a SIGSTOP for dlq's job reaches it
        // None of dlq's secrets. SHLVL=1: a bash whose stdin is a socket (node's pipes are) takes
        // itself for one started by sshd and would run ~/.bashrc, unless it is a nested shell.
        env: {PATH: `${process.env.PATH ?? ''}:/usr/bin:/bin`, LC_ALL: 'C', SHLVL: '1', DLQ_WATCHDOG: watchdogScript},
      })
    } catch {
      return
    }
    const child = this.child
    const ended = () => {
      this.exited = true
      for (const watchdog of this.watched.values()) watchdog.reportGone()
    }
    child.on('error', ended)
    child.on('exit', ended)
    child.stdin?.on('error', () => {})
    let partial = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('latin1')).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        const [word, id] = line.split(' ')
        const watchdog = this.watched.get(Number(id))
        if (word === 'stopping') watchdog?.onStopping?.()
        else if (word === 'gone') watchdog?.reportGone()
      }
    })
    // Neither the watchdog nor its pipes keep dlq running: dlq ends by process.exit.
    child.unref()
    for (const stream of [child.stdin, child.stdout]) (stream as unknown as {unref?: () => void})?.unref?.()
  }

  get running(): boolean {
    return !this.exited && this.child?.pid !== undefined && this.child.stdin?.writable === true
  }

  /** Tells the shell `line`; false when there is no watchdog to hear it. */
  tell(line: string): boolean {
    if (!this.running) return false
    this.child?.stdin?.write(`${line}\n`)
    return true
  }

  /** Watches one more command, marked `mark` (NAME=VALUE) in its environment; tell it its lease before the spawn. */
  watch(mark: string, onStopping?: () => void): Watchdog {
    const id = ++this.lastId
    const watchdog = new Watchdog(this, id, onStopping)
    if (this.tell(`watch ${id} ${mark}`)) this.watched.set(id, watchdog)
    else watchdog.reportGone()
    return watchdog
  }

  /** The watch of `id` has ended. */
  forget(id: number): void {
    this.watched.delete(id)
  }

  /** No more commands to watch: the shell exits once it has read this (a stop under way finishes first). */
  close(): void {
    this.child?.stdin?.end()
  }
}

/** One command's watch. Every method is a no-op when the watchdog could not start. */
export class Watchdog {
  private resolveGone?: () => void
  /** Resolves once the watchdog reports that a stop is complete (or it has exited). */
  readonly gone = new Promise<void>((resolve) => {
    this.resolveGone = resolve
  })

  private closeShell = false

  /** A command with a watchdog shell of its own (lock run): the shell ends with the watch. */
  static alone(options: WatchdogOptions): Watchdog {
    const shell = new WatchdogShell(options)
    const watchdog = shell.watch(options.mark, options.onStopping)
    watchdog.closeShell = true
    return watchdog
  }

  constructor(
    private readonly shell: WatchdogShell,
    private readonly id: number,
    /** Called when the watchdog stopped the command itself (dlq was stopped as the lease ran out). */
    public onStopping?: () => void,
  ) {}

  /** @internal the shell's report "gone ID", or its exit. */
  reportGone(): void {
    this.resolveGone?.()
  }

  get running(): boolean {
    return this.shell.running
  }

  /** The lease ends `msLeft` from now. */
  lease(msLeft: number): void {
    this.shell.tell(`lease ${this.id} ${uptimeMs() + Math.max(0, Math.floor(msLeft))}`)
  }

  command(pid: number): void {
    this.shell.tell(`pid ${this.id} ${pid}`)
  }

  /** Sends `signal` to every process of the command; false when there is no watchdog to do it. */
  signal(signal: NodeJS.Signals): boolean {
    return this.shell.tell(`sig ${this.id} ${signal.replace(/^SIG/, '')}`)
  }

  /**
   * SIGTERM (and SIGCONT) to every process of the command now, SIGKILL after `graceMs`; `gone`
   * resolves once none is left. False when there is no watchdog to do it.
   */
  stop(graceMs: number): boolean {
    return this.shell.tell(`stop ${this.id} ${Math.max(0, Math.round(Math.min(graceMs, maxMs)))}`)
  }

  /** The command has exited: the watch ends. */
  end(): void {
    this.shell.tell(`ok ${this.id}`)
    this.shell.forget(this.id)
    if (this.closeShell) this.shell.close()
  }
}
