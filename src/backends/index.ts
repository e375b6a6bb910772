// URL scheme → driver. Each driver is imported only when its scheme is used, so `file:` never
// loads ioredis, pg or node-zookeeper-client (startup time is a product feature). The parameters
// each scheme knows are checked here, before any driver loads: any other is exit 64.
import {homedir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

import {usageError} from '../errors.js'
import type {Backend, BackendOptions} from './types.js'
import {checkParameters, connectTimeoutMs, maskUrl, withinConnectTimeout} from './url.js'

export {maskUrl}

export function defaultBackendUrl(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.XDG_STATE_HOME && env.XDG_STATE_HOME.startsWith('/') ? env.XDG_STATE_HOME : join(homedir(), '.local', 'state')
  return pathToFileURL(join(state, 'dlq')).href
}

/** --backend, else DLQ_BACKEND, else the embedded file: default. */
export function resolveBackendUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): {url: string; isDefault: boolean} {
  // An empty --backend is a mistake (`-b "$URL"` with URL unset), not a request for the default:
  // falling back would take the lock on another backend than the other processes use.
  if (flag !== undefined && flag.trim() === '') throw usageError('bad backend URL', '--backend is empty', 'give a URL, or leave out --backend for $DLQ_BACKEND or the default')
  const url = flag ?? env.DLQ_BACKEND
  if (url && url.trim() !== '') return {url: url.trim(), isDefault: false}
  return {url: defaultBackendUrl(env), isDefault: true}
}

const fileParameters = ['connectTimeout']
const redisParameters = ['connectTimeout', 'passwordFile', 'replicas', 'replicaTimeout']
const followingParameters = [...redisParameters, 'failoverTimeout']
// The Sentinels' own credentials, beside the data nodes' (redis/connection.ts).
const sentinelParameters = ['sentinelUser', 'sentinelPassword', 'sentinelPasswordFile']
const zooKeeperParameters = ['connectTimeout', 'passwordFile', 'sessionTimeout']

