//! What contract 0.3 adds to the SDK: writes to the team's own tables (`upsert`, `delete`,
//! `add`) on tables the operator declared for the route, and their test helpers. Not in the
//! builds against contracts 0.2 and 0.1 (`sluice-plugin-v0-2`, `sluice-plugin-v0-1`).
//!
//! ```ignore
//! fn handle(message: &Message) -> Outcome {
//!     let order = message.order()?;
//!     Ok(vec![
//!         upsert("user_orders", [
//!             cell("order_id", order.order_id.as_str()),
//!             cell("user_id", order.user_id.as_str()),
//!             cell("quantity", order.quantity),
//!             cell("created_at", timestamp(&order.created_at)),
//!         ]),
//!         add("product_sales", [cell("product_id", order.product_id.as_str())], "units", order.quantity),
//!     ])
//! }
//! ```

pub use crate::bindings::sluice::handler::types::{Add, Cell, Delete, Upsert, Value};
pub(crate) use crate::since_0_2::stock_adjustment;
use crate::{HandlerError, Mutation, invalid};

/// A column and its value: `cell("quantity", 3)`, `cell("note", None::<&str>)` for `NULL`.
pub fn cell(column: impl Into<String>, value: impl Into<Value>) -> Cell {
    Cell {
        column: column.into(),
        value: value.into(),
    }
}

/// Insert the row, or update the row with the same primary key (the columns given take these
/// values; on an insert the others take their defaults). `row` names every key column.
pub fn upsert(table: impl Into<String>, row: impl IntoIterator<Item = Cell>) -> Mutation {
    Mutation::Upsert(Upsert {
        table: table.into(),
        row: row.into_iter().collect(),
    })
}

/// Delete the row with this primary key (every key column, no other).
pub fn delete(table: impl Into<String>, key: impl IntoIterator<Item = Cell>) -> Mutation {
    Mutation::Delete(Delete {
        table: table.into(),
        key: key.into_iter().collect(),
    })
}

/// Add `delta` to `column` of the row with this primary key (made if absent): a counter
/// applied once per message, exactly once.
pub fn add(
    table: impl Into<String>,
    key: impl IntoIterator<Item = Cell>,
    column: impl Into<String>,
    delta: impl Into<Value>,
) -> Mutation {
    Mutation::Add(Add {
        table: table.into(),
        key: key.into_iter().collect(),
        column: column.into(),
        delta: delta.into(),
    })
}

/// A time for a `timestamptz` or `timestamp` column, as RFC 3339 with its offset
/// (`2026-12-07T18:27:22.211Z`; the order event's `createdAt` is one).
pub fn timestamp(rfc3339: impl Into<String>) -> Value {
    Value::Timestamp(rfc3339.into())
}

/// `value` as JSON, for a `json` or `jsonb` column.
pub fn json_value<T: serde::Serialize>(value: &T) -> Result<Value, HandlerError> {
    serde_json::to_string(value)
        .map(Value::Json)
        .map_err(|e| invalid(format!("a JSON value: {e}")))
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Int(i.into())
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Self::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Self::Text(s.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}

/// `None` is SQL `NULL`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// What the prelude adds on contract 0.3 (and what 0.2 added).
pub mod prelude {
    pub use super::{Cell, Value, add, cell, delete, json_value, timestamp, upsert};
    pub use crate::since_0_2::prelude::*;
}

/// What `testing` adds on contract 0.3 (and what 0.2 added): an outcome's table writes.
pub mod testing {
    pub use crate::since_0_2::testing::*;
    use crate::{Mutation, Outcome};

    /// The table writes of an outcome (upserts, deletes, adds), in order.
    pub fn table_writes(outcome: &Outcome) -> Vec<Mutation> {
        let Ok(mutations) = outcome else {
            return Vec::new();
        };
        mutations
            .iter()
            .filter(|m| {
                matches!(
                    m,
                    Mutation::Upsert(_) | Mutation::Delete(_) | Mutation::Add(_)
                )
            })
            .cloned()
            .collect()
    }

    /// The value of `column` in the first upsert to `table`, if there is one.
    pub fn upserted(outcome: &Outcome, table: &str, column: &str) -> Option<super::Value> {
        table_writes(outcome).into_iter().find_map(|m| match m {
            Mutation::Upsert(u) if u.table == table => u
                .row
                .into_iter()
                .find(|c| c.column == column)
                .map(|c| c.value),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::testing;
    use crate::{Message, MessageExt, Outcome};

    #[test]
    fn table_writes_are_built_from_plain_values() {
        fn handle(message: &Message) -> Outcome {
            let product = message.key_str().unwrap_or("none");
            Ok(vec![
                upsert(
                    "sales_log",
                    [
                        cell("id", 7),
                        cell("product", product),
                        cell("note", None::<&str>),
                        cell("at", timestamp("2026-12-07T00:00:00Z")),
                        cell("doc", json_value(&serde_json::json!({"a": 1}))?),
                    ],
                ),
                add("product_sales", [cell("product", product)], "units", 2),
                delete("stale", [cell("id", 1_i64)]),
            ])
        }
        let outcome = handle(&testing::order("o-1", "P-1", 2));
        assert_eq!(table_writes(&outcome).len(), 3);
        assert_eq!(
            upserted(&outcome, "sales_log", "product"),
            Some(Value::Text("P-1".into()))
        );
        assert_eq!(upserted(&outcome, "sales_log", "note"), Some(Value::Null));
        assert_eq!(
            upserted(&outcome, "sales_log", "doc"),
            Some(Value::Json(r#"{"a":1}"#.into()))
        );
    }
}
