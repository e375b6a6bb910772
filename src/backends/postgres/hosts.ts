// Which PostgreSQL servers a URL names, which of them dlq may use, and how long it tries: libpq's
// multi-host connection strings (https://www.postgresql.org/docs/current/libpq-connect.html,
// "Specifying Multiple Hosts"), read here without pg, so that openBackend can bound the opening.
// - Hosts: postgres://h1:5432,h2:5433/db, or ?host=h1,h2&port=5432,5433 (one port for all, or one
//   per host), each as pg takes it (a name, an address, [IPv6], or /socket/dir).
// - ?target_session_attrs=: `any` takes the first server that accepts the connection; `read-write`
//   one where transaction_read_only is off, `primary` one not in recovery (pg_is_in_recovery()), as
//   libpq checks them. The default is libpq's `any` for one host (a standby refuses dlq's writes
//   itself) but `read-write` for several: every dlq command writes, and a list of hosts is a list
//   of candidates for the primary. libpq's read-only, standby and prefer-standby are refused: dlq
//   could do nothing on the server they pick but fail.
// - Time: ?connectTimeout= (dlq's own, every scheme) bounds the whole opening, and each reconnect,
//   before exit 69; libpq's ?connect_timeout= (whole seconds, at least 2) bounds the attempt at each
//   host. Given only connect_timeout, the whole is connect_timeout × hosts (libpq's worst case);
//   given neither, each host may take an equal share of the 5 s default, so that a host that drops
//   packets cannot use up the time of the hosts after it.
import {usageError} from '../../errors.js'
import {connectTimeoutMs, shownUrl} from '../url.js'

export interface Host {
  /** A name or address (IPv6 without brackets), or a Unix socket directory. */
  host: string
  port: number
}

export type TargetSessionAttrs = 'any' | 'read-write' | 'primary'
const targetSessionAttrs: readonly TargetSessionAttrs[] = ['any', 'read-write', 'primary']

export interface Targets {
  hosts: Host[]
  attrs: TargetSessionAttrs
  /** The whole opening, or one reconnection, before exit 69. */
  connectBudgetMs: number
  /** One attempt at one host. */
  perHostMs: number
}

/** The URL as dlq shows it: password masked, the host list as written (h1:5432,h2:5433). */
export const displayOf = shownUrl

/**
 * A comma-separated host list in the authority (postgres://u@h1:5432,h2:5433/db), with its colons
 * and brackets %-encoded, so that WHATWG URL (which takes one host and one port) can parse it as
 * one opaque host: this module decodes and splits it. The user info runs to the last @ (as in
 * maskUrl), and the list may hold no @: a comma in a password is not a host list.
 */
export const encodeHostList = (href: string): string =>
  href.replace(/^(postgres(?:ql)?:\/\/(?:[^/?#]*@)?)([^/?#@]*,[^/?#@]*)(?=[/?#]|$)/i, (_m, head: string, hosts: string) => head + hosts.replace(/[:[\]]/g, (c) => encodeURIComponent(c)))

/** libpq's connect_timeout: whole seconds; 0, negative or absent is no bound; 1 is taken as 2. */
function connectTimeoutSeconds(url: URL, env: NodeJS.ProcessEnv, display: string): number | undefined {
  const text = url.searchParams.get('connect_timeout') ?? env.PGCONNECT_TIMEOUT
  if (text === undefined || text.trim() === '') return undefined
  if (!/^\s*[-+]?\d+\s*$/.test(text)) throw usageError('bad ?connect_timeout=', `${text} in ${display}`, 'whole seconds, as libpq takes it (dlq\'s own ?connectTimeout= takes durations such as 10s)')
  const seconds = Number(text)
  return seconds <= 0 ? undefined : Math.max(2, seconds)
}

export function targetsOf(url: URL, env: NodeJS.ProcessEnv = process.env): Targets {
  const display = displayOf(url)
  const bad = (why: string) => usageError('bad backend URL', `${why} in ${display}`, 'postgres://user@host[:port][,host2[:port]…]/db')
  let listed: string[]
  try {
    listed = url.host ? decodeURIComponent(url.host).split(',') : (url.searchParams.get('host') ?? env.PGHOST ?? 'localhost').split(',')
  } catch {
    throw bad('a malformed %-escape in the host list')
  }
  const portsText = url.searchParams.get('port') ?? env.PGPORT
  const ports = portsText ? portsText.split(',') : []
  if (ports.length > 1 && ports.length !== listed.length) throw bad(`${ports.length} ports for ${listed.length} hosts`)
  const hosts = listed.map((entry, i) => {
    // In the authority each host may carry its port; a ?host= entry is a host (or a socket directory).
    const match: (string | undefined)[] | null = url.host ? /^(\[[^\]]*\]|[^:[\]]*)(?::(\d*))?$/.exec(entry.trim()) : [entry, entry.trim(), undefined]
    if (!match) throw bad(`host ${JSON.stringify(entry)}`)
    const host = (match[1] ?? '').replace(/^\[|\]$/g, '') || (url.host ? env.PGHOST?.split(',')[0] : undefined) || 'localhost'
    const port = Number(match[2] || ports[ports.length > 1 ? i : 0] || 5432)
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw usageError('bad backend URL', `port in ${display}`, 'a port number, e.g. postgres://user@host:5432/db')
    return {host, port}
  })
  const attrs = (url.searchParams.get('target_session_attrs') ?? env.PGTARGETSESSIONATTRS ?? (hosts.length > 1 ? 'read-write' : 'any')) as TargetSessionAttrs
  if (!targetSessionAttrs.includes(attrs)) {
    throw usageError('bad ?target_session_attrs=', `${attrs} in ${display}`, 'read-write, primary or any: dlq writes, so a standby is no use to it')
  }
  const seconds = connectTimeoutSeconds(url, env, display)
  const budget = url.searchParams.has('connectTimeout') || seconds === undefined ? connectTimeoutMs(url) : seconds * 1000 * hosts.length
  return {
    hosts,
    attrs,
    connectBudgetMs: budget,
    perHostMs: seconds === undefined ? Math.max(100, Math.floor(budget / hosts.length)) : Math.min(seconds * 1000, budget),
  }
}
