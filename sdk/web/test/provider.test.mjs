import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ProviderEvents, StandardResolutionReasons } from '@openfeature/web-sdk';
import { VexilWebProvider, base64url, canonicalJson } from '../dist/index.js';
import { MemoryStorage, fakeEventSource, fakeFetch, nextEvent, ofrep } from './fakes.mjs';

const BASE = 'https://flags.example.com';
const KEY = 'vxc_public';
const CTX = { targetingKey: 'user-1', plan: 'pro' };
const logger = console;

function provider(overrides = {}) {
  const es = fakeEventSource();
  const f = fakeFetch(overrides.respond);
  const p = new VexilWebProvider({
    baseUrl: `${BASE}/`,
    clientKey: KEY,
    eventSource: es.EventSource,
    fetch: f.fetch,
    cache: overrides.cache ?? new MemoryStorage(),
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    initTimeoutMs: 2000,
    events: overrides.events ?? false,
    ...(overrides.streaming === undefined ? {} : { streaming: overrides.streaming }),
    ...(overrides.pollIntervalMs === undefined ? {} : { pollIntervalMs: overrides.pollIntervalMs }),
  });
  return { p, es, f };
}

test('refuses a server-side key', () => {
  assert.throws(() => new VexilWebProvider({ baseUrl: BASE, clientKey: 'vxs_secret', fetch: async () => new Response() }), /client-side key/);
});

test('streams the context from the URL and resolves after the first put', async (t) => {
  const { p, es } = provider();
  t.after(() => p.onClose());
  const source = es.next();
  const init = p.initialize(CTX);
  const s = await source;
  assert.equal(s.url, `${BASE}/client/v1/stream?key=${KEY}&context=${base64url(canonicalJson(CTX))}`);
  s.emit('put', { version: 7, flags: { banner: { value: true, variant: 'on', reason: 'TARGETING_MATCH' }, color: { value: 'red', variant: '1', reason: 'DEFAULT' } } });
  await init;
  const b = p.resolveBooleanEvaluation('banner', false, CTX, logger);
  assert.deepEqual(b, { value: true, variant: 'on', reason: 'TARGETING_MATCH', flagMetadata: { environmentVersion: 7 } });
  assert.equal(p.resolveStringEvaluation('color', 'x', CTX, logger).value, 'red');
  const wrong = p.resolveNumberEvaluation('color', 3, CTX, logger);
  assert.equal(wrong.value, 3);
  assert.equal(wrong.errorCode, ErrorCode.TYPE_MISMATCH);
  assert.equal(p.resolveBooleanEvaluation('missing', true, CTX, logger).errorCode, ErrorCode.FLAG_NOT_FOUND);
});

test('patch emits ConfigurationChanged with only the changed keys, and removals', async (t) => {
  const { p, es } = provider();
  t.after(() => p.onClose());
  const source = es.next();
  const init = p.initialize(CTX);
  const s = await source;
  s.emit('put', { version: 1, flags: { a: { value: true, variant: '0' }, b: { value: 1, variant: '0' }, c: { value: 'x', variant: '0' } } });
  await init;
  let changed = nextEvent(p, ProviderEvents.ConfigurationChanged);
  s.emit('patch', { version: 2, flags: { a: { value: false, variant: '1' }, b: { value: 1, variant: '0' } } });
  assert.deepEqual((await changed).flagsChanged, ['a']);
  changed = nextEvent(p, ProviderEvents.ConfigurationChanged);
  s.emit('patch', { version: 3, flags: {}, removed: ['c'] });
  assert.deepEqual((await changed).flagsChanged, ['c']);
  assert.equal(p.resolveStringEvaluation('c', 'd', CTX, logger).errorCode, ErrorCode.FLAG_NOT_FOUND);
  // A put after a reconnect that changes nothing emits nothing; one that changes `b` names it.
  changed = nextEvent(p, ProviderEvents.ConfigurationChanged);
  s.emit('put', { version: 3, flags: { a: { value: false, variant: '1' }, b: { value: 1, variant: '0' } } });
  s.emit('put', { version: 4, flags: { a: { value: false, variant: '1' }, b: { value: 2, variant: '1' } } });
  assert.deepEqual((await changed).flagsChanged, ['b']);
});

