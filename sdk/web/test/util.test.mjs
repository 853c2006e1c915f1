import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, base64url, canonicalJson, changedKeys } from '../dist/index.js';

test('canonicalJson sorts keys at every depth and drops undefined', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[2,{"y":2,"z":1}]},"b":1}');
});

test('base64url is URL-safe, unpadded and UTF-8', () => {
  const enc = base64url('{"targetingKey":"ü?>>"}');
  assert.doesNotMatch(enc, /[+/=]/);
  const back = Buffer.from(enc.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8');
  assert.equal(back, '{"targetingKey":"ü?>>"}');
});

test('backoffDelay doubles up to the cap with jitter in the upper half', () => {
  assert.equal(backoffDelay(0, 100, 1000, () => 0), 50);
  assert.equal(backoffDelay(0, 100, 1000, () => 1), 100);
  assert.equal(backoffDelay(3, 100, 1000, () => 1), 800);
  assert.equal(backoffDelay(10, 100, 1000, () => 1), 1000);
  assert.equal(backoffDelay(10, 100, 1000, () => 0), 500);
  assert.equal(backoffDelay(1e9, 100, 1000, () => 1), 1000);
});

test('changedKeys names added, removed and changed flags only', () => {
  const a = new Map([['same', { value: { x: 1, y: 2 }, variant: 'v' }], ['flip', { value: true }], ['gone', { value: 1 }], ['var', { value: 1, variant: 'a' }]]);
  const b = new Map([['same', { value: { y: 2, x: 1 }, variant: 'v', reason: 'SPLIT' }], ['flip', { value: false }], ['new', { value: 'n' }], ['var', { value: 1, variant: 'b' }]]);
  assert.deepEqual(changedKeys(a, b), ['flip', 'gone', 'new', 'var']);
  assert.deepEqual(changedKeys(a, a), []);
});
