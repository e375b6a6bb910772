// Where dlq keeps things in ZooKeeper, below the root (the URL's chroot, default /dlq):
//
//   <root>/locks/<key>/c.<owner>.<seq>        a contender for the lock: EPHEMERAL_SEQUENTIAL
//   <root>/locks/<key>/l.<owner>              a lease that outlives its session (lock acquire)
//   <root>/queues/<queue>/waiting/m<seq>[.<deliveries>]
//   <root>/queues/<queue>/claimed/m<seq>.<delivery>.<deadline>.<reserver>
//   <root>/clock                              written once by a process to learn the server's clock
//
// A key or queue name (1–255 bytes of UTF-8, may contain `/`) becomes ONE znode name: every byte
// outside [A-Za-z0-9_-] (and a leading dot, so never `.` or `..`) is %XX-encoded, as the file
// backend does it. ZooKeeper has no short name limit, so unlike a file name nothing is hashed and
// the encoding is reversible: `lock status` and `queue status` read the names back.

export {percentEncode as encodeName, percentDecode as decodeName} from '../names.js'
import {percentEncode as encodeName} from '../names.js'

export interface Layout {
  root: string
  locks: string
  queues: string
  key(key: string): string
  queue(queue: string): {root: string; waiting: string; claimed: string}
}

export function layout(root: string): Layout {
  const locks = `${root}/locks`
  const queues = `${root}/queues`
  return {
    root,
    locks,
    queues,
    key: (key) => `${locks}/${encodeName(key)}`,
    queue: (queue) => {
      const dir = `${queues}/${encodeName(queue)}`
      return {root: dir, waiting: `${dir}/waiting`, claimed: `${dir}/claimed`}
    },
  }
}

/** ZooKeeper appends a 10-digit sequence number to a sequential node's name. */
export const sequenceOf = (name: string): string => name.slice(-10)

export const basename = (path: string): string => path.slice(path.lastIndexOf('/') + 1)
