// Unit tests for the subtle pure logic: durations, names, path encoding, URL masking, framing.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'

import {maskUrl} from '../../dist/backends/index.js'
import {encodeName} from '../../dist/backends/file/paths.js'
import {maskUrlsIn} from '../../dist/backends/url.js'
import {formatDuration, parseDuration, parseTime} from '../../dist/duration.js'
import {DlqError, toDlqError} from '../../dist/errors.js'
import {batches} from '../../dist/framing.js'
import {checkName} from '../../dist/names.js'
import {jsonText} from '../../dist/output.js'
import {exactInteger} from '../../dist/json.js'

const usage = (fn) => assert.throws(fn, (e) => e instanceof DlqError && e.exitCode === 64)

describe('times (queue push --at)', () => {
  it('reads ISO 8601 with an offset, and @ epoch seconds', () => {
    const at = Date.UTC(2026, 11, 2, 18, 0, 0)
    assert.equal(parseTime('2026-12-02T18:00:00Z', 'at').getTime(), at)
    assert.equal(parseTime('2026-12-02T18:00Z', 'at').getTime(), at)
    assert.equal(parseTime('2026-12-02T19:00:00+01:00', 'at').getTime(), at)
    assert.equal(parseTime('2026-12-02 13:30-0430', 'at').getTime(), at)
    assert.equal(parseTime('2026-12-02T18:00:00.250Z', 'at').getTime(), at + 250)
    assert.equal(parseTime('@1700000000', 'at').getTime(), 1_700_000_000_000)
    assert.equal(parseTime('@1700000000.5', 'at').getTime(), 1_700_000_000_500)
    assert.equal(parseTime('2024-02-29T00:00Z', 'at').getTime(), Date.UTC(2024, 1, 29))
  })
  it('refuses a time without an offset, a date that does not exist, and anything else', () => {
    for (const bad of ['2026-12-02T18:00:00', '2026-02-30T00:00Z', '2025-02-29T00:00Z', '2026-12-02T24:00Z', '2026-12-02T18:60Z', '2026-13-01T00:00Z', '2026-12-02T18:00+01:60', 'tomorrow', '', '@', '1700000000', '@-5']) {
      usage(() => parseTime(bad, 'at'))
    }
  })
})

describe('durations', () => {
  it('reads the SPEC forms', () => {
    assert.equal(parseDuration('250ms', 'wait'), 250)
    assert.equal(parseDuration('30s', 'wait'), 30_000)
    assert.equal(parseDuration('5m', 'wait'), 300_000)
    assert.equal(parseDuration('2h', 'wait'), 7_200_000)
    assert.equal(parseDuration('1.5', 'wait'), 1500)
    assert.equal(parseDuration('0', 'wait'), 0)
    assert.equal(parseDuration('forever', 'wait'), Number.POSITIVE_INFINITY)
  })
  it('reads compounds, largest unit first, each unit once', () => {
    assert.equal(parseDuration('1m30s', 'wait'), 90_000)
    assert.equal(parseDuration('2h5m', 'wait'), 7_500_000)
    assert.equal(parseDuration('1h0m', 'wait'), 3_600_000)
    assert.equal(parseDuration('1d2h3m4s5ms', 'wait'), 86_400_000 + 7_200_000 + 180_000 + 4000 + 5)
    assert.equal(parseDuration('1m0.5s', 'wait'), 60_500)
    assert.equal(parseDuration('1M30S', 'wait'), 90_000)
  })
  it('refuses the rest with a usage error', () => {
    for (const bad of ['', '-1', '1x', 's', '1 h', '99999999999h', 'NaN', '30s1m', '1m1m', '1m30', 'm30s', '1m 30s', '1ms1s', '1.m', '365d1s']) usage(() => parseDuration(bad, 'wait'))
  })
  it('prints what it reads back, rounded once to the unit shown (never 29m60s)', () => {
    const cases = [[0, '0ms'], [999.4, '999ms'], [999.6, '1s'], [1049, '1s'], [1050, '1.1s'], [59_949, '59.9s'], [59_960, '1m0s'], [90_000, '1m30s'],
      [29 * 60_000 + 59_600, '30m0s'], [29 * 60_000 + 59_400, '29m59s'], [3_599_600, '1h0m'], [3_600_000 + 59 * 60_000 + 45_000, '2h0m'], [7_500_000, '2h5m']]
    for (const [ms, shown] of cases) assert.equal(formatDuration(ms), shown, `${ms}ms`)
    for (let ms = 0; ms < 3 * 3_600_000; ms += 997) {
      const shown = formatDuration(ms)
      assert.doesNotMatch(shown, /(^|\D)60[sm]/, `${ms}ms shown as ${shown}`)
      assert.ok(Math.abs(parseDuration(shown, 'wait') - ms) <= (ms < 60_000 ? 50 : ms < 3_600_000 ? 500 : 30_000), `${shown} reads back near ${ms}ms`)
    }
  })
})

