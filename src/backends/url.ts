// What the networked drivers share about their URLs: credentials (from the URL, ?passwordFile= or
// DLQ_PASSWORD, so a password can stay out of `ps`) and the connect timeout.
import {readFile} from 'node:fs/promises'

import {parseDuration} from '../duration.js'
import {usageError} from '../errors.js'

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
    .replace(/([?&]password=)[^&#]*/gi, '$1***')
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

/** ?connectTimeout=DURATION, default 5s: how long to try before exit 69. */
export function connectTimeoutMs(url: URL): number {
  const text = url.searchParams.get('connectTimeout')
  if (text === null) return 5000
  const ms = parseDuration(text, 'connectTimeout')
  if (!Number.isFinite(ms) || ms <= 0) throw usageError('bad ?connectTimeout=', `${text} in ${maskUrl(url.href)}`, 'a finite duration such as 5s')
  return ms
}

/** `text` (a stack trace, a library's message) with every URL in it masked. */
export const maskUrlsIn = (text: string): string => text.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s/?#]*/gi, maskUrl)
