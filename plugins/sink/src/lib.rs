//! The zero-code sink: each record of a topic of JSON objects becomes an upsert of one row of
//! a declared table, its fields written to the columns of the same names; no code, only
//! configuration (`--plugin-config sink:KEY=VALUE`):
//!
//! - `table` (required): the table, as declared for the route (`--table TOPIC=TABLE`);
//! - `columns`: which fields go where, as `column:field` (or `column` for a field of the same
//!   name) separated by spaces; by default every top-level field, its name in snake_case
//!   (`orderId` → `order_id`);
//! - `delete-key`: a column; a tombstone (a record with no value) then deletes the row whose
//!   column is the record's key (without it a tombstone writes nothing).
//!
//! The table's primary key comes from the fields (every key column must be among them). JSON
//! values map to column values by kind: `null`, booleans, integers, other numbers, strings
//! (text, and for `timestamptz`, `date`, `uuid` and `numeric` columns what parses as one),
//! objects and arrays (`json`, `jsonb`). A field the table has no column for, or a value its
//! column cannot take, makes the record a dead letter naming them: nothing of it is written.

use sluice_plugin::prelude::*;

/// The handler.
pub fn handle(message: &Message) -> Outcome {
    let table = config("table").ok_or_else(|| {
        invalid("the sink has no `table` configured (--plugin-config sink:table=NAME)")
    })?;
    if message.payload.is_empty() {
        return tombstone(message, &table);
    }
    let record: serde_json::Value = message.json()?;
    let serde_json::Value::Object(fields) = record else {
        return Err(invalid("the record is not a JSON object"));
    };
    let row = match config("columns") {
        Some(columns) => mapped(&fields, &columns)?,
        None => fields
            .iter()
            .map(|(field, value)| Ok(cell(snake_case(field), value_of(value)?)))
            .collect::<Result<Vec<_>, HandlerError>>()?,
    };
    if row.is_empty() {
        return Err(invalid("the record has no field to write"));
    }
    Ok(vec![upsert(table, row)])
}

/// A record with no value: delete by its key, where `delete-key` names the column.
fn tombstone(message: &Message, table: &str) -> Outcome {
    let (Some(column), Some(key)) = (config("delete-key"), message.key_str()) else {
        return Ok(Vec::new());
    };
    Ok(vec![delete(table, [cell(column, key)])])
}

/// The cells `columns` (`column:field ...`) asks for; a field the record lacks is an error.
fn mapped(
    fields: &serde_json::Map<String, serde_json::Value>,
    columns: &str,
) -> Result<Vec<Cell>, HandlerError> {
    columns
        .split_whitespace()
        .map(|pair| {
            let (column, field) = pair.split_once(':').unwrap_or((pair, pair));
            let value = fields
                .get(field)
                .ok_or_else(|| invalid(format!("the record has no field `{field}`")))?;
            Ok(cell(column, value_of(value)?))
        })
        .collect()
}

/// A JSON value as a column value.
fn value_of(value: &serde_json::Value) -> Result<Value, HandlerError> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Text(s.clone()),
        J::Array(_) | J::Object(_) => json_value(value)?,
    })
}

/// `orderId` → `order_id`; `order_id` stays.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Run by the host before this version becomes active.
fn self_test() -> Result<(), String> {
    sluice_plugin::testing::set_config("table", "self_test");
    let outcome = handle(&sluice_plugin::testing::message(
        r#"{"orderId":"o-1","n":2}"#,
    ));
    sluice_plugin::testing::clear_config();
    match sluice_plugin::testing::upserted(&outcome, "self_test", "order_id") {
        Some(Value::Text(id)) if id == "o-1" => Ok(()),
        other => Err(format!("a record gave {other:?}")),
    }
}

sluice_plugin::export!(handle, self_test = self_test);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{self, table_writes, upserted};

    fn with_config<T>(pairs: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        testing::clear_config();
        for (k, v) in pairs {
            testing::set_config(k, v);
        }
        let out = f();
        testing::clear_config();
        out
    }

    const ORDER: &str = r#"{"orderId":"o-1","userId":"u-1","quantity":3,"unitPrice":1.5,"paid":true,"note":null,"tags":["a"],"createdAt":"2026-12-07T00:00:00Z"}"#;

    #[test]
    fn every_field_goes_to_its_snake_case_column() {
        let outcome = with_config(&[("table", "orders_sink")], || {
            handle(&testing::message(ORDER))
        });
        assert_eq!(
            upserted(&outcome, "orders_sink", "order_id"),
            Some(Value::Text("o-1".into()))
        );
        assert_eq!(
            upserted(&outcome, "orders_sink", "quantity"),
            Some(Value::Int(3))
        );
        assert_eq!(
            upserted(&outcome, "orders_sink", "unit_price"),
            Some(Value::Float(1.5))
        );
        assert_eq!(
            upserted(&outcome, "orders_sink", "paid"),
            Some(Value::Boolean(true))
        );
        assert_eq!(upserted(&outcome, "orders_sink", "note"), Some(Value::Null));
        assert_eq!(
            upserted(&outcome, "orders_sink", "tags"),
            Some(Value::Json(r#"["a"]"#.into()))
        );
        assert_eq!(
            upserted(&outcome, "orders_sink", "created_at"),
            Some(Value::Text("2026-12-07T00:00:00Z".into()))
        );
    }

    #[test]
    fn columns_pick_and_rename_fields() {
        let outcome = with_config(
            &[("table", "t"), ("columns", "id:orderId quantity")],
            || handle(&testing::message(ORDER)),
        );
        let writes = table_writes(&outcome);
        let [Mutation::Upsert(write)] = writes.as_slice() else {
            panic!("{outcome:?}")
        };
        let columns: Vec<&str> = write.row.iter().map(|c| c.column.as_str()).collect();
        assert_eq!(columns, ["id", "quantity"]);
        let missing = with_config(&[("table", "t"), ("columns", "id:nope")], || {
            handle(&testing::message(ORDER))
        });
        assert!(matches!(missing, Err(HandlerError::InvalidMessage(r)) if r.contains("`nope`")));
    }

    #[test]
    fn a_tombstone_deletes_by_key_where_configured_and_bad_input_is_invalid() {
        let mut tombstone = testing::message(Vec::new());
        tombstone.key = Some(b"o-1".to_vec());
        let deleted = with_config(&[("table", "t"), ("delete-key", "order_id")], || {
            handle(&tombstone)
        });
        assert!(matches!(
            table_writes(&deleted).as_slice(),
            [Mutation::Delete(_)]
        ));
        let ignored = with_config(&[("table", "t")], || handle(&tombstone));
        assert_eq!(ignored, Ok(Vec::new()));
        for bad in ["[1, 2]", "not json", "{}"] {
            let outcome = with_config(&[("table", "t")], || handle(&testing::message(bad)));
            assert!(
                matches!(outcome, Err(HandlerError::InvalidMessage(_))),
                "{bad}: {outcome:?}"
            );
        }
        let unconfigured = with_config(&[], || handle(&testing::message(ORDER)));
        assert!(
            matches!(unconfigured, Err(HandlerError::InvalidMessage(r)) if r.contains("`table`"))
        );
    }

    #[test]
    fn names_become_snake_case() {
        assert_eq!(snake_case("orderId"), "order_id");
        assert_eq!(snake_case("createdAt"), "created_at");
        assert_eq!(snake_case("order_id"), "order_id");
        assert_eq!(snake_case("ID"), "i_d");
    }

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }
}
