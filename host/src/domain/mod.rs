//! The vocabulary both flows share, validated at the edge; no I/O here: ids, orders and
//! their statuses, mutations and what a route allows of them, the records Sluice consumes and
//! produces, what became of them (outcomes, error kinds), routes.

mod codec;
mod outcome;
mod output;
mod plugin_name;
mod records;
mod routes;
pub mod tables;
mod verdicts;

pub use outcome::{ErrorKind, Outcome};
pub use output::{
    Allowances, MAX_RECORD_BYTES, Mutation, OutputLimits, SeenState, StateChange, emitted_event_id,
    emitted_headers, state_change, valid_topic_name,
};
pub use plugin_name::PluginName;
pub use records::{Consumed, EventKeys, Header, Record, decode_records, encode_records};
pub use routes::Routes;
pub use verdicts::{
    StatusEvent, VERDICTS_CONTENT_TYPE, VerdictsWriter, decode_verdicts, encode_verdicts,
};

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value from outside failed validation; the message names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

/// The longest identifier (product, user) the service accepts.
pub const MAX_ID_LEN: usize = 255;

/// The largest quantity one order may ask for.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// The largest unit price (in minor units): with [`MAX_QUANTITY`], every order's total fits.
pub const MAX_UNIT_PRICE: i64 = i64::MAX / MAX_QUANTITY;

/// A unit price: 0 to [`MAX_UNIT_PRICE`].
pub fn check_unit_price(unit_price: i64) -> Result<i64, ValidationError> {
    if unit_price < 0 {
        return Err(ValidationError(format!(
            "`unitPrice` must not be negative, got {unit_price}"
        )));
    }
    if unit_price > MAX_UNIT_PRICE {
        return Err(ValidationError(format!(
            "`unitPrice` must be at most {MAX_UNIT_PRICE}, got {unit_price}"
        )));
    }
    Ok(unit_price)
}

/// A catalog product's id, e.g. `CATALOG-0001`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        parse_id("productId", raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's id, e.g. `user-1`.
pub fn parse_user_id(raw: &str) -> Result<String, ValidationError> {
    parse_id("userId", raw)
}

/// An identifier: 1 to 255 bytes, no control characters (NUL included) and no invisible
/// format characters (zero-width space, bidirectional overrides...), which would let two
/// different ids look the same.
fn parse_id(field: &str, raw: &str) -> Result<String, ValidationError> {
    let name = parse_name(field, raw)?;
    if let Some(c) = raw.chars().find(|c| is_format_char(*c)) {
        return Err(ValidationError(format!(
            "`{field}` must not contain invisible format characters, found U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(name)
}

/// A display name: 1 to 255 bytes, no control characters (NUL included).
pub fn parse_name(field: &str, raw: &str) -> Result<String, ValidationError> {
    if raw.trim().is_empty() {
        return Err(ValidationError(format!("`{field}` must not be empty")));
    }
    if raw.len() > MAX_ID_LEN {
        return Err(ValidationError(format!(
            "`{field}` must be at most {MAX_ID_LEN} bytes"
        )));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(ValidationError(format!(
            "`{field}` must not contain control characters, found U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(raw.to_string())
}

/// Unicode general category Cf (format characters), Unicode 16, as inclusive ranges.
pub const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format_char(c: char) -> bool {
    let c = u32::from(c);
    FORMAT_CHARS
        .iter()
        .any(|&(low, high)| (low..=high).contains(&c))
}

/// A validated order request.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: String,
    pub product_id: ProductId,
    pub quantity: i32,
    pub unit_price: i64,
}

impl NewOrder {
    pub fn parse(
        user_id: &str,
        product_id: &str,
        quantity: i64,
        unit_price: i64,
    ) -> Result<Self, ValidationError> {
        let user_id = parse_user_id(user_id)?;
        let product_id = ProductId::parse(product_id)?;
        if quantity <= 0 {
            return Err(ValidationError(format!(
                "`quantity` must be positive, got {quantity}"
            )));
        }
        if quantity > MAX_QUANTITY {
            return Err(ValidationError(format!(
                "`quantity` must be at most {MAX_QUANTITY}, got {quantity}"
            )));
        }
        let unit_price = check_unit_price(unit_price)?;
        let quantity = i32::try_from(quantity)
            .map_err(|_| ValidationError(format!("`quantity` out of range: {quantity}")))?;
        let order = Self {
            user_id,
            product_id,
            quantity,
            unit_price,
        };
        order.total_price()?;
        Ok(order)
    }

    pub fn total_price(&self) -> Result<i64, ValidationError> {
        self.unit_price
            .checked_mul(i64::from(self.quantity))
            .ok_or_else(|| ValidationError("`unitPrice` × `quantity` overflows".into()))
    }
}

/// Where an order stands, as the catalog side reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Applied,
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Applied => "APPLIED",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "PENDING" => Some(Self::Pending),
            "APPLIED" => Some(Self::Applied),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// The event the order flow publishes and the stock plugin consumes
/// (the original order-service's JSON, field for field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub order_id: Uuid,
    pub user_id: String,
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: i64,
    pub total_price: i64,
    pub created_at: String,
}

/// The record header producers put the event id in: the dedupe key.
pub const EVENT_ID_HEADER: &str = "event-id";

/// Timestamps on the wire: RFC 3339, UTC, milliseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_validation_names_the_field() {
        let err = |u: &str, p: &str, q: i64, price: i64| {
            NewOrder::parse(u, p, q, price).unwrap_err().to_string()
        };
        assert!(err("", "CATALOG-0001", 1, 1).contains("userId"));
        assert!(err("u", " ", 1, 1).contains("productId"));
        assert!(err("u", "CATALOG-0001", 0, 1).contains("quantity"));
        assert!(err("u", "CATALOG-0001", 2_000_000, 1).contains("quantity"));
        assert!(err("u", "CATALOG-0001", 1, -1).contains("unitPrice"));
        assert!(err("u", "CATALOG-0001", 1, MAX_UNIT_PRICE + 1).contains("unitPrice"));
        let most = NewOrder::parse("u", "CATALOG-0001", MAX_QUANTITY, MAX_UNIT_PRICE).unwrap();
        assert!(most.total_price().is_ok(), "the largest order's total fits");
        assert!(err("u", &"x".repeat(300), 1, 1).contains("at most"));
    }

    #[test]
    fn ids_refuse_control_and_invisible_characters() {
        for bad in [
            "CATALOG\u{0}1",
            "CATALOG-0001\n",
            "CATALOG-0001\u{200B}",
            "\u{202E}1000-GOLATAC",
            "A\u{FEFF}",
        ] {
            let err = ProductId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("productId"), "{bad:?}: {err}");
            assert!(err.contains("U+"), "names the character: {err}");
        }
        assert!(
            ProductId::parse("Café-Ünïcode-東京").is_ok(),
            "letters are fine"
        );
        assert!(
            parse_user_id("user\u{0}")
                .unwrap_err()
                .to_string()
                .contains("userId")
        );
        assert!(
            parse_name("productName", "Zürich \u{200B}").is_ok(),
            "names may hold Cf"
        );
        assert!(parse_name("productName", "a\u{0}b").is_err());
    }

    #[test]
    fn a_valid_order_has_a_total() {
        let order = NewOrder::parse("user-1", "CATALOG-0001", 10, 1500).unwrap();
        assert_eq!(order.total_price(), Ok(15_000));
    }
}
