#!/usr/bin/env node
'use strict';
// Evaluation latency from Node.js for the three benchmark flags (schema/testdata/bench:
// simple-bool, targeting = 10 rules + a segment, experiment), with the same context, in
// @vexil/node, LaunchDarkly's Node server SDK (TestData with the translated flag JSON, events
// off) and Unleash's Node SDK (bootstrapped with the translated features, no network).
//
//   cd sdk/node && npm run build -- --release && cd bench && npm install && node bench.js
//
// Prints a Markdown table: the median of ROUNDS rounds of ns per evaluation, sequential calls
// on one thread (LaunchDarkly's `variation` returns a promise: awaited, as applications do).
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

/** Median ns per call of `f` (sync). */
function timeSync(f) {
  for (let i = 0; i < ITERATIONS / 5; i++) f();
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ITERATIONS; i++) f();
    rounds.push(Number(process.hrtime.bigint() - t0) / ITERATIONS);
  }
  return median(rounds);
}

/** Median ns per awaited call of `f` (async). */
async function timeAsync(f) {
  const n = Math.max(1000, ITERATIONS / 5);
  for (let i = 0; i < n / 5; i++) await f();
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await f();
    rounds.push(Number(process.hrtime.bigint() - t0) / n);
  }
  return median(rounds);
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
  const plain = timeSync(() => evaluate(fixture.context));
  const fast = timeSync(() => evaluate(prepared));
  client.close();
  return { plain, prepared: fast };
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
  const ns = await timeAsync(() => client.variation(fixture.flag, ctx, null));
  client.close();
  return ns;
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
  const ns = timeSync(evaluate);
  client.destroy();
  return ns;
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vexil-node-bench-'));
  const rows = [];
  try {
    for (const name of NAMES) {
      const fixture = JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
      const v = await vexil(fixture, dir);
      const l = await launchdarkly(fixture);
      const u = await unleash(fixture);
      rows.push([name, v.plain, v.prepared, l, u]);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const f = (ns) => (ns >= 10_000 ? `${(ns / 1000).toFixed(1)} µs` : `${Math.round(ns)} ns`);
  console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ` +
    `median of ${ROUNDS} rounds of ${ITERATIONS} calls`);
  console.log('| flag | @vexil/node (plain object) | @vexil/node (prepared `Context`) | LaunchDarkly node-server-sdk 9.13.7 | unleash-client 6.12.2 |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const [name, a, b, c, d] of rows) console.log(`| ${name} | ${f(a)} | ${f(b)} | ${f(c)} | ${f(d)} |`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
