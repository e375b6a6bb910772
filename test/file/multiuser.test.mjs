// The file backend between local users: a directory others can write into (mode 1777, like /tmp
// or /var/lock) and a group's setgid directory (README: "Sharing a directory"). Another user who
// gets to dlq's subdirectories first is refused, never obeyed (exit 69, one line naming the
// directory and its owner); members of a group's directory share locks and queues; nothing planted
// (a `name` link, a directory swapped for a link, a huge lease version) makes dlq read, write or
// count outside its tree.
//
// The test creates its own users (useradd) and group, runs dlq as them with setpriv(1) (real and
// effective ids, only the groups named, and a umask of 077 so that the group's modes must come
// from dlq, not from the umask), and removes them at the end. That needs root, as CI has.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {chmod, chown, lstat, mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {encodeName} from '../../dist/backends/file/paths.js'
import {BIN, NODE, oneErrorLine, run, runProgram, tempDir} from '../support/cli.mjs'

const skip = process.getuid?.() === 0 ? false : 'needs root to create a second user'

const tag = `dlq${process.pid.toString(36)}`
/** name → {name, uid, gid} */
const users = {}
let group

function makeUser(name, groups = []) {
  execFileSync('useradd', ['--no-create-home', '--user-group', '--shell', '/usr/sbin/nologin', ...(groups.length ? ['--groups', groups.join(',')] : []), name])
  const uid = Number(execFileSync('id', ['-u', name]).toString())
  const gid = Number(execFileSync('id', ['-g', name]).toString())
  return {name, uid, gid}
}

/** A sandbox the other users can reach (the OS temp dir's own entries are 0700 to root). */
async function sandbox(t) {
  const dir = await tempDir(t, 'dlq-multiuser-')
  await chmod(dir, 0o755)
  return dir
}

const place = (url, args) => [...args.slice(0, 2), '-b', url, ...args.slice(2)]

/** Runs `dlq ARGS… -b URL` as `user` (member of `groups` only), with umask 077. */
function dlqAs(user, url, args, {groups = [], home = '/'} = {}) {
  return runProgram('setpriv', [
    '--reuid', String(user.uid), '--regid', String(user.gid), ...(groups.length ? ['--groups', groups.join(',')] : ['--clear-groups']),
    'sh', '-c', 'umask 077 && exec "$@"', 'dlq-test-sh', NODE, BIN, ...place(url, args),
  ], {env: {HOME: home, XDG_STATE_HOME: join(home, 'state')}})
}

/** Runs a shell script as `user` ($1… = args). */
function shAs(user, script, args = [], {groups = [], timeoutMs} = {}) {
  return runProgram('setpriv', [
    '--reuid', String(user.uid), '--regid', String(user.gid), ...(groups.length ? ['--groups', groups.join(',')] : ['--clear-groups']),
    'sh', '-c', script, 'dlq-test-sh', ...args,
  ], {timeoutMs})
}

const asRoot = (url, args) => run(place(url, args))

/** Every path below `dir`, with its lstat. */
async function tree(dir) {
  const out = []
  for (const entry of await readdir(dir, {recursive: true})) out.push({path: join(dir, entry), info: await lstat(join(dir, entry))})
  return out
}

const refusal = (r, assert, {path, owner}) => {
  assert.equal(r.code, 69, r.stderr)
  const line = oneErrorLine(r, assert)
  assert.ok(line.includes(`unsafe directory ${path}:`), `names ${path}: ${line}`)
  assert.ok(line.includes(`owned by user ${owner.name} (uid ${owner.uid})`), `names its owner ${owner.name}: ${line}`)
  return line
}

