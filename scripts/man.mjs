// Generates the roff man pages in man/ from oclif.manifest.json (the same metadata `--help` prints),
// so that the pages cannot drift from the help:
//   node scripts/man.mjs           write man/dlq.1 and one man/dlq-<topic>-<command>.1 per command
//   node scripts/man.mjs --check   write nothing; exit 1 naming every page that differs from what
//                                  would be generated (stale, missing or no longer generated)
// The output depends only on oclif.manifest.json and package.json (no clock, no environment), so
// re-running it produces no diff. Run `npm run build` first if a command's metadata changed.
import {existsSync, mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync} from 'node:fs'

const root = new URL('..', import.meta.url)
const manDir = new URL('man/', root)
const check = process.argv.includes('--check')
const unknown = process.argv.slice(2).filter((arg) => arg !== '--check')
if (unknown.length > 0) {
  console.error(`usage: node scripts/man.mjs [--check] (unknown argument: ${unknown[0]})`)
  process.exit(64)
}

const manifestUrl = new URL('oclif.manifest.json', root)
if (!existsSync(manifestUrl)) {
  console.error('man: oclif.manifest.json is missing (run `npm run build` first)')
  process.exit(2)
}
const manifest = JSON.parse(readFileSync(manifestUrl, 'utf8'))
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'))
const bin = pkg.oclif?.bin ?? 'dlq'
const footer = `${bin} ${pkg.version}`
const manual = `${bin} manual`

// ---------------------------------------------------------------------------------------------
// Static text that is not command metadata: the product contract (SPEC.md §1, §2, §3, §4).

const exitStatus = [
  ['0', 'Success (for lock run: the exit code of the command). Also a queue pop that wrote messages before its backend failed: what it wrote is delivered, and a line on stderr says how many and what failed.'],
  ['64', 'Usage error: bad flag, bad duration, bad URL, bad key or queue name.'],
  ['65', 'Bad data: a message too large, input not valid for the chosen framing.'],
  ['69', 'Backend unavailable: cannot connect, authentication refused, timed out; a server that refused (a Redis replica or demoted master: READONLY, LOADING, maxclients reached, cluster down, redirected too often); the connection lost under a command; no new master within ?failoverTimeout= behind Sentinel; a file: directory another user owns or may write.'],
  ['70', 'The lock was lost while the command ran; the command was stopped.'],
  ['74', 'stdout could not be written (a full disk, an I/O error). What was done still holds: pushed messages stay pushed, queue pop leaves the messages it could not write in the queue, lock acquire releases the lease whose token it could not print.'],
  ['75', 'Not now: lock not acquired within --wait, or queue empty within --wait (for locks, override with --conflict-exit-code).'],
  ['126, 127', 'The command (lock run) or handler (queue pop --exec) could not be executed / was not found. A worker stops at once, leaving the message in the queue as it was (its attempt not counted).'],
  ['128+N', 'The command died of signal N (also when a signal N cancels a wait).'],
  ['141', 'stdout was closed early (SIGPIPE, | head -1), quietly as Unix tools do: queue pop leaves the messages it could not write in the queue, lock acquire releases the lease whose token nobody read.'],
]

const environment = [
  ['DLQ_BACKEND', 'Backend URL used when --backend is not given.'],
  ['DLQ_PASSWORD', 'Password for the backend, so that it stays out of the URL, the shell history and ps(1). It is dlq\'s own: the command of lock run, the handlers of queue pop --exec and the watchdog do not inherit it (a command that runs dlq itself can use ?passwordFile=). A password is never printed: URLs in output, errors and --verbose logs are masked up to the last @ of their user info.'],
  ['XDG_STATE_HOME', `The default backend is the directory $XDG_STATE_HOME/${bin} (when XDG_STATE_HOME is an absolute path), else ~/.local/state/${bin}.`],
  ['NO_COLOR', 'If set to a non-empty value, no colours (like --no-color).'],
]

