import json

import pytest

import sluice_plugin as sluice
from app import handle, self_test

VALID = {
    "orderId": "2f1c",
    "userId": "user-1",
    "productId": "CATALOG-0001",
    "quantity": 10,
    "unitPrice": 1500,
    "totalPrice": 15000,
    "createdAt": "2026-11-25T07:00:00Z",
}

FIELDS = ["orderId", "userId", "productId", "quantity", "unitPrice", "totalPrice", "createdAt"]


def with_field(name, value):
    order = dict(VALID)
    if value is ...:
        del order[name]
    else:
        order[name] = value
    return json.dumps(order).encode()


def invalid_reason(payload):
    with pytest.raises(sluice.Invalid) as raised:
        handle(sluice.testing.message(payload))
    return raised.value.reason


def test_a_valid_order_takes_its_quantity_out_of_stock():
    mutations = handle(sluice.testing.message(json.dumps(VALID)))
    assert sluice.testing.adjustments(mutations) == [("CATALOG-0001", -10)]


def test_the_self_test_passes():
    self_test()


def test_empty_payload_is_invalid():
    assert invalid_reason(b"") == "empty payload"


def test_non_utf8_is_invalid():
    assert "not UTF-8" in invalid_reason(b"\xff\xfe\x00")


def test_non_json_is_invalid():
    assert "not JSON" in invalid_reason(b"order for 10 berlins")


def test_json_that_is_not_an_object_is_invalid():
    assert "JSON an array" in invalid_reason(b"[1,2,3]")
    assert "JSON null" in invalid_reason(b"null")
    assert "JSON a number" in invalid_reason(b"42")


@pytest.mark.parametrize("name", FIELDS)
def test_each_missing_field_is_named(name):
    assert invalid_reason(with_field(name, ...)) == f"missing field `{name}`"
    assert invalid_reason(with_field(name, None)) == f"missing field `{name}`"


def test_ill_typed_fields_are_named():
    assert (
        invalid_reason(with_field("productId", 17))
        == "field `productId` must be a string, got a number"
    )
    assert (
        invalid_reason(with_field("quantity", "10"))
        == "field `quantity` must be an integer, got a string"
    )
    assert invalid_reason(with_field("quantity", 2.5)) == "field `quantity` must be an integer, got 2.5"
    assert (
        invalid_reason(with_field("quantity", True))
        == "field `quantity` must be an integer, got a boolean"
    )


def test_quantity_must_be_positive_and_bounded():
    assert invalid_reason(with_field("quantity", 0)) == "field `quantity` must be positive, got 0"
    assert (
        invalid_reason(with_field("quantity", 1_000_001))
        == "field `quantity` must be at most 1000000, got 1000001"
    )


def test_a_repeated_field_is_ambiguous():
    payload = json.dumps(VALID)[:-1] + ', "quantity": 500}'
    assert "ambiguous: duplicate field `quantity`" in invalid_reason(payload.encode())


def test_configuration_and_logs_are_available_to_tests():
    sluice.testing.set_config("max", "5")
    assert sluice.config_or("max", 10) == 5
    sluice.testing.set_config("max", "lots")
    with pytest.raises(sluice.Invalid, match="configuration `max`"):
        sluice.config_or("max", 10)
    sluice.testing.clear_config()
    sluice.info("hello")
    assert sluice.testing.logs()[-1] == ("info", "hello")
