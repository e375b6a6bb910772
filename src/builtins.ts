// Node built-ins that only some paths need, loaded on first use: node:crypto alone costs ~3 ms of
// every start (bin/run.cjs), and the file backend hashes only names too long for a path component.
// And the backends' client libraries, which the build bundles like the CLI.
import {createRequire} from 'node:module'

const require = createRequire(import.meta.url)

export const crypto = (): typeof import('node:crypto') => require('node:crypto')

/**
 * A backend's client library: bundled by the build into dist/NAME.cjs (scripts/build.mjs) and
 * compiled from the V8 code cache by bin/load.cjs, as the CLI is. Loaded only by the scheme that
 * needs it. ioredis from its ~60 modules cost 85 ms of every Redis command's start.
 */
export const vendored = <T>(name: 'ioredis' | 'pg' | 'node-zookeeper-client'): T => (require('../bin/load.cjs') as (name: string) => T)(name)
