'use strict';
// The OpenFeature provider behind `@openfeature/server-sdk`'s own client API: OpenFeature's
// expectations for resolution details (value, variant, reason), error codes (with the
// caller's default), provider readiness and events, and tracking. Every shared fixture case
// goes through it too.
const test = require('node:test');
const assert = require('node:assert/strict');
const { OpenFeature, ProviderEvents, ProviderStatus, ErrorCode, StandardResolutionReasons } =
  require('@openfeature/server-sdk');
const { Client } = require('..');
const { VexilProvider, toVexilContext } = require('../openfeature');
const { loadFixtures, tempDir, writeSnapshot } = require('./helpers');

const dir = tempDir();

const FLAGS = [
  { key: 'bool', kind: 'boolean', variations: [{ value: true, name: 'on' }, { value: false, name: 'off' }],
    on: true, off_variation: 1, fallthrough: { variation: 0 } },
  { key: 'off', kind: 'boolean', variations: [{ value: true }, { value: false }],
    on: false, off_variation: 1, fallthrough: { variation: 0 } },
  { key: 'str', kind: 'string', variations: [{ value: 'a', name: 'first' }, { value: 'b' }],
    on: true, off_variation: 0, fallthrough: { variation: 1 },
    rules: [{ id: 'de', clauses: [{ attribute: 'country', op: 'in', values: ['DE'] }], serve: { variation: 0 } }] },
  { key: 'num', kind: 'number', variations: [{ value: 1.5 }], on: true, off_variation: 0, fallthrough: { variation: 0 } },
  { key: 'obj', kind: 'json', variations: [{ value: { a: [1, 2], b: null } }], on: true, off_variation: 0,
    fallthrough: { variation: 0 } },
  { key: 'split', kind: 'boolean', variations: [{ value: true }, { value: false }], on: true, off_variation: 1,
    fallthrough: { rollout: { experiment: true, variations: [{ variation: 0, weight: 50000 }, { variation: 1, weight: 50000 }] } } },
  { key: 'broken', kind: 'boolean', variations: [{ value: true }], on: false, off_variation: 5,
    fallthrough: { variation: 0 } },
];

async function providerWith(flags, domain) {
  const file = writeSnapshot(dir, `${domain}.json`, { version: 1, flags });
  const provider = new VexilProvider('unused', { file, fileWatchIntervalMs: 20, sendEvents: false });
  await OpenFeature.setProviderAndWait(domain, provider);
  return { provider, client: OpenFeature.getClient(domain), file };
}

test('resolution details: values, variants and reasons', async () => {
  const { client } = await providerWith(FLAGS, 'details');
  assert.equal(client.providerStatus, ProviderStatus.READY);
  const ctx = { targetingKey: 'user-1' };

  let d = await client.getBooleanDetails('bool', false, ctx);
  assert.equal(d.value, true);
  assert.equal(d.variant, 'on');
  assert.equal(d.reason, StandardResolutionReasons.DEFAULT);
  assert.equal(d.errorCode, undefined);
  assert.equal(d.flagKey, 'bool');

  d = await client.getBooleanDetails('off', true, ctx);
  assert.equal(d.value, false);
  assert.equal(d.variant, '1', 'a variation without a name: its index');
  assert.equal(d.reason, StandardResolutionReasons.DISABLED);

  d = await client.getStringDetails('str', 'x', { ...ctx, country: 'DE' });
  assert.deepEqual([d.value, d.variant, d.reason], ['a', 'first', StandardResolutionReasons.TARGETING_MATCH]);
  d = await client.getStringDetails('str', 'x', { ...ctx, country: 'FR' });
  assert.deepEqual([d.value, d.variant, d.reason], ['b', '1', StandardResolutionReasons.DEFAULT]);

  d = await client.getNumberDetails('num', 0, ctx);
  assert.deepEqual([d.value, d.reason], [1.5, StandardResolutionReasons.DEFAULT]);

  d = await client.getObjectDetails('obj', {}, ctx);
  assert.deepEqual(d.value, { a: [1, 2], b: null });

  d = await client.getBooleanDetails('split', false, ctx);
  assert.equal(d.reason, StandardResolutionReasons.SPLIT);
  assert.deepEqual(d.flagMetadata, { inExperiment: true });
  await OpenFeature.clearProviders();
});

