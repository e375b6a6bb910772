// Placeholder until the Postgres driver lands: the scheme is known, the driver is not there yet.
import {unavailable} from '../../errors.js'
import type {Backend, BackendOptions} from '../types.js'
import {maskUrl} from '../url.js'

export async function openPostgresBackend(url: URL, _options: BackendOptions): Promise<Backend> {
  throw unavailable(`backend ${url.protocol}// is not available in this version`, maskUrl(url.href), 'use a file: backend for now')
}