// Variables that dlq sets for the command it runs.
const childEnvironment = {
  'lock:run': {
    title: 'Set for COMMAND',
    inherits: 'COMMAND inherits dlq\'s environment (DLQ_BACKEND, PATH, PGPASSWORD and the rest) except DLQ_PASSWORD, with these added:',
    vars: [
      ['DLQ_LOCK_KEY', 'The lock key.'],
      ['DLQ_LOCK_OWNER', "The unique id of this holding of the lock: its token, as lock status shows it (token in JSON). Everything COMMAND starts inherits it, and dlq's watchdog finds COMMAND's processes by it (and as COMMAND's descendants): a process that drops it from its environment once its parent has exited is out of the watchdog's reach."],
      ['DLQ_FENCING_TOKEN', 'An integer that strictly increases with every successful acquisition of the key on that backend, so that a downstream system can refuse writes from a stale holder.'],
    ],
  },
  'queue:pop': {
    title: 'Set for COMMAND with --exec',
    inherits: 'COMMAND inherits dlq\'s environment (DLQ_BACKEND, PATH, PGPASSWORD and the rest) except DLQ_PASSWORD, with these added:',
    vars: [
      ['DLQ_MESSAGE_ID', 'The id of the message on stdin.'],
      ['DLQ_MESSAGE_ATTEMPT', 'Which delivery of the message this is (1 for the first).'],
      ['DLQ_QUEUE', 'The queue the message was taken from.'],
      ['DLQ_HANDLER_ID', "The unique id of this run of COMMAND, by which the worker's watchdog finds its processes."],
    ],
  },
}

// What --json prints, per command (SPEC §5: stable, documented fields). Each entry is running text
// and the shape as a literal block. The words are the same everywhere: `token` is what --token
// takes (the holding's owner id, also given as `owner`: DLQ_LOCK_OWNER), `fencingToken` the integer
// DLQ_FENCING_TOKEN carries.
const holdingShape = '{"key": KEY, "token": TOKEN, "owner": TOKEN, "fencingToken": INTEGER, "expiresAt": ISO-8601}'
const messageShape = '{"id": ID, "body": TEXT, "enqueuedAt": ISO-8601, "attempts": N}'
const binaryMessage = ['A message whose body is not valid UTF-8 has bodyBase64 instead of body:', '{"id": ID, "bodyBase64": BASE64, "enqueuedAt": ISO-8601, "attempts": N}']
const jsonOutput = {
  'lock:acquire': [
    ['On stdout, one object: token is what lock renew and lock release take with --token; fencingToken is the integer a lock run under this holding would see as DLQ_FENCING_TOKEN; expiresAt is when the lease ends unless renewed.', holdingShape],
  ],
  'lock:renew': [['On stdout, the holding with its new expiry, as lock acquire prints it.', holdingShape]],
  'lock:release': [['On stdout: how many holds of KEY were released (1 with --token; any number with --force).', '{"key": KEY, "released": N}']],
  'lock:status': [
    ['On stdout, every held lock (or the one KEY; none: an empty list). Each holder has token (what --token takes, also as owner), fencingToken and mode (MODE is "shared" for a --shared holder, else "exclusive"); host, pid, user and command say who holds it. waiters is how many wait, null where the backend cannot tell; queue, where its waiting is fair (ZooKeeper), lists the waiters in the order they will get the lock, and is null elsewhere.',
      '{"locks": [{"key": KEY,\n            "holders": [{"token": TOKEN, "owner": TOKEN, "fencingToken": INTEGER, "mode": MODE,\n                         "host": HOST, "pid": N, "user": USER, "command": TEXT,\n                         "acquiredAt": ISO-8601, "expiresAt": ISO-8601}],\n            "waiters": N|null,\n            "queue": [{"owner": ID, "host": HOST, "pid": N, "user": USER, "command": TEXT, "since": ISO-8601}]|null}]}'],
  ],
  'lock:run': [
    ['stdout is the command\'s; with --json every line dlq writes on stderr is a JSON object. Once the command has run, the last one is the outcome: exitCode is dlq\'s exit code (the command\'s, 128+N for a signal, 70 for a lost lock, 126/127 when it could not start), and lost says why the lock was lost, or is null.', '{"key": KEY, "fencingToken": INTEGER, "exitCode": N, "lost": TEXT|null}'],
    ['Lines about the run before it (a lost lock, a lock that could not be released, a --kill-grace not shorter than --ttl) are warnings:', '{"warning": {"what": TEXT}}'],
  ],
  'queue:push': [['On stdout, one object once every message is accepted: ids in the order pushed.', '{"queue": QUEUE, "count": N, "ids": [ID, ...]}']],
  'queue:pop': [
    ['On stdout, one object per line and message. body is the message as text when it is valid UTF-8, else bodyBase64 holds its bytes in base64; attempts is which delivery this is (1 the first time). With --exec, stdout is the handlers\'; --json changes dlq\'s own lines on stderr: a handler that failed is a warning object, {"warning": {"what": TEXT, "id": ID, "attempt": N, "exitCode": N|null, "signal": NAME|null, "retryDelayMs": N|null}}, where retryDelayMs is how long the message waits before its next delivery (null: it went to the dead letters). No message within --wait (exit 75) is the error object below.', messageShape],
    binaryMessage,
  ],
  'queue:tail': [['On stdout, one object per line and message, as queue pop prints them (body or bodyBase64); attempts counts the deliveries so far (0 for a message never popped).', messageShape], binaryMessage],
  'queue:purge': [['On stdout: how many waiting messages were dropped. Messages in flight without --force (exit 75) is the error object below.', '{"queue": QUEUE, "purged": N}']],
  'queue:delete': [['On stdout: whether QUEUE existed (deleted, true or false), and how many messages (waiting, delayed, in flight) and dead letters it held as counted just before the delete. Messages in flight without --force (exit 75) is the error object below.', '{"queue": QUEUE, "deleted": BOOLEAN, "messages": N, "deadLetters": N}']],
  'queue:redrive': [['On stdout: how many dead letters moved from QUEUE.dead (from) to the end of QUEUE.', '{"queue": QUEUE, "from": QUEUE, "moved": N}']],
  'queue:status': [['On stdout, every queue (or the one QUEUE); oldestAgeMs, the age of the oldest waiting message in milliseconds, is null when none waits. delayed counts the messages pushed with --delay or --at that are not due yet; dead counts the messages in QUEUE.dead.', '{"queues": [{"queue": QUEUE, "waiting": N, "delayed": N, "inFlight": N, "dead": N, "oldestAgeMs": N|null}]}']],
}
const errorShape = '{"error": {"code": EXIT-CODE, "what": TEXT, "why": TEXT, "hint": TEXT}}'