describe('names', () => {
  it('accepts 1 to 255 bytes of UTF-8 without control characters', () => {
    assert.equal(checkName('deploy', 'key'), 'deploy')
    assert.equal(checkName('ключ🔒/../x', 'key'), 'ключ🔒/../x')
    assert.equal(checkName('é'.repeat(127), 'key').length, 127) // 254 bytes
  })
  it('refuses empty, too long and control characters', () => {
    usage(() => checkName('', 'key'))
    usage(() => checkName('a'.repeat(256), 'key'))
    usage(() => checkName('é'.repeat(128), 'queue')) // 256 bytes
    for (const c of ['\n', '\0', '\t', '\u007f', '\u0085']) usage(() => checkName(`a${c}b`, 'key'))
  })
  it('accepts a U+FFFD that was written as such (the bytes EF BF BD in UTF-8)', () => {
    // This process's arguments hold no invalid UTF-8: the character is the user's own.
    assert.equal(checkName('a\uFFFDb', 'key'), 'a\uFFFDb')
  })
})

describe('file backend name encoding', () => {
  it('yields one safe path component for any name', () => {
    for (const name of ['..', '.', '../../etc/passwd', '/abs', 'a/b', '.hidden', 'x'.repeat(255), '🔒'.repeat(60), '%2F', 'a~b']) {
      const encoded = encodeName(name)
      assert.ok(!encoded.includes('/'), encoded)
      assert.ok(!encoded.startsWith('.'), encoded)
      assert.ok(encoded.length > 0 && encoded.length <= 200, `${encoded.length}`)
    }
  })
  it('is injective on distinct names', () => {
    const names = ['a/b', 'a%2Fb', 'a.b', 'a%2Eb', 'x'.repeat(255), 'x'.repeat(254) + 'y', '.a', '%2Ea']
    assert.equal(new Set(names.map(encodeName)).size, names.length)
  })
})

describe('URL masking', () => {
  it('never shows a password', () => {
    assert.equal(maskUrl('redis://user:s3cret@host:6379/0'), 'redis://user:***@host:6379/0')
    assert.equal(maskUrl('postgres://u:p%40ss@h/db?sslmode=require'), 'postgres://u:***@h/db?sslmode=require')
    assert.equal(maskUrl('redis://:onlypass@h'), 'redis://:***@h')
    assert.equal(maskUrl('zk://h1:2181,h2:2181/app?password=x'), 'zk://h1:2181,h2:2181/app?password=***')
    assert.equal(maskUrl('redis+sentinel://u:p@h1,h2/m?sentinelUser=s&sentinelPassword=x&connectTimeout=1s'), 'redis+sentinel://u:***@h1,h2/m?sentinelUser=s&sentinelPassword=***&connectTimeout=1s')
    assert.equal(maskUrl('file:///var/lock/dlq'), 'file:///var/lock/dlq')
  })
  it('masks up to the last @ of the authority on every scheme: a raw @ in a password is part of it', () => {
    for (const scheme of ['redis', 'rediss', 'zk', 'postgres', 'postgresql', 'file', 'redis+sentinel']) {
      assert.equal(maskUrl(`${scheme}://alice:SECRET@pw@@host:1/db@x?y=@#@`), `${scheme}://alice:***@host:1/db@x?y=@#@`, scheme)
      assert.equal(maskUrl(`${scheme}://alice:SECRET@pw@h1:1,h2:2`), `${scheme}://alice:***@h1:1,h2:2`, scheme)
    }
    // An @ after the authority (a path, a query) is no user info.
    assert.equal(maskUrl('zk://h:2181/app@v2'), 'zk://h:2181/app@v2')
    assert.equal(maskUrl('file:///home/me@x/dlq'), 'file:///home/me@x/dlq')
    assert.equal(maskUrlsIn('Error: at "redis://a:S@E@h:1" and postgres://u:S@E@h/db@1'), 'Error: at "redis://a:***@h:1" and postgres://u:***@h/db@1')
  })
})

