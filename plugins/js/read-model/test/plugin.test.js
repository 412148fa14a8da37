import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import * as sluice from '../../sluice.js';
import { handle, selfTest } from '../plugin.js';

const { testing } = sluice;

beforeEach(() => testing.clearConfig());

test('an order takes stock and writes its row and the product counters', () => {
  const mutations = handle(testing.order('o-1', 'P-1', 3));
  assert.deepEqual(testing.adjustments(mutations), [['P-1', -3]]);
  assert.deepEqual(testing.upserted(mutations, 'user_orders', 'order_id'), { tag: 'text', val: 'o-1' });
  assert.deepEqual(testing.upserted(mutations, 'user_orders', 'quantity'), { tag: 'int', val: 3n });
  assert.deepEqual(testing.upserted(mutations, 'user_orders', 'created_at'), {
    tag: 'timestamp',
    val: '2026-01-01T00:00:00Z',
  });
  const adds = testing
    .tableWrites(mutations)
    .filter((m) => m.tag === 'add')
    .map((m) => [m.val.column, m.val.delta]);
  assert.deepEqual(adds, [
    ['orders', { tag: 'int', val: 1n }],
    ['units', { tag: 'int', val: 3n }],
    ['revenue', { tag: 'int', val: 300n }],
  ]);
});

test('the tables can be renamed', () => {
  testing.setConfig('orders-table', 'shop.orders');
  testing.setConfig('sales-table', 'shop.sales');
  const tables = new Set(testing.tableWrites(handle(testing.order('o-1', 'P-1', 1))).map((m) => m.val.table));
  assert.deepEqual([...tables], ['shop.orders', 'shop.sales']);
});

test('an order without its user is invalid', () => {
  const message = testing.message(
    '{"orderId":"o","productId":"P","quantity":1,"unitPrice":1,"totalPrice":1,"createdAt":"2026-01-01T00:00:00Z"}',
  );
  assert.throws(() => handle(message), (e) => e instanceof sluice.Invalid && /userId/.test(e.reason));
});

test('column values: numbers, JSON, bytes, times; what no column takes is refused', () => {
  const [write] = testing.tableWrites([
    sluice.upsert('t', {
      i: 2,
      f: 2.5,
      b: false,
      n: null,
      j: { a: [1] },
      y: new Uint8Array([1]),
      at: new Date(0),
      big: 2n ** 62n,
    }),
  ]);
  assert.deepEqual(
    write.val.row.map((c) => [c.column, c.value.tag]),
    [
      ['i', 'int'],
      ['f', 'float'],
      ['b', 'boolean'],
      ['n', 'null'],
      ['j', 'json'],
      ['y', 'bytes'],
      ['at', 'timestamp'],
      ['big', 'int'],
    ],
  );
  assert.throws(() => sluice.upsert('t', { id: 2n ** 63n }), RangeError);
  assert.throws(() => sluice.upsert('t', { id: Symbol('x') }), TypeError);
  assert.throws(() => sluice.add('t', { id: 1 }, 'n', '1'), TypeError);
  assert.throws(() => sluice.del('t', [['id', 1]]), TypeError);
});

test('the self-test passes', () => {
  selfTest();
});
