//! The order service's event, `{"orderId","userId","productId","quantity","unitPrice",
//! "totalPrice","createdAt"}`, parsed strictly: every field present and well typed, keys
//! unique, quantity in range. Errors name the field. Shared by the catalog plugins.

use serde_json::{Map, Value};

/// The largest quantity one order may take. Anything larger is a malformed event, not an order.
pub const MAX_QUANTITY: i64 = 1_000_000;

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
