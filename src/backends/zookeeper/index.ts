// The ZooKeeper backend (zk://host:port[,host:port…][/chroot], root /dlq by default): locks and
// semaphores with the ZooKeeper lock recipe (lock.ts), queues on sequential nodes with claims moved
// by multi (queue.ts), one session per process (connection.ts). node-zookeeper-client is loaded
// only when this scheme is used, and the session is opened by the first request, so that
// `lock run` can size it from --ttl. Digest auth comes from the URL's user info, ?passwordFile= or
// DLQ_PASSWORD; nodes are then created with an ACL for that user only.
import type {Backend, BackendOptions} from '../types.js'
import {parseTarget, Session} from './connection.js'
import {ZooKeeperLocks} from './lock.js'
import {layout} from './paths.js'
import {ZooKeeperQueues} from './queue.js'

export async function openZooKeeperBackend(url: URL, options: BackendOptions): Promise<Backend> {
  const target = await parseTarget(url)
  const session = new Session(target, options.log)
  const paths = layout(target.root)
  const locks = new ZooKeeperLocks(session, paths)
  return {
    displayUrl: target.display,
    locks,
    queues: new ZooKeeperQueues(session, paths),
    close: async () => {
      // A lease from `lock acquire` must outlive this session: hand it to a persistent node first.
      await locks.handOver().catch(() => {})
      await session.close()
    },
  }
}
