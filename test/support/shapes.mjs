// The JSON shapes the man pages document (section JSON OUTPUT of man/dlq-*.1), read from the pages
// as a user reads them and turned into checkers, so that a test fails when the output and the
// documentation part ways. A shape is JSON with placeholders: N (a count), INTEGER, ISO-8601,
// EXIT-CODE, BOOLEAN (true or false), and words in capitals for strings (KEY, TOKEN, TEXT, ...); "A|null" may be null;
// [ID, ...] is a list of IDs; "[...]|null" a list or null. Every key is required, no other key may
// appear; the one exception the pages state in words is the error object's hint ("may be left out").
import {readFileSync} from 'node:fs'
import {join} from 'node:path'

import {ROOT} from './cli.mjs'

const NULLABLE = '@nullable'

/** The literal blocks of a man page's JSON OUTPUT section, as parsed shapes. */
export function documentedShapes(page) {
  const roff = readFileSync(join(ROOT, 'man', `${page}.1`), 'utf8')
  const section = /^\.SH "JSON OUTPUT"\n([\s\S]*?)^\.SH /m.exec(roff)?.[1]
  if (section === undefined) throw new Error(`man/${page}.1 has no JSON OUTPUT section`)
  return [...section.matchAll(/^\.nf\n([\s\S]*?)^\.fi$/gm)].map((m) => parseShape(m[1].replaceAll('\\-', '-').replaceAll('\\e', '\\')))
}

export function parseShape(text) {
  const json = text
    .replace(/\[([A-Z][A-Z0-9-]*), \.\.\.\]/g, '["$1"]')
    .replace(/\]\|null/g, `, "${NULLABLE}"]`)
    .replace(/(?<!["\w])([A-Z][A-Z0-9-]*|N)((?:\|(?:null|[A-Z][A-Z0-9-]*|N))*)(?![\w"])/g, '"$1$2"')
  return JSON.parse(json)
}

const isoDate = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/

function matchesPlaceholder(value, placeholder) {
  return placeholder.split('|').some((kind) => {
    if (kind === 'null') return value === null
    if (kind === 'N' || kind === 'EXIT-CODE') return Number.isInteger(value) && value >= 0
    if (kind === 'INTEGER') return (Number.isSafeInteger(value) && value >= 0) || (typeof value === 'string' && /^\d+$/.test(value))
    if (kind === 'BOOLEAN') return typeof value === 'boolean'
    if (kind === 'ISO-8601') return typeof value === 'string' && isoDate.test(value)
    if (kind === 'BASE64') return typeof value === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(value)
    return typeof value === 'string'
  })
}

/** Where `value` departs from `shape`: a list of "path: what" lines, empty when it conforms. */
export function shapeErrors(value, shape, path = '$', optional = new Set()) {
  if (typeof shape === 'string') return matchesPlaceholder(value, shape) ? [] : [`${path}: ${JSON.stringify(value)} is not ${shape}`]
  if (Array.isArray(shape)) {
    if (value === null && shape.includes(NULLABLE)) return []
    if (!Array.isArray(value)) return [`${path}: ${JSON.stringify(value)} is not a list`]
    return value.flatMap((item, i) => shapeErrors(item, shape[0], `${path}[${i}]`, optional))
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${path}: ${JSON.stringify(value)} is not an object`]
  const errors = []
  for (const key of Object.keys(shape)) {
    if (!(key in value)) {
      if (!optional.has(key)) errors.push(`${path}.${key}: missing`)
      continue
    }
    errors.push(...shapeErrors(value[key], shape[key], `${path}.${key}`, optional))
  }
  for (const key of Object.keys(value)) if (!(key in shape)) errors.push(`${path}.${key}: not documented`)
  return errors
}

/** The shape among `shapes` that `value` matches: its index, or the errors against each. */
export function whichShape(value, shapes, optional = new Set(['hint'])) {
  const errors = shapes.map((shape) => shapeErrors(value, shape, '$', optional))
  const index = errors.findIndex((e) => e.length === 0)
  return index >= 0 ? {index} : {index: -1, errors}
}
