// Conformance: bad input (SPEC §1, §4). A usage error is exit 64 with exactly one line on stderr,
// starting with `dlq: `, and no stack trace; an unusable backend is 69 the same way.
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {fileBackend, useBackend} from '../support/backends.mjs'
import {BIN, NODE, oneErrorLine, run, runProgram, uniqueName} from '../support/cli.mjs'

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
    ['a malformed URL (zk, bad port)', 'zk://127.0.0.1:99999/dlq', 64],
    ['a malformed URL (zk, no server)', 'zk://', 64],
    ['a malformed URL (postgres, broken IPv6 host)', 'postgres://u:pw@[::1/db', 64],
    ['a malformed %-escape in a password', 'redis://u:pa%ss@127.0.0.1:1', 64],
    ['a malformed %-escape in a path', 'postgres://u@127.0.0.1:1/d%ZZ', 64],
    ['a malformed %-escape in a file: URL', 'file:///tmp/%ZZ', 64],
    ['a file: URL naming another host', 'file://otherhost/var/lock/dlq', 64],
    ['a file: URL naming the root directory (file://$DIR with DIR unset)', 'file://', 64],
    ['a bare / (a path variable that was empty)', '/', 64],
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

  it('an empty --backend (-b "$URL" with URL unset) is 64, not a silent fall-back to the default; an empty DLQ_BACKEND is unset', async () => {
    for (const args of commands(uniqueName('empty'))) {
      const r = await run([...args.slice(0, 2), '-b', '', ...args.slice(2)])
      assert.equal(r.code, 64, `dlq ${args.join(' ')} -b '': ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), /--backend is empty/)
    }
    const viaEnv = await run(['lock', 'status'], {env: {DLQ_BACKEND: ''}})
    assert.equal(viaEnv.code, 0, viaEnv.stderr)
  })

  it('no password in the line, whatever is wrong with the URL', async () => {
    for (const url of ['redis://u:s3cret-pw@[::1', 'postgres://u:s3cret-pw@h:99999999/db', 'zk://u:s3cret-pw@127.0.0.1:1/dlq?connectTimeout=1x', 'redis://u:s3cret-pw%ZZ@h']) {
      const r = await run(['lock', 'status', '-b', url])
      assert.equal(r.code, 64, `${url}: ${r.stderr}`)
      oneErrorLine(r, assert)
      assert.doesNotMatch(r.stderr, /s3cret-pw/, url)
    }
  })

  it('a comma in a ZooKeeper password is not a host list: the password stays masked in the error', async () => {
    for (const url of ['zk://u:s3cret,pw@127.0.0.1:1/app?connectTimeout=1s', 'zk://u:s3cret,pw@127.0.0.1:1,127.0.0.1:2/app?connectTimeout=1s']) {
      const r = await run(['lock', 'status', '-b', url])
      assert.equal(r.code, 69, `${url}: ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), /zk:\/\/u:\*\*\*@127\.0\.0\.1:1/)
      assert.doesNotMatch(r.stderr, /s3cret/, url)
    }
  })

  it('--verbose masks a password with a raw @ up to the last @ of the authority, on every scheme (redis://alice:***@host, never a piece of it)', async () => {
    for (const url of [
      'redis://alice:SECRETpw@pw@127.0.0.1:1',
      'rediss://alice:SECRETpw@pw@127.0.0.1:1/0',
      'zk://alice:SECRETpw@pw@127.0.0.1:1/dlq?connectTimeout=300ms',
      'postgres://alice:SECRETpw@pw@127.0.0.1:1/db',
      'postgresql://alice:SECRETpw@@pw@127.0.0.1:1/db',
      'file://alice:SECRETpw@pw@localhost/tmp',
    ]) {
      for (const args of [['lock', 'status', '--verbose'], ['lock', 'run', '--key', 'k', '--verbose', '--', 'true']]) {
        const r = await run([...args.slice(0, 2), '-b', url, ...args.slice(2)])
        assert.ok(r.code === 64 || r.code === 69, `${url}: ${r.stderr}`)
        assert.doesNotMatch(r.stdout + r.stderr, /SECRET|@pw@|pw@127/, `${url} ${args.join(' ')} printed a piece of the password:\n${r.stderr}`)
        if (!url.startsWith('file:')) assert.match(r.stderr, /alice:\*\*\*@127\.0\.0\.1/, `${url}: the URL is shown, masked`)
      }
    }
  })

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
    'a duration past a year (--wait 99999999999h)': ['lock', 'run', '--key', key, '--wait', '99999999999h', '--', 'true'],
    'a duration past a year (--ttl 99999999999h)': ['lock', 'acquire', '--key', key, '--ttl', '99999999999h'],
    'a duration past a year (--kill-grace 99999999999h)': ['lock', 'run', '--key', key, '--kill-grace', '99999999999h', '--', 'true'],
    'a duration past a year (pop --wait 99999999999h)': ['queue', 'pop', '--queue', key, '--wait', '99999999999h'],
    'a duration past a year (pop --visibility 99999999999h)': ['queue', 'pop', '--queue', key, '--visibility', '99999999999h'],
    'a duration past a year (renew --ttl 99999999999h)': ['lock', 'renew', '--key', key, '--token', 't', '--ttl', '99999999999h'],
    '--limit 0 (lock acquire)': ['lock', 'acquire', '--key', key, '--limit', '0'],
    '--count 0 (pop --exec)': ['queue', 'pop', '--queue', key, '--count', '0', '--exec', '--', 'true'],
    '--conflict-exit-code 300 (not an exit code)': ['lock', 'run', '--key', key, '--conflict-exit-code', '300', '--', 'true'],
    'an unknown command': ['lock', 'frobnicate', '--key', key],
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

  it('the one line names what was wrong: the flag and the value, or the missing flag', async () => {
    const cases = [
      [['lock', 'run', '--key', key, '--limit', 'abc', '--', 'true'], /--limit.*abc/],
      [['lock', 'run', '--key', key, '--limit', '0', '--', 'true'], /--limit.*0/],
      [['queue', 'pop', '--queue', key, '--count', '0'], /--count.*0/],
      [['lock', 'run', '--key', key, '--wait', '1x', '--', 'true'], /--wait.*1x/],
      [['lock', 'run', '--key', key, '--wait=-1', '--', 'true'], /--wait.*-1/],
      [['lock', 'run', '--key', key, '--ttl', '99999999999h', '--', 'true'], /--ttl.*99999999999h.*longer than a year/],
      [['queue', 'pop'], /Missing required flag queue/],
      [['queue', 'push', '--queue', key, '-0', '--whole'], /--whole/],
      [['lock', 'frobnicate'], /unknown command "lock frobnicate"/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['-b', '/tmp'], /no command given/],
    ]
    for (const [args, pattern] of cases) {
      const r = await run(args)
      assert.equal(r.code, 64, `dlq ${args.join(' ')}: ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), pattern, `dlq ${args.join(' ')}`)
    }
  })

  // SPEC §2: a word before -- that belongs to no flag is a usage error, never dropped. Checked before
  // any backend is opened, so once here; fast-path.test.mjs holds the two ways into lock run together.
  it('a word before -- that belongs to no flag is 64 naming it, and nothing runs or is taken (both ways into lock run, and pop --exec)', async (t) => {
    const {pushArgs, queueStats} = await import('../support/queues.mjs')
    const queue = uniqueName('stray')
    await pushArgs(ctx.dlq, queue, ['untouched'])
    const lockKey = uniqueName('stray')
    const cases = [
      [['lock', 'run', '--key', lockKey, '--wait', '10', 'min', '--', 'echo', 'ran'], ['min']],
      [['lock', 'run', '--key', 'deploy', 'production', '--', 'echo', 'ran'], ['production']],
      [['lock', 'run', '-q', 'one', '--key', lockKey, 'two', '--', 'echo', 'ran'], ['one', 'two']],
      // The same word before and after --: the one before is still refused.
      [['lock', 'run', '--key', lockKey, 'echo', '--', 'echo', 'ran'], ['echo']],
      [['queue', 'pop', '--queue', queue, '--exec', 'stray', '--', 'cat'], ['stray']],
      [['queue', 'pop', '--queue', queue, 'stray', '--exec', '--', 'cat'], ['stray']],
    ]
    for (const [args, words] of cases) {
      for (const env of [{}, {DLQ_FAST_PATH: '0'}]) {
        const what = `dlq ${args.join(' ')}${env.DLQ_FAST_PATH ? ' (oclif)' : ''}`
        const r = await ctx.dlq.run(args, {env})
        assert.equal(r.code, 64, `${what}: ${r.stderr}`)
        const line = oneErrorLine(r, assert)
        assert.match(line, new RegExp(`unexpected arguments? ${words.map((w) => `"${w}"`).join(' ')} before --`), what)
        assert.equal(r.stdout, '', `${what}: the command must not run`)
      }
    }
    const status = await ctx.dlq.run(['lock', 'status', '--json'])
    assert.deepEqual(JSON.parse(status.stdout).locks.map((l) => l.key).filter((k) => k === lockKey || k === 'deploy'), [], 'no lock was taken')
    const stats = await queueStats(ctx.dlq, queue)
    assert.deepEqual([stats.waiting, stats.inFlight, stats.dead], [1, 0, 0], 'the message was not touched')
    // Words that do belong to flags, and a command without --, still run.
    const ok = await ctx.dlq.run(['lock', 'run', '--key', lockKey, '--wait', '10', '--', 'echo', 'ran'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout, 'ran\n')
  })

  it('compound durations (1m30s, what dlq itself prints) are accepted by every duration flag; what lock status prints reads back', async () => {
    const {pushArgs} = await import('../support/queues.mjs')
    const runKey = uniqueName('compound')
    for (const env of [{}, {DLQ_FAST_PATH: '0'}]) {
      const r = await ctx.dlq.run(['lock', 'run', '--key', runKey, '--wait', '1m30s', '--ttl', '1m0s', '--kill-grace', '1s500ms', '--', 'echo', 'ran'], {env})
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'ran\n')
    }
    const key = uniqueName('compound')
    const acquired = await ctx.dlq.run(['lock', 'acquire', '--key', key, '--ttl', '29m59s500ms'])
    assert.equal(acquired.code, 0, acquired.stderr)
    const renewed = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', acquired.stdout.trim(), '--ttl', '2h5m'])
    assert.equal(renewed.code, 0, renewed.stderr)
    const table = await ctx.dlq.run(['lock', 'status', '--key', key])
    assert.equal(table.code, 0, table.stderr)
    const [header, row] = table.stdout.split('\n')
    const expires = row.slice(header.indexOf('EXPIRES')).match(/^in (\S+)/)?.[1]
    assert.match(expires ?? '', /^2h[45]m$|^2h5m$/, table.stdout)
    assert.doesNotMatch(table.stdout, /(^|\D)60[sm]\b/, 'no 60 in a minute or an hour')
    // What status printed is a duration dlq takes.
    const again = await ctx.dlq.run(['lock', 'renew', '--key', key, '--token', acquired.stdout.trim(), '--ttl', expires])
    assert.equal(again.code, 0, `--ttl ${expires}: ${again.stderr}`)
    const queue = uniqueName('compound')
    await pushArgs(ctx.dlq, queue, ['m'])
    const popped = await ctx.dlq.run(['queue', 'pop', '--queue', queue, '--wait', '1m30s', '--visibility', '1m30s'])
    assert.equal(popped.code, 0, popped.stderr)
    assert.equal(popped.stdout, 'm\n')
    for (const bad of ['30s1m', '1m30', '1m 30s']) {
      const r = await ctx.dlq.run(['lock', 'run', '--key', runKey, '--wait', bad, '--', 'true'])
      assert.equal(r.code, 64, `--wait ${bad}: ${r.stderr}`)
      assert.match(oneErrorLine(r, assert), /bad duration for --wait/)
    }
  })

  it('-q is --queue on every queue command (queue commands have no --quiet; lock run\'s -q stays --quiet)', async () => {
    const queue = uniqueName('short-q')
    const pushed = await ctx.dlq.run(['queue', 'push', '-q', queue, 'one', 'two', 'three'])
    assert.equal(pushed.code, 0, pushed.stderr)
    const tail = await ctx.dlq.run(['queue', 'tail', '-q', queue, '-n', '1'])
    assert.equal(tail.stdout, 'three\n', tail.stderr)
    const status = await ctx.dlq.run(['queue', 'status', '-q', queue, '--json'])
    assert.equal(JSON.parse(status.stdout).queues[0].waiting, 3, status.stderr)
    const popped = await ctx.dlq.run(['queue', 'pop', '-q', queue, '-n', '2'])
    assert.equal(popped.stdout, 'one\ntwo\n', popped.stderr)
    const worker = await ctx.dlq.run(['queue', 'pop', '-q', queue, '--exec', '--', 'cat'])
    assert.equal(worker.stdout, 'three', worker.stderr) // the handler gets the body without its delimiter
  })

  it('a key or queue name that is not valid UTF-8 is 64 (two such keys would arrive as one, U+FFFD); a U+FFFD written as such is a key like any other', async () => {
    // bash passes the bytes as they are; Node would decode \xff and \xfe alike to U+FFFD.
    const withBytes = (words, env = {}) => runProgram('bash', ['-c', `"$@" ${words}`, 'dlq-test-sh', NODE, BIN], {env})
    const b = `-b ${ctx.dlq.url}`
    const commands = [
      `lock run ${b} --key $'deploy\\xff' -- echo ran`,
      `lock run ${b} --key=$'deploy\\xfe' -- echo ran`,
      `lock run ${b} -k $'\\xc3' -- echo ran`,
      `lock acquire ${b} --key $'deploy\\xff'`,
      `lock status ${b} --key $'deploy\\xff'`,
      `queue push ${b} --queue $'jobs\\xff' message`,
      `queue pop ${b} --queue $'jobs\\xff'`,
      `queue tail ${b} --queue $'jobs\\xfe'`,
    ]
    for (const words of commands) {
      for (const env of [{}, {DLQ_FAST_PATH: '0'}]) {
        const r = await withBytes(words, env)
        assert.equal(r.code, 64, `${words}: ${r.stderr}`)
        assert.match(oneErrorLine(r, assert), /bad (key|queue): --(key|queue) ".*\uFFFD.*" is not valid UTF-8/, words)
        assert.equal(r.stdout, '', words)
      }
    }
    const locks = JSON.parse((await ctx.dlq.run(['lock', 'status', '--json'])).stdout).locks
    assert.deepEqual(locks.filter((l) => l.key.includes('\uFFFD')), [], 'no lock was taken')
    const valid = await withBytes(`lock run ${b} --key $'deploy\\xef\\xbf\\xbd' -- printenv DLQ_LOCK_KEY`)
    assert.equal(valid.code, 0, valid.stderr)
    assert.equal(valid.stdout, 'deploy\uFFFD\n')
  })

  it('a NUL cannot reach dlq in argv: the shell cuts the key there, and dlq uses the key it was given', async () => {
    // Arguments are C strings (execve): a program cannot even be started with a NUL in one.
    assert.throws(() => spawnSync(NODE, [BIN, 'lock', 'run', '--key', 'a\0b', '--', 'true']), {code: 'ERR_INVALID_ARG_VALUE'})
    // What bash passes for the two ways a user might write one; dlq sees a valid key and uses it.
    // (checkName refuses a NUL however else one might arrive: test/unit/parsing.test.mjs.)
    const printKey = (word) => runProgram('bash', ['-c', `"$@" --key ${word} -- printenv DLQ_LOCK_KEY`, 'dlq-test-sh', NODE, BIN, 'lock', 'run', '-b', ctx.dlq.url])
    const ansi = await printKey("$'a\\0b'")
    assert.equal(ansi.code, 0, ansi.stderr)
    assert.equal(ansi.stdout, 'a\n', 'bash ends $\'a\\0b\' at the NUL')
    const substituted = await printKey('"$(printf \'a\\0b\')"')
    assert.equal(substituted.code, 0, substituted.stderr)
    assert.equal(substituted.stdout, 'ab\n', 'bash drops the NUL from $(...)')
    assert.match(substituted.stderr, /ignored null byte/, 'and says so itself')
  })

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
