#!/usr/bin/env node
'use strict';
// Evaluation latency from Node.js for the three benchmark flags (schema/testdata/bench:
// simple-bool, targeting = 10 rules + a segment, experiment), with the same context, in
// @vexil/node, LaunchDarkly's Node server SDK (TestData with the translated flag JSON, events
// off) and Unleash's Node SDK (bootstrapped with the translated features, no network).
//
//   cd sdk/node && npm run build -- --release && cd bench && npm install && node bench.js
//
// Prints a Markdown table: per evaluation, the median over ROUNDS rounds of the process's CPU
// time per call (wall time in brackets); the SDKs run in turns within each round, so that a
// busy machine's load hits all alike. Calls are sequential on one thread (LaunchDarkly's
// `variation` returns a promise: awaited, as applications do).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Client, Context } = require('..');
const { ldFlag, ldSegment, ldContext, unleashSnapshot, unleashContext } = require('./translate');

const FIXTURES = path.resolve(__dirname, '..', '..', '..', 'schema', 'testdata', 'bench');
const NAMES = ['simple-bool', 'targeting', 'experiment'];
const ROUNDS = Number(process.env.ROUNDS || 7);
const ITERATIONS = Number(process.env.ITERATIONS || 100_000);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** CPU time of this process in ns (user + system): immune to time-slicing on a busy box. */
function cpuNs() {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

/**
 * Measures the evaluators of one flag in turns: round r runs each of them once, so that the
 * machine's load changes hit all alike. Returns, per evaluator, the median over ROUNDS of the
 * CPU ns and the wall ns per call. `sync` evaluators are called in a plain loop, others awaited.
 */
async function measure(evaluators) {
  const cpu = evaluators.map(() => []);
  const wall = evaluators.map(() => []);
  for (let r = -1; r < ROUNDS; r++) {
    for (const [i, { f, sync }] of evaluators.entries()) {
      const n = sync ? ITERATIONS : Math.max(1000, ITERATIONS / 5);
      const c0 = cpuNs();
      const t0 = process.hrtime.bigint();
      if (sync) {
        for (let k = 0; k < n; k++) f();
      } else {
        for (let k = 0; k < n; k++) await f();
      }
      const w = Number(process.hrtime.bigint() - t0) / n;
      const c = (cpuNs() - c0) / n;
      // Round -1 warms every evaluator up (JIT, caches) and is not counted.
      if (r >= 0) {
        cpu[i].push(c);
        wall[i].push(w);
      }
    }
  }
  return evaluators.map((_, i) => ({ cpu: median(cpu[i]), wall: median(wall[i]) }));
}

async function vexil(fixture, dir) {
  const file = path.join(dir, `${fixture.name}.json`);
  fs.writeFileSync(file, JSON.stringify(fixture.snapshot));
  const client = await Client.init('bench', { file, sendEvents: false });
  const expected = fixture.expected.value;
  const evaluate =
    typeof expected === 'boolean'
      ? (ctx) => client.boolVariation(fixture.flag, ctx, !expected)
      : (ctx) => client.stringVariation(fixture.flag, ctx, '');
  const prepared = new Context(fixture.context);
  for (const ctx of [fixture.context, prepared]) {
    if (evaluate(ctx) !== expected) throw new Error(`vexil ${fixture.name}: ${evaluate(ctx)} != ${expected}`);
  }
  // A fresh object per call with the same content (an inline literal), and a new user per
  // call: the conversion caches hit by JSON text, and never.
  const { key, kind, attributes } = fixture.context;
  let n = 0;
  return {
    evaluators: [
      { f: () => evaluate(fixture.context), sync: true },
      { f: () => evaluate(prepared), sync: true },
      { f: () => evaluate({ key, kind, attributes: { ...attributes } }), sync: true },
      { f: () => evaluate({ key: `user-${n++}`, kind, attributes: { ...attributes } }), sync: true },
    ],
    close: () => client.close(),
  };
}

async function launchdarkly(fixture) {
  const ld = require('@launchdarkly/node-server-sdk');
  const { TestData } = require('@launchdarkly/node-server-sdk/integrations');
  const td = new TestData();
  for (const f of fixture.snapshot.flags) td.usePreconfiguredFlag(ldFlag(f));
  for (const s of fixture.snapshot.segments ?? []) td.usePreconfiguredSegment(ldSegment(s));
  const client = ld.init('sdk-bench', {
    updateProcessor: td.getFactory(),
    sendEvents: false,
    diagnosticOptOut: true,
    logger: ld.basicLogger({ level: 'error' }),
  });
  await client.waitForInitialization({ timeout: 10 });
  const ctx = ldContext(fixture.context);
  const flag = ldFlag(fixture.snapshot.flags.find((f) => f.key === fixture.flag));
  const got = await client.variation(fixture.flag, ctx, null);
  if (!flag.variations.some((v) => v === got)) throw new Error(`launchdarkly ${fixture.name}: ${got}`);
  if (!fixture.expected.in_experiment && got !== fixture.expected.value) {
    throw new Error(`launchdarkly ${fixture.name}: ${got} != ${fixture.expected.value}`);
  }
  return {
    evaluators: [{ f: () => client.variation(fixture.flag, ctx, null), sync: false }],
    close: () => client.close(),
  };
}

async function unleash(fixture) {
  const { Unleash } = require('unleash-client');
  const { features, segments, shapes } = unleashSnapshot(fixture.snapshot);
  const client = new Unleash({
    appName: 'bench',
    url: 'http://127.0.0.1:9/api/',
    refreshInterval: 0,
    disableMetrics: true,
    bootstrap: { data: features, segments },
    storageProvider: new (require('unleash-client').InMemStorageProvider)(),
  });
  client.on('error', () => {});
  client.on('warn', () => {});
  await new Promise((resolve) => client.once('ready', resolve));
  const ctx = unleashContext(fixture.context);
  const shape = shapes[fixture.flag];
  const evaluate =
    shape === 'boolean'
      ? () => client.isEnabled(fixture.flag, ctx, false)
      : () => client.getVariant(fixture.flag, ctx).name;
  const got = evaluate();
  const expected = shape === 'boolean' ? fixture.expected.value : String(fixture.expected.variation);
  if (!fixture.expected.in_experiment && got !== expected) {
    throw new Error(`unleash ${fixture.name}: ${got} != ${expected}`);
  }
  return { evaluators: [{ f: evaluate, sync: true }], close: () => client.destroy() };
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vexil-node-bench-'));
  const rows = [];
  try {
    for (const name of NAMES) {
      const fixture = JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
      const sdks = [await vexil(fixture, dir), await launchdarkly(fixture), await unleash(fixture)];
      const results = await measure(sdks.flatMap((x) => x.evaluators));
      for (const x of sdks) x.close();
      rows.push([name, ...results]);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const ns = (v) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} µs` : `${Math.round(v)} ns`);
  const f = ({ cpu, wall }) => `${ns(cpu)} (${ns(wall)})`;
  console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ` +
    `median of ${ROUNDS} interleaved rounds of ${ITERATIONS} calls (LaunchDarkly: a fifth, awaited); CPU time per call (wall time)`);
  console.log('| flag | @vexil/node, one object | prepared `Context` | a fresh equal object per call | a new user per call | LaunchDarkly node-server-sdk 9.13.7 | unleash-client 6.12.2 |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const [name, ...r] of rows) console.log(`| ${name} | ${r.map(f).join(' | ')} |`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
