// Conformance: bad input (SPEC §1, §4). A usage error is exit 64 with exactly one line on stderr,
// starting with `dlq: `, and no stack trace; an unusable backend is 69 the same way.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {oneErrorLine, run, uniqueName} from '../support/cli.mjs'

// One command of each kind, to be run against a backend URL.
const commands = (key) => [
  ['lock', 'status'],
  ['lock', 'run', '--key', key, '--', 'true'],
  ['queue', 'push', '--queue', key, 'm'],
  ['queue', 'pop', '--queue', key],
]

describe('backend URLs', {concurrency: 4}, () => {
  for (const [what, url, code] of [
    ['an unknown scheme', 'foo://x', 64],
    ['an unknown scheme (http)', 'http://localhost/', 64],
    ['a malformed URL (no scheme)', 'not a url', 64],
    ['a malformed URL (broken IPv6 host)', 'redis://[::1', 64],
    ['a malformed URL (bad port)', 'redis://localhost:99999999', 64],
    ['a directory that does not exist', 'file:///does/not/exist', 69],
  ]) {
    it(`${what}: ${url} → exit ${code}, one line`, async () => {
      assert.equal(existsSync('/does/not/exist'), false)
      for (const args of commands(uniqueName('url'))) {
        const r = await run([...args.slice(0, 2), '-b', url, ...args.slice(2)])
        assert.equal(r.code, code, `dlq ${args.slice(0, 2).join(' ')} -b ${url}: ${r.stderr}`)
        oneErrorLine(r, assert)
        assert.equal(r.stdout, '')
      }
      const viaEnv = await run(['lock', 'status'], {env: {DLQ_BACKEND: url}})
      assert.equal(viaEnv.code, code, `DLQ_BACKEND=${url}: ${viaEnv.stderr}`)
      oneErrorLine(viaEnv, assert)
    })
  }

  it('an error with --json is one JSON object on stderr carrying the exit code', async () => {
    const r = await run(['lock', 'status', '-b', 'foo://x', '--json'])
    assert.equal(r.code, 64)
    assert.equal(r.stderrLines.length, 1, r.stderr)
    const error = JSON.parse(r.stderrLines[0])
    assert.equal(typeof error, 'object')
    assert.match(JSON.stringify(error), /64/)
  })
})

// Flags, keys and queue names are checked before any backend is opened, so these run once, against
// a file: backend (the per-backend files cover valid hostile names on every backend).
describe('bad flags, keys and queue names', {concurrency: 4}, () => {
  const ctx = useBackend(fileBackend, {before, after})
  const key = uniqueName('usage')
  const cases = {
    'an unknown flag (lock run)': ['lock', 'run', '--key', key, '--frobnicate', '--', 'true'],
    'an unknown flag (lock status)': ['lock', 'status', '--frobnicate'],
    'an unknown flag (queue pop)': ['queue', 'pop', '--queue', key, '--frobnicate'],
    'a bad duration 1x (--wait)': ['lock', 'run', '--key', key, '--wait', '1x', '--', 'true'],
    'a bad duration 1x (--ttl)': ['lock', 'run', '--key', key, '--ttl', '1x', '--', 'true'],
    'a bad duration -1 (--wait -1)': ['lock', 'run', '--key', key, '--wait', '-1', '--', 'true'],
    'a bad duration -1 (--wait=-1)': ['lock', 'run', '--key', key, '--wait=-1', '--', 'true'],
    'a bad duration -1 (--ttl=-1)': ['lock', 'acquire', '--key', key, '--ttl=-1'],
    'a bad duration (--kill-grace 1x)': ['lock', 'run', '--key', key, '--kill-grace', '1x', '--', 'true'],
    'a bad duration (pop --wait 1x)': ['queue', 'pop', '--queue', key, '--wait', '1x'],
    'a bad duration (pop --wait=-1)': ['queue', 'pop', '--queue', key, '--wait=-1'],
    'a bad duration (pop --visibility 1x)': ['queue', 'pop', '--queue', key, '--visibility', '1x'],
    '--limit 0': ['lock', 'run', '--key', key, '--limit', '0', '--', 'true'],
    '--limit=-1': ['lock', 'run', '--key', key, '--limit=-1', '--', 'true'],
    '--limit abc': ['lock', 'run', '--key', key, '--limit', 'abc', '--', 'true'],
    '--count 0': ['queue', 'pop', '--queue', key, '--count', '0'],
    '--count=-5': ['queue', 'pop', '--queue', key, '--count=-5'],
    'no command after -- (lock run)': ['lock', 'run', '--key', key, '--'],
    'no command at all (lock run)': ['lock', 'run', '--key', key],
    'no --key (lock run)': ['lock', 'run', '--', 'true'],
    'no command after -- (pop --exec)': ['queue', 'pop', '--queue', key, '--exec', '--'],
  }
  for (const [what, args] of Object.entries(cases)) {
    it(`${what} → 64, one line`, async () => {
      const r = await ctx.dlq.run(args)
      assert.equal(r.code, 64, `dlq ${args.join(' ')}: ${r.stderr}`)
      oneErrorLine(r, assert)
      assert.equal(r.stdout, '')
    })
  }

  // Invalid keys and queue names: 1–255 bytes of UTF-8 without control characters, or exit 64.
  const badNames = {
    empty: '',
    '256 bytes': 'x'.repeat(256),
    '256 bytes of 2-byte characters': 'é'.repeat(128),
    newline: 'a\nb',
    tab: 'a\tb',
    'carriage return': 'a\rb',
    'SOH (\\x01)': 'a\u0001b',
    escape: '\u001b[31mred',
    DEL: 'a\u007fb',
    'C1 control': 'a\u0085b',
  }
  for (const [what, name] of Object.entries(badNames)) {
    it(`a bad key or queue name (${what}) is refused with 64, one line and no stack trace`, async () => {
      const commands = [
        ['lock', 'run', `--key=${name}`, '--', 'true'],
        ['lock', 'acquire', `--key=${name}`],
        ['lock', 'status', `--key=${name}`],
        ['lock', 'release', `--key=${name}`, '--force'],
        ['queue', 'push', `--queue=${name}`, 'm'],
        ['queue', 'pop', `--queue=${name}`],
        ['queue', 'tail', `--queue=${name}`],
      ]
      const results = await Promise.all(commands.map((args) => ctx.dlq.run(args)))
      for (const [i, r] of results.entries()) {
        assert.equal(r.code, 64, `${commands[i].slice(0, 2).join(' ')}: ${r.stderr}`)
        oneErrorLine(r, assert)
      }
    })
  }
})
