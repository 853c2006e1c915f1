'use strict';
// End to end against real processes: `vexil-server` (SQLite) and `vexil-relay`, with the
// Node client streaming through the relay. Initialisation, a flip over the stream, the relay
// killed and restarted (the client reconnects and catches up), `track` events counted by the
// server's experiment analysis (sent by a process that exits without closing its client), and
// a new process serving the last-known-good file once everything is stopped.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Client } = require('..');
const { tempDir, nextChange } = require('./helpers');
const { Server, Relay, freePort, runNode, WAIT_MS } = require('./harness');

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
  });

  await t.test('the relay killed and restarted: the client reconnects and catches up', async () => {
    await relay.kill();
    // Changed while the relay is down: only a reconnection can bring it.
    await setOn(server, 'checkout', true);
    const changed = nextChange(client, (c) => c.keys.includes('checkout'), WAIT_MS, 'checkout on again');
    relay = await Relay.start(server.url, relayKey, port);
    await changed;
    assert.equal(client.boolVariation('checkout', user, false), true);
    assert.equal(client.status().state, 'ready');
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