describe('file backend: other local users', {concurrency: 1, skip}, () => {
  before(() => {
    if (skip) return
    group = `${tag}g`
    execFileSync('groupadd', [group])
    users.mallory = makeUser(`${tag}m`)
    users.alice = makeUser(`${tag}a`, [group])
    users.bob = makeUser(`${tag}b`, [group])
    group = {name: group, gid: Number(execFileSync('getent', ['group', group]).toString().split(':')[2])}
  })
  after(() => {
    if (skip) return
    // Every removal is tried, whatever failed before; the first failure is reported.
    const failures = []
    for (const user of Object.values(users)) {
      try {
        execFileSync('userdel', ['--force', user.name], {stdio: 'pipe'})
      } catch (error) {
        failures.push(error)
      }
    }
    try {
      if (group) execFileSync('groupdel', [group.name ?? group], {stdio: 'pipe'})
    } catch (error) {
      failures.push(error)
    }
    if (failures.length > 0) throw failures[0]
  })

  /** A 1777 directory, as /tmp or /var/lock: anyone may add entries, only their owners move them. */
  async function stickyBase(t) {
    const dir = await sandbox(t)
    const base = join(dir, 'base')
    await mkdir(base)
    await chmod(base, 0o1777)
    return {dir, base, url: `file://${base}`}
  }

  /** A group's directory: root:group 2770, as `install -d -m 2770 -g GROUP` makes it. */
  async function groupBase(t) {
    const dir = await sandbox(t)
    const base = join(dir, 'shared')
    await mkdir(base)
    await chown(base, 0, group.gid)
    await chmod(base, 0o2770)
    return {dir, base, url: `file://${base}`}
  }
  const asMember = (name, url, args) => dlqAs(users[name], url, args, {groups: [group.gid]})

  it('another user who made dlq\'s directories first in a 1777 directory is refused: exit 69, one line naming the directory and its owner, nothing written there', async (t) => {
    const {base, url} = await stickyBase(t)
    // Mallory takes the shared directory over with dlq itself: a lease held for a day, a queue with his message.
    const mallory = users.mallory
    assert.equal((await dlqAs(mallory, url, ['lock', 'acquire', '--key', 'deploy', '--ttl', '24h'])).code, 0)
    assert.equal((await dlqAs(mallory, url, ['queue', 'push', '--queue', 'jobs', 'rm -rf /'])).code, 0)
    const before = await tree(base)

    for (const args of [['lock', 'run', '--key', 'deploy', '--wait', '0', '--', 'true'], ['lock', 'acquire', '--key', 'other'], ['lock', 'release', '--key', 'deploy', '--force'], ['lock', 'status']]) {
      refusal(await asRoot(url, args), assert, {path: join(base, 'leases'), owner: mallory})
    }
    for (const args of [['queue', 'push', '--queue', 'jobs', 'mine'], ['queue', 'pop', '--queue', 'jobs'], ['queue', 'status'], ['queue', 'tail', '--queue', 'jobs']]) {
      refusal(await asRoot(url, args), assert, {path: join(base, 'queues'), owner: mallory})
    }
    assert.deepEqual((await tree(base)).map((e) => e.path), before.map((e) => e.path), 'the victim added nothing to the other user\'s tree')

    // The same one level down: a queue directory of Mallory's inside the victim's own queues/.
    const {base: base2, url: url2} = await stickyBase(t)
    assert.equal((await asRoot(url2, ['queue', 'push', '--queue', 'seed', 'x'])).code, 0)
    await chmod(join(base2, 'queues'), 0o733) // only so that Mallory can plant below it
    await shAs(mallory, 'mkdir -p "$1/new" "$1/cur" "$1/tmp"', [join(base2, 'queues', 'jobs')])
    await chmod(join(base2, 'queues'), 0o700)
    refusal(await asRoot(url2, ['queue', 'pop', '--queue', 'jobs']), assert, {path: join(base2, 'queues', 'jobs'), owner: mallory})
  })

  it('in a 1777 directory the first user\'s tree stays private: another user is refused, naming that owner, and changes nothing', async (t) => {
    const {base, url} = await stickyBase(t)
    const root = {name: 'root', uid: 0}
    const token = (await asRoot(url, ['lock', 'acquire', '--key', 'deploy', '--ttl', '5m'])).stdout.trim()
    assert.equal((await asRoot(url, ['queue', 'push', '--queue', 'jobs', 'a', 'b'])).code, 0)
    for (const entry of await tree(base)) assert.equal(entry.info.mode & 0o077, 0, `${entry.path} is private (mode ${(entry.info.mode & 0o7777).toString(8)})`)

    const mallory = users.mallory
    const r = await dlqAs(mallory, url, ['lock', 'release', '--key', 'deploy', '--force'])
    refusal(r, assert, {path: join(base, 'leases'), owner: root})
    refusal(await dlqAs(mallory, url, ['queue', 'pop', '--queue', 'jobs']), assert, {path: join(base, 'queues'), owner: root})
    // He cannot move the victim's directories aside either (the sticky bit), so nothing changed.
    assert.notEqual((await shAs(mallory, 'mv "$1/leases" "$1/x"', [base])).code, 0)
    const status = JSON.parse((await asRoot(url, ['lock', 'status', '--key', 'deploy', '--json'])).stdout).locks
    assert.deepEqual(status.map((l) => l.holders.map((h) => h.owner)), [[token]])
    const popped = await asRoot(url, ['queue', 'pop', '--queue', 'jobs', '--count', '10'])
    assert.equal(popped.stdout, 'a\nb\n')
  })

  it('a directory of its tree writable by others, or a base writable by others without the sticky bit, is refused naming it and its owner', async (t) => {
    const root = {name: 'root', uid: 0}
    const {base, url} = await stickyBase(t)
    assert.equal((await asRoot(url, ['queue', 'push', '--queue', 'jobs', 'a'])).code, 0)
    const fresh = join(base, 'queues', encodeName('jobs'), 'new')
    await chmod(fresh, 0o777)
    const line = refusal(await asRoot(url, ['queue', 'pop', '--queue', 'jobs']), assert, {path: fresh, owner: root})
    assert.match(line, /writable by every user \(mode 0777\)/)
    await chmod(fresh, 0o700)
    await mkdir(join(base, 'leases'), {mode: 0o700})
    await chmod(join(base, 'leases'), 0o770)
    assert.match(refusal(await asRoot(url, ['lock', 'status']), assert, {path: join(base, 'leases'), owner: root}), /writable by group root \(gid 0\) \(mode 0770\)/)

    await chmod(base, 0o777) // the sticky bit gone: anyone could move root's directories aside
    assert.match(refusal(await asRoot(url, ['queue', 'status']), assert, {path: base, owner: root}), /without the sticky bit/)
    await chmod(base, 0o1777)
    assert.equal((await asRoot(url, ['queue', 'pop', '--queue', 'jobs'])).stdout, 'a\n')
  })

  it('a group\'s setgid directory: two members exclude each other on a lock and share a queue; everything is the group\'s, nothing world-writable', async (t) => {
    const {base, url} = await groupBase(t)
    const token = (await asMember('alice', url, ['lock', 'acquire', '--key', 'deploy', '--ttl', '5m'])).stdout.trim()
    assert.ok(token, 'alice holds the lock')
    const busy = await asMember('bob', url, ['lock', 'run', '--key', 'deploy', '--wait', '0', '--', 'true'])
    assert.equal(busy.code, 75, `bob is kept out while alice holds it: ${busy.stderr}`)
    const seen = JSON.parse((await asMember('bob', url, ['lock', 'status', '--key', 'deploy', '--json'])).stdout).locks
    assert.deepEqual(seen.map((l) => l.holders.map((h) => h.owner)), [[token]], 'bob sees alice\'s lease')
    assert.equal((await asMember('alice', url, ['lock', 'release', '--key', 'deploy', '--token', token])).code, 0)
    const bobs = await asMember('bob', url, ['lock', 'run', '--key', 'deploy', '--wait', '0', '--', 'printenv', 'DLQ_FENCING_TOKEN'])
    assert.equal(bobs.code, 0, bobs.stderr)
    const held = await asMember('bob', url, ['lock', 'acquire', '--key', 'deploy', '--ttl', '5m'])
    assert.equal((await asMember('alice', url, ['lock', 'acquire', '--key', 'deploy', '--wait', '0'])).code, 75, 'and alice is kept out while bob holds it')
    assert.equal((await asMember('alice', url, ['lock', 'release', '--key', 'deploy', '--force'])).code, 0, 'alice can force-release bob\'s lease')
    assert.equal((await asMember('bob', url, ['lock', 'release', '--key', 'deploy', '--token', held.stdout.trim()])).code, 75)

    assert.equal((await asMember('alice', url, ['queue', 'push', '--queue', 'jobs', 'a', 'b'])).code, 0)
    assert.equal((await asMember('bob', url, ['queue', 'pop', '--queue', 'jobs'])).stdout, 'a\n')
    assert.equal((await asMember('bob', url, ['queue', 'push', '--queue', 'jobs', 'c'])).code, 0)
    assert.equal((await asMember('alice', url, ['queue', 'pop', '--queue', 'jobs', '--count', '10'])).stdout, 'b\nc\n')
    const stats = JSON.parse((await asMember('bob', url, ['queue', 'status', '--json'])).stdout).queues
    assert.deepEqual(stats.map((s) => [s.queue, s.waiting, s.inFlight]), [['jobs', 0, 0]])

    assert.equal((await asMember('bob', url, ['queue', 'push', '--queue', 'bobs', 'x'])).code, 0)
    const entries = await tree(base)
    assert.ok(entries.some((e) => e.info.uid === users.alice.uid) && entries.some((e) => e.info.uid === users.bob.uid), 'both members made entries')
    for (const {path, info} of entries) {
      assert.equal(info.gid, group.gid, `${path} is the group's`)
      assert.equal(info.mode & 0o002, 0, `${path} is not world-writable`)
      if (info.isDirectory()) assert.equal(info.mode & 0o7777, 0o2770, `${path}: 2770 whatever the umask`)
      else assert.equal(info.mode & 0o7777, 0o660, `${path}: 0660 whatever the umask`)
    }

    // A user outside the group gets nothing, and a member's directory of another group is refused.
    assert.equal((await dlqAs(users.mallory, url, ['queue', 'status'])).code, 69)
    const queueDir = join(base, 'queues', 'bobs')
    const moved = await shAs(users.bob, 'chgrp "$2" "$1"', [queueDir, String(users.bob.gid)], {groups: [group.gid]})
    assert.equal(moved.code, 0, moved.stderr)
    const line = refusal(await asMember('alice', url, ['queue', 'pop', '--queue', 'bobs']), assert, {path: queueDir, owner: users.bob})
    assert.ok(line.includes(`not the shared group ${group.name}`), line)
  })

  it('a planted `name` link is never followed: status does not print the file it points at', async (t) => {
    const {dir, base, url} = await groupBase(t)
    // Something only alice may read, and long names whose directories are hashed (with a `name` file).
    const secret = join(dir, 'alice-secret')
    await writeFile(secret, 'SECRET of alice\n', {mode: 0o600})
    await chown(secret, users.alice.uid, users.alice.gid)
    const queue = `q-${'x'.repeat(240)}`
    const key = `k-${'y'.repeat(240)}`
    assert.equal((await asMember('alice', url, ['queue', 'push', '--queue', queue, 'm'])).code, 0)
    assert.equal((await asMember('alice', url, ['lock', 'acquire', '--key', key, '--ttl', '5m'])).code, 0)
    assert.ok(encodeName(queue).includes('~'), 'the queue\'s directory name is hashed')

    for (const name of [join(base, 'queues', encodeName(queue), 'name'), join(base, 'leases', encodeName(key), 'name')]) {
      const planted = await shAs(users.bob, 'rm -f "$1" && ln -s "$2" "$1"', [name, secret], {groups: [group.gid]})
      assert.equal(planted.code, 0, planted.stderr)
    }
    for (const args of [['queue', 'status'], ['queue', 'status', '--json'], ['lock', 'status'], ['lock', 'status', '--json']]) {
      const r = await asMember('alice', url, args)
      assert.doesNotMatch(r.stdout + r.stderr, /SECRET/, `${args.join(' ')} printed the linked file`)
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stderr}`)
      const line = args.includes('--json') ? JSON.parse(r.stderr).error : oneErrorLine(r, assert)
      const said = typeof line === 'string' ? line : `${line.what}: ${line.why}`
      assert.match(said, /unsafe path .*\/name: it is a symbolic link/)
    }
    // A `name` that lies (not the name its directory encodes) is not believed either.
    for (const name of [join(base, 'queues', encodeName(queue), 'name'), join(base, 'leases', encodeName(key), 'name')]) {
      await shAs(users.bob, 'rm -f "$1" && printf production > "$1"', [name], {groups: [group.gid]})
    }
    const locks = JSON.parse((await asMember('alice', url, ['lock', 'status', '--json'])).stdout).locks
    assert.deepEqual(locks.map((l) => l.key), [encodeName(key)], 'shown by its directory\'s name, not as "production"')
    const queues = JSON.parse((await asMember('alice', url, ['queue', 'status', '--json'])).stdout).queues
    assert.ok(!queues.some((q) => q.queue === 'production'), JSON.stringify(queues))
    assert.equal((await asMember('alice', url, ['queue', 'pop', '--queue', queue])).stdout, 'm\n', 'the queue itself still works')
  })

  // The swapper: a tight loop in one process (a shell's fork per step is far too slow to race
  // with), alternating each directory with a link to `outside` every couple of milliseconds. A
  // directory moved aside comes back under its name if that is free, else stays inside the base.
  const swapperScript = `
    const fs = require('node:fs')
    const [dir, outside, ms, ...names] = process.argv.slice(1)
    const pause = (n) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, n)
    process.chdir(dir)
    const end = Date.now() + Number(ms)
    let rounds = 0
    while (Date.now() < end) {
      for (const name of names) {
        const away = name + '.away' + rounds
        try { fs.renameSync(name, away) } catch { try { fs.mkdirSync(name) } catch {} ; continue }
        try { fs.symlinkSync(outside, name); pause(2); fs.unlinkSync(name) } catch {}
        try { fs.renameSync(away, name) } catch {}
      }
      rounds++
      pause(2)
    }
    console.log(rounds)`

  it('a queue directory swapped for a symlink in a loop never makes a push write outside the base; no accepted push is lost', async (t) => {
    const {dir, base, url} = await groupBase(t)
    const outside = join(dir, 'outside')
    await mkdir(outside)
    await chmod(outside, 0o777)
    assert.equal((await asMember('alice', url, ['queue', 'push', '--queue', 'jobs', 'first'])).code, 0)
    const queueDir = join(base, 'queues', 'jobs')

    // Bob, a member (who may change anything in the group's tree), swaps new/ and tmp/ for links to `outside`.
    const ms = 5000
    const swapper = runProgram('setpriv', ['--reuid', String(users.bob.uid), '--regid', String(users.bob.gid), '--groups', String(group.gid),
      NODE, '-e', swapperScript, queueDir, outside, String(ms), 'new', 'tmp'], {timeoutMs: ms + 10_000})
    const results = []
    const deadline = Date.now() + ms
    await Promise.all(Array.from({length: 4}, async (_v, worker) => {
      for (let i = 0; Date.now() < deadline; i++) {
        const body = `w${worker}-${i}`
        const r = await asMember('alice', url, ['queue', 'push', '--queue', 'jobs', body])
        results.push({body, code: r.code, stderr: r.stderr})
      }
    }))
    const swaps = await swapper
    assert.equal(swaps.code, 0, swaps.stderr)
    t.diagnostic(`${swaps.stdout.trim()} swap rounds; pushes: ${results.filter((r) => r.code === 0).length} accepted, ${results.filter((r) => r.code === 69).length} refused`)
    assert.ok(Number(swaps.stdout) > 0, 'the swapper ran')

    assert.deepEqual(await readdir(outside), [], 'nothing was written outside the base')
    for (const r of results) {
      assert.ok(r.code === 0 || r.code === 69, `push ${r.body}: exit ${r.code}: ${r.stderr}`)
      assert.doesNotMatch(r.stderr, /\/proc\/self/, 'messages show the user\'s paths')
    }
    // Every push that was accepted is in a file inside the base (wherever the swaps left its directory).
    const files = await Promise.all((await tree(base)).filter((e) => e.info.isFile()).map((e) => readFile(e.path, 'utf8')))
    for (const r of results.filter((r) => r.code === 0)) assert.ok(files.some((content) => content.includes(`\n${r.body}\n`)), `accepted push ${r.body} is kept`)
  })

  it('dlq\'s own directories in a 1777 base swapped in a loop by another user: pushes are refused or stay inside the base', async (t) => {
    const {dir, base, url} = await stickyBase(t)
    const outside = join(dir, 'outside')
    await mkdir(outside)
    await chmod(outside, 0o777)
    // Mallory keeps queues/ a link to `outside`, or a directory of his, whichever dlq meets.
    const ms = 3000
    const swapper = runProgram('setpriv', ['--reuid', String(users.mallory.uid), '--regid', String(users.mallory.gid), '--clear-groups',
      NODE, '-e', swapperScript, base, outside, String(ms), 'queues'], {timeoutMs: ms + 10_000})
    const codes = []
    const deadline = Date.now() + ms
    await Promise.all(Array.from({length: 2}, async () => {
      while (Date.now() < deadline) codes.push((await asRoot(url, ['queue', 'push', '--queue', 'jobs', `m${codes.length}`])).code)
    }))
    assert.equal((await swapper).code, 0)
    t.diagnostic(`pushes: ${codes.filter((c) => c === 0).length} accepted, ${codes.filter((c) => c === 69).length} refused`)
    assert.deepEqual(await readdir(outside), [], 'nothing was written outside the base')
    assert.ok(codes.every((c) => c === 0 || c === 69), codes.join(','))
  })

  it('a planted huge lease version never wraps the fencing token: it counts up to the maximum, then the key is refused', async (t) => {
    const {base, url} = await groupBase(t)
    const token = (await asMember('alice', url, ['lock', 'acquire', '--key', 'deploy'])).stdout.trim()
    assert.equal((await asMember('alice', url, ['lock', 'release', '--key', 'deploy', '--token', token])).code, 0)
    const keyDir = join(base, 'leases', 'deploy')
    const max = 2n ** 63n - 1n
    // Bob replaces the state with one just below the maximum, and adds states past it (> 2^63 - 1).
    const planted = await shAs(users.bob, `
      cd "$1" && rm -f S.* C.* &&
      echo '{"holders":[]}' > "C.$2.bob" && : > "S.$2.bob" &&
      echo '{"holders":[]}' > C.9999999999999999999.bob && : > S.9999999999999999999.bob &&
      echo '{"holders":[]}' > C.99999999999999999999.bob && : > S.99999999999999999999.bob`,
    [keyDir, String(max - 2n)], {groups: [group.gid]})
    assert.equal(planted.code, 0, planted.stderr)

    // Its acquisition is version max - 1 (the token), its release version max: nothing comes after that.
    const last = await asMember('alice', url, ['lock', 'run', '--key', 'deploy', '--wait', '0', '--', 'printenv', 'DLQ_FENCING_TOKEN'])
    assert.equal(last.code, 0, last.stderr)
    assert.equal(BigInt(last.stdout.trim()), max - 1n)
    const r = await asMember('bob', url, ['lock', 'run', '--key', 'deploy', '--wait', '0', '--', 'printenv', 'DLQ_FENCING_TOKEN'])
    assert.equal(r.code, 69, `no token after the maximum, never one from the start again: ${r.stdout}${r.stderr}`)
    assert.match(oneErrorLine(r, assert), /fencing token is at its maximum/)
    assert.equal(r.stdout, '')
  })
})
