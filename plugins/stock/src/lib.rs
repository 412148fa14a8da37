//! The catalog handler: an order event takes the ordered quantity out of the product's stock.
//!
//! This is the logic the original catalog-service ran in its `@KafkaListener`, as a Sluice
//! plugin. The event is the order service's JSON:
//! `{"orderId","userId","productId","quantity","unitPrice","totalPrice","createdAt"}`.
//! A usable event becomes one stock adjustment `(productId, -quantity)`; anything else is an
//! `invalid-message` whose reason names the field. The plugin never panics on input.

#[allow(clippy::too_many_arguments)] // generated code
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
    });
}

use bindings::sluice::handler::types::StockAdjustment;
use bindings::{Guest, HandlerError, Message, Mutation};
use serde_json::{Map, Value};

struct Stock;

impl Guest for Stock {
    fn handle(message: Message) -> Result<Vec<Mutation>, HandlerError> {
        order_to_mutations(&message.payload)
    }
}

bindings::export!(Stock with_types_in bindings);

/// The largest quantity one order may take. Anything larger is a malformed event, not an order.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// Turn an order event's bytes into the stock mutations it implies.
pub fn order_to_mutations(payload: &[u8]) -> Result<Vec<Mutation>, HandlerError> {
    let order = parse_order(payload).map_err(HandlerError::InvalidMessage)?;
    Ok(vec![Mutation::StockAdjustment(StockAdjustment {
        product_id: order.product_id,
        delta: -order.quantity,
    })])
}

/// The fields of an order event the catalog acts on.
#[derive(Debug, PartialEq)]
pub struct OrderEvent {
    pub order_id: String,
    pub product_id: String,
    pub quantity: i64,
}

/// Parse and validate an order event; the error names what is wrong.
pub fn parse_order(payload: &[u8]) -> Result<OrderEvent, String> {
    if payload.is_empty() {
        return Err("empty payload".to_string());
    }
    let text = std::str::from_utf8(payload).map_err(|e| format!("payload is not UTF-8: {e}"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("payload is not JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "payload is JSON {} but must be an object",
            kind(&value)
        ));
    }
    // Parsed again, refusing repeated keys: `{"quantity":1,"quantity":500}` is ambiguous, and
    // different JSON parsers would disagree on what was ordered.
    let StrictObject(fields) =
        serde_json::from_str(text).map_err(|e| format!("payload is ambiguous: {e}"))?;

    let order_id = non_empty_string(&fields, "orderId")?;
    non_empty_string(&fields, "userId")?;
    let product_id = non_empty_string(&fields, "productId")?;
    let quantity = integer(&fields, "quantity")?;
    if quantity <= 0 {
        return Err(format!("field `quantity` must be positive, got {quantity}"));
    }
    if quantity > MAX_QUANTITY {
        return Err(format!(
            "field `quantity` must be at most {MAX_QUANTITY}, got {quantity}"
        ));
    }
    let unit_price = integer(&fields, "unitPrice")?;
    if unit_price < 0 {
        return Err(format!(
            "field `unitPrice` must not be negative, got {unit_price}"
        ));
    }
    integer(&fields, "totalPrice")?;
    non_empty_string(&fields, "createdAt")?;

    Ok(OrderEvent {
        order_id,
        product_id,
        quantity,
    })
}

/// A JSON object whose top-level keys are unique.
struct StrictObject(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StrictObject;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StrictObject, A::Error> {
                let mut fields = Map::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if fields.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    fields.insert(key, value);
                }
                Ok(StrictObject(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(format!("missing field `{name}`")),
        Some(value) => Ok(value),
    }
}

fn non_empty_string(fields: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(fields, name)? {
        Value::String(s) if s.trim().is_empty() => Err(format!("field `{name}` is empty")),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "field `{name}` must be a string, got {}",
            kind(other)
        )),
    }
}

fn integer(fields: &Map<String, Value>, name: &str) -> Result<i64, String> {
    match field(fields, name)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("field `{name}` must be an integer, got {n}")),
        other => Err(format!(
            "field `{name}` must be an integer, got {}",
            kind(other)
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mutations = Stock::handle(message).unwrap();
        assert_eq!(mutations.len(), 1);
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
