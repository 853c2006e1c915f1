'use strict';
// End to end against real processes: `vexil-server` (SQLite) and `vexil-relay`, with the
// Node client streaming through the relay. Initialisation, a flip over the stream, the relay
// killed and restarted (the client reconnects and catches up), `track` events counted by the
// server's experiment analysis (sent by a process that exits without closing its client), and
// a new process serving the last-known-good file once everything is stopped.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { OpenFeature, ProviderEvents, ProviderStatus, ErrorCode } = require('@openfeature/server-sdk');
const { Client } = require('..');
const { VexilProvider } = require('../openfeature');
const { tempDir, nextChange } = require('./helpers');
const { Server, Relay, freePort, runNode, sqlite, WAIT_MS } = require('./harness');

/**
 * Every provider event the OpenFeature client `of` hears, in order; `next(type, pred)`
 * resolves with the first one not yet taken of that type (and matching `pred`), or rejects
 * after the deadline. Events of other types are kept for later calls.
 */
function providerEvents(of) {
  const seen = [];
  const waiters = [];
  for (const type of Object.values(ProviderEvents)) {
    of.addHandler(type, (details) => {
      seen.push({ type, details });
      for (const w of [...waiters]) w();
    });
  }
  const next = (type, pred = () => true) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const i = seen.findIndex((e) => e.type === type && pred(e.details));
        if (i < 0) return false;
        const [e] = seen.splice(i, 1);
        waiters.splice(waiters.indexOf(check), 1);
        clearTimeout(timer);
        resolve(e.details);
        return true;
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        reject(new Error(`no ${type} within ${WAIT_MS} ms; heard ${JSON.stringify(seen.map((e) => e.type))}`));
      }, WAIT_MS);
      waiters.push(check);
      check();
    });
  return { next, seen };
}

const FLAGS = '/api/v1/projects/p/flags';
const CONFIG = (flag) => `${FLAGS}/${flag}/environments/prod`;

async function setOn(server, flag, on) {
  await server.api('PATCH', CONFIG(flag), { on, fallthrough: { variation: 0 } }, 200);
}

/** Project `p`/`prod`, flag `checkout` (on), an experiment on `exp`; returns the keys. */
async function setup(server) {
  await server.api('POST', '/api/v1/projects', { key: 'p', name: 'p' }, 201);
  await server.api('POST', '/api/v1/projects/p/environments', { key: 'prod', name: 'prod' }, 201);
  await server.api('POST', FLAGS, {
    key: 'checkout', name: 'checkout', kind: 'boolean',
    variations: [{ value: true }, { value: false }],
  }, 201);
  await setOn(server, 'checkout', true);
  await server.api('POST', '/api/v1/projects/p/metrics', {
    key: 'buy', name: 'Buy', kind: 'conversion', event_key: 'purchase', window_hours: 24,
  }, 201);
  await server.api('POST', FLAGS, {
    key: 'exp', name: 'exp', kind: 'boolean',
    variations: [{ value: false, name: 'control' }, { value: true, name: 'treatment' }],
  }, 201);
  await server.api('PATCH', CONFIG('exp'), {
    on: true,
    fallthrough: { rollout: { experiment: true, variations: [
      { variation: 0, weight: 50000 }, { variation: 1, weight: 50000 }] } },
  }, 200);
  const x = '/api/v1/projects/p/environments/prod/experiments';
  await server.api('POST', x, { key: 'exp', name: 'exp', flag: 'exp', control: 0, primary_metric: 'buy' }, 201);
  await server.api('POST', `${x}/exp/start`, {}, 200);
  const sdk = await server.api('POST', '/api/v1/projects/p/environments/prod/sdk-keys', { name: 'node' }, 201);
  const relay = await server.api('POST', '/api/v1/relay-keys', {
    name: 'edge', environments: [{ project: 'p', environment: 'prod' }],
  }, 201);
  return { sdkKey: sdk.secret, relayKey: relay.secret };
}

