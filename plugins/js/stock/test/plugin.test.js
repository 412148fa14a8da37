import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as sluice from '../../sluice.js';
import { handle, selfTest } from '../plugin.js';

const VALID = {
  orderId: '2f1c',
  userId: 'user-1',
  productId: 'CATALOG-0001',
  quantity: 10,
  unitPrice: 1500,
  totalPrice: 15000,
  createdAt: '2026-11-25T07:00:00Z',
};
const FIELDS = Object.keys(VALID);

const withField = (name, value) => {
  const order = { ...VALID };
  if (value === undefined) delete order[name];
  else order[name] = value;
  return JSON.stringify(order);
};

function invalidReason(payload) {
  try {
    handle(sluice.testing.message(payload));
  } catch (e) {
    assert.ok(e instanceof sluice.Invalid, `expected Invalid, got ${e}`);
    return e.reason;
  }
  assert.fail('expected Invalid, got mutations');
}

test('a valid order takes its quantity out of stock', () => {
  const mutations = handle(sluice.testing.message(JSON.stringify(VALID)));
  assert.deepEqual(sluice.testing.adjustments(mutations), [['CATALOG-0001', -10]]);
  assert.equal(mutations[0].val.delta, -10n);
});

test('the self-test passes', () => {
  selfTest();
});

test('empty, non-UTF-8, non-JSON and non-object payloads are invalid', () => {
  assert.equal(invalidReason(''), 'empty payload');
  assert.match(invalidReason(new Uint8Array([0xff, 0xfe, 0])), /not UTF-8/);
  assert.match(invalidReason('order for 10 berlins'), /not JSON/);
  assert.match(invalidReason('[1,2,3]'), /JSON an array/);
  assert.match(invalidReason('null'), /JSON null/);
  assert.match(invalidReason('42'), /JSON a number/);
});

test('each missing field is named', () => {
  for (const name of FIELDS) {
    assert.equal(invalidReason(withField(name, undefined)), `missing field \`${name}\``);
    assert.equal(invalidReason(withField(name, null)), `missing field \`${name}\``);
  }
});

test('ill-typed fields are named', () => {
  assert.equal(
    invalidReason(withField('productId', 17)),
    'field `productId` must be a string, got a number',
  );
  assert.equal(
    invalidReason(withField('quantity', '10')),
    'field `quantity` must be an integer, got a string',
  );
  assert.equal(invalidReason(withField('quantity', 2.5)), 'field `quantity` must be an integer, got 2.5');
  assert.equal(
    invalidReason(JSON.stringify(VALID).replace('"quantity":10', '"quantity":10.0')),
    'field `quantity` must be an integer, got 10.0',
  );
});

test('quantity must be positive and bounded', () => {
  assert.equal(invalidReason(withField('quantity', 0)), 'field `quantity` must be positive, got 0');
  assert.equal(
    invalidReason(withField('quantity', 1000001)),
    'field `quantity` must be at most 1000000, got 1000001',
  );
});

test('a repeated field is ambiguous', () => {
  const payload = JSON.stringify(VALID).slice(0, -1) + ',"quantity":500}';
  assert.match(invalidReason(payload), /ambiguous: duplicate field `quantity`/);
});

test('nested values and escaped keys do not confuse the field scan', () => {
  const payload = JSON.stringify({ ...VALID, 'a"b': { quantity: [1, { x: '}' }] } });
  assert.deepEqual(sluice.testing.adjustments(handle(sluice.testing.message(payload))), [
    ['CATALOG-0001', -10],
  ]);
});

test('configuration and logs are available to tests', () => {
  sluice.testing.setConfig('max', '5');
  assert.equal(sluice.configOr('max', 10), 5);
  sluice.testing.setConfig('max', 'lots');
  assert.throws(() => sluice.configOr('max', 10), /configuration `max`/);
  sluice.testing.clearConfig();
  sluice.info('hello');
  assert.deepEqual(sluice.testing.logs().at(-1), ['info', 'hello']);
});
