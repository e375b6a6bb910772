// The whole CLI in one module: esbuild bundles this file, oclif and the commands into dist/dlq.js,
// so a run loads one file instead of a few hundred (startup time is a product feature).
import Completion from './commands/completion.js'
import LockAcquire from './commands/lock/acquire.js'
import LockRelease from './commands/lock/release.js'
import LockRenew from './commands/lock/renew.js'
import LockRun from './commands/lock/run.js'
import LockStatus from './commands/lock/status.js'
import QueueDelete from './commands/queue/delete.js'
import QueuePop from './commands/queue/pop.js'
import QueuePurge from './commands/queue/purge.js'
import QueuePush from './commands/queue/push.js'
import QueueRedrive from './commands/queue/redrive.js'
import QueueStatus from './commands/queue/status.js'
import QueueTail from './commands/queue/tail.js'

export {execute} from '@oclif/core/execute'

export const COMMANDS = {
  completion: Completion,
  'lock:acquire': LockAcquire,
  'lock:release': LockRelease,
  'lock:renew': LockRenew,
  'lock:run': LockRun,
  'lock:status': LockStatus,
  'queue:delete': QueueDelete,
  'queue:pop': QueuePop,
  'queue:purge': QueuePurge,
  'queue:push': QueuePush,
  'queue:redrive': QueueRedrive,
  'queue:status': QueueStatus,
  'queue:tail': QueueTail,
}
