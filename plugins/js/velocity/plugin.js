// Order velocity in JavaScript (contract 0.2: keyed state and emitted records), the same logic,
// errors and fixtures as the Rust example (plugins/velocity): counts the orders of each record
// key in fixed windows of time, kept in the key's state, rejects an order that would go over
// the configured rate, and emits an alert record for the order that reaches it. An order
// within the rate takes its quantity out of its product's stock, as the stock plugin does.
//
// Configuration: `max-orders` per window (default 100), `window-seconds` (60), `alert-topic`
// (`order-alerts`; the route must allow it). The route keeps state. Time is the record's
// timestamp, not the clock: a replay or a redrive decides the same.
import * as sluice from '../sluice.js';

const lossy = new TextDecoder('utf-8');

/** A configured count (`max-orders`): digits only. */
function count(text) {
  if (!/^[0-9]{1,15}$/.test(text)) throw new Error('not a count');
  return Number(text);
}

/** A configured whole number (`window-seconds`). */
function whole(text) {
  if (!/^-?[0-9]{1,15}$/.test(text)) throw new Error('not an integer');
  return Number(text);
}

/** The key's window: `{ start_ms, orders }`, or a new one. */
function currentWindow() {
  const window = sluice.stateJson();
  if (window === undefined) return { start_ms: 0, orders: 0 };
  for (const name of ['start_ms', 'orders']) {
    const value = window !== null && typeof window === 'object' ? window[name] : undefined;
    if (!Number.isSafeInteger(value)) {
      throw new sluice.Invalid(
        `this key's state is not what it should be: \`${name}\` is not an integer`,
      );
    }
  }
  if (window.orders < 0) {
    throw new sluice.Invalid("this key's state is not what it should be: negative `orders`");
  }
  return { start_ms: window.start_ms, orders: window.orders };
}

/** Count the order against its key's window, reject it over the rate, alert at the rate. */
export function handle(message) {
  const order = sluice.order(message);
  const most = sluice.configOr('max-orders', 100, count);
  const windowS = sluice.configOr('window-seconds', 60, whole);
  const alertTopic = sluice.getConfig('alert-topic') ?? 'order-alerts';
  if (message.key === undefined || message.key === null) {
    throw new sluice.Invalid('the record has no key to count its orders under');
  }
  const keyText = lossy.decode(message.key);
  const now = message.timestampMs === undefined ? 0 : Number(message.timestampMs);
  let window = currentWindow();
  if (window.orders === 0 || now >= window.start_ms + windowS * 1000) {
    window = { start_ms: now, orders: 0 };
  }
  if (window.orders >= most) {
    throw new sluice.Rejected(
      `${window.orders + 1} orders for key ${keyText} in the ${windowS} s window, at most ${most}`,
    );
  }
  window.orders += 1;
  const out = [sluice.stock(order.productId, -order.quantity), sluice.setStateJson(window)];
  if (window.orders === most) {
    // Keys in sorted order, as the Rust example writes them.
    const alert = {
      alert: 'order-velocity',
      key: keyText,
      lastOrderId: order.orderId,
      orders: window.orders,
      windowSeconds: windowS,
      windowStartMs: window.start_ms,
    };
    sluice.debug(`key ${keyText} reached ${most} orders in its window`);
    out.push(sluice.emit(alertTopic, message.key, JSON.stringify(alert)));
  }
  return out;
}

/**
 * Run by the host before this version becomes active: the third order of a key with a rate of
 * three alerts, the fourth is rejected, a later window starts over.
 */
export function selfTest() {
  const { testing } = sluice;
  const order = (ts) => ({ ...testing.order('o', 'P-1', 1), timestampMs: BigInt(ts) });
  const window = (orders) => JSON.stringify({ start_ms: 0, orders });
  // The samples' own configuration, whatever the operator's is.
  testing.setConfig('max-orders', '3');
  testing.setConfig('window-seconds', '60');
  let alert;
  let over;
  let later;
  try {
    alert = testing.callWithState(handle, order(1000), window(2));
    try {
      testing.callWithState(handle, order(2000), window(3));
    } catch (e) {
      over = e;
    }
    later = testing.callWithState(handle, order(61000), window(3));
  } finally {
    testing.clearConfig();
  }
  if (testing.emitted(alert).length !== 1) throw new Error('the third order should alert');
  if (!(over instanceof sluice.Rejected)) throw new Error('the fourth order should be rejected');
  if (testing.emitted(later).length !== 0) throw new Error('a new window should start over');
}
