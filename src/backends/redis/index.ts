// The Redis backend (redis://, rediss://, a master behind Sentinel: redis+sentinel://,
// rediss+sentinel://, and Redis Cluster: redis+cluster://): locks and semaphores as scripted
// sorted sets, queues on Streams. ioredis is loaded only when one of these schemes is used.
import type {Backend, BackendOptions} from '../types.js'
import {connect, shownUrl} from './connection.js'
import {RedisLocks} from './lock.js'
import {RedisQueues} from './queue.js'

export async function openRedisBackend(url: URL, options: BackendOptions): Promise<Backend> {
  const {client, followMs, replication} = await connect(url, options.log)
  return {
    displayUrl: shownUrl(url),
    locks: new RedisLocks(client, options.log, followMs, replication),
    queues: new RedisQueues(client, options.log, followMs, replication),
    // Not QUIT: it waits for a reply, and dlq must not hang on a server that stopped answering.
    close: async () => client.disconnect(),
  }
}