test('errors: the default, reason ERROR and the specific code', async () => {
  const { client } = await providerWith(FLAGS, 'errors');
  const ctx = { targetingKey: 'user-1' };
  const cases = [
    [() => client.getBooleanDetails('missing', true, ctx), true, ErrorCode.FLAG_NOT_FOUND],
    [() => client.getStringDetails('bool', 'dflt', ctx), 'dflt', ErrorCode.TYPE_MISMATCH],
    [() => client.getNumberDetails('str', 7, ctx), 7, ErrorCode.TYPE_MISMATCH],
    [() => client.getBooleanDetails('num', false, ctx), false, ErrorCode.TYPE_MISMATCH],
    [() => client.getBooleanDetails('broken', true, ctx), true, ErrorCode.PARSE_ERROR],
  ];
  for (const [run, value, code] of cases) {
    const d = await run();
    assert.equal(d.value, value, `${d.flagKey}: ${JSON.stringify(d)}`);
    assert.equal(d.reason, StandardResolutionReasons.ERROR);
    assert.equal(d.errorCode, code, `${d.flagKey}: ${JSON.stringify(d)}`);
    assert.equal(typeof d.errorMessage, 'string');
  }
  await OpenFeature.clearProviders();
});

test('not ready: initialisation fails, evaluations answer PROVIDER_NOT_READY, READY follows the flags', async () => {
  const client = new Client('k', { offline: true });
  const provider = new VexilProvider(client);
  const res = await provider.resolveBooleanEvaluation('bool', true, {});
  assert.deepEqual(
    [res.value, res.reason, res.errorCode],
    [true, 'ERROR', ErrorCode.PROVIDER_NOT_READY],
  );
  await provider.onClose();
  client.close();

  // Upstream that never answers: initialisation times out without flags.
  const unreachable = new VexilProvider('k', { baseUrl: 'http://127.0.0.1:9', initTimeoutMs: 100, sendEvents: false });
  await assert.rejects(unreachable.initialize(), /no flags from upstream/);
  await unreachable.onClose();
});