test('end to end through a real server and relay', async (t) => {
  const dir = tempDir();
  const server = await Server.start(dir);
  let relay;
  t.after(async () => {
    await relay?.kill();
    await server.kill();
  });
  const { sdkKey, relayKey } = await setup(server);
  const port = await freePort();
  relay = await Relay.start(server.url, relayKey, port);
  await relay.waitServes(sdkKey);

  const lkg = path.join(dir, 'last-known-good.json');
  const client = await Client.init(sdkKey, {
    baseUrl: relay.url,
    lastKnownGood: lkg,
    initTimeoutMs: WAIT_MS,
    reconnectInitialDelayMs: 50,
    reconnectMaxDelayMs: 500,
    sendEvents: false,
  });
  t.after(() => client.close());
  const user = { key: 'u1' };

  // An OpenFeature provider on a client of its own, through the same relay.
  const provider = new VexilProvider(sdkKey, {
    baseUrl: relay.url,
    initTimeoutMs: WAIT_MS,
    reconnectInitialDelayMs: 50,
    reconnectMaxDelayMs: 500,
    sendEvents: false,
  });
  await OpenFeature.setProviderAndWait('e2e', provider);
  const of = OpenFeature.getClient('e2e');
  const heard = providerEvents(of);
  // A READY handler added to a ready provider runs at once: that one is not the test's.
  await heard.next(ProviderEvents.Ready);
  t.after(() => OpenFeature.clearProviders());

  await t.test('initialisation', () => {
    const s = client.status();
    assert.equal(s.state, 'ready', JSON.stringify(s));
    assert.equal(s.origin, 'upstream');
    assert.equal(client.boolVariation('checkout', user, false), true);
    const d = client.boolVariationDetail('exp', user, false);
    assert.equal(d.inExperiment, true);
    assert.equal(d.openfeatureReason, 'SPLIT');
  });

  await t.test('a flip reaches the client over the stream', async () => {
    const changed = nextChange(client, (c) => c.keys.includes('checkout'), WAIT_MS, 'checkout off');
    await setOn(server, 'checkout', false);
    await changed;
    assert.equal(client.boolVariation('checkout', user, true), false);
    assert.equal(client.boolVariationDetail('checkout', user, true).reason.kind, 'OFF');
    // The provider names the flag in PROVIDER_CONFIGURATION_CHANGED.
    const e = await heard.next(ProviderEvents.ConfigurationChanged, (d) => d.flagsChanged.includes('checkout'));
    assert.deepEqual(e.flagsChanged, ['checkout']);
    assert.equal(await of.getBooleanValue('checkout', true, { targetingKey: 'u1' }), false);
  });

  await t.test('the relay killed and restarted: the client reconnects and catches up', async () => {
    await relay.kill();
    // The provider reports the last-known flags as stale, and keeps serving them.
    const stale = await heard.next(ProviderEvents.Stale);
    assert.match(stale.message, /serving the last-known flags/);
    assert.equal(of.providerStatus, ProviderStatus.STALE);
    const d = await of.getBooleanDetails('checkout', true, { targetingKey: 'u1' });
    assert.deepEqual([d.value, d.errorCode], [false, undefined]);
    // Changed while the relay is down: only a reconnection can bring it.
    await setOn(server, 'checkout', true);
    const changed = nextChange(client, (c) => c.keys.includes('checkout'), WAIT_MS, 'checkout on again');
    relay = await Relay.start(server.url, relayKey, port);
    await changed;
    assert.equal(client.boolVariation('checkout', user, false), true);
    assert.equal(client.status().state, 'ready');
    await heard.next(ProviderEvents.Ready);
    assert.equal(of.providerStatus, ProviderStatus.READY);
    await heard.next(ProviderEvents.ConfigurationChanged, (c) => c.flagsChanged.includes('checkout'));
    assert.equal(await of.getBooleanValue('checkout', false, { targetingKey: 'u1' }), true);
  });

  await t.test('a refused SDK key: the provider fails with PROVIDER_FATAL and OpenFeature emits ERROR', async () => {
    const bad = new VexilProvider('not-a-real-key', { baseUrl: server.url, initTimeoutMs: WAIT_MS, sendEvents: false });
    const errored = new Promise((resolve) => OpenFeature.addHandler(ProviderEvents.Error, function once(d) {
      if (d.domain !== 'refused') return;
      OpenFeature.removeHandler(ProviderEvents.Error, once);
      resolve(d);
    }));
    await assert.rejects(OpenFeature.setProviderAndWait('refused', bad), (e) => e.code === ErrorCode.PROVIDER_FATAL);
    const e = await errored;
    assert.match(e.message, /HTTP 401/);
    assert.equal(OpenFeature.getClient('refused').providerStatus, ProviderStatus.FATAL);
  });

  await t.test('track events from a process that calls process.exit without closing reach the server', async () => {
    // The flush interval is a minute: only the close at exit sends the events.
    const users = 40;
    const r = await runNode(`
      const { Client } = require('.');
      (async () => {
        const c = await Client.init(${JSON.stringify(sdkKey)}, {
          baseUrl: ${JSON.stringify(relay.url)}, initTimeoutMs: ${WAIT_MS}, eventsFlushIntervalMs: 60000,
        });
        const served = [0, 0];
        for (let i = 0; i < ${users}; i++) {
          const ctx = { key: 'buyer-' + i };
          served[Number(c.boolVariation('exp', ctx, false))] += 1;
          c.track('purchase', ctx, 1);
        }
        console.log(JSON.stringify({ served, status: c.status() }));
        // Not closed: exiting must send what is pending.
        process.exit(0);
      })();
    `);
    assert.equal(r.code, 0, r.out);
    const { served, status } = JSON.parse(r.out.trim().split('\n').pop());
    assert.equal(status.state, 'ready');
    assert.equal(status.events.recorded, 2 * users, JSON.stringify(status));
    assert.equal(status.events.sent, 0, 'nothing sent before exit');
    const results = await server.api('GET', '/api/v1/projects/p/environments/prod/experiments/exp/results', undefined, 200);
    assert.deepEqual(results.units, served, JSON.stringify(results));
    const conversions = results.metrics[0].variations.map((v) => v.conversions);
    assert.deepEqual(conversions, served, JSON.stringify(results));
    // The summaries the server stored name this SDK, not the Rust SDK it wraps.
    const senders = sqlite(server.db, "SELECT DISTINCT json_extract(detail, '$.sdk.name') || '/' || json_extract(detail, '$.sdk.version') FROM events WHERE kind = 'summary'");
    assert.deepEqual(senders, [`vexil-node/${require('../package.json').version}`]);
  });

  await t.test('everything stopped: a new process serves the last-known-good file', async () => {
    // Closing writes the pending snapshot; then nothing upstream is left.
    client.close();
    await relay.kill();
    await server.kill();
    const r = await runNode(`
      const { Client } = require('.');
      Client.init(${JSON.stringify(sdkKey)}, {
        baseUrl: ${JSON.stringify(relay.url)}, lastKnownGood: ${JSON.stringify(lkg)}, initTimeoutMs: 300,
      }).then((c) => {
        const d = c.boolVariationDetail('checkout', { key: 'u1' }, false);
        console.log(JSON.stringify({ status: c.status(), d }));
      });
    `);
    assert.equal(r.code, 0, r.out);
    const { status, d } = JSON.parse(r.out.trim().split('\n').pop());
    assert.equal(status.origin, 'last_known_good', JSON.stringify(status));
    assert.equal(status.state, 'stale');
    assert.equal(d.value, true);
    assert.equal(d.reason.kind, 'FALLTHROUGH');
  });
});
