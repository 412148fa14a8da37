import pytest

import sluice_plugin as sluice
from app import handle, self_test

testing = sluice.testing


@pytest.fixture(autouse=True)
def fresh_config():
    testing.clear_config()
    yield
    testing.clear_config()


def test_an_order_takes_stock_and_writes_its_row_and_the_product_s_counters():
    mutations = handle(testing.order("o-1", "P-1", 3))
    assert testing.adjustments(mutations) == [("P-1", -3)]
    assert testing.upserted(mutations, "user_orders", "order_id") == "o-1"
    assert testing.upserted(mutations, "user_orders", "total_price") == 300
    assert testing.upserted(mutations, "user_orders", "created_at") == sluice.timestamp(
        "2026-01-01T00:00:00Z"
    )
    adds = [(m.column, m.delta) for m in testing.table_writes(mutations) if isinstance(m, sluice.Add)]
    assert adds == [("orders", 1), ("units", 3), ("revenue", 300)]


def test_the_tables_can_be_renamed():
    testing.set_config("orders-table", "shop.orders")
    testing.set_config("sales-table", "shop.sales")
    tables = {m.table for m in testing.table_writes(handle(testing.order("o-1", "P-1", 1)))}
    assert tables == {"shop.orders", "shop.sales"}


def test_an_order_without_its_user_is_invalid():
    message = testing.message(
        '{"orderId":"o","productId":"P","quantity":1,"unitPrice":1,"totalPrice":1,'
        '"createdAt":"2026-01-01T00:00:00Z"}'
    )
    with pytest.raises(sluice.Invalid, match="userId"):
        handle(message)


def test_the_helpers_refuse_what_no_column_takes():
    with pytest.raises(TypeError):
        sluice.upsert("t", {"id": object()})
    with pytest.raises(ValueError):
        sluice.upsert("t", {"id": 2**63})
    with pytest.raises(TypeError):
        sluice.add("t", {"id": 1}, "n", "1")
    with pytest.raises(TypeError):
        sluice.upsert("t", [("id", 1)])


def test_self_test_passes():
    self_test()
