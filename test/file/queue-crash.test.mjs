// The file queue killed at each of its system calls (issue 10): the built dlq runs under
// `strace -ff -e inject=SYSCALL:signal=KILL:when=N` (and `error=ENOSPC`), then later commands recover
// and every message is accounted for by content:
//   - none lost: after the drain, every message pushed (and not acked before the kill) came out;
//   - none invisible: right after the kill `queue status` counts every one of them (waiting or in
//     flight); no name in cur/ has a deadline past the killed pop's --visibility; once those passed,
//     `queue tail` shows every one of them and pops get them all back;
//   - a kill duplicates only messages that process had in hand: every message seen twice is one
//     the killed process had written out (stdout, or its --exec handler's record), so at most --count;
//   - every later command exits with a code of SPEC §4 (0 or 75 here; 69 for an injected ENOSPC).
//
// Aiming a kill: strace counts `when=N` per syscall and per thread, and dlq's file system calls run
// on libuv's pool, so dlq runs with UV_THREADPOOL_SIZE=1 (one pool thread) and a preload that first
// opens and closes /dev/null 100 times on that pool. The pool thread's counts then start above every
// count the main thread (startup, stdout) or an --exec handler ever reaches, so the Nth call is the
// pool thread's. A dry run of each scenario under strace lists the pool thread's calls on the queue
// directory (the steps); each case names the step of the protocol in src/backends/file/queue.ts it
// means (T1…, C1, S1…), checks the dry run's call is that, kills there, and checks from strace's own
// record that the call killed is the same (same call, same paths up to batch names and deadlines).
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {cp, mkdir, readdir, readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {before, describe, it} from 'node:test'

import {BIN, NODE, runProgram, tempDir} from '../support/cli.mjs'

const STRACE = '/usr/bin/strace'
const usable = spawnSync(STRACE, ['-f', '-o', '/dev/null', 'true']).status === 0
const QUEUE = 'crash'
const SH0 = 'dlq-test-sh'
/** The handler of the --exec cases: appends the body and a newline to the file $1, exits $2. */
const RECORD = ['sh', '-c', 'cat >> "$1"; echo >> "$1"; exit "$2"', SH0]
const BUMP = 'data:text/javascript,' + encodeURIComponent("import{open}from'node:fs/promises';for(let i=0;i<100;i++)await(await open('/dev/null')).close()")
const TRACED = ['openat', 'write', 'writev', 'pwrite64', 'pwritev', 'fdatasync', 'fsync', 'rename', 'renameat2', 'link', 'linkat', 'unlink', 'unlinkat']
const MUTATING = ['rename', 'renameat2', 'link', 'linkat', 'unlink', 'unlinkat']

// The protocol's steps (src/backends/file/queue.ts), as the calls' shapes (see shape() below).
const Q = 'BASE/queues/crash'
const STEPS = {
  T1: new RegExp(`^openat\\([^,]+, "${Q}/tmp/BATCH\\.00000000\\.\\d{8}\\.0", O_WRONLY\\|O_CREAT\\|O_EXCL`),
  T2: new RegExp(`^writev\\(FD<${Q}/tmp/BATCH[.\\d]+>`),
  T3: new RegExp(`^fdatasync\\(FD<${Q}/tmp/BATCH[.\\d]+>\\)$`),
  T4: new RegExp(`^rename\\("${Q}/tmp/(BATCH[.\\d]+)", "${Q}/new/\\1"\\)$`),
  T5: new RegExp(`^fsync\\(FD<${Q}/new>\\)$`),
  C1: new RegExp(`^rename\\("${Q}/new/BATCH\\.(\\d{8}\\.\\d{8})\\.0", "${Q}/cur/BATCH\\.\\1\\.1\\.DEADLINE\\.RESERVER"\\)$`),
  S1: new RegExp(`^rename\\("${Q}/new/(BATCH[.\\d]+)", "${Q}/cur/\\1\\.DEADLINE\\.RESERVER\\.split\\d{8}"\\)$`),
  S2: new RegExp(`^link\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER\\.split\\d{8}", "${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER"\\)$`),
  S3: new RegExp(`^rename\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER\\.split\\d{8}", "${Q}/new/BATCH[.\\d]+"\\)$`),
  read: new RegExp(`^openat\\([^,]+, "${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER", O_RDONLY\\|O_NONBLOCK\\|O_NOFOLLOW\\|O_CLOEXEC\\)$`),
  A1: new RegExp(`^unlink\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER"\\)$`),
  R1: new RegExp(`^rename\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER", "${Q}/new/BATCH[.\\d]+"\\)$`),
  D1: new RegExp(`^rename\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER", "${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.later"\\)$`),
  dead: new RegExp(`^rename\\("${Q}/cur/BATCH[.\\d]+\\.DEADLINE\\.RESERVER", "${Q}\\.dead/new/BATCH[.\\d]+\\.0"\\)$`),
  undo: new RegExp(`^rename\\("${Q}/cur/(BATCH[.\\d]+)\\.DEADLINE\\.RESERVER\\.split\\d{8}", "${Q}/new/\\1"\\)$`),
}

const seq = (from, to) => Array.from({length: to - from + 1}, (_v, i) => String(from + i))
const lines = (text) => text.split('\n').filter((l) => l !== '')

/** A fresh base directory (removed after test `t`, or at exit). */
async function backend(t) {
  const sandbox = await tempDir(t, 'dlq-crash-')
  const base = join(sandbox, 'base')
  await mkdir(base)
  const dlq = (args, opts) => runProgram(NODE, [BIN, ...args.slice(0, 2), '-b', `file://${base}`, ...args.slice(2)], opts)
  return {sandbox, base, dlq}
}

// Each scenario's setup runs once; every run of it starts from a copy of that directory (the same
// names, so even readdir's order is the same in the dry run and in each kill).
const templates = new Map()
async function prepared(t, scenario) {
  if (!templates.has(scenario)) {
    templates.set(scenario, (async () => {
      const b = await backend()
      await scenario.setup(b)
      return b.base
    })())
  }
  const template = await templates.get(scenario)
  const b = await backend(t)
  await cp(template, b.base, {recursive: true})
  return b
}

/** `dlq ARGS…` under strace, with one pool thread whose counts start high (see the header). */
function underStrace(b, args, {straceArgs, input, timeoutMs = 30_000}) {
  return runProgram(STRACE, [...straceArgs, '--', NODE, '--import', BUMP, BIN, ...args.slice(0, 2), '-b', `file://${b.base}`, ...args.slice(2)],
    {input, env: {UV_THREADPOOL_SIZE: '1'}, timeoutMs})
}

// strace -ff writes one file per thread (PREFIX.TID), so no call is split by another thread's.
// A call: `NAME(ARGS) = RESULT`, with -y's <path> after each descriptor.
const callLine = /^(\w+)\((.*)$/
/** A call with what varies between runs (batch names, deadlines, reservers, descriptors) taken out. */
const shape = (line, base) => line.replaceAll(base, 'BASE').replace(/\d{13}[0-9a-z]{6}-[0-9a-f]{10}/g, 'BATCH')
  .replace(/\.\d{13}\.[0-9a-f]{12}/g, '.DEADLINE.RESERVER').replace(/\.\d{13}\.later\b/g, '.DEADLINE.later').replace(/\b\d+</g, 'FD<').replace(/\)\s+=.*$/, ')')

/**
 * A thread's calls with each /proc/self/fd/N/ path (a directory dlq pinned: src/backends/file/paths.ts)
 * written as the directory it stands for, known from the openat that returned N (-y shows its path).
 */
function unpinned(calls) {
  const dirs = new Map()
  return calls.map((line) => {
    const out = line.replace(/\/proc\/self\/fd\/(\d+)(?=[/"])/g, (whole, fd) => dirs.get(fd) ?? whole)
    const opened = /^openat\(.*\) = (\d+)<(.+)>$/.exec(out)
    if (opened) dirs.set(opened[1], opened[2])
    return out
  })
}

/** Each traced thread's calls, from the files of `strace -ff -o PREFIX`. */
async function threads(dir, prefix) {
  const files = (await readdir(dir)).filter((f) => f.startsWith(`${prefix}.`))
  return Promise.all(files.map(async (f) => unpinned(lines(await readFile(join(dir, f), 'utf8')).filter((l) => callLine.test(l)))))
}

/**
 * The steps of a scenario in a fresh backend prepared by its setup: the pool thread's calls on the
 * queue directory, each with its per-thread number (strace's `when`). Directory opens (readdir, the
 * fsync of new/) are left out: killing at one is killing at the step before or after it.
 */
async function stepsOf(scenario) {
  const steps = await dryRun(scenario)
  // An --exec extend (a claim renamed to a later deadline) comes only when a handler outlasts a
  // third of --visibility: 10s for --exec here, so only a handler (`cat`) stalled over 3 s moves
  // the counts. Such a run fails here, naming it, rather than being run again.
  const extend = steps.find((s) => /^rename\("BASE\/queues\/([^/]+)\/cur\/BATCH\.(\d{8}\.\d{8}\.\d+)\.DEADLINE\.RESERVER", "BASE\/queues\/\1\/cur\/BATCH\.\2\.DEADLINE\.RESERVER"\)$/.test(s.shape))
  assert.equal(extend, undefined, 'a dry run without extends')
  return steps
}

async function dryRun(scenario) {
  const b = await prepared(undefined, scenario)
  const r = await underStrace(b, scenario.args(b), {straceArgs: ['-ff', '-y', '-s', '0', '-o', join(b.sandbox, 'dry'), '-e', `trace=${TRACED.join(',')}`], input: scenario.input})
  assert.equal(r.code, scenario.exitCode ?? 0, `dry run: ${r.stderr}`)
  const all = await threads(b.sandbox, 'dry')
  const pool = all.filter((calls) => calls.some((l) => l.includes(b.base)))
  assert.equal(pool.length, 1, 'one thread makes every call on the queue directory')
  const steps = []
  const counts = new Map()
  for (const line of pool[0]) {
    const name = callLine.exec(line)[1]
    counts.set(name, (counts.get(name) ?? 0) + 1)
    if (!line.includes(b.base) || (name === 'openat' && line.includes('O_DIRECTORY'))) continue
    steps.push({name, when: counts.get(name), nth: steps.filter((s) => s.name === name).length + 1, shape: shape(line, b.base)})
  }
  for (const calls of all) {
    if (calls === pool[0]) continue
    for (const name of new Set(steps.map((s) => s.name))) {
      const n = calls.filter((l) => l.startsWith(`${name}(`)).length
      assert.ok(n < Math.min(...steps.filter((s) => s.name === name).map((s) => s.when)), `another thread makes ${n} ${name} calls: a kill aimed at the pool thread could hit it`)
    }
  }
  return steps
}

/** The names in the queue's cur/, new/ and tmp/. */
const listing = async (b, queue = QUEUE) => {
  const dir = (d) => readdir(join(b.base, 'queues', queue, d)).catch(() => [])
  return {cur: await dir('cur'), new: await dir('new'), tmp: await dir('tmp')}
}

async function status(b) {
  const r = await b.dlq(['queue', 'status', '--queue', QUEUE, '--json'])
  assert.equal(r.code, 0, `queue status: ${r.stderr}`)
  return JSON.parse(r.stdout).queues[0] ?? {waiting: 0, inFlight: 0, dead: 0}
}

/** Waits until every deadline named in cur/ has passed, after checking that none is later than `latest`. */
async function pastDeadlines(b, latest) {
  const {cur} = await listing(b)
  const deadline = Math.max(0, ...cur.map((n) => Number(/\.(\d{13})\.[0-9a-f]{12}/.exec(n)?.[1] ?? 0)))
  assert.ok(deadline <= latest, `a name in cur/ stays invisible until ${new Date(deadline).toISOString()}, past ${new Date(latest).toISOString()}: ${cur.join(' ')}`)
  while (Date.now() <= deadline) await new Promise((resolve) => setTimeout(resolve, deadline + 1 - Date.now()))
}

/**
 * Waits until every deadline in cur/ has passed (after checking that none is later than `latest`:
 * nothing stays invisible past the killed process's --visibility), then pops QUEUE (and
 * QUEUE.dead) until no name is left in their new/ and cur/. Resolves with every message popped.
 */
async function drain(b, latest = Date.now()) {
  await pastDeadlines(b, latest)
  const got = []
  const names = async (queue) => {
    const {cur, new: fresh} = await listing(b, queue)
    return [...cur, ...fresh]
  }
  for (let round = 0; round < 3; round++) {
    for (const queue of [QUEUE, `${QUEUE}.dead`]) {
      if ((await names(queue)).length === 0) continue
      const r = await b.dlq(['queue', 'pop', '--queue', queue, '--count', '100000'])
      assert.ok([0, 75].includes(r.code), `queue pop ${queue}: exit ${r.code}: ${r.stderr}`)
      got.push(...lines(r.stdout))
    }
    if ((await names(QUEUE)).length + (await names(`${QUEUE}.dead`)).length === 0) return got
  }
  assert.fail(`after three rounds of pops, still left: ${[...(await names(QUEUE)), ...(await names(`${QUEUE}.dead`))].join(' ')}`)
}

/** Messages in `all` more than once. */
function duplicates(all) {
  const seen = new Set()
  const twice = new Set()
  for (const m of all) (seen.has(m) ? twice : seen).add(m)
  return [...twice]
}

let kills = 0

/**
 * Runs the scenario's command in `b`, killed at `step` (or with `error` injected there), and
 * returns the run and the calls of its pool thread that completed before. The call hit must be
 * the step: a kill that lands elsewhere fails the case.
 */
async function killAt(b, scenario, step, {error} = {}) {
  const prefix = `kill${++kills}`
  // openat too: the pinned directories' paths (unpinned above) come from its results.
  const traced = [...new Set([...MUTATING, 'openat', step.name])]
  const inject = `inject=${step.name}:${error ? `error=${error}` : 'signal=KILL'}:when=${step.when}`
  const r = await underStrace(b, scenario.args(b), {straceArgs: ['-ff', '-y', '-s', '0', '-o', join(b.sandbox, prefix), '-e', `trace=${traced.join(',')}`, '-e', inject], input: scenario.input})
  const hits = []
  for (const calls of await threads(b.sandbox, prefix)) {
    for (const [i, l] of calls.entries()) {
      if (l.startsWith(`${step.name}(`) && (error ? l.endsWith('(INJECTED)') : / = \?$/.test(l))) hits.push({calls, i})
    }
  }
  assert.equal(hits.length, 1, `exactly one ${step.name} call was hit`)
  const {calls, i} = hits[0]
  const hit = shape(calls[i], b.base)
  assert.equal(hit, step.shape, 'the call hit is the step aimed at')
  if (!error) assert.equal(r.signal, 'SIGKILL', `killed: exit ${r.code} ${r.stderr}`)
  return {r, hit, before: calls.slice(0, i).filter((l) => / = 0$/.test(l)), endedAt: Date.now()}
}

/** killAt in a fresh backend prepared by the scenario's setup; the call hit must be the step. */
async function kill(t, scenario, step, {error} = {}) {
  const b = await prepared(t, scenario)
  return {b, ...await killAt(b, scenario, step, {error})}
}

/** How many messages the unlinks (acks) of claims in `before` removed. */
const ackedBy = (before) => before.filter((l) => /^unlink\(".*\/cur\//.test(l))
  .reduce((sum, l) => sum + Number(/\.\d{8}\.(\d{8})\.\d+\.\d{13}\.[0-9a-f]+"\)/.exec(l)[1]), 0)

/**
 * The accounting after a kill in a pop: status counts every message still there; the drain gets
 * them all back; every duplicate was in the killed process's hands (`handled`).
 */
async function accountForPop(b, {pushed, before, endedAt, handled, count, visibilityMs}) {
  const acked = ackedBy(before)
  const now = await status(b)
  assert.equal(now.waiting + now.inFlight + now.dead, pushed.length - acked, `right after the kill, status counts every message not acked (${acked} acked): ${JSON.stringify(now)}`)
  await pastDeadlines(b, endedAt + visibilityMs)
  const tail = await b.dlq(['queue', 'tail', '--queue', QUEUE, '-n', '100000'])
  assert.equal(tail.code, 0, tail.stderr)
  const shown = lines(tail.stdout)
  assert.equal(shown.length, pushed.length - acked, 'once the deadlines passed, tail shows every message not acked')
  assert.deepEqual(duplicates(shown), [], 'each once')
  assert.deepEqual(pushed.filter((m) => !handled.includes(m) && !shown.includes(m)), [], 'every message the killed process never had')
  const drained = await drain(b)
  const all = [...handled, ...drained]
  assert.deepEqual(pushed.filter((m) => !all.includes(m)), [], 'no message lost')
  assert.deepEqual(all.filter((m) => !pushed.includes(m)), [], 'nothing that was not pushed')
  const twice = duplicates(all)
  assert.deepEqual(twice.filter((m) => !handled.includes(m)), [], 'only messages the killed process had in hand come twice')
  assert.ok(twice.length <= count, `${twice.length} duplicates, at most --count ${count}`)
  return {duplicates: twice.length}
}

// ---------------------------------------------------------------------------------------------
// Scenarios: how to prepare the queue, what runs under strace, and where to kill it.

const PUSHED = seq(1, 2500)
const pushScenario = {
  name: 'push of 2500 lines (batches of 1000, 1000, 500)',
  setup: async () => {},
  args: () => ['queue', 'push', '--queue', QUEUE],
  input: PUSHED.join('\n') + '\n',
}

const pushTwo = async (b) => {
  for (const input of ['1\n2\n3\n', seq(4, 1000).join('\n') + '\n']) {
    const r = await b.dlq(['queue', 'push', '--queue', QUEUE], {input})
    assert.equal(r.code, 0, r.stderr)
  }
}
const popScenario = {
  name: 'pop --count 10 of a batch of 3 (claimed whole) and one of 997 (split)',
  setup: pushTwo,
  args: () => ['queue', 'pop', '--queue', QUEUE, '--count', '10', '--visibility', '300ms'],
  count: 10,
  visibilityMs: 300,
}

const pushThousand = async (b) => {
  const r = await b.dlq(['queue', 'push', '--queue', QUEUE], {input: seq(1, 1000).join('\n') + '\n'})
  assert.equal(r.code, 0, r.stderr)
}
const splitScenario = {
  name: 'pop --count 10 of a batch of 1000',
  setup: pushThousand,
  args: () => ['queue', 'pop', '--queue', QUEUE, '--count', '10', '--visibility', '300ms'],
  count: 10,
  visibilityMs: 300,
}

const execScenario = {
  name: 'pop --exec --count 2 of a batch of 1000',
  setup: pushThousand,
  args: (b) => ['queue', 'pop', '--queue', QUEUE, '--count', '2', '--visibility', '10s', '--exec', '--', ...RECORD, join(b.sandbox, 'handled'), '0'],
  count: 2,
  visibilityMs: 10_000,
}

const deadScenario = {
  name: 'pop --exec --max-attempts 1 whose handler fails (to the dead letters)',
  setup: pushThousand,
  args: (b) => ['queue', 'pop', '--queue', QUEUE, '--count', '1', '--max-attempts', '1', '--visibility', '10s', '--exec', '--', ...RECORD, join(b.sandbox, 'handled'), '3'],
  exitCode: 0,
  count: 1,
  visibilityMs: 10_000,
}

const laterScenario = {
  name: 'pop --exec --retry-delay 1s whose handler fails (retried later)',
  setup: pushThousand,
  args: (b) => ['queue', 'pop', '--queue', QUEUE, '--count', '1', '--max-attempts', '2', '--retry-delay', '1s', '--visibility', '10s', '--exec', '--', ...RECORD, join(b.sandbox, 'handled'), '3'],
  exitCode: 0,
  count: 1,
  visibilityMs: 10_000,
}

/** A pop --count 10 killed at its split's `name` call, and the wait until that split's deadline passed. */
const killedSplit = (name, when) => async (b) => {
  await pushThousand(b)
  const steps = await stepsFor(splitScenario)
  const step = steps.find((s) => s.name === name && s.nth === when)
  const {r} = await killAt(b, splitScenario, step)
  assert.equal(r.stdout, '', 'the killed pop wrote nothing')
  await pastDeadlines(b, Date.now() + splitScenario.visibilityMs)
}
const recoverForward = {
  name: 'pop --count 5 that completes a dead reserver\'s split (S1, S2 done, S3 not)',
  setup: killedSplit('rename', 2),
  args: () => ['queue', 'pop', '--queue', QUEUE, '--count', '5', '--visibility', '300ms'],
  count: 5,
  visibilityMs: 300,
}
const recoverUndo = {
  name: 'pop --count 5 that undoes a dead reserver\'s split (S1 done, S2 not)',
  setup: killedSplit('link', 1),
  args: () => ['queue', 'pop', '--queue', QUEUE, '--count', '5', '--visibility', '300ms'],
  count: 5,
  visibilityMs: 300,
}

// The dry runs, once per scenario (each in a backend of its own).
const dry = new Map()
const stepsFor = (scenario) => {
  if (!dry.has(scenario)) dry.set(scenario, stepsOf(scenario))
  return dry.get(scenario)
}

/** The scenario's call `name` #nth, which must be the protocol's step `kind` (a key of STEPS). */
async function step(scenario, name, nth, kind) {
  const steps = await stepsFor(scenario)
  const found = steps.find((s) => s.name === name && s.nth === nth)
  assert.ok(found, `${scenario.name} has a ${name} #${nth}: ${steps.map((s) => `${s.name}#${s.nth}`).join(' ')}`)
  assert.match(found.shape, STEPS[kind], `${name} #${nth} of ${scenario.name} is ${kind}`)
  return found
}

const covered = new Map()
const cover = (scenario, name, nth) => {
  if (!covered.has(scenario)) covered.set(scenario, new Set())
  covered.get(scenario).add(`${name}#${nth}`)
}

describe('file queue: push, pop and pop --exec killed at each system call', {skip: !usable && 'strace cannot trace here', concurrency: 4}, () => {
  // A first run after a build writes dlq's code cache at exit, with a rename on the main thread.
  before(async () => assert.equal((await runProgram(NODE, [BIN, '--version'])).code, 0))

  // -------------------------------------------------------------------------------------------
  // push: whole batches or nothing; a leftover in tmp/ never disturbs anyone.
  const pushCases = [['openat', 1, 'T1', 'creating batch 1 in tmp/', 0], ['writev', 1, 'T2', 'writing batch 1', 0], ['fdatasync', 1, 'T3', 'syncing batch 1', 0],
    ['rename', 1, 'T4', 'renaming batch 1 into new/', 0], ['fsync', 1, 'T5', 'syncing new/ after batch 1', 1000], ['rename', 2, 'T4', 'renaming batch 2 into new/', 1000]]
  for (const [name, nth, kind, what, committed] of pushCases) {
    cover(pushScenario, name, nth)
    it(`push killed ${what} (${kind}: ${name} #${nth}): the ${committed} messages of whole batches before it are there, in order, once; later commands work`, async (t) => {
      const {b} = await kill(t, pushScenario, await step(pushScenario, name, nth, kind))
      const expected = PUSHED.slice(0, committed)
      const now = await status(b)
      assert.deepEqual([now.waiting, now.inFlight], [expected.length, 0], JSON.stringify(now))
      const {tmp} = await listing(b)
      assert.deepEqual(await drain(b), expected, 'exactly the committed batches, in order')
      t.diagnostic(`duplicates: 0; left in tmp/: ${tmp.length}`)
      if (name === 'rename' && nth === 1) {
        assert.equal(tmp.length, 1, 'the whole batch 1 is left in tmp/ under the name push meant for new/')
        const again = await b.dlq(['queue', 'push', '--queue', QUEUE, 'after'])
        assert.equal(again.code, 0, again.stderr)
        assert.deepEqual(await drain(b), ['after'], 'a leftover in tmp/ takes nothing from a later push or pop')
      }
    })
  }

  const batchTwo = async () => {
    const steps = await stepsFor(pushScenario)
    const renamed = steps.indexOf(await step(pushScenario, 'rename', 1, 'T4'))
    const first = steps.findIndex((s, i) => i > renamed && s.name === 'writev')
    assert.deepEqual(steps.slice(first, first + 2).map((s) => s.name), ['writev', 'writev'], 'batch 2 is written in more than one writev')
    return steps.slice(first, first + 2)
  }

  it('push with ENOSPC at batch 2\'s first writev: exit 69 in one line, batch 1 stays, nothing of batch 2 is left in tmp/', async (t) => {
    const {b, r} = await kill(t, pushScenario, (await batchTwo())[0], {error: 'ENOSPC'})
    assert.equal(r.code, 69, r.stderr)
    assert.match(r.stderr.trim(), /^dlq: [^\n]*no space left on device[^\n]*$/)
    assert.deepEqual((await listing(b)).tmp, [], 'the half batch was removed')
    assert.deepEqual(await drain(b), PUSHED.slice(0, 1000))
  })

  it('push with ENOSPC once, after part of batch 2 was written (its second writev): the rest is written again, no batch is torn', async (t) => {
    const {b, r} = await kill(t, pushScenario, (await batchTwo())[1], {error: 'ENOSPC'})
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(await drain(b), PUSHED, 'all of it, once, in order')
  })

  // -------------------------------------------------------------------------------------------
  // pop: a claim of a whole batch (C1) and a split (S1–S3), the reads, the acks.
  const popCases = [['rename', 1, 'C1', 'claiming the batch of 3 whole'], ['openat', 1, 'read', 'reading its claim'], ['rename', 2, 'S1', 'taking the batch of 997 for a split'],
    ['link', 1, 'S2', 'linking its claim of 7'], ['rename', 3, 'S3', 'giving back the rest'],
    ['unlink', 1, 'A1', 'acking the first claim'], ['unlink', 2, 'A1', 'acking the second claim']]
  for (const [name, nth, kind, what] of popCases) {
    cover(popScenario, name, nth)
    it(`pop --count 10 killed ${what} (${kind}: ${name} #${nth}): status counts all, all come back, duplicates only of what it had written`, async (t) => {
      const {b, r, before, endedAt} = await kill(t, popScenario, await step(popScenario, name, nth, kind))
      const {duplicates: n} = await accountForPop(b, {pushed: seq(1, 1000), before, endedAt, handled: lines(r.stdout), count: 10, visibilityMs: 300})
      t.diagnostic(`duplicates: ${n}`)
    })
  }

  for (const [call, nth, kind] of [['link', 1, 'S2'], ['rename', 2, 'S3']]) {
    it(`pop with ENOSPC at its split's ${kind} (${call} #${nth}): exit 69 in one line, and the batch is waiting again at once`, async (t) => {
      const {b, r} = await kill(t, splitScenario, await step(splitScenario, call, nth, kind), {error: 'ENOSPC'})
      assert.equal(r.code, 69, r.stderr)
      assert.match(r.stderr.trim(), /^dlq: [^\n]*no space left on device[^\n]*$/)
      const now = await status(b)
      assert.deepEqual([now.waiting, now.inFlight], [1000, 0], JSON.stringify(now))
      assert.deepEqual(await drain(b), seq(1, 1000), 'all of it, once, in order')
    })
  }

  // -------------------------------------------------------------------------------------------
  // pop --exec: per message S1–S3, the read, the handler, the ack; the dead-letter move.
  const execCases = [['link', 1, 'S2', 'linking the claim of message 1'], ['rename', 2, 'S3', 'giving back the rest'],
    ['openat', 1, 'read', 'reading the claim'], ['unlink', 1, 'A1', 'acking message 1 after its handler ran'], ['rename', 3, 'S1', 'taking message 2 for a split']]
  for (const [name, nth, kind, what] of execCases) {
    cover(execScenario, name, nth)
    it(`pop --exec --count 2 killed ${what} (${kind}: ${name} #${nth}): all come back; only a handled message comes twice`, async (t) => {
      const {b, before, endedAt} = await kill(t, execScenario, await step(execScenario, name, nth, kind))
      const handled = lines(await readFile(join(b.sandbox, 'handled'), 'utf8').catch(() => ''))
      const {duplicates: n} = await accountForPop(b, {pushed: seq(1, 1000), before, endedAt, handled, count: 2, visibilityMs: 10_000})
      t.diagnostic(`duplicates: ${n}`)
    })
  }

  cover(deadScenario, 'rename', 3)
  it('pop --exec killed moving a failed message to the dead letters (rename #3): it comes back once, nothing lost', async (t) => {
    const {b, before, endedAt} = await kill(t, deadScenario, await step(deadScenario, 'rename', 3, 'dead'))
    const handled = lines(await readFile(join(b.sandbox, 'handled'), 'utf8'))
    assert.deepEqual(handled, ['1'], 'the handler ran once, on message 1')
    const {duplicates: n} = await accountForPop(b, {pushed: seq(1, 1000), before, endedAt, handled, count: 1, visibilityMs: 10_000})
    t.diagnostic(`duplicates: ${n}`)
  })

  cover(laterScenario, 'rename', 3)
  it('pop --exec killed renaming a failed message to its later deadline (D1: rename #3): it comes back once its claim expires, nothing lost', async (t) => {
    const {b, before, endedAt} = await kill(t, laterScenario, await step(laterScenario, 'rename', 3, 'D1'))
    const handled = lines(await readFile(join(b.sandbox, 'handled'), 'utf8'))
    assert.deepEqual(handled, ['1'], 'the handler ran once, on message 1')
    const {duplicates: n} = await accountForPop(b, {pushed: seq(1, 1000), before, endedAt, handled, count: 1, visibilityMs: 10_000})
    t.diagnostic(`duplicates: ${n}`)
  })

  // -------------------------------------------------------------------------------------------
  // Recovery is a step of pop too: a pop that recovers a dead reserver's split, killed doing it.
  const recoverCases = [[recoverForward, 'rename', 1, 'S3', 'doing S3 for the dead reserver'], [recoverForward, 'rename', 2, 'R1', 'returning the dead reserver\'s expired claim'],
    [recoverUndo, 'rename', 1, 'undo', 'undoing the dead reserver\'s split']]
  for (const [scenario, name, nth, kind, what] of recoverCases) {
    cover(scenario, name, nth)
    it(`${scenario.name}, killed ${what} (${kind}: ${name} #${nth}): all come back, none twice`, async (t) => {
      const {b, r, before, endedAt} = await kill(t, scenario, await step(scenario, name, nth, kind))
      const {duplicates: n} = await accountForPop(b, {pushed: seq(1, 1000), before, endedAt, handled: lines(r.stdout), count: 5, visibilityMs: 300})
      assert.equal(n, 0, 'no process had any message in hand')
      t.diagnostic(`duplicates: ${n}`)
    })
  }

  // -------------------------------------------------------------------------------------------
  it('every distinct system call step of push, pop and pop --exec is among the kills above', async () => {
    for (const scenario of [pushScenario, popScenario, execScenario]) {
      const steps = await stepsFor(scenario)
      const killed = new Set([...covered.get(scenario)].map((k) => k.split('#')[0]))
      assert.deepEqual([...new Set(steps.map((s) => s.name))].filter((k) => !killed.has(k)), [], `${scenario.name}: calls never killed (${steps.map((s) => `${s.name}#${s.nth}`).join(' ')})`)
      const unknown = steps.filter((s) => !Object.values(STEPS).some((re) => re.test(s.shape)))
      assert.deepEqual(unknown.map((s) => s.shape), [], `${scenario.name}: calls that are no step of the protocol`)
    }
  })
})
