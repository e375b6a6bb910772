// The Redis backend (redis://, rediss://): locks and semaphores as scripted sorted sets, queues on
// Streams. ioredis is loaded only when this scheme is used.
import type {Backend, BackendOptions} from '../types.js'
import {maskUrl} from '../url.js'
import {connect} from './connection.js'
import {RedisLocks} from './lock.js'
import {RedisQueues} from './queue.js'

export async function openRedisBackend(url: URL, options: BackendOptions): Promise<Backend> {
  const client = await connect(url, options.log)
  return {
    displayUrl: maskUrl(url.href),
    locks: new RedisLocks(client, options.log),
    queues: new RedisQueues(client, options.log),
    // Not QUIT: it waits for a reply, and dlq must not hang on a server that stopped answering.
    close: async () => client.disconnect(),
  }
}