export async function openBackend(url: string, options: BackendOptions & {isDefault?: boolean} = {}): Promise<Backend> {
  // A bare path is a directory: `-b /var/lock/dlq` means what it says.
  const href = (url.startsWith('/') || url.startsWith('./') || url.startsWith('../') ? pathToFileURL(url).href : url)
    // WHATWG URL cannot parse ZooKeeper's host list (zk://h1:2181,h2:2181/chroot); with its colons
    // %-encoded it is one opaque host, which the ZooKeeper driver decodes and splits.
    // Sentinel's and a cluster's address lists likewise (redis+sentinel://h1:26379,h2:26379/MASTER,
    // redis+cluster://h1:7000,h2:7001), even of one. The list is what follows the user info, up to
    // the path: a comma in a password (zk://u:p,x@h/) is not a host list.
    .replace(/^(zk:\/\/(?:[^/?#]*@)?)([^/?#@]*,[^/?#@]*)(?=[/?#]|$)/i, (_m, head: string, hosts: string) => head + hosts.replaceAll(':', '%3A'))
    .replace(/^(rediss?\+(?:sentinel|cluster):\/\/(?:[^/?#]*@)?)([^/?#@]*)/i, (_m, head: string, hosts: string) => head + hosts.replaceAll(':', '%3A'))
  // libpq's multi-host URLs (postgres://h1:5432,h2:5433/db) the same way (postgres/hosts.ts).
  const hrefParsed = /^postgres(ql)?:/i.test(href) ? (await import('./postgres/hosts.js')).encodeHostList(href) : href
  let parsed: URL
  try {
    parsed = new URL(hrefParsed)
  } catch {
    throw usageError('bad backend URL', JSON.stringify(maskUrl(url)), 'use file:///dir, redis://host, zk://host or postgres://user@host/db')
  }
  // The drivers decode these; a stray % would otherwise surface as an internal error.
  for (const part of [parsed.username, parsed.password, parsed.pathname]) {
    try {
      decodeURIComponent(part)
    } catch {
      throw usageError('bad backend URL', `${maskUrl(url)} has a malformed %-escape`, 'write a literal % as %25')
    }
  }
  const display = maskUrl(url)
  switch (parsed.protocol) {
    case 'file:': {
      checkParameters(parsed, fileParameters, display)
      connectTimeoutMs(parsed)
      if (parsed.host !== '' && parsed.host !== 'localhost') {
        throw usageError('bad backend URL', `${maskUrl(url)} names host ${parsed.host}`, 'a file: URL names a local or mounted directory: file:///path')
      }
      let dir: string
      try {
        dir = fileURLToPath(parsed)
      } catch (error) {
        throw usageError('bad backend URL', `${maskUrl(url)}: ${(error as Error).message}`, 'a file: URL names a local or mounted directory: file:///path')
      }
      // `file://` or `/` (`file://$DIR` with DIR unset) would scatter dlq's directories over /.
      if (/^\/+$/.test(dir)) {
        throw usageError('bad backend URL', `${maskUrl(url)} names the root directory`, 'give a directory of its own: file:///var/lock/dlq')
      }
      // A directory on a hung NFS mount would hang its first stat: bounded like a server.
      return withinConnectTimeout(parsed, display, import('./file/index.js').then(({openFileBackend}) => openFileBackend(parsed, {...options, create: options.isDefault ?? false})))
    }
    case 'redis:':
    case 'rediss:': {
      checkParameters(parsed, parsed.protocol === 'rediss:' ? [...redisParameters, 'ca', 'insecure'] : redisParameters, display)
      connectTimeoutMs(parsed)
      return withinConnectTimeout(parsed, display, import('./redis/index.js').then(({openRedisBackend}) => openRedisBackend(parsed, options)))
    }
    case 'redis+sentinel:':
    case 'rediss+sentinel:':
    case 'redis+cluster:': {
      const sentinel = parsed.protocol === 'redis+sentinel:' ? sentinelParameters : parsed.protocol === 'rediss+sentinel:' ? [...sentinelParameters, 'ca', 'insecure'] : []
      checkParameters(parsed, [...followingParameters, ...sentinel], display)
      connectTimeoutMs(parsed)
      return withinConnectTimeout(parsed, display, import('./redis/index.js').then(({openRedisBackend}) => openRedisBackend(parsed, options)))
    }
    case 'zk:': {
      // The session opens on the first request, within the same bound (zookeeper/connection.ts).
      // node-zookeeper-client speaks plaintext only (its TLS pull request, alexguan/node-zookeeper-client#97,
      // was never merged): asking for TLS must not quietly give a plaintext connection.
      for (const name of ['tls', 'ssl', 'secure']) {
        if (parsed.searchParams.has(name)) {
          throw usageError('bad backend URL', `?${name}= in ${display}: dlq cannot speak TLS to ZooKeeper (node-zookeeper-client has no TLS)`, "run a local TLS tunnel to the ensemble's secureClientPort (stunnel, a sidecar) and give its plaintext end in zk://: see the README, \"ZooKeeper over TLS\"")
        }
      }
      checkParameters(parsed, zooKeeperParameters, display)
      const {openZooKeeperBackend} = await import('./zookeeper/index.js')
      return openZooKeeperBackend(parsed, options)
    }
    case 'postgres:':
    case 'postgresql:': {
      // The parameters (libpq's too) are checked by the driver, which knows them. The opening is
      // bounded by ?connectTimeout=, or libpq's connect_timeout for each host (postgres/hosts.ts).
      const {connectBudgetMs} = (await import('./postgres/hosts.js')).targetsOf(parsed)
      return withinConnectTimeout(parsed, display, import('./postgres/index.js').then(({openPostgresBackend}) => openPostgresBackend(parsed, options)), connectBudgetMs)
    }
    default:
      throw usageError('bad backend URL', `unknown scheme ${JSON.stringify(parsed.protocol)} in ${maskUrl(url)}`, 'use file:, redis:, rediss:, redis+sentinel:, rediss+sentinel:, redis+cluster:, zk: or postgres:')
  }
}
