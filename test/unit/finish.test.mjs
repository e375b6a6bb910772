// Unit test: a command's exit code survives a backend whose close() never settles (a ZooKeeper
// client whose session expired while dlq was stopped: `lock run` printed "lost" and exited 0).
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {describe, it} from 'node:test'

import {ROOT} from '../support/cli.mjs'

describe('finishing a command', () => {
  it('exits with its code even when closing the backend leaves the event loop empty', () => {
    const script = `
      import {Session} from './dist/session.js'
      const session = new Session()
      session.opened = {close: () => new Promise(() => {})} // never settles, holds no handle
      void session.finish(70) // as bin/run.cjs runs a command: not a top-level await
    `
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {cwd: ROOT, encoding: 'utf8', timeout: 10_000})
    assert.equal(r.status, 70, r.stderr)
  })
})
