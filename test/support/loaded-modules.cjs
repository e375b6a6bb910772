// Preloaded by a test (NODE_OPTIONS=--require …): at exit, writes the node built-in modules the
// process loaded (process.moduleLoadList), one per line, to $DLQ_TEST_LOADED_MODULES. Without
// that variable (node --test runs every file under test/, this one too) it does nothing.
const file = process.env.DLQ_TEST_LOADED_MODULES
if (file) process.on('exit', () => require('node:fs').writeFileSync(file, process.moduleLoadList.join('\n') + '\n'))
