'use strict';
// The shared evaluation fixtures (schema/testdata/eval, every case) through the public API:
// value, variation and reason must be exactly what the engine, the server and the relay
// produce, through plain-object contexts and prepared `Context`s alike.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, Context } = require('..');
const { loadFixtures, tempDir, writeSnapshot, camelReason } = require('./helpers');

const dir = tempDir();

async function clientFor(file) {
  const client = new Client('fixtures', {
    file: writeSnapshot(dir, `${file.name}.json`, file.snapshot),
    sendEvents: false,
  });
  await client.waitForInitialization(5000);
  return client;
}

/** Every check of one case; returns the failures. */
function check(client, file, c, ctx) {
  const failures = [];
  const e = c.expected;
  const reason = camelReason(e.reason);
  const expect = (method, ok, got) => {
    if (!ok) {
      failures.push(`${file}/${c.name} via ${method}: got ${JSON.stringify(got)}, expected ${JSON.stringify(e)}`);
    }
  };
  const same = (a, b) => {
    try {
      assert.deepStrictEqual(a, b);
      return true;
    } catch {
      return false;
    }
  };

  const d = client.jsonVariationDetail(c.flag, ctx, null);
  expect(
    'jsonVariationDetail',
    same(d.value, e.value) &&
      d.variation === e.variation &&
      same(d.reason, reason) &&
      d.inExperiment === Boolean(e.in_experiment),
    d,
  );
  const v = client.jsonVariation(c.flag, ctx, null);
  expect('jsonVariation', same(v, e.value), v);

  if (e.reason.kind === 'ERROR') {
    // Every typed method returns its default with the same reason.
    const sentinel = { default: true };
    const dj = client.jsonVariationDetail(c.flag, ctx, sentinel);
    expect('jsonVariationDetail (error)', dj.value === sentinel && same(dj.reason, reason), dj);
    const db = client.boolVariationDetail(c.flag, ctx, true);
    expect('boolVariationDetail (error)', db.value === true && db.variation === null && same(db.reason, reason), db);
    const ds = client.stringVariationDetail(c.flag, ctx, 'default');
    expect('stringVariationDetail (error)', ds.value === 'default' && same(ds.reason, reason), ds);
    const dn = client.numberVariationDetail(c.flag, ctx, -7);
    expect('numberVariationDetail (error)', dn.value === -7 && same(dn.reason, reason), dn);
    expect('numberVariation (error)', client.numberVariation(c.flag, ctx, -7) === -7, '');
    return failures;
  }
  const typed = (detail) => detail.variation === e.variation && same(detail.reason, reason);
  switch (typeof e.value) {
    case 'boolean': {
      const db = client.boolVariationDetail(c.flag, ctx, !e.value);
      expect('boolVariationDetail', db.value === e.value && typed(db), db);
      const b = client.boolVariation(c.flag, ctx, !e.value);
      expect('boolVariation', b === e.value, b);
      // Another type's method: its default, WRONG_TYPE.
      const ds = client.stringVariationDetail(c.flag, ctx, 'x');
      expect('stringVariationDetail (wrong type)', ds.value === 'x' && ds.reason.errorKind === 'WRONG_TYPE', ds);
      break;
    }
    case 'string': {
      const ds = client.stringVariationDetail(c.flag, ctx, '\u0000default');
      expect('stringVariationDetail', ds.value === e.value && typed(ds), ds);
      const s = client.stringVariation(c.flag, ctx, '\u0000default');
      expect('stringVariation', s === e.value, s);
      break;
    }
    case 'number': {
      const dn = client.numberVariationDetail(c.flag, ctx, Number.NaN);
      expect('numberVariationDetail', dn.value === e.value && typed(dn), dn);
      const n = client.numberVariation(c.flag, ctx, Number.NaN);
      expect('numberVariation', n === e.value, n);
      break;
    }
    default:
      break;
  }
  return failures;
}

test('every shared fixture case through the public API', async () => {
  let cases = 0;
  const failures = [];
  for (const file of loadFixtures()) {
    const client = await clientFor(file);
    assert.ok(client.initialized, file.name);
    assert.equal(client.status().origin, 'file');
    for (const c of file.cases) {
      cases += 1;
      failures.push(...check(client, file.name, c, c.context));
    }
    client.close();
  }
  assert.ok(cases > 100, `only ${cases} cases`);
  assert.deepEqual(failures, [], `${failures.length} failures`);
});

test('every shared fixture case through prepared contexts', async () => {
  const failures = [];
  for (const file of loadFixtures()) {
    const client = await clientFor(file);
    for (const c of file.cases) {
      const ctx = new Context(c.context);
      assert.equal(ctx.key, c.context.key ?? null);
      failures.push(...check(client, file.name, c, ctx));
    }
    client.close();
  }
  assert.deepEqual(failures, [], `${failures.length} failures`);
});
