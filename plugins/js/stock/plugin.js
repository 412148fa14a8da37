// The catalog handler in JavaScript: an order event takes the ordered quantity out of the
// product's stock. The same logic, errors and fixtures as the Rust plugin (plugins/stock).
import * as sluice from '../sluice.js';

/** An order event becomes one stock adjustment; anything else is invalid, naming the field. */
export function handle(message) {
  const order = sluice.order(message);
  return [sluice.stock(order.productId, -order.quantity)];
}

/** Run by the host before this version becomes active. */
export function selfTest() {
  const got = sluice.testing.adjustments(handle(sluice.testing.order('self-test', 'P-1', 3)));
  if (JSON.stringify(got) !== JSON.stringify([['P-1', -3]])) {
    throw new Error(`a 3-unit order gave ${JSON.stringify(got)}`);
  }
  try {
    handle(sluice.testing.message('not json'));
  } catch (e) {
    if (e instanceof sluice.Invalid) return;
    throw e;
  }
  throw new Error('non-JSON was accepted');
}
