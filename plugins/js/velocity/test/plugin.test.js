import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import * as sluice from '../../sluice.js';
import { handle, selfTest } from '../plugin.js';

const { testing } = sluice;
const text = new TextDecoder();

beforeEach(() => testing.clearConfig());

function orderAt(orderId, key, ts) {
  return {
    ...testing.order(orderId, 'CATALOG-0001', 2),
    key: key === undefined ? undefined : new TextEncoder().encode(key),
    timestampMs: BigInt(ts),
  };
}

const windowOf = (state) => JSON.parse(text.decode(state));

test('orders within the rate take stock and count', () => {
  testing.setConfig('max-orders', '5');
  const orders = [0, 1, 2].map((i) => orderAt(`o-${i}`, 'P', 1000 + i));
  const [outcomes, state] = testing.fold(handle, orders);
  for (const o of outcomes) {
    assert.deepEqual(testing.adjustments(o), [['CATALOG-0001', -2]]);
    assert.equal(testing.emitted(o).length, 0);
  }
  assert.deepEqual(windowOf(state), { start_ms: 1000, orders: 3 });
});

test('the order that reaches the rate alerts and the next is rejected', () => {
  testing.setConfig('max-orders', '3');
  testing.setConfig('alert-topic', 'alerts');
  const orders = [0, 1, 2, 3, 4].map((i) => orderAt(`o-${i}`, 'P', 1000 + i));
  const [outcomes, state] = testing.fold(handle, orders);
  const alerts = testing.emitted(outcomes[2]);
  assert.equal(alerts.length, 1);
  assert.equal(alerts[0].topic, 'alerts');
  assert.equal(text.decode(alerts[0].key), 'P');
  const alert = JSON.parse(text.decode(alerts[0].value));
  assert.equal(alert.orders, 3);
  assert.equal(alert.lastOrderId, 'o-2');
  for (const over of outcomes.slice(3)) {
    assert.ok(over instanceof sluice.Rejected && over.reason.includes('at most 3'), `${over}`);
  }
  assert.equal(windowOf(state).orders, 3, 'rejected orders do not count');
});

test('a new window starts over and keys are counted apart', () => {
  testing.setConfig('max-orders', '2');
  testing.setConfig('window-seconds', '10');
  const full = JSON.stringify({ start_ms: 0, orders: 2 });
  assert.throws(
    () => testing.callWithState(handle, orderAt('a', 'P', 9999), full),
    sluice.Rejected,
  );
  const next = testing.callWithState(handle, orderAt('b', 'P', 10000), full);
  assert.deepEqual(windowOf(testing.stateAfter(next, full)), { start_ms: 10000, orders: 1 });
  assert.ok(testing.callWithState(handle, orderAt('c', 'Q', 5000), undefined).length > 0);
});

test('bad input and bad state are named', () => {
  assert.throws(() => handle(orderAt('a', undefined, 0)), (e) => e.reason.includes('no key'));
  const bad = ['{"start": "noon"}', 'not json', '[1, 2]', '{"start_ms": 0, "orders": -1}'];
  for (const state of bad) {
    assert.throws(
      () => testing.callWithState(handle, orderAt('a', 'P', 0), state),
      (e) => e instanceof sluice.Invalid && e.reason.includes('state'),
      state,
    );
  }
  testing.setConfig('max-orders', 'many');
  assert.throws(
    () => handle(orderAt('a', 'P', 0)),
    (e) => e instanceof sluice.Invalid && e.reason.includes('max-orders'),
  );
});

test("the state is the call's own", () => {
  testing.callWithState(handle, orderAt('a', 'P', 0), '{"start_ms": 0, "orders": 1}');
  assert.equal(sluice.state(), undefined, "nothing of a call's state outlives it");
});

test('the self-test passes whatever the operator configured', () => {
  selfTest();
  testing.setConfig('window-seconds', '0');
  testing.setConfig('max-orders', '1');
  selfTest();
});
