"""Order velocity in Python (contract 0.2: keyed state and emitted records), the same logic,
errors and fixtures as the Rust example (plugins/velocity): counts the orders of each record
key in fixed windows of time, kept in the key's state, rejects an order that would go over
the configured rate, and emits an alert record for the order that reaches it. An order within
the rate takes its quantity out of its product's stock, as the stock plugin does.

Configuration: ``max-orders`` per window (default 100), ``window-seconds`` (60),
``alert-topic`` (``order-alerts``; the route must allow it). The route keeps state.
Time is the record's timestamp, not the clock: a replay or a redrive decides the same.
"""

import json

import sluice_plugin as sluice


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _window():
    """The key's window: ``{"start_ms": ..., "orders": ...}``, or a new one."""
    window = sluice.state_json()
    if window is None:
        return {"start_ms": 0, "orders": 0}
    if not isinstance(window, dict):
        raise sluice.Invalid("this key's state is not what it should be: not an object")
    for name in ("start_ms", "orders"):
        value = window.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise sluice.Invalid(
                f"this key's state is not what it should be: `{name}` is not an integer"
            )
    if window["orders"] < 0:
        raise sluice.Invalid("this key's state is not what it should be: negative `orders`")
    return {"start_ms": window["start_ms"], "orders": window["orders"]}


def handle(message):
    """Count the order against its key's window, reject it over the rate, alert at the rate."""
    order = sluice.order(message)
    most = sluice.config_or("max-orders", 100, _count)
    window_s = sluice.config_or("window-seconds", 60)
    alert_topic = sluice.config("alert-topic") or "order-alerts"
    if message.key is None:
        raise sluice.Invalid("the record has no key to count its orders under")
    key = bytes(message.key)
    key_text = key.decode("utf-8", errors="replace")
    now = message.timestamp_ms or 0
    window = _window()
    if window["orders"] == 0 or now >= window["start_ms"] + window_s * 1000:
        window = {"start_ms": now, "orders": 0}
    if window["orders"] >= most:
        raise sluice.Rejected(
            f"{window['orders'] + 1} orders for key {key_text} in the {window_s} s window,"
            f" at most {most}"
        )
    window["orders"] += 1
    out = [sluice.stock(order.product_id, -order.quantity), sluice.set_state_json(window)]
    if window["orders"] == most:
        alert = {
            "alert": "order-velocity",
            "key": key_text,
            "orders": window["orders"],
            "windowSeconds": window_s,
            "windowStartMs": window["start_ms"],
            "lastOrderId": order.order_id,
        }
        sluice.debug(f"key {key_text} reached {most} orders in its window")
        out.append(
            sluice.emit(alert_topic, key, json.dumps(alert, separators=(",", ":"), sort_keys=True))
        )
    return out


def self_test():
    """Run by the host before this version becomes active: the third order of a key with a
    rate of three alerts, the fourth is rejected, a later window starts over."""
    testing = sluice.testing

    def order(ts):
        message = testing.order("o", "P-1", 1)
        message.timestamp_ms = ts
        return message

    def window(orders):
        return json.dumps({"start_ms": 0, "orders": orders})

    # The samples' own configuration, whatever the operator's is.
    testing.set_config("max-orders", "3")
    testing.set_config("window-seconds", "60")
    try:
        alert = testing.call_with_state(handle, order(1_000), window(2))
        try:
            testing.call_with_state(handle, order(2_000), window(3))
            over = None
        except sluice.Rejected as e:
            over = e
        later = testing.call_with_state(handle, order(61_000), window(3))
    finally:
        testing.clear_config()
    assert len(testing.emitted(alert)) == 1, f"the third order should alert: {alert}"
    assert over is not None, "the fourth order should be rejected"
    assert not testing.emitted(later), f"a new window should start over: {later}"


WitWorld = sluice.export(handle, self_test=self_test)