async function collect(chunks, framing, limits = {}) {
  const out = []
  async function* input() {
    for (const c of chunks) yield Buffer.from(c)
  }
  for await (const batch of batches(input(), framing, {maxMessages: 3, maxBytes: 1 << 20, maxMessageBytes: 10, ...limits})) {
    out.push(batch.map((b) => b.toString()))
  }
  return out
}

describe('framing', () => {
  it('splits lines across chunks, keeps \\r and empty lines, batches in order', async () => {
    assert.deepEqual(await collect(['a\nb', 'c\r\n\nd'], 'line'), [['a', 'bc\r', ''], ['d']])
  })
  it('splits on NUL and keeps newlines in bodies', async () => {
    assert.deepEqual(await collect(['x\ny\0z\0'], 'null'), [['x\ny', 'z']])
  })
  it('reads everything as one message with whole, even when empty', async () => {
    assert.deepEqual(await collect(['ab\n', 'c'], 'whole'), [['ab\nc']])
    assert.deepEqual(await collect([], 'whole'), [['']])
  })
  it('yields nothing for empty input', async () => {
    assert.deepEqual(await collect([], 'line'), [])
  })
  it('stops at an oversized message after yielding everything before it', async () => {
    const seen = []
    await assert.rejects(async () => {
      async function* input() {
        yield Buffer.from('1\n2\n')
        yield Buffer.from('0123456789ABC\n3\n')
      }
      for await (const b of batches(input(), 'line', {maxMessages: 100, maxBytes: 1 << 20, maxMessageBytes: 10})) seen.push(...b.map(String))
    }, (e) => e instanceof DlqError && e.exitCode === 65 && /message 3/.test(e.message))
    assert.deepEqual(seen, ['1', '2'])
  })
})

describe('JSON output', () => {
  it('writes a BigInt (a fencing token up to 2^63-1) as an exact integer, strings untouched', () => {
    const text = jsonText({fencingToken: 2n ** 63n - 1n, small: 7n, command: 'bigint123x45', list: [1n]})
    assert.equal(text, '{"fencingToken":9223372036854775807,"small":7,"command":"bigint123x45","list":[1]}')
    assert.equal(jsonText({a: 1n}, true), '{\n  "a": 1\n}')
  })

  it('a token as the backends give it (decimal text) stays exact: a Number up to 2^53-1, a BigInt past it', () => {
    const tokens = ['1', '9007199254740991', '9007199254740993', '9223372036854775807']
    assert.deepEqual(tokens.map(exactInteger).map((t) => typeof t), ['number', 'number', 'bigint', 'bigint'])
    assert.equal(jsonText(tokens.map((t) => ({fencingToken: exactInteger(t)}))), `[${tokens.map((t) => `{"fencingToken":${t}}`).join(',')}]`)
  })
})

describe('Redis server refusals', () => {
  it('map to exit 69 with the cause named, not an internal error', () => {
    for (const [message, cause] of [
      ["READONLY You can't write against a read only replica.", /replica/],
      ['LOADING Redis is loading the dataset in memory', /loading/],
      ['ERR max number of clients reached', /maxclients/],
      ['CLUSTERDOWN The cluster is down', /cluster is down/],
      ['MOVED 7426 127.0.0.1:7001', /redirect/],
      ['ASK 7426 127.0.0.1:7001', /redirect/],
      ['Too many Cluster redirections. Last error: MOVED 1 127.0.0.1:7000', /redirect/],
      ['Reached the max retries per request limit (which is 0). Refer to "maxRetriesPerRequest" option for details.', /lost before it answered/],
    ]) {
      const error = toDlqError(new Error(message))
      assert.equal(error.exitCode, 69, message)
      assert.match(`${error.why} ${error.hint}`, cause, message)
    }
    assert.equal(toDlqError(new Error('ERR something else')).exitCode, 1)
  })
})

