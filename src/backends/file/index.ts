// The embedded default backend: a directory (local disk or NFS), no server.
import {access, mkdir, stat, constants} from 'node:fs/promises'
import {fileURLToPath} from 'node:url'

import {shownPath, unavailable} from '../../errors.js'
import type {Backend, BackendOptions} from '../types.js'
import {FileLocks} from './lock.js'
import {pinBase} from './paths.js'
import {FileQueues} from './queue.js'

export async function openFileBackend(url: URL, options: BackendOptions & {create: boolean}): Promise<Backend> {
  const base = fileURLToPath(url).replace(/(.)\/+$/, '$1')
  if (options.create) await mkdir(base, {recursive: true, mode: 0o700})
  // An explicit directory must exist: creating it would silently turn a missing NFS mount into a
  // local directory that no other machine sees, and mutual exclusion with it.
  const info = await stat(base).catch((error: NodeJS.ErrnoException) => {
    throw unavailable(`backend directory ${base} ${error.code === 'ENOENT' ? 'does not exist' : 'cannot be read'}`, error.code ?? 'error', error.code === 'ENOENT' ? `create it: mkdir -p ${base}` : undefined)
  })
  if (!info.isDirectory()) throw unavailable(`backend ${base} is not a directory`, 'file: needs a directory', 'give file:///path/to/dir')
  await access(base, constants.W_OK | constants.X_OK).catch((error: NodeJS.ErrnoException) => {
    throw unavailable(`backend directory ${base} is not writable`, error.code ?? 'error', 'dlq needs to create files there')
  })
  // From here on the drivers reach the base only through its pinned descriptor (paths.ts), and
  // refuse it if other users could move what dlq keeps there.
  const {path, modes} = await pinBase(base)
  const log = options.log && ((line: string) => options.log!(shownPath(line)))
  return {
    displayUrl: url.href,
    locks: new FileLocks(path, modes, log),
    queues: new FileQueues(path, modes, log),
    close: async () => {}, // the pinned directories close with the process
  }
}
