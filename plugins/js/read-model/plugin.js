// The read-model example in JavaScript (contract 0.3: the team's own tables), the same logic,
// errors and fixtures as the Rust example (plugins/read-model): an order takes its quantity
// out of its product's stock, writes its row to `user_orders` and adds to its product's
// counters in `product_sales` (`orders`, `units`, `revenue`), all in the transaction that
// applies it, exactly once. An order refused for stock writes neither.
//
// Configuration: `orders-table` and `sales-table` rename the tables; `counters` (`orders units
// revenue`, the default) names the counters kept. The route declares them:
// `--table TOPIC=user_orders:upsert --table TOPIC=product_sales:add`.
import * as sluice from '../sluice.js';

/** What the row needs besides what the strict order parser checked. */
function details(message) {
  let document;
  try {
    document = JSON.parse(sluice.text(message));
  } catch (e) {
    throw new sluice.Invalid(`the order is not JSON: ${e.message}`);
  }
  const wanted = { userId: 'string', unitPrice: 'integer', totalPrice: 'integer', createdAt: 'string' };
  for (const [name, kind] of Object.entries(wanted)) {
    const value = document[name];
    const fits = kind === 'integer' ? Number.isSafeInteger(value) : typeof value === kind;
    if (!fits) throw new sluice.Invalid(`\`${name}\` is missing or not a${kind === 'integer' ? 'n' : ''} ${kind}`);
  }
  return document;
}

/** The order's stock, its row and its product's counters. */
export function handle(message) {
  const order = sluice.order(message);
  const { userId, unitPrice, totalPrice, createdAt } = details(message);
  const orders = sluice.getConfig('orders-table') ?? 'user_orders';
  const sales = sluice.getConfig('sales-table') ?? 'product_sales';
  const product = { product_id: order.productId };
  return [
    sluice.stock(order.productId, -order.quantity),
    sluice.upsert(orders, {
      order_id: order.orderId,
      user_id: userId,
      product_id: order.productId,
      quantity: order.quantity,
      unit_price: unitPrice,
      total_price: totalPrice,
      status: 'APPLIED',
      created_at: sluice.timestamp(createdAt),
    }),
    ...counters(order.quantity, totalPrice).map(([counter, delta]) =>
      sluice.add(sales, product, counter, delta),
    ),
  ];
}

/** The counters configured, each with this order's delta. */
function counters(quantity, totalPrice) {
  const deltas = { orders: 1, units: quantity, revenue: totalPrice };
  const chosen = (sluice.getConfig('counters') ?? 'orders units revenue').split(/\s+/).filter(Boolean);
  for (const counter of chosen) {
    if (!Object.hasOwn(deltas, counter)) {
      throw new sluice.Invalid(
        `configuration \`counters\`: \`${counter}\` is not one of orders, units, revenue`,
      );
    }
  }
  return chosen.map((counter) => [counter, deltas[counter]]);
}

/**
 * Run by the host before this version becomes active: with the example's own configuration
 * (whatever the operator's is), a 2-unit order writes its row and three counters.
 */
export function selfTest() {
  const { testing } = sluice;
  testing.setConfig('orders-table', 'user_orders');
  testing.setConfig('sales-table', 'product_sales');
  testing.setConfig('counters', 'orders units revenue');
  let writes;
  try {
    writes = testing.tableWrites(handle(testing.order('self-test', 'P-1', 2)));
  } finally {
    testing.clearConfig();
  }
  if (writes.length !== 4) throw new Error(`a 2-unit order made ${writes.length} table writes, not 4`);
}
