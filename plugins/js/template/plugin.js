// Plugin `{name}`: an order event takes its quantity out of the product's stock, unless it is
// larger than the `max-quantity` configured for this plugin (then it is rejected).
import * as sluice from './sluice.js';

export function handle(message) {
  const order = sluice.order(message);
  const most = BigInt(sluice.configOr('max-quantity', 1000));
  if (order.quantity > most) {
    throw new sluice.Rejected(
      `${order.quantity} units of ${order.productId} ordered, at most ${most} per order`,
    );
  }
  sluice.debug(`order ${order.orderId} takes ${order.quantity} x ${order.productId}`);
  return [sluice.stock(order.productId, -order.quantity)];
}

/** Run by the host before it activates a version; an exception refuses the version. */
export function selfTest() {
  const got = sluice.testing.adjustments(handle(sluice.testing.order('self-test', 'P-1', 2)));
  if (JSON.stringify(got) !== '[["P-1",-2]]') {
    throw new Error(`a 2-unit order gave ${JSON.stringify(got)}`);
  }
}