// What a command does with signals, the terminal and its own death, beyond its description.
const signalSections = {
  'lock:run': [
    ['The terminal', 'COMMAND runs in the process group and session of dlq, not in a new session: it keeps the controlling terminal, so prompts that read /dev/tty (sudo, ssh, git, gpg) work, as under flock(1).'],
    ['Ctrl-C, Ctrl-\\', 'The terminal sends SIGINT or SIGQUIT to the whole job, dlq and COMMAND: COMMAND gets it once, and dlq waits for COMMAND to exit, releases the lock and exits with its code (130 when SIGINT ended it). While dlq is the terminal\'s foreground job, a SIGINT or SIGQUIT sent to dlq alone is taken for the terminal\'s and not forwarded.'],
    ['Ctrl-Z, fg, bg', 'Ctrl-Z stops COMMAND and dlq together; the shell reports the job stopped. dlq renews the lease once more and prints how long the job may stay suspended (the TTL, less the SIGTERM lead below): a stopped dlq renews nothing. fg (or bg) within that time resumes both and the lease is renewed at once; later, COMMAND has been stopped by the watchdog, and dlq, resumed, reports the lost lock and exits 70. Use a longer --ttl for jobs you mean to suspend.'],
    ['SIGINT, SIGTERM, SIGHUP, SIGQUIT sent to dlq', 'Forwarded to every process of COMMAND (COMMAND, what it started, what left for a session of its own); the lock is released once COMMAND has exited. While dlq waits for the lock, such a signal cancels the wait (exit 128+N) and nothing is left held.'],
    ['A lost lock', 'Every process of COMMAND gets SIGTERM, then SIGKILL after --kill-grace; dlq exits 70. Processes of dlq\'s job that are not COMMAND\'s (the other side of a pipe) are left alone.'],
    ['dlq killed or stopped', 'A watchdog started before COMMAND, in a session of its own, knows the lease\'s end from dlq\'s last renewal. If dlq dies (kill -9), it sends every process of COMMAND SIGTERM at once and SIGKILL after --kill-grace or at the lease\'s end, whichever comes first. If dlq is stopped (SIGSTOP, a suspended job), it sends SIGTERM (and SIGCONT) --kill-grace before the lease\'s end, but no earlier than two thirds into the TTL, and SIGKILL at its end. Either way COMMAND never runs beside the next holder; dlq warns at the start when --kill-grace is not shorter than --ttl. Processes are found by DLQ_LOCK_OWNER in their environment and as descendants of COMMAND.'],
  ],
}

