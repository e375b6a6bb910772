// Every link in the README resolves inside the repository (issue 15): a relative link names a file
// or directory that exists, and a #fragment names a heading of the target (GitHub's anchors:
// lower case, punctuation dropped, spaces as hyphens). Links outside the repository (../, /, a
// scheme other than https) fail: a clone, the npm package and a code host must all show them.
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {dirname, join, normalize, relative} from 'node:path'
import {describe, it} from 'node:test'

import {ROOT} from '../support/cli.mjs'

const anchor = (heading) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-')

/** The anchors of a Markdown file's headings (outside code blocks), with GitHub's -1, -2 for repeats. */
function anchorsOf(text) {
  const seen = new Map()
  const out = new Set()
  let fenced = false
  for (const line of text.split('\n')) {
    if (/^```/.test(line)) fenced = !fenced
    const heading = !fenced && /^#{1,6}\s+(.*)$/.exec(line)
    if (!heading) continue
    const base = anchor(heading[1])
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

/** [text](target) links outside code spans and code blocks. */
function linksOf(text) {
  const links = []
  let fenced = false
  for (const [i, line] of text.split('\n').entries()) {
    if (/^```/.test(line)) fenced = !fenced
    if (fenced) continue
    for (const m of line.replace(/`[^`]*`/g, (code) => (code.includes('](') ? '' : code)).matchAll(/\]\(([^)\s]+)\)/g)) links.push({line: i + 1, target: m[1]})
  }
  return links
}

describe('README links', () => {
  it('every link in README.md resolves to a file of the repository or a heading', () => {
    const readme = join(ROOT, 'README.md')
    const text = readFileSync(readme, 'utf8')
    const broken = []
    const links = linksOf(text)
    assert.ok(links.length > 0, 'the README has links')
    for (const {line, target} of links) {
      if (/^https:\/\//.test(target)) continue
      const [path, fragment] = target.split('#')
      const file = path === '' ? readme : normalize(join(dirname(readme), decodeURIComponent(path)))
      if (/^[a-z][a-z0-9+.-]*:/i.test(path) || relative(ROOT, file).startsWith('..') || path.startsWith('/')) broken.push(`line ${line}: ${target} is outside the repository`)
      else if (!existsSync(file)) broken.push(`line ${line}: ${target}: no such file`)
      else if (fragment !== undefined && file.endsWith('.md') && !anchorsOf(readFileSync(file, 'utf8')).has(fragment)) broken.push(`line ${line}: ${target}: no such heading`)
    }
    assert.deepEqual(broken, [])
  })

  it('the check catches a link out of the repository, a missing file and a missing heading', () => {
    const links = linksOf('[a](../shared/SPEC.md) `[not](a-link)` [b](#no-such)\n```\n[c](inside-a-block)\n```\n')
    assert.deepEqual(links.map((l) => l.target), ['../shared/SPEC.md', '#no-such'])
    assert.deepEqual([...anchorsOf('# Exit codes\n## The Redis backend\n## Exit codes\n')], ['exit-codes', 'the-redis-backend', 'exit-codes-1'])
  })
})
