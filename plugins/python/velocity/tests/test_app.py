import json

import pytest

import sluice_plugin as sluice
from app import handle, self_test

testing = sluice.testing


@pytest.fixture(autouse=True)
def fresh_config():
    testing.clear_config()
    yield
    testing.clear_config()


def order_at(order_id, key, ts):
    message = testing.order(order_id, "CATALOG-0001", 2)
    message.key = key.encode() if key is not None else None
    message.timestamp_ms = ts
    return message


def test_orders_within_the_rate_take_stock_and_count():
    testing.set_config("max-orders", "5")
    orders = [order_at(f"o-{i}", "P", 1_000 + i) for i in range(3)]
    outcomes, state = testing.fold(handle, orders)
    assert all(testing.adjustments(o) == [("CATALOG-0001", -2)] for o in outcomes)
    assert not any(testing.emitted(o) for o in outcomes)
    assert json.loads(state) == {"start_ms": 1_000, "orders": 3}


def test_the_order_that_reaches_the_rate_alerts_and_the_next_is_rejected():
    testing.set_config("max-orders", "3")
    testing.set_config("alert-topic", "alerts")
    orders = [order_at(f"o-{i}", "P", 1_000 + i) for i in range(5)]
    outcomes, state = testing.fold(handle, orders)
    alerts = testing.emitted(outcomes[2])
    assert len(alerts) == 1
    assert (alerts[0].topic, alerts[0].key) == ("alerts", b"P")
    alert = json.loads(alerts[0].value)
    assert (alert["orders"], alert["lastOrderId"]) == (3, "o-2")
    for over in outcomes[3:]:
        assert isinstance(over, sluice.Rejected) and "at most 3" in over.reason
    assert json.loads(state)["orders"] == 3, "rejected orders do not count"


def test_a_new_window_starts_over_and_keys_are_counted_apart():
    testing.set_config("max-orders", "2")
    testing.set_config("window-seconds", "10")
    full = json.dumps({"start_ms": 0, "orders": 2})
    with pytest.raises(sluice.Rejected):
        testing.call_with_state(handle, order_at("a", "P", 9_999), full)
    next_window = testing.call_with_state(handle, order_at("b", "P", 10_000), full)
    assert json.loads(testing.state_after(next_window, full)) == {"start_ms": 10_000, "orders": 1}
    assert testing.call_with_state(handle, order_at("c", "Q", 5_000), None)


def test_bad_input_and_bad_state_are_named():
    with pytest.raises(sluice.Invalid, match="no key"):
        handle(order_at("a", None, 0))
    for state in ['{"start": "noon"}', "not json", "[1, 2]", '{"start_ms": 0, "orders": -1}']:
        with pytest.raises(sluice.Invalid, match="state"):
            testing.call_with_state(handle, order_at("a", "P", 0), state)
    testing.set_config("max-orders", "many")
    with pytest.raises(sluice.Invalid, match="max-orders"):
        handle(order_at("a", "P", 0))


def test_the_state_is_the_call_s_own():
    testing.call_with_state(handle, order_at("a", "P", 0), '{"start_ms": 0, "orders": 1}')
    assert sluice.state() is None, "nothing of a call's state outlives it"


def test_the_self_test_passes_whatever_the_operator_configured():
    self_test()
    testing.set_config("window-seconds", "0")
    testing.set_config("max-orders", "1")
    self_test()
