// Node built-ins that only some paths need, loaded on first use: node:crypto alone costs ~3 ms of
// every start (bin/run.cjs), and the file backend hashes only names too long for a path component.
import {createRequire} from 'node:module'

const require = createRequire(import.meta.url)

export const crypto = (): typeof import('node:crypto') => require('node:crypto')
