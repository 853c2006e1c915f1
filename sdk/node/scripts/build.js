#!/usr/bin/env node
'use strict';
// Builds the native addon: `cargo build -p vexil-node` (with `--release` given here), then
// copies the shared library cargo made to `vexil.node` beside package.json. Honours
// CARGO_TARGET_DIR like cargo does; `--no-cargo` only copies (CI builds with cargo itself).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const workspace = path.resolve(root, '..', '..');
const release = process.argv.includes('--release');
const profile = release ? 'release' : 'debug';

if (!process.argv.includes('--no-cargo')) {
  const args = ['build', '-p', 'vexil-node'];
  if (release) args.push('--release');
  const r = spawnSync('cargo', args, { cwd: workspace, stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(workspace, process.env.CARGO_TARGET_DIR)
  : path.join(workspace, 'target');
const name = {
  darwin: 'libvexil_node.dylib',
  win32: 'vexil_node.dll',
}[process.platform] ?? 'libvexil_node.so';
const from = path.join(targetDir, profile, name);
const to = path.join(root, 'vexil.node');
// Copy to a temporary name and rename, so that a running process never sees half a file.
fs.copyFileSync(from, `${to}.tmp`);
fs.renameSync(`${to}.tmp`, to);
console.log(`@vexil/node: ${path.relative(workspace, from)} -> ${path.relative(workspace, to)}`);
