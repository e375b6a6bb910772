// Loads a bundle of dist/ (dlq.cjs, lock-run.cjs, or a backend's client library: ioredis.cjs, pg.cjs,
// node-zookeeper-client.cjs) compiled from a V8 code cache when one is there (Node 20 has no
// module.enableCompileCache); the cache is written after the first run. Startup is a product
// feature: one file compiled from a cache instead of dozens of modules parsed on every start.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const vm = require('node:vm')
const Module = require('node:module')

const cacheDirs = [path.join(__dirname, '..', 'dist', '.cache'), path.join(process.env.XDG_CACHE_HOME || path.join(require('node:os').homedir(), '.cache'), 'dlq')]

/** Loads dist/NAME.cjs like require() would, compiled from (and then into) the code cache. */
function load(name) {
  const file = path.join(__dirname, '..', 'dist', `${name}.cjs`)
  if (require.cache[file]) return require.cache[file].exports
  const source = fs.readFileSync(file, 'utf8')
  const stamp = `${name}-${process.version}-${process.arch}-${fs.statSync(file).mtimeMs}-${source.length}`
  let cachedData
  for (const dir of cacheDirs) {
    try {
      cachedData = fs.readFileSync(path.join(dir, `${stamp}.v8`))
      break
    } catch {}
  }
  const script = new vm.Script(Module.wrap(source), {filename: file, cachedData, importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER})
  if (cachedData === undefined || script.cachedDataRejected) {
    // Written at exit, so the functions this run compiled lazily are in the cache too.
    process.once('exit', () => {
      const data = script.createCachedData()
      for (const dir of cacheDirs) {
        try {
          fs.mkdirSync(dir, {recursive: true, mode: 0o700})
          const tmp = path.join(dir, `${stamp}.${process.pid}.tmp`)
          fs.writeFileSync(tmp, data, {mode: 0o600})
          fs.renameSync(tmp, path.join(dir, `${stamp}.v8`))
          for (const old of fs.readdirSync(dir)) if (old.startsWith(`${name}-`) && old.endsWith('.v8') && old !== `${stamp}.v8`) fs.rmSync(path.join(dir, old), {force: true})
          return
        } catch {}
      }
    })
  }
  const bundle = new Module(file, module)
  bundle.filename = file
  bundle.paths = Module._nodeModulePaths(path.dirname(file))
  require.cache[file] = bundle // oclif loads the same file for its commands: hand it this one
  script.runInThisContext()(bundle.exports, Module.createRequire(file), bundle, file, path.dirname(file))
  bundle.loaded = true
  return bundle.exports
}

module.exports = load
