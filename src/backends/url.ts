// What the drivers share about their URLs: credentials (from the URL, ?passwordFile= or
// DLQ_PASSWORD, so a password can stay out of `ps`), the parameters each scheme knows (any other
// is a typo: exit 64), and the connect timeout, a hard bound on opening a backend (SPEC §1).
import {readFile} from 'node:fs/promises'

import {formatDuration, parseDuration} from '../duration.js'
import {unavailable, usageError} from '../errors.js'

/**
 * The URL with its password replaced by *** (SPEC §1): the only form of a URL dlq ever prints.
 * The user info runs to the LAST @ of the authority (up to the first /, ? or #), as URL parsers
 * read it: a raw @ in a password (`alice:SECRET@pw@host`) is part of the password.
 */
export function maskUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i, (_m, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':')
      return `${scheme}${colon === -1 ? userinfo : `${userinfo.slice(0, colon)}:***`}@`
    })
    .replace(/([?&](?:sentinel)?password=)[^&#]*/gi, '$1***')
}

/**
 * A parsed URL as dlq prints it: password masked, and a host list (zk://, redis+sentinel://,
 * redis+cluster://, several PostgreSQL hosts) as it was written, whatever %-encoding got it parsed
 * (backends/index.ts encodes such lists so that WHATWG URL takes them as one opaque host).
 */
export function shownUrl(url: URL): string {
  const shown = maskUrl(url.href)
  try {
    return shown.replace(url.host, decodeURIComponent(url.host))
  } catch {
    return shown // a malformed %-escape: refused by the driver, shown as given
  }
}

export interface Credentials {
  user?: string
  password?: string
}

/** The URL's password first, then the file named by ?passwordFile=, then $DLQ_PASSWORD. */
export async function credentials(url: URL, env: NodeJS.ProcessEnv = process.env): Promise<Credentials> {
  const user = url.username ? decodeURIComponent(url.username) : undefined
  if (url.password) return {user, password: decodeURIComponent(url.password)}
  const file = url.searchParams.get('passwordFile')
  if (file) {
    try {
      return {user, password: (await readFile(file, 'utf8')).replace(/\r?\n$/, '')}
    } catch (error) {
      throw usageError('cannot read ?passwordFile=', `${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, 'name a readable file holding the password')
    }
  }
  return {user, password: env.DLQ_PASSWORD || undefined}
}

/** ?NAME=DURATION: a finite duration above zero, or `defaultMs` when absent; 64 otherwise. */
export function durationParam(url: URL, name: string, defaultMs: number, example: string, shown = maskUrl(url.href)): number {
  const text = url.searchParams.get(name)
  if (text === null) return defaultMs
  const ms = parseDuration(text, name)
  if (!Number.isFinite(ms) || ms <= 0) throw usageError(`bad ?${name}=`, `${text} in ${shown}`, `a finite duration such as ${example}`)
  return ms
}

/** ?connectTimeout=DURATION, default 5s: how long to try before exit 69. */
export const connectTimeoutMs = (url: URL): number => durationParam(url, 'connectTimeout', 5000, '5s')

/** `text` (a stack trace, a library's message) with every URL in it masked. */
export const maskUrlsIn = (text: string): string => text.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s/?#]*/gi, maskUrl)

/** Exit 64 for a URL parameter the scheme does not know (`?conectTimeout=`), naming the ones it does. */
export function checkParameters(url: URL, known: readonly string[], display = maskUrl(url.href)): void {
  for (const name of url.searchParams.keys()) {
    if (!known.includes(name)) {
      throw usageError('bad backend URL', `unknown parameter ?${name}= in ${display}`, `${url.protocol} knows ${known.map((p) => `?${p}=`).join(', ')}`)
    }
  }
}

/**
 * `opening` (a driver connecting, a directory being checked), or exit 69 once ?connectTimeout=
 * has passed since the call: a hard bound, whatever the driver's own timers and retries do
 * (ioredis's connect, PING and SELECT each had the whole timeout). An opening that succeeds
 * too late is closed.
 */
export async function withinConnectTimeout<T extends {close(): Promise<void>}>(url: URL, display: string, opening: Promise<T>, ms = connectTimeoutMs(url)): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let late = false
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      late = true
      reject(unavailable(`cannot connect to ${display}`, `no answer within ${formatDuration(ms)}`, 'is it up and reachable? ?connectTimeout= sets how long dlq tries'))
    }, ms)
  })
  opening.then((opened) => {
    if (late) void opened.close().catch(() => {})
  }, () => {})
  try {
    return await Promise.race([opening, deadline])
  } finally {
    clearTimeout(timer)
  }
}
