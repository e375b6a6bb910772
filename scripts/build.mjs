// Builds dist/dlq.cjs: the commands, oclif and the always-needed dependencies in one file
// (startup is a product feature: one file to read and compile instead of hundreds of modules), and
// dist/lock-run.cjs: the fast path of `lock run` (src/fast.ts), the same code without oclif.
// The drivers' client libraries (ioredis, pg, node-zookeeper-client) are bundled each into a file
// of its own (dist/ioredis.cjs, …), loaded only by the scheme that needs it (src/builtins.ts:
// vendored) and compiled from the code cache like the CLI (bin/load.cjs): an install fetches no
// dependencies, and ioredis costs a Redis command 45 ms of start instead of 85.
// dist/licenses.txt carries the license of every package inside the bundles, as their licenses ask.
import {readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {build} from 'esbuild'

// What every bundle shares; each build returns the files it read (for the licenses).
const bundle = async (options) => {
  const {metafile} = await build({
    metafile: true,
    outdir: 'dist',
    outExtension: {'.js': '.cjs'},
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    alias: {debug: './scripts/stubs/debug.cjs'},
    minifySyntax: true,
    minifyWhitespace: true,
    legalComments: 'none',
    logLevel: 'warning',
    ...options,
  })
  return Object.keys(metafile.inputs)
}

const inputs = [
  ...(await bundle({
    entryPoints: {dlq: 'dist/cli.js', 'lock-run': 'dist/fast.js'},
    external: ['ioredis', 'pg', 'node-zookeeper-client', 'typescript', 'ts-node'],
    define: {'import.meta.url': '__importMetaUrl'}, // src/builtins.ts: createRequire(import.meta.url)
    banner: {js: 'var __importMetaUrl = require("node:url").pathToFileURL(__filename).href;'},
    supported: {'dynamic-import': false}, // import() of an external becomes a lazy require()
  })),
  ...(await bundle({
    entryPoints: {ioredis: 'ioredis', pg: 'pg', 'node-zookeeper-client': 'node-zookeeper-client'},
    // pg's native binding and Cloudflare's sockets: loaded only when asked for (NODE_PG_FORCE_NATIVE,
    // a Cloudflare Worker), never by dlq.
    external: ['pg-native', 'cloudflare:sockets'],
  })),
]

// node_modules/NAME/… or node_modules/@SCOPE/NAME/… → each package once, with its license text.
const packages = new Set([...inputs].map((input) => /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input)?.[1]).filter(Boolean))
const notices = [...packages].sort().map((dir) => {
  const {name, version, license} = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f))
  return `${name} ${version} (${license ?? 'see its text'})\n\n${file ? readFileSync(join(dir, file), 'utf8').trim() : `license: ${license}`}\n`
})
writeFileSync('dist/licenses.txt', `The packages bundled into dist/*.cjs, and their licenses.\n\n${notices.join(`\n${'-'.repeat(78)}\n\n`)}`)
