'use strict';
// The client's behaviour through its public API: options, readiness, never throwing on
// evaluation, flag-change listeners, the last-known-good file offline, and process exit.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Client, Context, InitError } = require('..');
const { tempDir, writeSnapshot, nextChange } = require('./helpers');

const dir = tempDir();

const boolFlag = (key, on = true) => ({
  key,
  kind: 'boolean',
  variations: [{ value: true, name: 'on' }, { value: false, name: 'off' }],
  on,
  off_variation: 1,
  fallthrough: { variation: 0 },
});

const snapshot = (version, flags) => ({ version, flags });

test('invalid options are refused when the client is made, not at evaluation', async () => {
  assert.throws(() => new Client(42), TypeError);
  assert.throws(() => new Client('k', { baseURL: 'x' }), /unknown option "baseURL"/);
  assert.throws(() => new Client('k', { initTimeoutMs: -1 }), TypeError);
  assert.throws(() => new Client('k', { offline: 'yes' }), TypeError);
  assert.throws(() => new Client(''), /invalid SDK key: it is empty/);
  assert.throws(() => new Client('a key'), /invalid SDK key/);
  assert.throws(() => new Client('k', { baseUrl: 'localhost' }), /invalid base URL/);
  await assert.rejects(Client.init('k', { baseUrl: 'localhost' }), /invalid base URL/);
});

test('without flags every method returns its default with CLIENT_NOT_READY', async () => {
  const client = await Client.init('k', { offline: true });
  assert.equal(client.initialized, false);
  assert.equal(client.status().state, 'offline');
  assert.equal(client.boolVariation('f', { key: 'u' }, true), true);
  const d = client.stringVariationDetail('f', { key: 'u' }, 'dflt');
  assert.deepEqual(d, {
    value: 'dflt',
    variation: null,
    variationName: null,
    reason: { kind: 'ERROR', errorKind: 'CLIENT_NOT_READY' },
    openfeatureReason: 'ERROR',
    errorCode: 'PROVIDER_NOT_READY',
    inExperiment: false,
    split: false,
  });
  assert.deepEqual(client.allFlags({ key: 'u' }), { valid: false, version: null, flags: {} });
  client.close();
});

test('evaluation never throws, whatever it is given', async () => {
  const file = writeSnapshot(dir, 'never-throws.json', snapshot(3, [boolFlag('f')]));
  const client = await Client.init('k', { file, sendEvents: false });
  const hostile = {
    get key() {
      throw new Error('no key for you');
    },
  };
  const cyclic = { key: 'u', attributes: { a: 1 } };
  cyclic.attributes.self = cyclic;
  for (const ctx of [undefined, null, 'user-1', 42, [], () => 1, Symbol('s'), hostile, cyclic,
    { key: 7 }, { key: 'u', attributes: 'nope' }, { key: 'u', attributes: { f: () => 1, u: undefined, s: Symbol('x'), ok: 1 } }]) {
    for (const key of ['f', 'missing', undefined, 42, null]) {
      assert.doesNotThrow(() => {
        client.boolVariation(key, ctx, false);
        client.boolVariation(key, ctx, 'not a boolean');
        client.stringVariation(key, ctx, 'd');
        client.numberVariation(key, ctx, 1);
        client.jsonVariation(key, ctx, {});
        client.boolVariationDetail(key, ctx, undefined);
        client.jsonVariationDetail(key, ctx, undefined);
        client.allFlags(ctx);
        client.track(key, ctx, Number.NaN);
      });
    }
  }
  // Whatever the context, a flag that needs no key is served; a bad flag key is not found.
  assert.equal(client.boolVariation('f', null, false), true);
  assert.equal(client.boolVariation('f', hostile, false), false);
  assert.equal(client.boolVariationDetail('f', hostile, false).reason.errorKind, 'INVALID_CONTEXT');
  assert.equal(client.boolVariationDetail(42, {}, false).reason.errorKind, 'FLAG_NOT_FOUND');
  // A default of another type is returned as is on error, and the served value otherwise.
  assert.equal(client.boolVariation('missing', {}, 'not a boolean'), 'not a boolean');
  assert.equal(client.boolVariation('f', {}, 'not a boolean'), true);
  // A numeric key is used as its string form; attributes without a JSON form are skipped.
  assert.equal(new Context({ key: 7 }).key, '7');
  assert.equal(new Context({ key: 'u', attributes: { f: () => 1, ok: 1 } }).key, 'u');
  client.close();
});

test('a watched file: flag changes reach listeners, and removed listeners hear nothing', async () => {
  const file = writeSnapshot(dir, 'watched.json', snapshot(1, [boolFlag('a'), boolFlag('b')]));
  const client = await Client.init('k', { file, fileWatchIntervalMs: 20, sendEvents: false });
  assert.equal(client.boolVariation('a', { key: 'u' }, false), true);
  let removedCalls = 0;
  const remove = client.onFlagChange(() => {
    removedCalls += 1;
  });
  remove();
  const changed = nextChange(client, (c) => c.version === 2, 10_000, 'a turned off');
  writeSnapshot(dir, 'watched.json', snapshot(2, [boolFlag('a', false), boolFlag('b')]));
  const change = await changed;
  assert.deepEqual(change.keys, ['a']);
  assert.equal(change.origin, 'file');
  assert.equal(client.boolVariation('a', { key: 'u' }, true), false);
  assert.equal(client.boolVariationDetail('a', { key: 'u' }, true).reason.kind, 'OFF');
  assert.equal(removedCalls, 0);
  client.close();
  client.close();
});