const backends = [
  ['file:///DIR', `A shared directory, on local disk or NFS; no server. The default: $XDG_STATE_HOME/${bin}, or ~/.local/state/${bin} when XDG_STATE_HOME is unset. Users share it only as a group's setgid directory (install -d -m 2770 -g GROUP DIR), whose members share every lock and queue in it. Any other must be yours or root's, and writable by nobody else unless it is sticky like /tmp; below it, ${bin} uses only directories that are yours and that nobody else may write (in a group's directory: the group's, not writable by everyone), and refuses any other with exit 69, naming the directory and its owner.`],
  ['redis://[USER:PASS@]HOST[:PORT][/DB]', 'Redis 6 or later. Acquisitions, renewals and pushes wait (WAIT) for ?replicas=N replicas (default: one when the master has any) within ?replicaTimeout= (default 1s); not confirmed in time is exit 69 (a renewal counts as failed). ?replicas=0 does not wait.'],
  ['rediss://[USER:PASS@]HOST[:PORT][/DB]', 'Redis 6 or later over TLS.'],
  ['redis+cluster://[USER:PASS@]H1:PORT,H2:PORT', 'A Redis Cluster, found from these seed nodes. Each lock and queue lives in one slot (hash tags); lock status and queue status cover every master; MOVED, ASK and TRYAGAIN are followed or retried, and exit 69 past 16 redirections; CLUSTERDOWN (a master failed, no replica promoted yet) is exit 69 at once. A waiting lock run or queue pop waits through a failover, as behind Sentinel. Takes the parameters of redis+sentinel:.'],
  ['redis+sentinel://[USER:PASS@]H1[:PORT],H2[:PORT]/MASTER[/DB]', 'The Redis master that the Sentinels (port 26379 by default) know as MASTER; dlq follows it to the replica they promote in a failover. USER and PASS are the data nodes\'; Sentinels that require a password of their own get it from ?sentinelPasswordFile=PATH or ?sentinelPassword= (masked), with ?sentinelUser= for an ACL user; without them the Sentinels are asked without AUTH. A waiting lock run or queue pop waits through a failover for up to ?failoverTimeout= (default 30s), then exits 69. Replication is asynchronous: what the master acknowledged but had not passed to its replica is lost in a failover; fencing tokens still only increase. rediss+sentinel:// speaks TLS to both.'],
  ['zk://HOST1:2181,HOST2:2181[/CHROOT]', 'A ZooKeeper 3.5 or later ensemble. A holder keeps its lock while its session lives: a renewal rides through a reconnect to another server. Plaintext only: node-zookeeper-client has no TLS, so ?tls= is exit 64; reach a secureClientPort through a local TLS tunnel (stunnel), as the README shows.'],
  ['postgres://USER[:PASS]@HOST[:PORT]/DB', 'PostgreSQL 12 or later, direct or behind PgBouncer; the schema is created on first use.'],
  ['postgres://USER[:PASS]@H1[:PORT],H2[:PORT]/DB', 'PostgreSQL with standbys, in libpq\'s multi-host syntax (also ?host=H1,H2&port=P1,P2). The hosts are tried in order, and the first that is what ?target_session_attrs= asks for is taken: read-write (the default for several hosts: transaction_read_only off), primary (pg_is_in_recovery() false) or any (the default for one host, as libpq). A standby is refused with one line, exit 69. When the session is lost, dlq goes round the hosts again for ?connectTimeout= and so follows a promotion: set it to the time a failover takes, or waiters exit 69. libpq\'s ?connect_timeout=N (seconds) bounds the attempt at each host; without it, each host gets an equal share of ?connectTimeout=. With asynchronous replication, what the primary had not yet sent its standby is lost in a failover: a lock run holder whose lease is not on the new primary stops its command and exits 70 as soon as it reaches it (another holder may have the lock by then), a push confirmed just before the crash can be lost, and so can the last fencing tokens, which may then be handed out again. Synchronous replication to the standby that is promoted loses none of these.'],
  ['postgres://…/DB?pooling=transaction', 'PostgreSQL behind a transaction pooler (PgBouncer pool_mode = transaction): unnamed statements, and waits that poll (first after 5 ms, then 1.5 times longer each time, up to 50 ms for a lone lock waiter, up to 1 s when many wait, 100 ms for a pop) since LISTEN cannot work there; a waiter holds no server connection between polls. A transaction pooler left unsaid is noticed at the first clash of prepared statements.'],
  ['postgres://…/DB?pooling=session', 'PostgreSQL behind a session pooler (PgBouncer pool_mode = session). Without the parameter dlq works there as direct, but holds a server connection for as long as it runs; with it, waiters poll as above and disconnect between polls, and lock run holders between renewals, so that they pin no server connection.'],
]

// ---------------------------------------------------------------------------------------------
// roff escaping

// Characters that groff would otherwise typeset as something else than what a user must type.
// Typographic characters get groff's names, which also render on -Tascii (man in a C locale).
const special = {
  '\\': '\\e', '~': '\\(ti', '^': '\\(ha', '`': '\\(ga',
  '\u2026': '...', '\u2013': '\\(en', '\u2014': '\\(em', '\u2018': '\\(oq', '\u2019': '\\(cq', '\u201c': '\\(lq', '\u201d': '\\(rq',
}