test('a stream failure asks OFREP bulk and reconnects with backoff', async (t) => {
  const respond = (url) => url.endsWith('/ofrep/v1/evaluate/flags')
    ? ofrep([{ key: 'a', value: false, variant: '1', reason: 'DISABLED' }], 5, '"5"')
    : new Response('', { status: 404 });
  const { p, es, f } = provider({ respond });
  t.after(() => p.onClose());
  let source = es.next();
  const init = p.initialize(CTX);
  const first = await source;
  first.emit('put', { version: 4, flags: { a: { value: true, variant: '0' } } });
  await init;
  const changed = nextEvent(p, ProviderEvents.ConfigurationChanged);
  const ofrepCall = f.next();
  source = es.next();
  first.fail();
  assert.equal(first.closed, true, 'the failed EventSource is closed, not left to retry on its own');
  const call = await ofrepCall;
  assert.equal(call.url, `${BASE}/ofrep/v1/evaluate/flags`);
  assert.equal(call.init.method, 'POST');
  assert.equal(call.init.headers.Authorization, `Bearer ${KEY}`);
  assert.deepEqual(JSON.parse(call.init.body), { context: CTX });
  assert.deepEqual((await changed).flagsChanged, ['a']);
  assert.equal(p.resolveBooleanEvaluation('a', true, CTX, logger).reason, 'DISABLED');
  const second = await source;
  assert.notEqual(second, first);
});

test('the next page load starts from the cached values', async (t) => {
  const cache = new MemoryStorage();
  const one = provider({ cache });
  const source = one.es.next();
  const init = one.p.initialize(CTX);
  (await source).emit('put', { version: 9, flags: { banner: { value: true, variant: 'on', reason: 'SPLIT' } } });
  await init;
  await one.p.onClose();
  assert.equal(cache.length, 1);

  const two = provider({ cache });
  t.after(() => two.p.onClose());
  const src = two.es.next();
  await two.p.initialize(CTX); // resolves without any stream data
  const cached = two.p.resolveBooleanEvaluation('banner', false, CTX, logger);
  assert.equal(cached.value, true);
  assert.equal(cached.reason, StandardResolutionReasons.CACHED);
  // Fresh values that differ from the cache are reported as a change.
  const changed = nextEvent(two.p, ProviderEvents.ConfigurationChanged);
  (await src).emit('put', { version: 10, flags: { banner: { value: false, variant: 'off', reason: 'SPLIT' } } });
  assert.deepEqual((await changed).flagsChanged, ['banner']);
  assert.equal(two.p.resolveBooleanEvaluation('banner', true, CTX, logger).reason, 'SPLIT');
  // Another context has its own entry.
  const three = provider({ cache });
  t.after(() => three.p.onClose());
  const src3 = three.es.next();
  const init3 = three.p.initialize({ targetingKey: 'user-2' });
  (await src3).emit('put', { version: 10, flags: {} });
  await init3;
  assert.equal(cache.length, 2);
});

test('without streaming it polls OFREP bulk with If-None-Match', async (t) => {
  let n = 0;
  const respond = (_url, init) => {
    n++;
    if (init.headers['If-None-Match'] === '"3"') return new Response(null, { status: 304 });
    return ofrep([{ key: 'a', value: 1, variant: '0', reason: 'STATIC' }], 3, '"3"');
  };
  const { p, f } = provider({ respond, streaming: false, pollIntervalMs: 5 });
  t.after(() => p.onClose());
  await p.initialize(CTX);
  assert.equal(p.resolveNumberEvaluation('a', 0, CTX, logger).value, 1);
  while (f.calls.length < 2) await f.next();
  assert.equal(f.calls[1].init.headers['If-None-Match'], '"3"');
  assert.ok(n >= 2);
});

