"""The catalog handler in Python: an order event takes the ordered quantity out of the
product's stock. The same logic, errors and fixtures as the Rust plugin (plugins/stock)."""

import sluice_plugin as sluice


def handle(message):
    """An order event becomes one stock adjustment; anything else is invalid, naming the field."""
    order = sluice.order(message)
    return [sluice.stock(order.product_id, -order.quantity)]


def self_test():
    """Run by the host before this version becomes active."""
    sample = sluice.testing.order("self-test", "P-1", 3)
    got = sluice.testing.adjustments(handle(sample))
    assert got == [("P-1", -3)], f"a 3-unit order gave {got}"
    try:
        handle(sluice.testing.message(b"not json"))
    except sluice.Invalid:
        return
    raise AssertionError("non-JSON was accepted")


WitWorld = sluice.export(handle, self_test=self_test)
