import pytest

import sluice_plugin as sluice
from app import handle, self_test

testing = sluice.testing


def test_an_order_takes_its_quantity_out_of_stock():
    mutations = handle(testing.order("o-1", "CATALOG-0001", 3))
    assert testing.adjustments(mutations) == [("CATALOG-0001", -3)]


def test_an_order_over_the_configured_maximum_is_rejected():
    testing.set_config("max-quantity", "5")
    try:
        with pytest.raises(sluice.Rejected, match="at most 5"):
            handle(testing.order("o-2", "CATALOG-0001", 6))
    finally:
        testing.clear_config()


def test_accepted_orders_are_logged():
    testing.clear_logs()
    handle(testing.order("o-3", "CATALOG-0002", 1))
    assert any("o-3" in line for _, line in testing.logs())


def test_a_message_that_is_not_an_order_is_invalid():
    with pytest.raises(sluice.Invalid, match="not JSON"):
        handle(testing.message("hello"))


def test_the_self_test_passes():
    self_test()