test('initialize fails after the timeout and READY follows the first values', async (t) => {
  const es = fakeEventSource();
  const p = new VexilWebProvider({ baseUrl: BASE, clientKey: KEY, eventSource: es.EventSource, fetch: fakeFetch().fetch, cache: false, events: false, initTimeoutMs: 20 });
  t.after(() => p.onClose());
  const source = es.next();
  await assert.rejects(p.initialize(CTX), /no flag values/);
  const ready = nextEvent(p, ProviderEvents.Ready);
  (await source).emit('put', { version: 1, flags: { a: { value: true } } });
  await ready;
  assert.equal(p.resolveBooleanEvaluation('a', false, CTX, logger).value, true);
});

test('track sends a custom event batch to /events/v1/bulk with keepalive', async (t) => {
  const { p, es, f } = provider({ respond: () => new Response('{}', { status: 202 }), events: { flushIntervalMs: 60_000, batchSize: 2 } });
  t.after(() => p.onClose());
  const src = es.next();
  const init = p.initialize(CTX);
  (await src).emit('put', { version: 1, flags: {} });
  await init;
  const sent = f.next();
  p.track('purchase', CTX, { value: 39.5 });
  p.track('no-key', {}, {});
  p.track('view', { targetingKey: 'user-1', kind: 'org' }, {});
  const call = await sent;
  assert.equal(call.url, `${BASE}/events/v1/bulk`);
  assert.equal(call.init.keepalive, true);
  assert.equal(call.init.headers.Authorization, `Bearer ${KEY}`);
  assert.equal(call.init.headers['X-Vexil-Event-Schema'], '1');
  const body = JSON.parse(call.init.body);
  assert.equal(body.schema_version, 1);
  assert.equal(body.sdk.name, 'vexil-web');
  assert.deepEqual(body.events.map(({ time, ...e }) => e), [
    { kind: 'custom', event_key: 'purchase', context_key: 'user-1', context_kind: 'user', value: 39.5 },
    { kind: 'custom', event_key: 'view', context_key: 'user-1', context_kind: 'org' },
  ]);
  assert.ok(body.events.every((e) => Number.isInteger(e.time)));
});

/** The browser globals the event sender hooks into (absent from node): window events and sendBeacon. */
function browserGlobals(t, beaconResult = true) {
  const target = new EventTarget();
  const beacons = [];
  const saved = { addEventListener: globalThis.addEventListener, removeEventListener: globalThis.removeEventListener, navigator: globalThis.navigator };
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    value: { sendBeacon: (url, blob) => { beacons.push({ url, blob }); return beaconResult; } },
  });
  t.after(() => {
    globalThis.addEventListener = saved.addEventListener;
    globalThis.removeEventListener = saved.removeEventListener;
    Object.defineProperty(globalThis, 'navigator', { configurable: true, value: saved.navigator });
  });
  return { fire: (type) => target.dispatchEvent(new Event(type)), beacons };
}

async function ready(p, es, flags) {
  const src = es.next();
  const init = p.initialize(CTX);
  const s = await src;
  s.emit('put', { version: 1, flags });
  await init;
  return s;
}

test('pagehide sends the queue with sendBeacon: text/plain, the key in the query', async (t) => {
  const g = browserGlobals(t);
  const { p, es, f } = provider({ respond: () => new Response('{}', { status: 200 }), events: { flushIntervalMs: 60_000, batchSize: 100 } });
  t.after(() => p.onClose());
  await ready(p, es, {});
  p.track('purchase', CTX, { value: 1 });
  g.fire('pagehide');
  assert.equal(g.beacons.length, 1);
  const { url, blob } = g.beacons[0];
  assert.equal(url, `${BASE}/events/v1/bulk?key=${KEY}`);
  assert.equal(blob.type, 'text/plain');
  const body = JSON.parse(await blob.text());
  assert.deepEqual(body.events.map((e) => e.event_key), ['purchase']);
  assert.equal(f.calls.filter((c) => c.url.includes('/events/')).length, 0, 'not sent twice');
});

