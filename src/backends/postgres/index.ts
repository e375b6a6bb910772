// The PostgreSQL backend (postgres://, postgresql://): locks as leases in a table, serialised per
// key by a transaction-level advisory lock; queues as a SKIP LOCKED table; waits woken by
// LISTEN/NOTIFY. pg is loaded only when this scheme is used.
import type {Backend, BackendOptions} from '../types.js'
import {Connection} from './connection.js'
import {PostgresLocks} from './lock.js'
import {PostgresQueues} from './queue.js'

export async function openPostgresBackend(url: URL, options: BackendOptions): Promise<Backend> {
  const connection = await Connection.open(url, options.log)
  return {
    displayUrl: connection.displayUrl,
    locks: new PostgresLocks(connection),
    queues: new PostgresQueues(connection),
    close: () => connection.close(),
  }
}
