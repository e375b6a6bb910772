// The man pages are generated from the commands' metadata (npm run man): they must not drift.
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {it} from 'node:test'
import {fileURLToPath} from 'node:url'

it('man/ matches what npm run man generates from the current commands', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const r = spawnSync(process.execPath, ['scripts/man.mjs', '--check'], {cwd: root, encoding: 'utf8'})
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}(run npm run build && npm run man)`)
})
