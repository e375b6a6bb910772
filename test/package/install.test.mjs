// What `npm install -g` of the published package gives a user: the tarball from `npm pack`,
// installed into a temporary prefix by a normal user (when the tests run as root, as the unprivileged
// `nobody`, with a home and an npm cache of its own), must put `dlq` on the prefix's bin and every man
// page where `man` looks (PREFIX/share/man/man1), and its commands and completion must work. The
// package ships only what runs: the bundles, the man pages, the manifest; oclif, chalk and the
// backends' client libraries are inside the bundles, so an install fetches nothing more.
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const NOBODY = 65534
const asRoot = process.getuid?.() === 0

function run(command, args, options = {}) {
  const r = spawnSync(command, args, {encoding: 'utf8', timeout: 300_000, ...options})
  assert.equal(r.status, 0, `${command} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`)
  return r.stdout
}

describe('the npm package, installed globally into a prefix by a normal user', () => {
  let dir
  let prefix
  let packed
  let user // how to run a program as the installing user, with its own home (asserting exit 0)
  let asUser
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'dlq-install-'))
    prefix = join(dir, 'prefix')
    const home = join(dir, 'home')
    mkdirSync(home)
    // --ignore-scripts: pack what the test run built; `prepare` would rebuild dist/ under other tests.
    ;[packed] = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {cwd: root}))
    if (asRoot) for (const path of [dir, home, join(dir, packed.filename)]) chownSync(path, NOBODY, NOBODY)
    const env = {...process.env, HOME: home, XDG_STATE_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache'), npm_config_cache: join(home, 'npm-cache')}
    delete env.DLQ_BACKEND
    asUser = (command, args, options = {}, runner = run) =>
      asRoot
        ? runner('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--', command, ...args], {cwd: dir, ...options, env: {...env, ...options.env}})
        : runner(command, args, {cwd: dir, ...options, env: {...env, ...options.env}})
    user = (command, args, options = {}) => asUser(command, args, options)
    // A cache of its own, as a new user's would be.
    user(npm, ['install', '--global', '--prefix', prefix, '--no-audit', '--no-fund', join(dir, packed.filename)])
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  it('ships only what runs: the bundles, bin, man pages, the manifest and the bundled packages\' licenses (no code caches, no unbundled modules)', () => {
    const bundles = ['dlq', 'lock-run', 'ioredis', 'pg', 'node-zookeeper-client'].map((name) => `dist/${name}.cjs`)
    const files = packed.files.map((f) => f.path).sort()
    const extra = files.filter((f) => !bundles.includes(f) && !/^(bin\/(run|load)\.cjs|dist\/licenses\.txt|man\/[a-z-]+\.1|oclif\.manifest\.json|package\.json|README\.md|LICENSE)$/.test(f))
    assert.deepEqual(extra, [], 'files in the package that nothing loads')
    for (const file of [...bundles, 'bin/run.cjs', 'bin/load.cjs', 'dist/licenses.txt']) assert.ok(files.includes(file), `${file} missing from ${files.join(' ')}`)
    const licenses = readFileSync(join(root, 'dist', 'licenses.txt'), 'utf8')
    for (const name of ['@oclif/core', 'chalk', 'ioredis', 'pg', 'node-zookeeper-client']) assert.match(licenses, new RegExp(`^${name} \\d`, 'm'), `${name}'s license in dist/licenses.txt`)
  })

  it('installs no other package: the bundles hold every library dlq loads', () => {
    const modules = join(prefix, 'lib', 'node_modules', 'dlq', 'node_modules')
    assert.deepEqual(existsSync(modules) ? readdirSync(modules).filter((n) => !n.startsWith('.')) : [], [])
  })

  it("the installed dlq loads each backend's client from its bundle (a refused connection is exit 69 with one line)", () => {
    const dlq = join(prefix, 'bin', 'dlq')
    for (const url of ['redis://127.0.0.1:1', 'postgres://nobody@127.0.0.1:1/db', 'zk://127.0.0.1:1?connectTimeout=1s']) {
      const r = asUser(dlq, ['-b', url, 'lock', 'status'], {}, (command, args, options) => spawnSync(command, args, {encoding: 'utf8', timeout: 60_000, ...options}))
      assert.equal(r.status, 69, `${url}: exit ${r.status ?? r.signal}\n${r.stderr}`)
      assert.match(r.stderr, /^dlq: cannot connect to \S+: .*\n$/, url)
    }
  })

  it('installs every man page where man looks for it', () => {
    const pages = readdirSync(join(root, 'man')).filter((f) => f.endsWith('.1')).sort()
    assert.ok(pages.includes('dlq.1') && pages.includes('dlq-lock-run.1'), pages.join(' '))
    const installed = join(prefix, 'share', 'man', 'man1')
    assert.deepEqual(existsSync(installed) ? readdirSync(installed).sort() : [], pages)
    for (const page of pages) assert.equal(readFileSync(join(installed, page), 'utf8'), readFileSync(join(root, 'man', page), 'utf8'), page)
  })

  it('man dlq-lock-run finds and formats the installed page', () => {
    const text = user('man', ['-P', 'cat', 'dlq-lock-run'], {env: {MANPATH: join(prefix, 'share', 'man'), MANWIDTH: '80'}})
    assert.match(text, /lock run/)
  })

  it("puts a dlq on the prefix's bin that runs the main job on the default backend, and every other command through oclif", () => {
    const dlq = join(prefix, 'bin', 'dlq')
    assert.match(user(dlq, ['--version']), /\d+\.\d+\.\d+/)
    assert.match(user(dlq, ['lock', 'run', '--key', 'installed', '--', 'sh', '-c', 'echo "held $DLQ_FENCING_TOKEN"']), /^held \d+$/m)
    assert.match(user(dlq, ['lock', 'run', '--help']), /--key/)
    assert.deepEqual(JSON.parse(user(dlq, ['lock', 'status', '--json'])).locks, [])
    user(dlq, ['queue', 'push', '--queue', 'installed'], {input: 'one\ntwo\n'})
    assert.equal(user(dlq, ['queue', 'pop', '--queue', 'installed', '--count', '2']), 'one\ntwo\n')
  })

  it("loads the installed dlq's bash completion", () => {
    const dlq = join(prefix, 'bin', 'dlq')
    const out = user('bash', ['--norc', '--noprofile', '-c', `eval "$("$1" completion bash)" && complete -p dlq`, 'dlq-test-bash', dlq])
    assert.match(out, /^complete .*dlq$/m)
  })
})
