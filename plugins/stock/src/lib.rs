//! The catalog handler: an order event takes the ordered quantity out of the product's stock.
//!
//! This is the logic the original catalog-service ran in its `@KafkaListener`, as a Sluice
//! plugin. The event is the order service's JSON:
//! `{"orderId","userId","productId","quantity","unitPrice","totalPrice","createdAt"}`.
//! A usable event becomes one stock adjustment `(productId, -quantity)`; anything else is an
//! `invalid-message` whose reason names the field. The plugin never panics on input.

pub use sluice_plugin::order::{MAX_QUANTITY, OrderEvent, parse_order};
use sluice_plugin::prelude::*;

/// The handler: an order event becomes one stock adjustment.
pub fn handle(message: &Message) -> Outcome {
    order_to_mutations(&message.payload)
}

/// Turn an order event's bytes into the stock mutations it implies.
pub fn order_to_mutations(payload: &[u8]) -> Outcome {
    let order = parse_order(payload).map_err(invalid)?;
    Ok(vec![stock(order.product_id, -order.quantity)])
}

/// Run by the host before this version becomes active.
fn self_test() -> Result<(), String> {
    let sample = br#"{"orderId":"self-test","userId":"u","productId":"P-1","quantity":3,
        "unitPrice":10,"totalPrice":30,"createdAt":"2026-01-01T00:00:00Z"}"#;
    let mutations =
        order_to_mutations(sample).map_err(|e| format!("a valid order failed: {e:?}"))?;
    match mutations.as_slice() {
        [Mutation::StockAdjustment(a)] if a.product_id == "P-1" && a.delta == -3 => {}
        other => return Err(format!("a 3-unit order gave {other:?}")),
    }
    match order_to_mutations(b"not json") {
        Err(HandlerError::InvalidMessage(_)) => Ok(()),
        other => Err(format!("non-JSON gave {other:?}")),
    }
}

sluice_plugin::export!(handle, self_test = self_test);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    const VALID: &str = r#"{"orderId":"2f1c","userId":"user-1","productId":"CATALOG-0001",
        "quantity":10,"unitPrice":1500,"totalPrice":15000,"createdAt":"2026-11-25T07:00:00Z"}"#;

    fn with(field: &str, value: &str) -> Vec<u8> {
        let mut order: Map<String, Value> = serde_json::from_str(VALID).unwrap();
        match value {
            "<absent>" => {
                order.remove(field);
            }
            json => {
                order.insert(field.to_string(), serde_json::from_str(json).unwrap());
            }
        }
        serde_json::to_vec(&order).unwrap()
    }

    fn invalid_reason(payload: &[u8]) -> String {
        match order_to_mutations(payload) {
            Err(HandlerError::InvalidMessage(reason)) => reason,
            other => panic!("expected invalid-message, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_order_takes_its_quantity_out_of_stock() {
        let mutations = order_to_mutations(VALID.as_bytes()).unwrap();
        assert_eq!(mutations.len(), 1);
        let Mutation::StockAdjustment(adjustment) = &mutations[0];
        assert_eq!(adjustment.product_id, "CATALOG-0001");
        assert_eq!(adjustment.delta, -10);
    }

    #[test]
    fn the_handler_export_reads_the_message_payload() {
        let message = Message {
            topic: "example-order-topic".into(),
            partition: 0,
            offset: 7,
            key: Some(b"CATALOG-0001".to_vec()),
            payload: VALID.as_bytes().to_vec(),
            headers: vec![],
            timestamp_ms: None,
        };
        let mutations = handle(&message).unwrap();
        assert_eq!(mutations.len(), 1);
    }

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }

    #[test]
    fn empty_payload_is_invalid() {
        assert_eq!(invalid_reason(b""), "empty payload");
    }

    #[test]
    fn non_utf8_is_invalid() {
        assert!(invalid_reason(&[0xff, 0xfe, 0x00]).contains("not UTF-8"));
    }

    #[test]
    fn non_json_is_invalid() {
        assert!(invalid_reason(b"order for 10 berlins").contains("not JSON"));
    }

    #[test]
    fn json_that_is_not_an_object_is_invalid() {
        assert!(invalid_reason(b"[1,2,3]").contains("JSON an array"));
        assert!(invalid_reason(b"null").contains("JSON null"));
        assert!(invalid_reason(b"42").contains("JSON a number"));
    }

    #[test]
    fn each_missing_field_is_named() {
        for field in [
            "orderId",
            "userId",
            "productId",
            "quantity",
            "unitPrice",
            "totalPrice",
            "createdAt",
        ] {
            let reason = invalid_reason(&with(field, "<absent>"));
            assert_eq!(reason, format!("missing field `{field}`"));
            let reason = invalid_reason(&with(field, "null"));
            assert_eq!(reason, format!("missing field `{field}`"));
        }
    }

    #[test]
    fn ill_typed_fields_are_named() {
        assert_eq!(
            invalid_reason(&with("productId", "17")),
            "field `productId` must be a string, got a number"
        );
        assert_eq!(
            invalid_reason(&with("quantity", r#""10""#)),
            "field `quantity` must be an integer, got a string"
        );
        assert_eq!(
            invalid_reason(&with("quantity", "2.5")),
            "field `quantity` must be an integer, got 2.5"
        );
        assert_eq!(
            invalid_reason(&with("productId", r#""  ""#)),
            "field `productId` is empty"
        );
        assert_eq!(
            invalid_reason(&with("unitPrice", "true")),
            "field `unitPrice` must be an integer, got a boolean"
        );
    }

    #[test]
    fn quantity_must_be_positive_and_bounded() {
        assert_eq!(
            invalid_reason(&with("quantity", "0")),
            "field `quantity` must be positive, got 0"
        );
        assert_eq!(
            invalid_reason(&with("quantity", "-3")),
            "field `quantity` must be positive, got -3"
        );
        assert!(invalid_reason(&with("quantity", "1000001")).contains("at most 1000000"));
        assert!(invalid_reason(&with("quantity", "99999999999999999999")).contains("integer"));
    }

    #[test]
    fn repeated_keys_are_invalid() {
        let payload = VALID.replace(r#""quantity":10"#, r#""quantity":10,"quantity":500"#);
        assert!(invalid_reason(payload.as_bytes()).contains("duplicate field `quantity`"));
    }

    #[test]
    fn deeply_nested_json_is_invalid_not_a_crash() {
        let payload = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(invalid_reason(payload.as_bytes()).contains("not JSON"));
    }

    #[test]
    fn negative_unit_price_is_invalid() {
        assert_eq!(
            invalid_reason(&with("unitPrice", "-1")),
            "field `unitPrice` must not be negative, got -1"
        );
    }
}