function escapeChar(ch) {
  if (special[ch]) return special[ch]
  const code = ch.codePointAt(0)
  if (code < 0x20 && ch !== '\t') return `\\[u${code.toString(16).toUpperCase().padStart(4, '0')}]`
  if (code < 0x80) return ch
  return `\\[u${code.toString(16).toUpperCase().padStart(4, '0')}]`
}

// Protect a line that would otherwise start with a control character.
function guardLine(line) {
  return /^[.']/.test(line) ? `\\&${line}` : line
}

// Running text: hyphens that start an option (-0, --wait, a bare --) become \- so they render and
// copy as ASCII minus signs; hyphens inside words (dead-letter) stay hyphens.
function text(s) {
  let out = ''
  const chars = [...String(s)]
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]
    if (ch === '-' && !/[\p{L}\p{N}_-]/u.test(chars[i - 1] ?? '')) {
      let j = i
      while (chars[j] === '-') j++
      const run = j - i
      if (/[\p{L}\p{N}_]/u.test(chars[j] ?? '') || (run === 2 && /^\s?$/.test(chars[j] ?? ''))) {
        // The whole option name, so that --kill-grace neither breaks nor hyphenates at its inner hyphens.
        while (j < chars.length && /[\p{L}\p{N}_-]/u.test(chars[j])) j++
        out += literal(chars.slice(i, j).join(''))
        i = j - 1
        continue
      }
    }
    out += escapeChar(ch)
  }
  return out
}

// Literal text (commands, URLs, flag names): every hyphen is a minus and quotes stay ASCII.
function literal(s) {
  return [...String(s)].map((ch) => (ch === '-' ? '\\-' : ch === "'" ? '\\(aq' : escapeChar(ch))).join('')
}

// A block of running text: paragraphs separated by blank lines, each line guarded.
function paragraphs(s) {
  return String(s)
    .trim()
    .split(/\n\s*\n/)
    .map((para) => para.split('\n').map((line) => guardLine(text(line.trim()))).join('\n'))
    .join('\n.PP\n')
}

const bold = (s) => `\\fB${s}\\fR`
const italic = (s) => `\\fI${s}\\fR`

function th(name) {
  return `.TH ${name.toUpperCase()} 1 "" "${footer}" "${manual}"`
}

function header(name) {
  return [
    `.\\" Generated by scripts/man.mjs from oclif.manifest.json; do not edit.`,
    `.\\" Regenerate with: npm run build && npm run man`,
    th(name),
    '.nh',
    '.ad l',
  ]
}

// ---------------------------------------------------------------------------------------------
// Commands and flags

const commands = Object.values(manifest.commands)
  .filter((command) => !command.hidden)
  .sort((a, b) => a.id.localeCompare(b.id, 'en'))

const pageName = (id) => `${bin}-${id.split(':').join('-')}`
const words = (id) => `${bin} ${id.split(':').join(' ')}`
const topicOf = (id) => id.split(':')[0]
const isGlobal = (flag) => flag.helpGroup === 'GLOBAL'
const flagText = (flag) => [flag.summary, flag.description].filter(Boolean)

// oclif's short flags are letters only; a flag whose summary says "(short: -0)" also takes that
// spelling (bin/run.cjs rewrites it), so the page lists it next to the long name.
const shortAliasRe = /\s*\(short: (-[^\s)]+)\)/

function valueName(flag, fallback = 'VALUE') {
  const helpValue = Array.isArray(flag.helpValue) ? flag.helpValue.join('|') : flag.helpValue
  return helpValue ? String(helpValue).replace(/^<(.*)>$/, '$1') : fallback
}

function flagTag(flag) {
  const names = []
  if (flag.char) names.push(bold(literal(`-${flag.char}`)))
  const alias = (flag.summary ?? '').match(shortAliasRe)
  if (alias) names.push(bold(literal(alias[1])))
  if (flag.type === 'boolean' && flag.allowNo) names.push(`${bold('\\-\\-')}[${bold('no\\-')}]${bold(literal(flag.name))}`)
  else names.push(bold(literal(`--${flag.name}`)))
  let tag = names.join(', ')
  if (flag.type === 'option') tag += `=${italic(literal(valueName(flag)))}`
  return tag
}

