import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as sluice from '../sluice.js';
import { handle, selfTest } from '../plugin.js';

const { testing } = sluice;

test('an order takes its quantity out of stock', () => {
  const mutations = handle(testing.order('o-1', 'CATALOG-0001', 3));
  assert.deepEqual(testing.adjustments(mutations), [['CATALOG-0001', -3]]);
});

test('an order over the configured maximum is rejected', () => {
  testing.setConfig('max-quantity', '5');
  try {
    assert.throws(() => handle(testing.order('o-2', 'CATALOG-0001', 6)), sluice.Rejected);
  } finally {
    testing.clearConfig();
  }
});

test('accepted orders are logged', () => {
  testing.clearLogs();
  handle(testing.order('o-3', 'CATALOG-0002', 1));
  assert.ok(testing.logs().some(([, line]) => line.includes('o-3')));
});

test('a message that is not an order is invalid', () => {
  assert.throws(() => handle(testing.message('hello')), /not JSON/);
});

test('the self-test passes', () => {
  selfTest();
});
