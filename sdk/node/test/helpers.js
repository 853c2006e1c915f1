'use strict';
// Shared by the tests: the shared fixtures, temporary snapshot files, and waiting on flag
// changes with a deadline (never sleep-polling).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(REPO, 'schema', 'testdata', 'eval');

/** Every file of the shared evaluation fixtures, parsed. */
function loadFixtures() {
  return fs
    .readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(FIXTURES, f), 'utf8')));
}

/** A fresh temporary directory, removed when the process exits. */
function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vexil-node-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes `snapshot` to a file in `dir` (atomically) and returns its path. */
function writeSnapshot(dir, name, snapshot) {
  const file = path.join(dir, name);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(snapshot));
  fs.renameSync(`${file}.tmp`, file);
  return file;
}

/** The reason in the wire form (snake_case) as the Node API spells it (camelCase). */
function camelReason(wire) {
  const out = { kind: wire.kind };
  if (wire.rule_index !== undefined) out.ruleIndex = wire.rule_index;
  if (wire.rule_id !== undefined) out.ruleId = wire.rule_id;
  if (wire.prerequisite_key !== undefined) out.prerequisiteKey = wire.prerequisite_key;
  if (wire.error_kind !== undefined) out.errorKind = wire.error_kind;
  return out;
}

/**
 * Resolves with the first flag change `client` reports that satisfies `pred`, or rejects
 * after `ms` with `what` in the message.
 */
function nextChange(client, pred, ms, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no flag change (${what}) within ${ms} ms`));
    }, ms);
    const off = client.onFlagChange((change) => {
      if (!pred(change)) return;
      clearTimeout(timer);
      off();
      resolve(change);
    });
  });
}

module.exports = { REPO, loadFixtures, tempDir, writeSnapshot, camelReason, nextChange };
