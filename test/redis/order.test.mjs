// Messages from one push keep their order on Redis, even when the server's script cache is empty
// and other clients load the scripts meanwhile: push batches in flight together must not be
// re-sent behind one another (EVALSHA's NOSCRIPT fallback did that: a push came back out of order).
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {run, uniqueName} from '../support/cli.mjs'
import {startRedis} from '../support/servers.mjs'

const lines = (text) => (text === '' ? [] : text.slice(0, -1).split('\n'))

describe('redis: order under an empty script cache', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server?.stop())

  it('12 pushes of 3500 lines started together after SCRIPT FLUSH, 5 rounds: each queue pops in the order pushed', async () => {
    const {default: Redis} = await import('ioredis')
    const admin = new Redis({host: '127.0.0.1', port: server.port, lazyConnect: true})
    await admin.connect()
    try {
      const input = Array.from({length: 3500}, (_v, i) => String(i + 1)).join('\n') + '\n'
      const misordered = []
      for (let round = 0; round < 5; round++) {
        await admin.script('FLUSH')
        const queues = Array.from({length: 12}, () => uniqueName('order'))
        await Promise.all(queues.map(async (queue) => {
          const r = await run(['queue', 'push', '-b', server.url, '--queue', queue], {input, timeoutMs: 60_000})
          assert.equal(r.code, 0, r.stderr)
        }))
        for (const queue of queues) {
          const r = await run(['queue', 'pop', '-b', server.url, '--queue', queue, '--count', '5000'], {timeoutMs: 60_000})
          assert.equal(r.code, 0, r.stderr)
          const got = lines(r.stdout)
          assert.equal(got.length, 3500)
          const first = got.findIndex((line, i) => line !== String(i + 1))
          if (first !== -1) misordered.push(`${queue}: line ${first + 1} is ${got[first]}`)
        }
      }
      assert.deepEqual(misordered, [])
    } finally {
      admin.disconnect()
    }
  })
})
