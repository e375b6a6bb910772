// URL scheme → driver. Each driver is imported only when its scheme is used, so `file:` never
// loads ioredis, pg or node-zookeeper-client (startup time is a product feature).
import {homedir} from 'node:os'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'

import {unavailable, usageError} from '../errors.js'
import type {Backend, BackendOptions} from './types.js'

/** The URL with its password replaced by *** (SPEC §1): the only form of a URL dlq ever prints. */
export function maskUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/@?#]*)@/i, (_m, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':')
      return `${scheme}${colon === -1 ? userinfo : `${userinfo.slice(0, colon)}:***`}@`
    })
    .replace(/([?&]password=)[^&#]*/gi, '$1***')
}

export function defaultBackendUrl(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.XDG_STATE_HOME && env.XDG_STATE_HOME.startsWith('/') ? env.XDG_STATE_HOME : join(homedir(), '.local', 'state')
  return pathToFileURL(join(state, 'dlq')).href
}

/** --backend, else DLQ_BACKEND, else the embedded file: default. */
export function resolveBackendUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): {url: string; isDefault: boolean} {
  const url = flag ?? env.DLQ_BACKEND
  if (url && url.trim() !== '') return {url: url.trim(), isDefault: false}
  return {url: defaultBackendUrl(env), isDefault: true}
}

const planned = new Set(['redis:', 'rediss:', 'zk:', 'postgres:', 'postgresql:'])

export async function openBackend(url: string, options: BackendOptions & {isDefault?: boolean} = {}): Promise<Backend> {
  // A bare path is a directory: `-b /var/lock/dlq` means what it says.
  const href = url.startsWith('/') || url.startsWith('./') || url.startsWith('../') ? pathToFileURL(url).href : url
  let parsed: URL
  try {
    parsed = new URL(href)
  } catch {
    throw usageError('bad backend URL', JSON.stringify(maskUrl(url)), 'use file:///dir, redis://host, zk://host or postgres://user@host/db')
  }
  switch (parsed.protocol) {
    case 'file:': {
      if (parsed.host !== '' && parsed.host !== 'localhost') {
        throw usageError('bad backend URL', `${maskUrl(url)} names host ${parsed.host}`, 'a file: URL names a local or mounted directory: file:///path')
      }
      const {openFileBackend} = await import('./file/index.js')
      return openFileBackend(parsed, {...options, create: options.isDefault ?? false})
    }
    default:
      if (planned.has(parsed.protocol)) {
        throw unavailable(`backend ${parsed.protocol}// is not available in this version`, maskUrl(url), 'use a file: backend for now')
      }
      throw usageError('bad backend URL', `unknown scheme ${JSON.stringify(parsed.protocol)} in ${maskUrl(url)}`, 'use file:, redis:, rediss:, zk: or postgres:')
  }
}
