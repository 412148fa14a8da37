"""The read-model example in Python (contract 0.3: the team's own tables), the same logic,
errors and fixtures as the Rust example (plugins/read-model): an order takes its quantity out
of its product's stock, writes its row to ``user_orders`` and adds to its product's counters
in ``product_sales`` (``orders``, ``units``, ``revenue``), all in the transaction that applies
it, exactly once. An order refused for stock writes neither.

Configuration: ``orders-table`` and ``sales-table`` rename the tables; ``counters``
(``orders units revenue``, the default) names the counters kept. The route declares
them: ``--table TOPIC=user_orders:upsert --table TOPIC=product_sales:add``.
"""

import json

import sluice_plugin as sluice


def _details(message):
    """What the row needs besides what the strict order parser checked."""
    try:
        document = json.loads(bytes(message.payload))
    except ValueError as e:
        raise sluice.Invalid(f"the order is not JSON: {e}") from None
    details = {}
    for name, kind in (
        ("userId", str),
        ("unitPrice", int),
        ("totalPrice", int),
        ("createdAt", str),
    ):
        value = document.get(name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise sluice.Invalid(f"`{name}` is missing or not a {kind.__name__}")
        details[name] = value
    return details


def handle(message):
    """The order's stock, its row and its product's counters."""
    order = sluice.order(message)
    details = _details(message)
    orders = sluice.config("orders-table") or "user_orders"
    sales = sluice.config("sales-table") or "product_sales"
    product = {"product_id": order.product_id}
    return [
        sluice.stock(order.product_id, -order.quantity),
        sluice.upsert(
            orders,
            {
                "order_id": order.order_id,
                "user_id": details["userId"],
                "product_id": order.product_id,
                "quantity": order.quantity,
                "unit_price": details["unitPrice"],
                "total_price": details["totalPrice"],
                "status": "APPLIED",
                "created_at": sluice.timestamp(details["createdAt"]),
            },
        ),
    ] + [sluice.add(sales, product, counter, delta) for counter, delta in _counters(order, details)]


def _counters(order, details):
    """The counters configured, each with this order's delta."""
    deltas = {"orders": 1, "units": order.quantity, "revenue": details["totalPrice"]}
    chosen = (sluice.config("counters") or "orders units revenue").split()
    for counter in chosen:
        if counter not in deltas:
            raise sluice.Invalid(
                f"configuration `counters`: `{counter}` is not one of orders, units, revenue"
            )
    return [(counter, deltas[counter]) for counter in chosen]


def self_test():
    """Run by the host before this version becomes active: with the example's own
    configuration (whatever the operator's is), a 2-unit order writes its row and three
    counters."""
    testing = sluice.testing
    testing.set_config("orders-table", "user_orders")
    testing.set_config("sales-table", "product_sales")
    testing.set_config("counters", "orders units revenue")
    try:
        writes = testing.table_writes(handle(testing.order("self-test", "P-1", 2)))
    finally:
        testing.clear_config()
    assert len(writes) == 4, f"a 2-unit order made {len(writes)} table writes, not 4"


WitWorld = sluice.export(handle, self_test=self_test)
