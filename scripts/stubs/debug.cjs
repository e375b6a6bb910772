// Stand-in for the `debug` package inside the bundle: oclif creates its loggers at load time, and the
// real package pulls in tty and colour detection on every start. dlq's own tracing is --verbose.
'use strict'
function createDebug(namespace) {
  const debug = () => {}
  debug.enabled = false
  debug.namespace = namespace
  debug.log = () => {}
  debug.extend = (sub, delimiter = ':') => createDebug(`${namespace}${delimiter}${sub}`)
  return debug
}
createDebug.enable = () => {}
createDebug.disable = () => ''
createDebug.enabled = () => false
createDebug.default = createDebug
module.exports = createDebug