test('a refused beacon falls back to fetch(keepalive)', async (t) => {
  const g = browserGlobals(t, false);
  const { p, es, f } = provider({ respond: () => new Response('{}', { status: 200 }), events: { flushIntervalMs: 60_000, batchSize: 100 } });
  t.after(() => p.onClose());
  await ready(p, es, {});
  p.track('purchase', CTX, {});
  const sent = f.next();
  g.fire('pagehide');
  const call = await sent;
  assert.equal(call.url, `${BASE}/events/v1/bulk`);
  assert.equal(call.init.keepalive, true);
});

test('a failed batch is queued again and sent with the next flush', async (t) => {
  let answers = [503, 200];
  const { p, es, f } = provider({
    respond: (url) => new Response('{}', { status: url.includes('/events/') ? answers.shift() ?? 200 : 503 }),
    events: { flushIntervalMs: 60_000, batchSize: 1 },
  });
  await ready(p, es, {});
  const first = f.next();
  p.track('a', CTX, {});
  await first;
  // Let the 503 be seen; then the next event's batch carries both.
  await new Promise((r) => setImmediate(r));
  const second = f.next();
  p.track('b', CTX, {});
  const call = await second;
  assert.deepEqual(JSON.parse(call.init.body).events.map((e) => e.event_key), ['a', 'b']);
  await p.onClose();
  // A 400 (a refused key) is not retried.
  answers = [400];
  const { p: p2, es: es2, f: f2 } = provider({
    respond: (url) => new Response('{}', { status: url.includes('/events/') ? answers.shift() ?? 200 : 503 }),
    events: { flushIntervalMs: 60_000, batchSize: 1 },
  });
  await ready(p2, es2, {});
  const refused = f2.next();
  p2.track('c', CTX, {});
  await refused;
  await new Promise((r) => setImmediate(r));
  await p2.onClose();
  assert.equal(f2.calls.filter((c) => c.url.includes('/events/')).length, 1);
});

test('an exposure is sent once per flag and variation, with the stream item data', async (t) => {
  const { p, es, f } = provider({ respond: () => new Response('{}', { status: 200 }), events: { flushIntervalMs: 60_000, batchSize: 100 } });
  const item = (i) => ({ value: i === 0, variant: String(i), reason: 'SPLIT', inExperiment: true, variationIndex: i, flagVersion: 3 });
  const s = await ready(p, es, { checkout: item(0), plain: { value: 'x', variant: '0', reason: 'STATIC', variationIndex: 0, flagVersion: 1 } });
  p.resolveBooleanEvaluation('checkout', false, CTX, logger);
  p.resolveBooleanEvaluation('checkout', false, CTX, logger);
  p.resolveStringEvaluation('plain', '', CTX, logger);
  const changed = nextEvent(p, ProviderEvents.ConfigurationChanged);
  s.emit('patch', { version: 2, flags: { checkout: item(1) } });
  await changed;
  p.resolveBooleanEvaluation('checkout', false, CTX, logger);
  p.resolveBooleanEvaluation('checkout', false, CTX, logger);
  const sent = f.next();
  void p.onClose();
  const body = JSON.parse((await sent).init.body);
  assert.deepEqual(body.events.map(({ time, ...e }) => e), [
    { kind: 'exposure', flag_key: 'checkout', flag_version: 3, environment_version: 1, variation: 0, context_key: 'user-1', context_kind: 'user' },
    { kind: 'exposure', flag_key: 'checkout', flag_version: 3, environment_version: 2, variation: 1, context_key: 'user-1', context_kind: 'user' },
  ]);
});
