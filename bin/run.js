#!/usr/bin/env node
import {execute} from '@oclif/core'

// oclif's short flags are letters only; `-0` (NUL framing, as in xargs -0) is spelled --null.
const args = process.argv.slice(2)
const end = args.indexOf('--')
for (let i = 0; i < (end === -1 ? args.length : end); i++) if (args[i] === '-0') args[i] = '--null'

await execute({args, dir: import.meta.url})
