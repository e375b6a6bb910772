// Builds dist/dlq.cjs: the commands, oclif and the always-needed dependencies in one file
// (startup is a product feature: one file to read and compile instead of hundreds of modules), and
// dist/lock-run.cjs: the fast path of `lock run` (src/fast.ts), the same code without oclif.
// The drivers' heavy clients (ioredis, pg, node-zookeeper-client) stay outside, loaded only by the
// scheme that needs them.
import {build} from 'esbuild'

await build({
  entryPoints: {dlq: 'dist/cli.js', 'lock-run': 'dist/fast.js'},
  outdir: 'dist',
  outExtension: {'.js': '.cjs'},
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['ioredis', 'pg', 'node-zookeeper-client', 'typescript', 'ts-node'],
  alias: {debug: './scripts/stubs/debug.cjs'},
  define: {'import.meta.url': '__importMetaUrl'}, // src/builtins.ts: createRequire(import.meta.url)
  banner: {js: 'var __importMetaUrl = require("node:url").pathToFileURL(__filename).href;'},
  supported: {'dynamic-import': false}, // import() of an external becomes a lazy require()
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'none',
  logLevel: 'warning',
})
