#!/usr/bin/env node
// Starts dlq fast: the CLI is one bundled file (dist/dlq.cjs), compiled from a V8 code cache
// (./load.cjs). `lock run` with plain arguments takes a faster path still: dist/lock-run.cjs,
// without oclif.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const load = require('./load.cjs')

// oclif's short flags are letters only; `-0` (NUL framing, as in xargs -0) is spelled --null.
const args = process.argv.slice(2)
const end = args.indexOf('--')
for (let i = 0; i < (end === -1 ? args.length : end); i++) if (args[i] === '-0') args[i] = '--null'
// Global flags may come before the command (`dlq -b redis://h lock status`); oclif wants them after.
const globals = []
while (args.length > 0) {
  if (args[0] === '-b' || args[0] === '--backend') globals.push(...args.splice(0, 2))
  else if (/^(--backend=|-b.)/.test(args[0]) || ['--verbose', '--json', '--no-color', '--color'].includes(args[0])) globals.push(args.shift())
  else break
}

// `lock run` (cron guards) without oclif when its arguments are plain (src/fast.ts); DLQ_FAST_PATH=0
// turns that off, so the tests can hold the two paths to the same behaviour.
if (args[0] === 'lock' && args[1] === 'run' && process.env.DLQ_FAST_PATH !== '0') {
  let flags
  try {
    flags = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'oclif.manifest.json'), 'utf8')).commands['lock:run'].flags
  } catch {} // no manifest (a build in progress): oclif does without
  if (flags && load('lock-run').tryLockRun([...globals, ...args.slice(2)], flags)) return
}

const {execute, COMMANDS} = load('dlq')

// `dlq help lock run` (SPEC §5) is `dlq lock run --help`, `dlq -h` is `dlq --help`: no help plugin is loaded.
if (args[0] === '-h') args[0] = '--help'
if (args[0] === 'help') args.splice(0, args.length, ...args.slice(1).filter((a) => !a.startsWith('-')), '--help')
// A mistyped command is a usage error like any other (exit 64, one line), not oclif's exit 2.
const usage = (line) => {
  process.stderr.write(`dlq: ${line}\n`)
  process.exit(64)
}
const [topic, command] = args
if (topic === undefined ? globals.length > 0 : !['lock', 'queue', '--help', '--version'].includes(topic) && !Object.hasOwn(COMMANDS, topic)) {
  usage(topic === undefined ? 'no command given (see dlq --help)' : `unknown ${topic.startsWith('-') ? 'flag' : 'command'} ${JSON.stringify(topic)} (see dlq --help)`)
}
if (['lock', 'queue'].includes(topic) && command !== undefined && !command.startsWith('-') && !Object.hasOwn(COMMANDS, `${topic}:${command}`)) {
  usage(`unknown command "${topic} ${command}" (see dlq ${topic} --help)`)
}
if (globals.length > 0) args.splice(['lock', 'queue'].includes(args[0]) && args[1] && !args[1].startsWith('-') ? 2 : 1, 0, ...globals)

execute({args, dir: __filename})