function flagBody(flag) {
  const [summary, ...rest] = flagText(flag)
  const lines = []
  const first = []
  if (flag.required) first.push('(required)')
  if (summary) first.push(summary.replace(shortAliasRe, ''))
  const notes = []
  if (flag.options?.length) notes.push(`One of: ${flag.options.join(', ')}.`)
  if (flag.default !== undefined && flag.default !== false && !(Array.isArray(flag.default) && flag.default.length === 0)) notes.push(`Default: ${Array.isArray(flag.default) ? flag.default.join(', ') : flag.default}.`)
  if (flag.multiple) notes.push('May be given more than once.')
  if (flag.exclusive?.length) notes.push(`Cannot be combined with ${flag.exclusive.map((name) => `--${name}`).join(', ')}.`)
  if (flag.dependsOn?.length) notes.push(`Requires ${flag.dependsOn.map((name) => `--${name}`).join(', ')}.`)
  if (first.length > 0 || notes.length > 0) lines.push(paragraphs([...first, ...notes].join(' ')))
  for (const more of rest) lines.push('.IP', paragraphs(more))
  return lines.join('\n')
}

function optionList(flags) {
  return flags.flatMap((flag) => ['.TP', flagTag(flag), flagBody(flag)])
}

// A usage string as oclif prints it after `$ dlq `: the command words in bold, the rest as written.
function synopsisLine(id, usage) {
  const name = id.split(':').join(' ')
  const rest = usage.startsWith(`${name} `) || usage === name ? usage.slice(name.length) : ` ${usage}`
  return `${bold(literal(usage.startsWith(name) ? `${bin} ${name}` : bin))}${text(rest)}`
}

function synopsis(command) {
  const usages = command.usage === undefined ? [] : Array.isArray(command.usage) ? command.usage : [command.usage]
  if (usages.length > 0) {
    return usages.flatMap((usage, i) => [
      ...(i > 0 ? ['.br'] : []),
      synopsisLine(command.id, String(usage).replaceAll('<%= config.bin %>', bin).trim()),
    ])
  }
  // Built like the usage strings of the other commands: the required flags, then [FLAGS], then the arguments.
  const parts = [bold(literal(words(command.id)))]
  for (const flag of Object.values(command.flags ?? {})) {
    if (flag.required && !flag.hidden) parts.push(flag.type === 'option' ? `${bold(literal(`--${flag.name}`))} ${italic(literal(valueName(flag, flag.name.toUpperCase())))}` : bold(literal(`--${flag.name}`)))
  }
  parts.push('[FLAGS]')
  for (const arg of Object.values(command.args ?? {})) {
    const name = literal(arg.name.toUpperCase())
    parts.push(arg.required ? italic(name) : `[${italic(name)}]`)
  }
  if (command.strict === false && Object.keys(command.args ?? {}).length === 0) parts.push(`[${italic('ARGS')}...]`)
  return [parts.join(' ')]
}

function example(ex) {
  const {description, command} = typeof ex === 'string' ? {description: undefined, command: ex} : ex
  const lines = []
  if (description) lines.push('.PP', paragraphs(description.replaceAll('<%= config.bin %>', bin)))
  else lines.push('.PP')
  lines.push('.RS 4', '.nf')
  let continued = false
  for (const line of String(command).replaceAll('<%= config.bin %>', bin).split('\n')) {
    lines.push(guardLine(literal(continued ? line : `$ ${line}`)))
    continued = line.trimEnd().endsWith('\\')
  }
  lines.push('.fi', '.RE')
  return lines
}

function tpList(entries, tag = (key) => bold(literal(key))) {
  return entries.flatMap(([key, value]) => ['.TP', tag(key), paragraphs(value)])
}

function literalBlock(block) {
  return ['.PP', '.RS 4', '.nf', ...block.split('\n').map((line) => guardLine(literal(line))), '.fi', '.RE']
}

function jsonSection(id) {
  const entries = jsonOutput[id]
  if (!entries) return []
  const lines = ['.SH "JSON OUTPUT"']
  for (const [words, shape] of entries) {
    lines.push('.PP', paragraphs(words))
    if (shape) lines.push(...literalBlock(shape))
  }
  lines.push('.PP', paragraphs('An error, or a "not now" outcome, is one object on stderr instead of the line "dlq: WHAT: WHY (HINT)", with the exit code as code (hint may be left out):'), ...literalBlock(errorShape))
  return lines
}

function exitStatusSection() {
  return ['.SH "EXIT STATUS"', ...tpList(exitStatus, (code) => bold(code))]
}

function environmentSection(id) {
  const lines = ['.SH ENVIRONMENT', ...tpList(environment)]
  const child = childEnvironment[id]
  if (child) lines.push(`.SS "${text(child.title)}"`, paragraphs(child.inherits), ...tpList(child.vars))
  return lines
}

