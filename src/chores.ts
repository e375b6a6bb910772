// Queue chores (issue 14, SPEC §3): purge and redrive, written once over the driver interface so
// that every backend has them with the same semantics. Both take the queue's messages a batch at a
// time through its own reservation (reserve, act, acknowledge), as a pop does: a chore killed half
// way loses nothing, since what it had reserved and not acknowledged becomes visible again when
// the reservation ends. A redrive is at-least-once like every dlq delivery: killed between its push
// and its acknowledgement, a batch is in both queues.
import type {Message, QueueDriver} from './backends/types.js'

const batch = 1000
const reservationMs = 60_000
// A chore's reservation is not a delivery that counts toward the dead-letter limit (int4 for SQL).
const noLimit = 2_147_483_647

/**
 * Reserves up to `limit` of `queue`'s waiting messages a batch at a time, hands each batch to `act`
 * and then acknowledges (deletes) it; stops when the queue runs dry. Resolves with how many.
 */
export async function drain(queues: QueueDriver, queue: string, limit: number, act: (messages: Message[]) => Promise<void>): Promise<number> {
  const signal = new AbortController().signal
  let done = 0
  while (done < limit) {
    const want = Math.min(batch, limit - done)
    const messages = await queues.reserve(queue, {count: want, visibilityMs: reservationMs, waitMs: 0, maxAttempts: noLimit, signal})
    if (messages.length === 0) break
    await act(messages)
    await queues.settle(queue, messages, 'ack', noLimit)
    done += messages.length
    if (messages.length < want) break
  }
  return done
}

/** Drops `queue`'s waiting messages (in-flight ones stay with their pops and workers). */
export const purge = (queues: QueueDriver, queue: string) => drain(queues, queue, Infinity, async () => {})

/** Moves up to `limit` dead letters from `queue`.dead back to the end of `queue`, in order, as new messages (attempts start again). */
export const redrive = (queues: QueueDriver, queue: string, limit: number) =>
  drain(queues, `${queue}.dead`, limit, async (messages) => {
    await queues.push(queue, messages.map((m) => m.body))
  })
