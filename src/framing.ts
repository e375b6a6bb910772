// Splits a byte stream into messages (one per line, NUL-separated, or the whole stream) and groups
// them into batches, without ever holding more than one batch and one partial message in memory.
import {dataError} from './errors.js'

export type Framing = 'line' | 'null' | 'whole'

export interface BatchLimits {
  maxMessages: number
  maxBytes: number
  maxMessageBytes: number
}

// The reading stops at the limit, so the size is known only when the message's end was in sight.
const tooLarge = (index: number, size: number | undefined, limit: number, pushed: number) =>
  dataError(`message ${index + 1} is too large`, `${size === undefined ? '' : `${size} bytes, `}over the limit of ${limit} bytes`, `the ${pushed} messages before it were pushed; nothing after it was`)

/**
 * Yields batches of messages in order. A message over maxMessageBytes throws (exit 65) after the
 * batches before it were yielded, so the caller has pushed everything that came before it.
 */
export async function* batches(input: AsyncIterable<Buffer>, framing: Framing, limits: BatchLimits): AsyncGenerator<Buffer[]> {
  const delimiter = framing === 'null' ? 0 : 10
  let batch: Buffer[] = []
  let batchBytes = 0
  let index = 0
  let pending: Buffer[] = []
  let pendingBytes = 0
  let yielded = 0

  const take = (message: Buffer): Buffer[] | undefined => {
    let full: Buffer[] | undefined
    if (batch.length > 0 && (batch.length >= limits.maxMessages || batchBytes + message.length > limits.maxBytes)) {
      full = batch
      batch = []
      batchBytes = 0
    }
    batch.push(message)
    batchBytes += message.length
    index++
    return full
  }

  for await (const chunk of input) {
    let at = 0
    if (framing === 'whole') {
      pending.push(chunk)
      pendingBytes += chunk.length
      if (pendingBytes > limits.maxMessageBytes) throw tooLarge(0, undefined, limits.maxMessageBytes, 0)
      continue
    }
    for (;;) {
      const end = chunk.indexOf(delimiter, at)
      const piece = chunk.subarray(at, end === -1 ? chunk.length : end)
      if (pendingBytes + piece.length > limits.maxMessageBytes) {
        if (batch.length > 0) {
          yielded += batch.length
          yield batch
          batch = []
        }
        throw tooLarge(index, end === -1 ? undefined : pendingBytes + piece.length, limits.maxMessageBytes, yielded)
      }
      if (end === -1) {
        if (piece.length > 0) {
          pending.push(Buffer.from(piece))
          pendingBytes += piece.length
        }
        break
      }
      const message = pending.length === 0 ? Buffer.from(piece) : Buffer.concat([...pending, piece])
      pending = []
      pendingBytes = 0
      const full = take(message)
      if (full) {
        yielded += full.length
        yield full
      }
      at = end + 1
    }
  }
  // A last line without its delimiter is still a message; `--whole` input is one message even when empty.
  if (framing === 'whole' || pendingBytes > 0) {
    const full = take(Buffer.concat(pending))
    if (full) yield full
  }
  if (batch.length > 0) yield batch
}
