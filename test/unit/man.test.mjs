// The man pages are generated from the commands' metadata (npm run man): they must not drift.
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {readdirSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {it} from 'node:test'
import {fileURLToPath} from 'node:url'

it('man/ matches what npm run man generates from the current commands', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const r = spawnSync(process.execPath, ['scripts/man.mjs', '--check'], {cwd: root, encoding: 'utf8'})
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}(run npm run build && npm run man)`)
})

it('every command page documents its JSON output, in the words of SPEC §2 (token, fencingToken)', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  // All but dlq completion, which has no --json: it prints a script.
  const pages = readdirSync(join(root, 'man')).filter((f) => /^dlq-.+\.1$/.test(f) && f !== 'dlq-completion.1')
  assert.ok(pages.length >= 9, pages.join(' '))
  for (const page of pages) assert.match(readFileSync(join(root, 'man', page), 'utf8'), /^\.SH "JSON OUTPUT"$/m, page)
  for (const page of ['dlq-lock-acquire.1', 'dlq-lock-renew.1', 'dlq-lock-status.1']) {
    assert.match(readFileSync(join(root, 'man', page), 'utf8'), /"token": TOKEN.*"fencingToken": INTEGER/, page)
  }
})