function seeAlso(names) {
  return ['.SH "SEE ALSO"', names.map((name, i) => `${bold(literal(name))}(1)${i < names.length - 1 ? ',' : ''}`).join('\n')]
}

function commandPage(command) {
  const name = pageName(command.id)
  const flags = Object.values(command.flags ?? {}).filter((flag) => !flag.hidden)
  const own = flags.filter((flag) => !isGlobal(flag))
  const global = flags.filter(isGlobal)
  const lines = [...header(name)]
  lines.push('.SH NAME', `${literal(name)} \\- ${text((command.summary ?? command.description ?? '').split('\n')[0].replace(/\.$/, ''))}`)
  lines.push('.SH SYNOPSIS', ...synopsis(command))
  lines.push('.SH DESCRIPTION')
  const description = [command.summary, command.description].filter(Boolean)
  if (command.summary && command.description?.startsWith(command.summary)) description.shift()
  lines.push(description.map(paragraphs).join('\n.PP\n'))
  const args = Object.values(command.args ?? {})
  if (args.length > 0) {
    lines.push('.SH ARGUMENTS', ...args.flatMap((arg) => ['.TP', italic(literal(arg.name.toUpperCase())), paragraphs(arg.description ?? '')]))
  }
  lines.push('.SH OPTIONS', ...optionList(own))
  if (global.length > 0) lines.push('.SS "Global options"', ...optionList(global))
  if (command.examples?.length) lines.push('.SH EXAMPLES', ...command.examples.flatMap(example))
  if (signalSections[command.id]) lines.push('.SH "SIGNALS AND JOB CONTROL"', ...tpList(signalSections[command.id], (term) => bold(text(term))))
  lines.push(...jsonSection(command.id))
  lines.push(...exitStatusSection())
  lines.push(...environmentSection(command.id))
  const siblings = commands.filter((other) => topicOf(other.id) === topicOf(command.id) && other.id !== command.id).map((other) => pageName(other.id))
  const extra = topicOf(command.id) === 'lock' ? ['flock'] : []
  lines.push(...seeAlso([bin, ...siblings, ...extra]))
  return lines.join('\n') + '\n'
}

function overviewPage() {
  const lines = [...header(bin)]
  lines.push('.SH NAME', `${literal(bin)} \\- ${text(pkg.description.replace(/\.$/, ''))}`)
  lines.push(
    '.SH SYNOPSIS',
    `${bold(literal(bin))} ${italic('TOPIC')} ${italic('COMMAND')} [${italic('FLAGS')}] [${italic('ARGS')}...]`,
    '.br',
    `${bold(literal(bin))} ${bold('help')} [${italic('TOPIC')} ${italic('COMMAND')}]`,
    '.br',
    `${bold(literal(bin))} ${italic('TOPIC')} ${italic('COMMAND')} ${bold('\\-\\-help')}`,
  )
  lines.push(
    '.SH DESCRIPTION',
    paragraphs(
      `${bin} gives shell scripts, cron jobs, deploy scripts and CI steps mutual exclusion across processes and machines, and simple work queues: one program, one set of semantics, several interchangeable backends chosen by URL.\n\n` +
        'Data goes to stdout, everything else to stderr. Every command takes --json for output meant for scripts; errors are then JSON objects too, otherwise one line on stderr. Colours are used only on a terminal.',
    ),
  )
  lines.push('.SH COMMANDS')
  const topics = pkg.oclif?.topics ?? {}
  const topicNames = [...new Set(commands.map((command) => topicOf(command.id)))]
  for (const topic of topicNames) {
    lines.push(`.SS "${text(`${bin} ${topic}`)}"`)
    if (topics[topic]?.description) lines.push(paragraphs(topics[topic].description))
    for (const command of commands.filter((c) => topicOf(c.id) === topic)) {
      lines.push('.TP', bold(literal(words(command.id))), `${paragraphs(command.summary ?? '')} See ${bold(literal(pageName(command.id)))}(1).`)
    }
  }
  lines.push(
    '.SH BACKENDS',
    paragraphs(`The backend is chosen by URL: --backend (-b), else the environment variable DLQ_BACKEND, else a directory in $XDG_STATE_HOME/${bin}. Every backend has the same semantics.`),
    ...tpList(backends),
    '.PP',
    paragraphs('Passwords may also come from DLQ_PASSWORD or from a file named by the URL parameter ?passwordFile=, so that they stay out of ps(1). An unknown scheme, a malformed URL or an unreachable server is a one-line error (exit 64 or 69).\n\n?connectTimeout=DURATION (default 5s) is a hard bound on opening the backend on every scheme (for file:, the directory\'s first look): past it, exit 69. A URL parameter the scheme does not know is exit 64. file: knows connectTimeout; redis: connectTimeout, passwordFile, replicas and replicaTimeout (rediss: also ca and insecure); redis+sentinel: and redis+cluster: those and failoverTimeout, redis+sentinel: also sentinelUser, sentinelPassword and sentinelPasswordFile (rediss+sentinel: and ca, insecure); zk: connectTimeout, passwordFile and sessionTimeout (the ZooKeeper session timeout: by default the --ttl of lock run, at most 10s; ?tls= is exit 64, see zk: above); postgres: those, schema, pooling (none, session or transaction), and libpq\'s user, password, host, port, sslmode, sslrootcert, application_name, target_session_attrs and connect_timeout.'),
  )
  lines.push(
    '.SH CONVENTIONS',
    '.TP',
    italic('DURATION'),
    paragraphs('250ms, 30s, 5m, 2h, compounds from the largest unit down such as 1m30s or 2h5m (what dlq prints, it reads), or forever; a bare number is seconds.'),
    '.TP',
    'Keys and queue names',
    paragraphs('1 to 255 bytes of UTF-8 without control characters; any such name is safe on every backend. A name that is not valid UTF-8 is a usage error (64).'),
  )
  const anyCommand = commands[0]
  const global = Object.values(anyCommand?.flags ?? {}).filter((flag) => isGlobal(flag) && !flag.hidden)
  if (global.length > 0) lines.push('.SH "GLOBAL OPTIONS"', paragraphs('Every command takes these.'), ...optionList(global))
  lines.push(...exitStatusSection())
  lines.push('.PP', paragraphs(`Errors go to stderr as one line: ${bin}: WHAT HAPPENED: WHY (HINT); with --json, as a JSON object.`))
  lines.push(...environmentSection(undefined))
  lines.push(...seeAlso([...commands.map((command) => pageName(command.id)), 'flock']))
  return lines.join('\n') + '\n'
}

