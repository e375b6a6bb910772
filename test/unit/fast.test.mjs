// The fast path of `lock run` (src/fast.ts) must read arguments exactly as oclif does, or leave them
// to oclif: these tests hold its view of the flags to the command's own definitions, and its
// parser to declining whatever it cannot be sure of. test/conformance/fast-path.test.mjs runs
// both paths side by side as a user would.
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {describe, it} from 'node:test'

import LockRun from '../../dist/commands/lock/run.js'
import {integerFlags, parseFast} from '../../dist/fast.js'

const manifest = JSON.parse(readFileSync(new URL('../../oclif.manifest.json', import.meta.url), 'utf8')).commands['lock:run'].flags

describe('fast path: its view of the flags', () => {
  it('the manifest lists every flag of lock run, with the short forms of the definitions', () => {
    const defined = {...LockRun.baseFlags, ...LockRun.flags}
    for (const [name, flag] of Object.entries(defined)) {
      assert.ok(manifest[name], `--${name} is missing from oclif.manifest.json (run npm run build)`)
      assert.equal(manifest[name].char, flag.char, `-${flag.char} of --${name}`)
      assert.equal(manifest[name].type, flag.type, `kind of --${name}`)
    }
  })
  it('exactly the flags oclif parses as integers are read as integers', async () => {
    for (const [name, flag] of Object.entries(LockRun.flags)) {
      if (flag.type !== 'option') continue
      const rejectsWords = await Promise.resolve(flag.parse('abc', {}, flag)).then(() => false, () => true)
      assert.equal(integerFlags.has(name), rejectsWords, `--${name}`)
    }
  })
})

describe('fast path: parsing', () => {
  const parse = (...argv) => parseFast(argv, manifest)
  it('reads the plain forms as oclif does, defaults filled in, the command verbatim', () => {
    const r = parse('-k', 'deploy', '-w0', '--ttl=5s', '-q', '--limit', '3', '-b', 'file:///x', '--no-color', '--', 'sh', '-c', 'x -- --key y')
    assert.deepEqual(r.command, ['sh', '-c', 'x -- --key y'])
    assert.equal(parse('--key', 'k', '--shared', '--', 'true').flags.shared, true, 'the fast path takes --shared as oclif does')
    assert.deepEqual(r.flags, {key: 'deploy', wait: '0', ttl: '5s', quiet: true, limit: 3, backend: 'file:///x', color: false, verbose: false, json: false, 'conflict-exit-code': 75, 'kill-grace': '10s', nonblock: false, shared: false})
    assert.equal(parse('--key', 'k', '--conflict-exit-code', '-1', '--', 'true').flags['conflict-exit-code'], -1)
    assert.deepEqual(r.stray, [])
  })
  it('keeps the words before -- that belong to no flag, for lockRun to refuse (never drops them)', () => {
    const r = parse('--key', 'x', '--wait', '10', 'min', '-q', 'more', '--', 'echo', 'ran')
    assert.deepEqual(r.stray, ['min', 'more'])
    assert.deepEqual([r.flags.key, r.flags.wait, r.flags.quiet], ['x', '10', true])
    assert.deepEqual(r.command, ['echo', 'ran'])
  })
  it('leaves to oclif whatever it cannot be sure of', () => {
    for (const argv of [
      ['--key', 'k', 'true'], // no --
      ['--key', 'k', '--'], // nothing after --
      ['--', 'true'], // the required --key missing
      ['--key', 'k', '--help', '--', 'true'],
      ['-h', '--key', 'k', '--', 'true'],
      ['--key', 'k', '--json', '--', 'true'],
      ['--key', 'k', '--version', '--', 'true'],
      ['--key', 'k', '--nope', '--', 'true'], // unknown flag
      ['--key', 'k', '-x', '--', 'true'], // unknown short flag
      ['--key', 'a', '--key', 'b', '--', 'true'], // repeated
      ['--key', 'k', '--color', '--no-color', '--', 'true'], // repeated, negated
      ['--key', '--wait', '--', 'true'], // a value that looks like a flag
      ['--key', 'k', '--wait', '--', 'true'], // a value missing before --
      ['--key', 'k', '--limit', 'abc', '--', 'true'], // not an integer
      ['--key', 'k', '--limit', '2.5', '--', 'true'],
      ['--key', 'k', '--quiet=yes', '--', 'true'], // a value for a boolean
      ['--key', 'k', '--no-quiet', '--', 'true'], // no --no- form for it
    ]) assert.equal(parse(...argv), undefined, argv.join(' '))
  })
})