test('a configuration change emits PROVIDER_CONFIGURATION_CHANGED with the flags', async () => {
  const { client, file } = await providerWith(FLAGS, 'events');
  // The timer also keeps the event loop alive: the SDK's callbacks never do.
  const changed = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no PROVIDER_CONFIGURATION_CHANGED in 10 s')), 10_000);
    client.addHandler(ProviderEvents.ConfigurationChanged, (e) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
  writeSnapshot(dir, 'events.json', { version: 2, flags: FLAGS.map((f) => (f.key === 'bool' ? { ...f, on: false } : f)) });
  assert.equal(file, `${dir}/events.json`);
  const e = await changed;
  assert.deepEqual(e.flagsChanged, ['bool']);
  assert.equal(await client.getBooleanValue('bool', true, { targetingKey: 'u' }), false);
  await OpenFeature.clearProviders();
});

test('tracking goes to the Vexil client', async () => {
  const client = new Client('k', { offline: true, sendEvents: false });
  const provider = new VexilProvider(client);
  // With events off there is nothing to count; the call must still be accepted quietly.
  assert.doesNotThrow(() => provider.track('purchase', { targetingKey: 'u' }, { value: 9.5 }));
  client.close();
});

test('contexts: targeting key, kind, attributes, dates', () => {
  const when = new Date('2026-01-02T03:04:05.000Z');
  assert.deepEqual(
    toVexilContext({ targetingKey: 'u', kind: 'org', key: 'ignored', plan: 'pro', n: 3, when, tags: ['a'], nested: { d: when } }),
    { key: 'u', kind: 'org', attributes: { plan: 'pro', n: 3, when: when.toISOString(), tags: ['a'], nested: { d: when.toISOString() } } },
  );
  assert.deepEqual(toVexilContext(undefined), { attributes: {} });
});

/** OpenFeature's reason for a fixture's wire reason (split: from the SDK's detail). */
function ofReason(wire, split) {
  switch (wire.kind) {
    case 'OFF':
    case 'PREREQUISITE_FAILED':
      return 'DISABLED';
    case 'ERROR':
      return 'ERROR';
    case 'TARGET_MATCH':
    case 'RULE_MATCH':
      return split ? 'SPLIT' : 'TARGETING_MATCH';
    default:
      return split ? 'SPLIT' : 'DEFAULT';
  }
}

const OF_CODE = {
  FLAG_NOT_FOUND: ErrorCode.FLAG_NOT_FOUND,
  MALFORMED: ErrorCode.PARSE_ERROR,
  WRONG_TYPE: ErrorCode.TYPE_MISMATCH,
  CLIENT_NOT_READY: ErrorCode.PROVIDER_NOT_READY,
};

test('every shared fixture case through the OpenFeature client', async () => {
  const failures = [];
  let cases = 0;
  for (const file of loadFixtures()) {
    const path = writeSnapshot(dir, `of-${file.name}.json`, file.snapshot);
    const vexil = new Client('unused', { file: path, sendEvents: false });
    const provider = new VexilProvider(vexil);
    await OpenFeature.setProviderAndWait(`fixtures-${file.name}`, provider);
    const of = OpenFeature.getClient(`fixtures-${file.name}`);
    for (const c of file.cases) {
      cases += 1;
      const ctx = {};
      if (c.context.key !== undefined) ctx.targetingKey = c.context.key;
      if (c.context.kind !== undefined) ctx.kind = c.context.kind;
      Object.assign(ctx, c.context.attributes ?? {});
      const e = c.expected;
      const split = vexil.jsonVariationDetail(c.flag, c.context, null).split;
      const sentinel = { sentinel: true };
      const d = await of.getObjectDetails(c.flag, sentinel, ctx);
      const name = `${file.name}/${c.name}`;
      if (e.reason.kind === 'ERROR') {
        if (d.value !== sentinel || d.reason !== 'ERROR' || d.errorCode !== OF_CODE[e.reason.error_kind]) {
          failures.push(`${name}: ${JSON.stringify(d)}`);
        }
        continue;
      }
      const variants = [d.variant, String(e.variation)];
      const named = file.snapshot.flags.find((f) => f.key === c.flag)?.variations?.[e.variation]?.name;
      if (named) variants[1] = named;
      try {
        assert.deepStrictEqual(d.value, e.value);
        assert.equal(d.reason, ofReason(e.reason, split));
        assert.equal(variants[0], variants[1]);
        assert.equal(d.errorCode, undefined);
      } catch (err) {
        failures.push(`${name}: ${err.message.split('\n')[0]} ${JSON.stringify(d)}`);
      }
    }
    await OpenFeature.clearProviders();
    vexil.close();
  }
  assert.ok(cases > 100);
  assert.deepEqual(failures, [], `${failures.length} failures`);
});

test('after initialisation: the stream lost is PROVIDER_STALE, a key refused on reconnection PROVIDER_ERROR (fatal)', async () => {
  // A real HTTP server speaking the SDK stream: the first connection gets a snapshot and is
  // ended on cue, every later one is refused with 401 (the key was revoked meanwhile).
  const http = require('node:http');
  let first;
  let connections = 0;
  const server = http.createServer((req, res) => {
    if (req.url !== '/sdk/v1/stream') {
      res.writeHead(404).end();
      return;
    }
    connections += 1;
    if (connections > 1) {
      res.writeHead(401, { 'content-type': 'application/problem+json' }).end('{"status":401}');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(`event: put\nid: 1\ndata: ${JSON.stringify({ version: 1, flags: FLAGS })}\n\n`);
    first = res;
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const provider = new VexilProvider('revoked-key', {
    baseUrl: `http://127.0.0.1:${server.address().port}`,
    // Long enough that STALE is not coalesced with the failure that follows it.
    reconnectInitialDelayMs: 200,
    reconnectMaxDelayMs: 400,
    sendEvents: false,
  });
  await OpenFeature.setProviderAndWait('revoked', provider);
  const client = OpenFeature.getClient('revoked');
  assert.equal(client.providerStatus, ProviderStatus.READY);
  const heard = (type) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} in 10 s`)), 10_000);
      client.addHandler(type, function once(d) {
        client.removeHandler(type, once);
        clearTimeout(timer);
        resolve(d);
      });
    });
  const stale = heard(ProviderEvents.Stale);
  const errored = heard(ProviderEvents.Error);
  first.end();
  assert.match((await stale).message, /serving the last-known flags/);
  const e = await errored;
  assert.equal(e.errorCode, ErrorCode.PROVIDER_FATAL);
  assert.match(e.message, /401/);
  assert.equal(client.providerStatus, ProviderStatus.FATAL);
  await OpenFeature.clearProviders();
  server.close();
});
