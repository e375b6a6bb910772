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

export function encodeName(name: string): string {
  let out = ''
  const bytes = Buffer.from(name, 'utf8')
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    const plain = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x2d || (b === 0x2e && i > 0)
    out += plain ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

export function decodeName(component: string): string {
  return Buffer.from(component.replace(/%([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1').toString('utf8')
}

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
