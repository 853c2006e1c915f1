'use strict';
// Loads the native addon: `vexil.node` beside this file (built by `npm run build`, which
// compiles the `vexil-node` crate and copies the library), or the file named by
// VEXIL_NODE_ADDON.
const path = require('node:path');

const file = process.env.VEXIL_NODE_ADDON || path.join(__dirname, 'vexil.node');
try {
  module.exports = require(file);
} catch (e) {
  const err = new Error(
    `@vexil/node: could not load the native addon ${file} (${e.message}). ` +
      'Build it with `npm run build` (needs cargo), or set VEXIL_NODE_ADDON.',
  );
  err.cause = e;
  throw err;
}
