// Every way dlq can fail, as typed errors carrying their SPEC §4 exit code, and the one place that
// turns an error into the one-line message `dlq: <what happened>: <why> (<hint>)`.

export const ExitCode = {
  ok: 0,
  usage: 64,
  data: 65,
  unavailable: 69,
  lockLost: 70,
  /** stdout could not be written (a full disk, an I/O error): sysexits' EX_IOERR. */
  output: 74,
  notNow: 75,
} as const

// The file backend reaches its directories as /proc/self/fd/N/… (backends/file/paths.ts): a
// message shows the path the user knows instead.
const shownPaths = new Map<string, string>()

/** From now on, messages show `internal` (a /proc/self/fd/N path) as `shown`. */
export function showPathAs(internal: string, shown: string): void {
  shownPaths.set(internal, shown)
}

/** `text` with every registered /proc/self/fd/N replaced by the path it stands for. */
export function shownPath(text: string): string {
  if (shownPaths.size === 0) return text
  return text.replace(/\/proc\/self\/fd\/\d+/g, (path) => shownPaths.get(path) ?? path)
}

export class DlqError extends Error {
  readonly what: string
  readonly why: string
  readonly hint?: string

  constructor(
    readonly exitCode: number,
    what: string,
    why: string,
    hint?: string,
  ) {
    super(shownPath(`${what}: ${why}`))
    this.what = shownPath(what)
    this.why = shownPath(why)
    this.hint = hint === undefined ? undefined : shownPath(hint)
  }

  line(): string {
    return `dlq: ${this.what}: ${this.why}${this.hint ? ` (${this.hint})` : ''}`
  }

  toJSON(): Record<string, unknown> {
    return {error: {code: this.exitCode, what: this.what, why: this.why, ...(this.hint ? {hint: this.hint} : {})}}
  }
}

export const usageError = (what: string, why: string, hint?: string) => new DlqError(ExitCode.usage, what, why, hint)
export const dataError = (what: string, why: string, hint?: string) => new DlqError(ExitCode.data, what, why, hint)
export const unavailable = (what: string, why: string, hint?: string) =>
  new DlqError(ExitCode.unavailable, what, why, hint)
export const notNow = (what: string, why: string, hint?: string) => new DlqError(ExitCode.notNow, what, why, hint)

/** A write to stdout that failed for another reason than a reader that has gone (EPIPE). */
export const outputError = (error: unknown) =>
  new DlqError(ExitCode.output, 'cannot write to stdout', (error instanceof Error ? error.message : String(error)).replace(/^\w+: /, '').replace(/, write$/, ''))

/**
 * A command (lock run's, or a worker's handler) that could not be started at all: 127 when it was
 * not found, 126 when it could not be executed, as shells report them.
 */
export function cannotRun(command: string, code: string | undefined, message: string, hint?: string): DlqError {
  const why = code === 'ENOENT' ? 'command not found' : code === 'EACCES' ? 'permission denied' : message
  return new DlqError(code === 'ENOENT' ? 127 : 126, `cannot run ${JSON.stringify(command)}`, why, hint)
}

/** A lease that was lost: renewal failed, found another owner, or the backend said so. */
export class LockLostError extends DlqError {
  constructor(key: string, why: string) {
    super(ExitCode.lockLost, `lock ${JSON.stringify(key)} lost`, why)
  }
}

// System errors that mean "the backend cannot be used" rather than a bug in dlq.
const unavailableCodes = new Set([
  'EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'EIO', 'ENOTDIR', 'ELOOP', 'ENOENT', 'ESTALE',
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
])

/**
 * A Redis server's (or its client library's) words for "this server cannot serve you now", as the
 * exit table's 69 lists them: a replica or a master demoted by a failover, a server still loading
 * its data, a full server, a cluster that is down or still moving a slot, a master that died under
 * a command. Undefined for anything else.
 */
export function serverRefusal(message: string): {why: string; hint: string} | undefined {
  const line = firstLine(message)
  if (/^READONLY\b/.test(line)) return {why: `the server is a replica now: ${line}`, hint: 'a failover demoted it; use redis+sentinel:// to follow the master'}
  if (/^LOADING\b/.test(line)) return {why: `the server is loading its data: ${line}`, hint: 'try again once it has loaded'}
  if (/max(imum)? number of clients reached/i.test(line)) return {why: `the server refused the connection: ${line}`, hint: 'it is at its maxclients limit'}
  if (/^CLUSTERDOWN\b/.test(line)) return {why: `the cluster is down: ${line}`, hint: 'a master has failed and no replica took over yet'}
  if (/^(MOVED|ASK)\b|Too many Cluster redirections/i.test(line)) return {why: `the cluster kept redirecting: ${line}`, hint: 'a slot is moving, or this is a cluster node: use redis+cluster://'}
  if (/^(MASTERDOWN|TRYAGAIN)\b/.test(line)) return {why: `the server cannot serve now: ${line}`, hint: 'a failover or slot move is under way'}
  if (/max retries per request limit/i.test(line)) return {why: 'the connection to the server was lost before it answered', hint: 'the server stopped or a failover began; whether the last request took effect is unknown'}
  if (/All sentinels are unreachable|failed to connect to sentinel/i.test(line)) return {why: line, hint: 'are the Sentinels up and reachable?'}
  return undefined
}

/** Turn anything thrown into a DlqError; unknown errors keep exit 1 so bugs are not disguised. */
export function toDlqError(error: unknown, context = 'backend operation failed'): DlqError {
  if (error instanceof DlqError) return error
  const err = error as NodeJS.ErrnoException & {exitCode?: number; oclif?: {exit?: number}}
  if (err && typeof err === 'object' && err.code && unavailableCodes.has(err.code)) {
    return unavailable(context, err.message.replace(/^\w+: /, ''))
  }
  // Client libraries' words for a connection that went away or stopped answering mid-command.
  if (err instanceof Error && /Connection is closed|Stream isn't writeable/i.test(err.message)) {
    // ioredis's words for "not connected": its option names mean nothing to the user.
    return unavailable(context, 'the connection to the server was lost', 'the server stopped, restarted or closed the connection')
  }
  if (err instanceof Error && /Command timed out|Connection terminated|connection timeout/i.test(err.message)) {
    return unavailable(context, firstLine(err.message), 'the backend stopped answering')
  }
  const refusal = err instanceof Error ? serverRefusal(err.message) : undefined
  if (refusal) return unavailable(context, refusal.why, refusal.hint)
  if (err && typeof err === 'object' && typeof err.oclif?.exit === 'number' && err.oclif.exit !== 0) {
    // oclif's own parse errors (unknown flag, missing value, bad option): usage.
    return usageError('bad usage', parseProblem(err.message), 'see --help')
  }
  return new DlqError(1, 'internal error', firstLine(err instanceof Error ? err.message : String(err)), 'run with --verbose for details')
}

// oclif's parse errors put what is wrong on later lines ("Parsing --limit" / "Expected an
// integer but received: abc"), under a header, above a "See more help" line: keep just the problem.
const parseProblem = (message: string) =>
  message.split('\n').map((l) => l.trim())
    .filter((l) => l !== '' && !/^(See more help with|The following errors? occurred)/.test(l))
    .join('; ').replace(/^(Parsing --[\w-]+); /, '$1: ')

const firstLine = (s: string) => s.split('\n').map((l) => l.trim()).find(Boolean) ?? s