describe('PostgreSQL host lists (libpq multi-host URLs)', async () => {
  const {displayOf, encodeHostList, targetsOf} = await import('../../dist/backends/postgres/hosts.js')
  const parse = (text) => new URL(encodeHostList(text))
  const targets = (text, env = {}) => targetsOf(parse(text), env)

  it('reads hosts and ports in order, from the authority or from ?host= and ?port=', () => {
    assert.deepEqual(targets('postgres://u:p@h1:5432,h2:5433/db').hosts, [{host: 'h1', port: 5432}, {host: 'h2', port: 5433}])
    assert.deepEqual(targets('postgres://u@h1,[::1]:6000,h3/db?port=7000').hosts, [{host: 'h1', port: 7000}, {host: '::1', port: 6000}, {host: 'h3', port: 7000}])
    assert.deepEqual(targets('postgres:///db?host=a,b&port=1,2').hosts, [{host: 'a', port: 1}, {host: 'b', port: 2}])
    assert.deepEqual(targets('postgres:///db', {PGHOST: '/run/pg,h2', PGPORT: '5433'}).hosts, [{host: '/run/pg', port: 5433}, {host: 'h2', port: 5433}])
    assert.deepEqual(targets('postgres://u@[::1]:5432/db').hosts, [{host: '::1', port: 5432}])
    usage(() => targets('postgres:///db?host=a,b&port=1,2,3'))
    usage(() => targets('postgres://u@h1:99999,h2/db'))
  })
  it('a comma or @ in the password is not a host list, and the password is masked as ever', () => {
    assert.equal(encodeHostList('postgres://u:p,w@h/db'), 'postgres://u:p,w@h/db')
    assert.equal(encodeHostList('postgres://u:p@w,x@h1:1,h2:2/db'), 'postgres://u:p@w,x@h1%3A1,h2%3A2/db')
    const url = parse('postgres://u:se,cret@h1:1,h2:2/db?x=1')
    assert.equal(url.password, 'se,cret')
    assert.equal(displayOf(url), 'postgres://u:***@h1:1,h2:2/db?x=1')
    assert.equal(displayOf(parse('postgres://u:secret@h1:5432/db')), 'postgres://u:***@h1:5432/db')
  })
  it('target_session_attrs: read-write by default for several hosts, any for one; standby modes refused', () => {
    assert.equal(targets('postgres://u@h1,h2/db').attrs, 'read-write')
    assert.equal(targets('postgres://u@h1/db').attrs, 'any')
    assert.equal(targets('postgres://u@h1,h2/db?target_session_attrs=primary').attrs, 'primary')
    assert.equal(targets('postgres://u@h1,h2/db', {PGTARGETSESSIONATTRS: 'any'}).attrs, 'any')
    for (const mode of ['read-only', 'standby', 'prefer-standby', 'rw']) usage(() => targets(`postgres://u@h1,h2/db?target_session_attrs=${mode}`))
  })
  it('connect_timeout bounds each host, connectTimeout the whole', () => {
    const of = (text) => {
      const {connectBudgetMs, perHostMs} = targets(text)
      return [connectBudgetMs, perHostMs]
    }
    assert.deepEqual(of('postgres://u@h1,h2/db'), [5000, 2500])
    assert.deepEqual(of('postgres://u@h1/db'), [5000, 5000])
    assert.deepEqual(of('postgres://u@h1,h2/db?connect_timeout=3'), [6000, 3000])
    assert.deepEqual(of('postgres://u@h1,h2/db?connect_timeout=1'), [4000, 2000], 'at least 2 s, as libpq')
    assert.deepEqual(of('postgres://u@h1,h2/db?connect_timeout=0'), [5000, 2500], '0 is no bound')
    assert.deepEqual(of('postgres://u@h1,h2/db?connect_timeout=10&connectTimeout=4s'), [4000, 4000])
    assert.deepEqual(of('postgres://u@h1,h2,h3/db?connectTimeout=30s'), [30_000, 10_000])
    usage(() => of('postgres://u@h1,h2/db?connect_timeout=2s'))
  })
})
