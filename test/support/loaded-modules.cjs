// Preloaded by a test (NODE_OPTIONS=--require …): at exit, writes the node built-in modules the
// process loaded (process.moduleLoadList), one per line, to $DLQ_TEST_LOADED_MODULES.
process.on('exit', () => {
  require('node:fs').writeFileSync(process.env.DLQ_TEST_LOADED_MODULES, process.moduleLoadList.join('\n') + '\n')
})