// ---------------------------------------------------------------------------------------------

const undocumented = commands.filter((command) => command.enableJsonFlag !== false && !jsonOutput[command.id]).map((command) => command.id)
if (undocumented.length > 0) {
  console.error(`man: no JSON output documented for ${undocumented.join(', ')} (add it to jsonOutput in scripts/man.mjs)`)
  process.exit(1)
}

const pages = new Map([[`${bin}.1`, overviewPage()], ...commands.map((command) => [`${pageName(command.id)}.1`, commandPage(command)])])
const existing = existsSync(manDir) ? readdirSync(manDir).filter((file) => file.startsWith(`${bin}`) && file.endsWith('.1')) : []
const obsolete = existing.filter((file) => !pages.has(file)).sort()
// package.json's "man" lists every page, so that `npm install -g` puts them where `man` looks.
const packageUrl = new URL('package.json', root)
const packageJson = JSON.parse(readFileSync(packageUrl, 'utf8'))
const manField = [...pages.keys()].map((file) => `./man/${file}`)
const manFieldStale = JSON.stringify(packageJson.man) !== JSON.stringify(manField)

if (check) {
  const stale = []
  for (const [file, content] of pages) {
    const url = new URL(file, manDir)
    if (!existsSync(url)) stale.push(`man/${file} (missing)`)
    else if (readFileSync(url, 'utf8') !== content) stale.push(`man/${file}`)
  }
  for (const file of obsolete) stale.push(`man/${file} (no such command any more)`)
  if (manFieldStale) stale.push('package.json "man" (it must list every page)')
  if (stale.length > 0) {
    console.error(`man pages are stale; run \`npm run build && npm run man\` and commit man/:\n  ${stale.join('\n  ')}`)
    process.exit(1)
  }
  console.log(`man/: ${pages.size} pages up to date`)
} else {
  mkdirSync(manDir, {recursive: true})
  let written = 0
  for (const [file, content] of pages) {
    const url = new URL(file, manDir)
    if (existsSync(url) && readFileSync(url, 'utf8') === content) continue
    writeFileSync(url, content)
    written++
  }
  for (const file of obsolete) unlinkSync(new URL(file, manDir))
  if (manFieldStale) writeFileSync(packageUrl, `${JSON.stringify({...packageJson, man: manField}, null, 2)}\n`)
  console.log(`man/: ${pages.size} pages, ${written} written${obsolete.length ? `, removed ${obsolete.join(', ')}` : ''}`)
}
