// Flags shared by the queue commands.
import * as Flags from '@oclif/core/flags'

import type {Message} from './backends/types.js'

export const queueFlag = Flags.string({char: 'q', summary: 'Queue name: 1–255 bytes of UTF-8, no control characters.', required: true, helpValue: 'QUEUE'})
export const nullFlag = Flags.boolean({summary: 'Messages are separated by NUL bytes instead of newlines (short: -0).'})

/** One message as written by pop and tail: the body and its delimiter, or a JSON line. */
export function render(message: Message, json: boolean, nul: boolean): Buffer {
  if (!json) return Buffer.concat([message.body, Buffer.from(nul ? '\0' : '\n')])
  const utf8 = Buffer.from(message.body.toString('utf8'), 'utf8').equals(message.body)
  return Buffer.from(JSON.stringify({
    id: message.id,
    ...(utf8 ? {body: message.body.toString('utf8')} : {bodyBase64: message.body.toString('base64')}),
    enqueuedAt: message.enqueuedAt.toISOString(),
    attempts: message.attempts,
  }) + '\n')
}
