//! The order service's event, `{"orderId","userId","productId","quantity","unitPrice",
//! "totalPrice","createdAt"}`, parsed strictly: every field present and well typed, keys
//! unique, quantity in range. Errors name the field. Shared by the catalog plugins.
//!
//! One pass over the bytes, borrowing keys and strings from them: a plugin calls this for
//! every record, and in a sandbox every allocation is a call into its own allocator.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

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
    let fields = match serde_json::from_str::<Document<'_>>(text) {
        Ok(Document::Object(fields)) => fields,
        Ok(Document::Other(kind)) => {
            return Err(format!("payload is JSON {kind} but must be an object"));
        }
        // A repeated key: `{"quantity":1,"quantity":500}` is ambiguous, and different JSON
        // parsers would disagree on what was ordered.
        Err(e) if e.is_data() => return Err(format!("payload is ambiguous: {e}")),
        Err(e) => return Err(format!("payload is not JSON: {e}")),
    };

    let order_id = fields.non_empty_string("orderId")?;
    fields.non_empty_string("userId")?;
    let product_id = fields.non_empty_string("productId")?;
    let quantity = fields.integer("quantity")?;
    if quantity <= 0 {
        return Err(format!("field `quantity` must be positive, got {quantity}"));
    }
    if quantity > MAX_QUANTITY {
        return Err(format!(
            "field `quantity` must be at most {MAX_QUANTITY}, got {quantity}"
        ));
    }
    let unit_price = fields.integer("unitPrice")?;
    if unit_price < 0 {
        return Err(format!(
            "field `unitPrice` must not be negative, got {unit_price}"
        ));
    }
    fields.integer("totalPrice")?;
    fields.non_empty_string("createdAt")?;

    Ok(OrderEvent {
        order_id: order_id.into_owned(),
        product_id: product_id.into_owned(),
        quantity,
    })
}

/// A JSON document: an object's top-level fields, or what else it is.
enum Document<'a> {
    Object(Fields<'a>),
    Other(&'static str),
}

/// The top-level fields of an object, each key once.
struct Fields<'a>(Vec<(Cow<'a, str>, Value<'a>)>);

/// A top-level value, as far as an order's checks look into it.
enum Value<'a> {
    Null,
    Bool,
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array,
    Object,
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

impl<'a> Fields<'a> {
    fn field(&self, name: &str) -> Result<&Value<'a>, String> {
        match self.0.iter().find(|(key, _)| key == name) {
            None | Some((_, Value::Null)) => Err(format!("missing field `{name}`")),
            Some((_, value)) => Ok(value),
        }
    }

    fn non_empty_string(&self, name: &str) -> Result<Cow<'a, str>, String> {
        match self.field(name)? {
            Value::String(s) if s.trim().is_empty() => Err(format!("field `{name}` is empty")),
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "field `{name}` must be a string, got {}",
                other.kind()
            )),
        }
    }

    fn integer(&self, name: &str) -> Result<i64, String> {
        match self.field(name)? {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| format!("field `{name}` must be an integer, got {n}")),
            other => Err(format!(
                "field `{name}` must be an integer, got {}",
                other.kind()
            )),
        }
    }
}

/// Keys compared one by one while there are few (an order has seven), through a set beyond.
const LINEAR_KEYS: usize = 16;

impl<'de> serde::Deserialize<'de> for Document<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DocumentVisitor;
        impl<'de> Visitor<'de> for DocumentVisitor {
            type Value = Document<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document<'de>, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, Value<'de>)> = Vec::with_capacity(8);
                let mut seen: Option<HashSet<Cow<'de, str>>> = None;
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let repeated = match &mut seen {
                        Some(seen) => !seen.insert(key.clone()),
                        None => fields.iter().any(|(k, _)| *k == key),
                    };
                    if repeated {
                        return Err(de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    if seen.is_none() && fields.len() == LINEAR_KEYS {
                        let mut set: HashSet<Cow<'de, str>> =
                            fields.iter().map(|(k, _)| k.clone()).collect();
                        set.insert(key.clone());
                        seen = Some(set);
                    }
                    fields.push((key, map.next_value::<Value<'de>>()?));
                }
                Ok(Document::Object(Fields(fields)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document<'de>, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Document::Other("an array"))
            }

            fn visit_unit<E>(self) -> Result<Document<'de>, E> {
                Ok(Document::Other("null"))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Document<'de>, E> {
                Ok(Document::Other("a boolean"))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Document<'de>, E> {
                Ok(Document::Other("a number"))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Document<'de>, E> {
                Ok(Document::Other("a number"))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Document<'de>, E> {
                Ok(Document::Other("a number"))
            }

            fn visit_str<E>(self, _: &str) -> Result<Document<'de>, E> {
                Ok(Document::Other("a string"))
            }
        }
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

impl<'de> serde::Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_unit<E>(self) -> Result<Value<'de>, E> {
                Ok(Value::Null)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Value<'de>, E> {
                Ok(Value::Bool)
            }

            fn visit_i64<E>(self, n: i64) -> Result<Value<'de>, E> {
                Ok(Value::Number(n.into()))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Value<'de>, E> {
                Ok(Value::Number(n.into()))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value<'de>, E> {
                // JSON numbers are finite: serde_json never produces another.
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Owned(s.to_string())))
            }

            fn visit_string<E>(self, s: String) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Owned(s)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Value::Array)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Value::Object)
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Any JSON value, read and dropped. Through `deserialize_any`, so that the parser's nesting
/// limit holds (a document nested thousands deep is not JSON this accepts), unlike
/// `IgnoredAny`, which skips without one.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(SkipVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"orderId":"o-1","userId":"u","productId":"P-1","quantity":3,"unitPrice":10,"totalPrice":30,"createdAt":"t"}"#;

    #[test]
    fn a_valid_order_parses_with_escaped_and_plain_strings() {
        let order = parse_order(VALID.as_bytes()).unwrap();
        assert_eq!(
            order,
            OrderEvent {
                order_id: "o-1".into(),
                product_id: "P-1".into(),
                quantity: 3
            }
        );
        let escaped = VALID.replace(r#""P-1""#, r#""P\u002d1""#);
        assert_eq!(parse_order(escaped.as_bytes()).unwrap().product_id, "P-1");
        let extra = VALID.replace(r#""t"}"#, r#""t","note":{"a":[1,{"b":null}]}}"#);
        assert!(
            parse_order(extra.as_bytes()).is_ok(),
            "unknown fields are fine"
        );
    }

    #[test]
    fn repeated_keys_are_found_among_many() {
        let mut many = String::from("{");
        for i in 0..100 {
            many.push_str(&format!("\"k{i}\":{i},"));
        }
        many.push_str("\"k50\":0}");
        let error = parse_order(many.as_bytes()).unwrap_err();
        assert!(
            error.contains("ambiguous: duplicate field `k50`"),
            "{error}"
        );
        let escaped = r#"{"quantity":1,"quant\u0069ty":2}"#;
        let error = parse_order(escaped.as_bytes()).unwrap_err();
        assert!(error.contains("duplicate field `quantity`"), "{error}");
    }

    #[test]
    fn numbers_out_of_range_are_named_as_written() {
        let big = VALID.replace(r#""quantity":3"#, r#""quantity":18446744073709551615"#);
        assert_eq!(
            parse_order(big.as_bytes()).unwrap_err(),
            "field `quantity` must be an integer, got 18446744073709551615"
        );
        let huge = VALID.replace(r#""quantity":3"#, r#""quantity":1e400"#);
        assert!(
            parse_order(huge.as_bytes())
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