test('waiting for a client that cannot connect times out, and init still resolves', async () => {
  const started = Date.now();
  const client = await Client.init('k', {
    baseUrl: 'http://127.0.0.1:9',
    initTimeoutMs: 200,
    sendEvents: false,
  });
  assert.ok(Date.now() - started >= 150);
  assert.equal(client.initialized, false);
  await assert.rejects(client.waitForInitialization(50), (e) => e instanceof InitError && e.code === 'TIMED_OUT');
  assert.equal(client.boolVariationDetail('f', {}, true).reason.errorKind, 'CLIENT_NOT_READY');
  client.close();
  await assert.rejects(client.waitForInitialization(50), (e) => e.code === 'CLOSED');
});

/** Runs `script` in a child Node process; resolves with its exit code, output and duration. */
function runChild(script, env = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['-e', script], {
      cwd: path.resolve(__dirname, '..'),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the child process did not exit within 20 s; output:\n${out}`));
    }, 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - started });
    });
  });
}

test('an open client never keeps the process alive', async () => {
  // Streaming towards nothing (reconnecting in the background), with a listener registered
  // and an initialisation wait that has settled: the script's end is the process's end.
  const r = await runChild(`
    const { Client } = require('.');
    Client.init('k', { baseUrl: 'http://127.0.0.1:9', initTimeoutMs: 100, reconnectInitialDelayMs: 10 })
      .then((c) => { c.onFlagChange(() => {}); console.log('started', c.status().state); });
  `);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /started (initializing|stale)/);
});

test('a context object changed between evaluations is seen: conversions are never stale', async () => {
  const flag = {
    key: 'gated', kind: 'boolean',
    variations: [{ value: true }, { value: false }],
    on: true, off_variation: 1, fallthrough: { variation: 1 },
    targets: [{ variation: 0, values: ['vip'] }],
    rules: [
      { id: 'pro', clauses: [{ attribute: 'plan', op: 'in', values: ['pro'] }], serve: { variation: 0 } },
      { id: 'beta', clauses: [{ attribute: 'groups', op: 'in', values: ['beta'] }], serve: { variation: 0 } },
    ],
  };
  const file = writeSnapshot(dir, 'mutations.json', snapshot(1, [flag]));
  const client = await Client.init('k', { file, sendEvents: false });
  const on = (ctx) => client.boolVariation('gated', ctx, false);
  const ctx = { key: 'u', attributes: { plan: 'free' } };
  // Several evaluations, so that every conversion cache holds this object.
  for (let i = 0; i < 3; i++) assert.equal(on(ctx), false);
  ctx.attributes.plan = 'pro';
  assert.equal(on(ctx), true, 'an attribute value changed');
  for (let i = 0; i < 3; i++) on(ctx);
  delete ctx.attributes.plan;
  assert.equal(on(ctx), false, 'an attribute removed');
  ctx.attributes = { plan: 'pro' };
  assert.equal(on(ctx), true, 'the attributes replaced');
  for (let i = 0; i < 3; i++) on(ctx);
  ctx.attributes = undefined;
  ctx.key = 'vip';
  assert.equal(on(ctx), true, 'the key changed');
  ctx.key = 'u';
  ctx.attributes = { groups: ['alpha'] };
  for (let i = 0; i < 3; i++) assert.equal(on(ctx), false);
  ctx.attributes.groups.push('beta');
  assert.equal(on(ctx), true, 'an array attribute changed in place');
  // Equal contexts in distinct objects share a conversion, and agree.
  for (let i = 0; i < 3; i++) assert.equal(on({ key: 'u', attributes: { plan: 'pro' } }), true);
  client.close();
});

test('contexts all new, then recurring: every evaluation right while the JSON-text cache adapts', async () => {
  const flag = {
    key: 'gated', kind: 'boolean', variations: [{ value: true }, { value: false }],
    on: true, off_variation: 1, fallthrough: { variation: 1 },
    rules: [{ id: 'pro', clauses: [{ attribute: 'plan', op: 'in', values: ['pro'] }], serve: { variation: 0 } }],
  };
  const file = writeSnapshot(dir, 'adaptive.json', snapshot(1, [flag]));
  const client = await Client.init('k', { file, sendEvents: false });
  const plan = (i) => (i % 3 === 0 ? 'pro' : 'free');
  // Thousands of contexts seen once: the cache stops being consulted on most calls.
  for (let i = 0; i < 3000; i++) {
    const got = client.boolVariation('gated', { key: `new-${i}`, attributes: { plan: plan(i) } }, false);
    assert.equal(got, plan(i) === 'pro', `new context ${i}`);
  }
  // Then a few contexts, each in a fresh object per call: sampled and unsampled calls agree,
  // and the cache comes back on without serving one context's conversion to another.
  for (let i = 0; i < 3000; i++) {
    const got = client.boolVariation('gated', { key: `back-${i % 4}`, attributes: { plan: plan(i % 4) } }, false);
    assert.equal(got, plan(i % 4) === 'pro', `recurring context ${i % 4} (call ${i})`);
  }
  client.close();
});
