"""Plugin `{name}`: an order event takes its quantity out of the product's stock, unless it is
larger than the `max-quantity` configured for this plugin (then it is rejected)."""

import sluice_plugin as sluice


def handle(message):
    order = sluice.order(message)
    most = sluice.config_or("max-quantity", 1000)
    if order.quantity > most:
        raise sluice.Rejected(
            f"{order.quantity} units of {order.product_id} ordered, at most {most} per order"
        )
    sluice.debug(f"order {order.order_id} takes {order.quantity} x {order.product_id}")
    return [sluice.stock(order.product_id, -order.quantity)]


def self_test():
    """Run by the host before it activates a version; an exception refuses the version."""
    got = sluice.testing.adjustments(handle(sluice.testing.order("self-test", "P-1", 2)))
    assert got == [("P-1", -2)], f"a 2-unit order gave {got}"


WitWorld = sluice.export(handle, self_test=self_test)
