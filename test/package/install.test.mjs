// What `npm install -g` of the published package gives a user: the tarball from `npm pack`,
// installed into a temporary prefix (dependencies from npm's cache, which `npm ci` filled), must
// put `dlq` on the prefix's bin and every man page where `man` looks (PREFIX/share/man/man1).
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function run(command, args, options = {}) {
  const r = spawnSync(command, args, {encoding: 'utf8', timeout: 180_000, ...options})
  assert.equal(r.status, 0, `${command} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`)
  return r.stdout
}

describe('the npm package, installed globally into a prefix', () => {
  let dir
  let prefix
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'dlq-install-'))
    prefix = join(dir, 'prefix')
    // --ignore-scripts: pack what the test run built; `prepare` would rebuild dist/ under other tests.
    const [packed] = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {cwd: root}))
    run(npm, ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, packed.filename)], {cwd: dir})
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  it('installs every man page where man looks for it', () => {
    const pages = readdirSync(join(root, 'man')).filter((f) => f.endsWith('.1')).sort()
    assert.ok(pages.includes('dlq.1') && pages.includes('dlq-lock-run.1'), pages.join(' '))
    const installed = join(prefix, 'share', 'man', 'man1')
    assert.deepEqual(existsSync(installed) ? readdirSync(installed).sort() : [], pages)
    for (const page of pages) assert.equal(readFileSync(join(installed, page), 'utf8'), readFileSync(join(root, 'man', page), 'utf8'), page)
  })

  it('man dlq-lock-run finds and formats the installed page', () => {
    const text = run('man', ['-P', 'cat', 'dlq-lock-run'], {env: {...process.env, MANPATH: join(prefix, 'share', 'man'), MANWIDTH: '80'}})
    assert.match(text, /lock run/)
  })

  it("puts a dlq on the prefix's bin that runs the main job on the default backend", () => {
    const dlq = join(prefix, 'bin', 'dlq')
    assert.match(run(dlq, ['--version']), /\d+\.\d+\.\d+/)
    const env = {...process.env, XDG_STATE_HOME: join(dir, 'state')}
    delete env.DLQ_BACKEND
    const out = run(dlq, ['lock', 'run', '--key', 'installed', '--', 'sh', '-c', 'echo "held $DLQ_FENCING_TOKEN"'], {env})
    assert.match(out, /^held \d+$/m)
  })
})
