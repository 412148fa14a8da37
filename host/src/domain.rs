//! The vocabulary both flows share, validated at the edge; no I/O here.

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

fn parse_id(field: &str, raw: &str) -> Result<String, ValidationError> {
    if raw.trim().is_empty() {
        return Err(ValidationError(format!("`{field}` must not be empty")));
    }
    if raw.len() > MAX_ID_LEN {
        return Err(ValidationError(format!(
            "`{field}` must be at most {MAX_ID_LEN} bytes"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(ValidationError(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(raw.to_string())
}

/// A change a plugin asked for, already checked for shape (not yet against the catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Mutation {
    #[serde(rename_all = "camelCase")]
    StockAdjustment { product_id: ProductId, delta: i64 },
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
        let user_id = parse_id("userId", user_id)?;
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
        if unit_price < 0 {
            return Err(ValidationError(format!(
                "`unitPrice` must not be negative, got {unit_price}"
            )));
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The catalog side's verdict on an order, reported back on the status topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// The order event's `event-id` (its order id).
    pub order_id: String,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Decided by a dead-letter redrive, after an earlier rejection.
    #[serde(default)]
    pub redriven: bool,
}

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
        assert!(err("u", "CATALOG-0001", 1_000_000, i64::MAX).contains("overflows"));
        assert!(err("u", &"x".repeat(300), 1, 1).contains("at most"));
    }

    #[test]
    fn a_valid_order_has_a_total() {
        let order = NewOrder::parse("user-1", "CATALOG-0001", 10, 1500).unwrap();
        assert_eq!(order.total_price(), Ok(15_000));
    }
}
