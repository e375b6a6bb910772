// `lock run` has two ways in (bin/run.cjs): the fast path without oclif (src/fast.ts) for plain
// arguments, and oclif for everything else. Run as a user would, both must behave the same: the
// same exit code, the same lines, the same command run. DLQ_FAST_PATH=0 forces oclif.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, NODE, runProgram, uniqueName} from '../support/cli.mjs'

const viaOclif = {DLQ_FAST_PATH: '0'}
// What may differ between two runs of the same thing: numbers (tokens, generations, pids) and times.
const normal = (text) => text.replace(/\d+(\.\d+)?(ms|s|m|h)\b/g, 'T').replace(/\d+/g, 'N')

describe('lock run: the fast path and oclif agree', {concurrency: 4}, () => {
  const ctx = useBackend(fileBackend, {before, after})
  const cases = (key, held) => [
    ['a plain run', ['--key', key, '--', 'sh', '-c', 'echo "$DLQ_LOCK_KEY" out; echo err >&2; exit 3']],
    ['short forms and = forms', ['-k', key, '-w', '0', '--ttl=5s', '-q', '--kill-grace', '1s', '--', 'echo', '-k', '--', 'x']],
    ['--verbose', ['--key', key, '--verbose', '--', 'true']],
    ['a held key, --wait 0', ['--key', held, '--wait', '0', '--', 'echo', 'ran']],
    ['a held key, --wait 0 --conflict-exit-code 3 -q', ['--key', held, '--wait', '0', '--conflict-exit-code', '3', '-q', '--', 'echo', 'ran']],
    ["flock's -n -E 3 on a held key", ['--key', held, '-n', '-E', '3', '--', 'echo', 'ran']],
    ['-n and a --wait that disagrees', ['--key', key, '-n', '--wait', '5s', '--', 'echo', 'ran']],
    ['-n beside --wait 0', ['--key', key, '-n', '-w', '0', '--', 'echo', 'ran']],
    ['--conflict-exit-code 300', ['--key', key, '--conflict-exit-code', '300', '--', 'true']],
    ['--conflict-exit-code -1', ['--key', key, '--conflict-exit-code', '-1', '--', 'true']],
    ['--limit 0', ['--key', key, '--limit', '0', '--', 'true']],
    ['--limit abc', ['--key', key, '--limit', 'abc', '--', 'true']],
    ['--ttl 1x', ['--key', key, '--ttl', '1x', '--', 'true']],
    ['--ttl 50ms', ['--key', key, '--ttl', '50ms', '--', 'true']],
    ['--wait -1', ['--key', key, '--wait', '-1', '--', 'true']],
    ['--kill-grace 99999999999h', ['--key', key, '--kill-grace', '99999999999h', '--', 'true']],
    ['--kill-grace not shorter than --ttl (a warning)', ['--key', key, '--ttl', '2s', '--kill-grace', '2s', '--', 'true']],
    ['a /dev/tty the command cannot open without a terminal', ['--key', key, '--', 'sh', '-c', 'exec 3</dev/tty; echo opened']],
    ['an empty key', ['--key', '', '--', 'true']],
    ['a key with a newline', ['--key', 'a\nb', '--', 'true']],
    ['no --key', ['--', 'true']],
    ['no command', ['--key', key, '--']],
    ['a command that does not exist', ['--key', key, '--', '/nonexistent/dlq-test']],
    ['an unknown flag', ['--key', key, '--nope', '--', 'true']],
    ['a word before -- that belongs to no flag', ['--key', key, '--wait', '10', 'min', '--', 'echo', 'ran']],
    ['two stray words, one also in the command', ['echo', '--key', key, 'production', '--', 'echo', 'ran']],
    ['a stray word and a bad duration', ['--key', key, 'x', '--wait', '1x', '--', 'true']],
    ['compound durations', ['--key', key, '--wait', '1m30s', '--ttl', '1m0s', '--kill-grace', '1s500ms', '--', 'echo', 'ran']],
    ['a compound duration out of order', ['--key', key, '--wait', '30s1m', '--', 'echo', 'ran']],
    ['a key written with U+FFFD', ['--key', `${key}\uFFFD`, '--', 'printenv', 'DLQ_LOCK_KEY']],
    ['a command that cannot be executed', ['--key', key, '--', '/etc/passwd']],
  ]

  it('the same for what only a shell or the environment can pass: bytes that are not UTF-8, DLQ_BACKEND, DLQ_PASSWORD', async () => {
    const key = uniqueName('fast-env')
    const cases = [
      ['a key that is not UTF-8', `"$@" -b ${ctx.dlq.url} --key $'${key}\\xff' -- echo ran`, {}],
      ['-k and a name that is not UTF-8', `"$@" -b ${ctx.dlq.url} -k $'\\xfe' -- echo ran`, {}],
      ['an unknown URL parameter in DLQ_BACKEND', `"$@" --key ${key} -- echo ran`, {DLQ_BACKEND: `${ctx.dlq.url}?conectTimeout=1s`}],
      ['?connectTimeout= in DLQ_BACKEND', `"$@" --key ${key} -- echo ran`, {DLQ_BACKEND: `${ctx.dlq.url}?connectTimeout=1m30s`}],
      ['DLQ_PASSWORD is not passed on', `"$@" -b ${ctx.dlq.url} --key ${key} -- sh -c 'echo "[\${DLQ_PASSWORD-unset}]"'`, {DLQ_PASSWORD: 's3cret'}],
    ]
    for (const [what, script, env] of cases) {
      const viaShell = (extra) => runProgram('bash', ['-c', script, 'dlq-test-sh', NODE, BIN, 'lock', 'run'], {env: {...env, ...extra}})
      const fast = await viaShell({})
      const slow = await viaShell(viaOclif)
      assert.equal(fast.code, slow.code, `${what}: exit ${fast.code} (fast path) vs ${slow.code} (oclif)\n${fast.stderr}\n${slow.stderr}`)
      assert.equal(fast.stdout, slow.stdout, `${what}: stdout`)
      assert.equal(normal(fast.stderr), normal(slow.stderr), `${what}: stderr`)
    }
  })

  it('for every case, the same exit code, stdout and stderr', async () => {
    const held = uniqueName('held')
    const holder = await ctx.dlq.run(['lock', 'acquire', '--key', held, '--ttl', '60s'])
    assert.equal(holder.code, 0, holder.stderr)
    const key = uniqueName('fast')
    for (const [what, args] of cases(key, held)) {
      const fast = await ctx.dlq.run(['lock', 'run', ...args])
      const slow = await ctx.dlq.run(['lock', 'run', ...args], {env: viaOclif})
      assert.equal(fast.code, slow.code, `${what}: exit ${fast.code} (fast path) vs ${slow.code} (oclif)\n${fast.stderr}\n${slow.stderr}`)
      assert.equal(fast.stdout, slow.stdout, `${what}: stdout`)
      assert.equal(normal(fast.stderr), normal(slow.stderr), `${what}: stderr`)
    }
  })

})
