// One Redis connection per dlq process (plus a duplicate for blocking reads or pub/sub when a
// command has to wait), with the failures that mean "backend unavailable" turned into exit 69.
import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {isIP} from 'node:net'

import type {Redis as Client, RedisOptions} from 'ioredis'

import {unavailable, usageError} from '../../errors.js'
import {connectTimeoutMs, credentials, maskUrl} from '../url.js'

export type {Client}

export async function connect(url: URL, log?: (line: string) => void): Promise<Client> {
  const {Redis} = await import('ioredis')
  const {user, password} = await credentials(url)
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) throw usageError('bad backend URL', `database ${JSON.stringify(url.pathname.slice(1))} in ${maskUrl(url.href)}`, 'redis://host:port/DB with DB a number')
  let tls: RedisOptions['tls']
  if (url.protocol === 'rediss:') {
    const ca = url.searchParams.get('ca')
    tls = {
      ...(isIP(url.hostname.replace(/^\[|\]$/g, '')) ? {} : {servername: url.hostname}),
      ...(ca ? {ca: await readFile(ca).catch(() => { throw usageError('cannot read ?ca=', ca, 'name a PEM file with the CA certificate') })} : {}),
      rejectUnauthorized: url.searchParams.get('insecure') === null,
    }
  }
  const timeout = connectTimeoutMs(url)
  const client = new Redis({
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 6379,
    db,
    username: user,
    password,
    tls,
    lazyConnect: true,
    connectTimeout: timeout,
    // A command must not hang dlq when the server stops answering (SIGSTOP, partition).
    commandTimeout: timeout,
    maxRetriesPerRequest: 1,
    // No queueing while disconnected: renewals fail fast, and the supervisor decides at expiry.
    enableOfflineQueue: false,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    enableReadyCheck: false,
    connectionName: 'dlq',
  })
  // The connect promise often says only "Connection is closed"; the cause arrives as an event.
  let cause: Error | undefined
  client.on('error', (error: Error) => {
    cause = error
    log?.(`redis: ${error.message}`)
  })
  try {
    await client.connect()
    // connect() can resolve before the AUTH reply: one round trip proves the session usable.
    await client.ping()
    // ioredis reports a refused SELECT only as an event and goes on in database 0: ask again, so
    // that a database the server does not have is an error, not someone else's locks and queues.
    if (db !== 0) await client.select(db)
  } catch (error) {
    client.disconnect()
    const message = (cause ?? (error as Error)).message
    if (/DB index/i.test(message)) {
      throw unavailable(`cannot use database ${db} of ${maskUrl(url.href)}`, message, 'the server has fewer: see its "databases" setting')
    }
    if (/WRONGPASS|NOAUTH|NOPERM|invalid password|AUTH/i.test(message)) {
      throw unavailable(`authentication refused by ${maskUrl(url.href)}`, message.replace(password ?? '\0', '***'), 'check the user and DLQ_PASSWORD or ?passwordFile=')
    }
    throw unavailable(`cannot connect to ${maskUrl(url.href)}`, message, 'is the server up and reachable?')
  }
  log?.(`redis: connected to ${maskUrl(url.href)}`)
  return client
}

/** A Lua script called by its SHA1, loaded on the first NOSCRIPT. */
export class Script {
  readonly sha: string

  constructor(readonly name: string, readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex')
  }

  async run(client: Client, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await client.callBuffer('EVALSHA', [this.sha, keys.length, ...keys, ...args])
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error
      return client.callBuffer('EVAL', [this.lua, keys.length, ...keys, ...args])
    }
  }

  /**
   * For calls sent while others are in flight whose order matters (push batches, a pop's later
   * reserve calls): EVAL, with the script's text, so none can fail with NOSCRIPT and be sent again
   * behind the calls after it. (With EVALSHA, another client loading the script between two
   * calls made the second succeed and the first come back last: messages stored out of order.)
   * The server compiles the text once, by its SHA1; the text is small beside a batch's messages.
   */
  runInOrder(client: Client, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    return client.callBuffer('EVAL', [this.lua, keys.length, ...keys, ...args])
  }
}

/** Replies come back as Buffers (message bodies are bytes); this reads the rest as text. */
export const text = (value: unknown): string => (Buffer.isBuffer(value) ? value.toString('utf8') : String(value))
export const num = (value: unknown): number => Number(text(value))
