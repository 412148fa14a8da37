//! What a plugin's output may be: the mutations (already checked for shape), what a route
//! allows of them (emitted topics, keyed state) and the limits per record. No I/O: ingest,
//! redrive and the plugin kit check an output here before anything is decided on it.

use serde::{Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use super::tables::{Cell, TableGrant, TableLimits, TableOp, TableValue, TableWrite};
use super::{Header, ProductId, Record};

/// A change a plugin asked for, already checked for shape (not yet against the catalog, the
/// route or the key's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Mutation {
    #[serde(rename_all = "camelCase")]
    StockAdjustment { product_id: ProductId, delta: i64 },
    /// A record to publish, in the transaction that applies the message (contract 0.2). The
    /// outcome log keeps its topic, its key and its value's size and digest.
    Emit(#[serde(serialize_with = "emitted_summary")] Record),
    /// Replace the state of the message's key (contract 0.2).
    SetState(#[serde(serialize_with = "bytes_summary")] Vec<u8>),
    /// Remove the state of the message's key (contract 0.2).
    ClearState,
    /// Insert or update a row of a table declared for the route (contract 0.3).
    Upsert { table: String, row: Vec<Cell> },
    /// Delete a row of a declared table, by its primary key (contract 0.3).
    Delete { table: String, key: Vec<Cell> },
    /// Add to a numeric column of a declared table's row, made if absent (contract 0.3).
    Add {
        table: String,
        key: Vec<Cell>,
        column: String,
        delta: TableValue,
    },
}

impl Mutation {
    /// The product a stock adjustment changes.
    pub fn product(&self) -> Option<&str> {
        match self {
            Self::StockAdjustment { product_id, .. } => Some(product_id.as_str()),
            _ => None,
        }
    }

    /// A table write's table, kind and form to check (other mutations: `None`).
    pub fn table_write(&self) -> Option<(&str, TableOp, TableWrite<'_>)> {
        match self {
            Self::Upsert { table, row } => Some((table, TableOp::Upsert, TableWrite::Upsert(row))),
            Self::Delete { table, key } => Some((table, TableOp::Delete, TableWrite::Delete(key))),
            Self::Add {
                table,
                key,
                column,
                delta,
            } => Some((table, TableOp::Add, TableWrite::Add { key, column, delta })),
            _ => None,
        }
    }
}

/// What a message's mutations do to its key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange<'a> {
    Set(&'a [u8]),
    Clear,
}

impl<'a> StateChange<'a> {
    /// The key's state after the change.
    pub fn value(self) -> Option<&'a [u8]> {
        match self {
            Self::Set(value) => Some(value),
            Self::Clear => None,
        }
    }
}

/// The change `mutations` make to their key's state (the last one counts); `None`: they
/// leave it as it is.
pub fn state_change(mutations: &[Mutation]) -> Option<StateChange<'_>> {
    mutations.iter().rev().find_map(|mutation| match mutation {
        Mutation::SetState(value) => Some(StateChange::Set(value)),
        Mutation::ClearState => Some(StateChange::Clear),
        _ => None,
    })
}

/// The state of its key a plugin call was given to see (contract 0.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeenState {
    /// None to see: its route keeps no state, or its record has no key.
    #[default]
    NotGiven,
    /// The key had no state.
    Empty,
    /// The key's state.
    Value(Vec<u8>),
}

impl SeenState {
    /// The key's state as given: `None` for none to see or an empty one.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Self::Value(value) => Some(value),
            Self::NotGiven | Self::Empty => None,
        }
    }

    pub fn is_given(&self) -> bool {
        !matches!(self, Self::NotGiven)
    }

    /// What a call on a state route is given: the key's state, or that it had none.
    pub fn of(state: Option<Vec<u8>>) -> Self {
        state.map_or(Self::Empty, Self::Value)
    }
}

/// The limits on one message's emitted records and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Records one message may emit.
    pub emit_records: usize,
    /// Bytes of all of one message's emitted records (keys, values, header keys and values).
    pub emit_bytes: usize,
    /// Bytes of one key's state.
    pub state_bytes: usize,
    /// One message's table writes (contract 0.3).
    pub tables: TableLimits,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            emit_records: 16,
            emit_bytes: 256 << 10,
            state_bytes: 64 << 10,
            tables: TableLimits::default(),
        }
    }
}

/// The largest record Sluice publishes: under the 1,000,000 bytes a Kafka broker and
/// librdkafka accept by default (`message.max.bytes`), with room for the record's framing.
/// An emitted record over it is refused; a dead-letter copy is cut to it.
pub const MAX_RECORD_BYTES: usize = 900_000;

/// What one route lets its plugin's outputs do beyond stock adjustments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowances {
    /// Whether the route keeps keyed state.
    pub state: bool,
    /// Topics the plugin may emit to: exact names, or prefixes ending in `*`.
    pub emit_to: Vec<String>,
    /// Tables the plugin may write, and how (contract 0.3).
    pub tables: Vec<TableGrant>,
}

impl Allowances {
    pub fn may_emit_to(&self, topic: &str) -> bool {
        self.emit_to
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => allowed == topic,
            })
    }

    /// Why `mutations` (of a message with or without a key) are more than the route allows or
    /// the limits hold, if they are.
    pub fn check(
        &self,
        limits: &OutputLimits,
        has_key: bool,
        mutations: &[Mutation],
    ) -> Result<(), String> {
        let (mut emitted, mut emitted_bytes, mut state_changes) = (0usize, 0usize, 0usize);
        let (mut writes, mut write_bytes) = (0usize, 0usize);
        for mutation in mutations {
            match mutation {
                Mutation::Upsert { .. } | Mutation::Delete { .. } | Mutation::Add { .. } => {
                    write_bytes += self.check_table_write(limits, mutation)?;
                    writes += 1;
                }
                Mutation::StockAdjustment { .. } => {}
                Mutation::Emit(record) => {
                    if !self.may_emit_to(&record.topic) {
                        return Err(format!(
                            "emitted a record to topic `{}`, which this route may not emit to{}",
                            record.topic,
                            allowed_list(&self.emit_to)
                        ));
                    }
                    let bytes = record_bytes(record);
                    if bytes > MAX_RECORD_BYTES {
                        return Err(format!(
                            "emitted a record of {bytes} bytes to `{}`, at most {MAX_RECORD_BYTES} \
                             (a Kafka broker's default limit)",
                            record.topic
                        ));
                    }
                    if !valid_topic_name(&record.topic) {
                        return Err(format!(
                            "emitted a record to `{}`, which is not a Kafka topic name \
                             (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)",
                            record.topic
                        ));
                    }
                    emitted += 1;
                    emitted_bytes += bytes;
                }
                Mutation::SetState(value) => {
                    state_changes += 1;
                    if value.len() > limits.state_bytes {
                        return Err(format!(
                            "a state of {} bytes, at most {} allowed",
                            value.len(),
                            limits.state_bytes
                        ));
                    }
                }
                Mutation::ClearState => state_changes += 1,
            }
        }
        if emitted > limits.emit_records {
            return Err(format!(
                "{emitted} records emitted for one message, at most {} allowed",
                limits.emit_records
            ));
        }
        if emitted_bytes > limits.emit_bytes {
            return Err(format!(
                "{emitted_bytes} bytes emitted for one message, at most {} allowed",
                limits.emit_bytes
            ));
        }
        if writes > limits.tables.writes {
            return Err(format!(
                "{writes} table writes for one message, at most {} allowed",
                limits.tables.writes
            ));
        }
        if write_bytes > limits.tables.bytes {
            return Err(format!(
                "{write_bytes} bytes of table writes for one message, at most {} allowed",
                limits.tables.bytes
            ));
        }
        if state_changes > 0 {
            if !self.state {
                return Err("changed state, but this route keeps no state".into());
            }
            if !has_key {
                return Err("changed state, but the message has no key to keep it under".into());
            }
            if state_changes > 1 {
                return Err(format!(
                    "{state_changes} state changes for one message, at most one allowed"
                ));
            }
        }
        Ok(())
    }
}

impl Allowances {
    /// Whether the route may make this table write and it fits the table; its bytes if so.
    fn check_table_write(
        &self,
        limits: &OutputLimits,
        mutation: &Mutation,
    ) -> Result<usize, String> {
        let Some((table, op, write)) = mutation.table_write() else {
            return Ok(0);
        };
        let declared = || {
            let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            if names.is_empty() {
                " (it may write none)".to_string()
            } else {
                format!(" (declared: {})", names.join(", "))
            }
        };
        let grant = self
            .tables
            .iter()
            .find(|t| t.name == table || t.name == TableGrant::ANY)
            .ok_or_else(|| {
                format!(
                    "{} to table {table:?}, which this route may not write{}",
                    op.as_str(),
                    declared()
                )
            })?;
        if !grant.ops.allows(op) {
            return Err(format!(
                "{} to table {table}, which this route may only {}",
                op.as_str(),
                grant.ops
            ));
        }
        match grant.shape.as_deref() {
            Some(shape) => shape.check(write)?,
            None if grant.name == TableGrant::ANY => {}
            None => return Err(format!("table {table}'s shape is not known yet")),
        }
        let bytes: usize = match mutation {
            Mutation::Upsert { row, .. } => row.iter().map(|c| c.value.size()).sum(),
            Mutation::Delete { key, .. } => key.iter().map(|c| c.value.size()).sum(),
            Mutation::Add { key, delta, .. } => {
                key.iter().map(|c| c.value.size()).sum::<usize>() + delta.size()
            }
            _ => 0,
        };
        if bytes > limits.tables.row_bytes {
            return Err(format!(
                "{} to {table} of {bytes} bytes, at most {} per write",
                op.as_str(),
                limits.tables.row_bytes
            ));
        }
        Ok(bytes)
    }
}

/// Kafka's rule for topic names.
pub fn valid_topic_name(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn allowed_list(allowed: &[String]) -> String {
    if allowed.is_empty() {
        " (it may emit to none)".into()
    } else {
        format!(" (allowed: {})", allowed.join(", "))
    }
}

fn record_bytes(record: &Record) -> usize {
    record.key.as_ref().map_or(0, Vec::len)
        + record.payload.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// The `event-id` of the `index`-th record emitted for the message at `partition`/`offset` of
/// `topic`, decided by `group`: the same whenever that message's outcome is written, distinct
/// from every other, so a consumer that dedupes on it sees each emitted record once.
pub fn emitted_event_id(
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    index: usize,
) -> String {
    format!("{group}/{topic}/{partition}/{offset}/emit/{index}")
}

/// An emitted record as the outcome log keeps it: topic, key (as text where it is UTF-8),
/// value size and digest.
fn emitted_summary<S: Serializer>(record: &Record, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Summary<'a> {
        topic: &'a str,
        key: Option<String>,
        value_bytes: Option<usize>,
        value_digest: Option<String>,
        headers: Vec<&'a str>,
    }
    Summary {
        topic: &record.topic,
        key: record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        value_bytes: record.payload.as_ref().map(Vec::len),
        value_digest: record.payload.as_deref().map(digest),
        headers: record.headers.iter().map(|h| h.key.as_str()).collect(),
    }
    .serialize(s)
}

fn bytes_summary<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Summary {
        bytes: usize,
        digest: String,
    }
    Summary {
        bytes: value.len(),
        digest: digest(value),
    }
    .serialize(s)
}

/// The first 8 bytes of SHA-256, hex: enough to tell two values apart in a log.
fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The headers an emitted record is published with: the plugin's, without any `event-id` of
/// its own, then the host's.
pub fn emitted_headers(headers: &[Header], event_id: String) -> Vec<Header> {
    let mut out: Vec<Header> = headers
        .iter()
        .filter(|h| h.key != super::EVENT_ID_HEADER)
        .cloned()
        .collect();
    out.push(Header {
        key: super::EVENT_ID_HEADER.to_string(),
        value: Some(event_id.into_bytes()),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(topic: &str, bytes: usize) -> Mutation {
        Mutation::Emit(Record {
            topic: topic.into(),
            key: Some(b"k".to_vec()),
            payload: Some(vec![b'x'; bytes]),
            headers: Vec::new(),
        })
    }

    #[test]
    fn a_route_allows_its_topics_and_prefixes_and_nothing_else() {
        let allow = Allowances {
            state: false,
            emit_to: vec!["alerts".into(), "audit.*".into()],
            ..Allowances::default()
        };
        let limits = OutputLimits::default();
        assert_eq!(allow.check(&limits, true, &[emit("alerts", 3)]), Ok(()));
        assert_eq!(
            allow.check(&limits, true, &[emit("audit.orders", 3)]),
            Ok(())
        );
        let refused = allow
            .check(&limits, true, &[emit("payments", 3)])
            .unwrap_err();
        assert!(refused.contains("`payments`") && refused.contains("allowed: alerts, audit.*"));
        let none = Allowances::default().check(&limits, true, &[emit("alerts", 1)]);
        assert!(none.unwrap_err().contains("may emit to none"));
    }

    #[test]
    fn limits_hold_per_message() {
        let allow = Allowances {
            state: true,
            emit_to: vec!["*".into()],
            ..Allowances::default()
        };
        let limits = OutputLimits {
            emit_records: 2,
            emit_bytes: 100,
            state_bytes: 10,
            ..OutputLimits::default()
        };
        let three = vec![emit("a", 1), emit("a", 1), emit("a", 1)];
        assert!(
            allow
                .check(&limits, true, &three)
                .unwrap_err()
                .contains("3 records")
        );
        let big = vec![emit("a", 60), emit("a", 60)];
        assert!(
            allow
                .check(&limits, true, &big)
                .unwrap_err()
                .contains("bytes emitted")
        );
        let state = vec![Mutation::SetState(vec![0; 11])];
        assert!(
            allow
                .check(&limits, true, &state)
                .unwrap_err()
                .contains("11 bytes")
        );
        let twice = vec![Mutation::SetState(vec![1]), Mutation::ClearState];
        assert!(
            allow
                .check(&limits, true, &twice)
                .unwrap_err()
                .contains("at most one")
        );
        let keyless = vec![Mutation::ClearState];
        assert!(
            allow
                .check(&limits, false, &keyless)
                .unwrap_err()
                .contains("no key")
        );
        let stateless = Allowances::default().check(&limits, true, &[Mutation::ClearState]);
        assert!(stateless.unwrap_err().contains("keeps no state"));
    }

    #[test]
    fn emitted_records_carry_the_host_event_id_only() {
        let id = emitted_event_id("g", "orders", 3, 42, 1);
        assert_eq!(id, "g/orders/3/42/emit/1");
        let headers = emitted_headers(
            &[
                Header::text("event-id", "mine"),
                Header::text("kind", "alert"),
            ],
            id.clone(),
        );
        assert_eq!(
            headers,
            vec![Header::text("kind", "alert"), Header::text("event-id", id)]
        );
    }

    #[test]
    fn the_outcome_log_keeps_a_summary_of_emits_and_state() {
        let json =
            serde_json::to_value([emit("alerts", 5), Mutation::SetState(b"7".to_vec())]).unwrap();
        assert_eq!(json[0]["type"], "emit");
        assert_eq!(json[0]["topic"], "alerts");
        assert_eq!(json[0]["valueBytes"], 5);
        assert_eq!(json[1]["type"], "setState");
        assert_eq!(json[1]["bytes"], 1);
    }

    #[test]
    fn a_route_writes_only_its_declared_tables_as_declared_and_within_the_limits() {
        use super::super::tables::{Column, ColumnType, TableOps, TableShape};
        let shape = TableShape {
            name: "sales".into(),
            schema: "public".into(),
            table: "sales".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Text,
                    not_null: true,
                    has_default: false,
                    generated: false,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::BigInt,
                    not_null: false,
                    has_default: false,
                    generated: false,
                },
            ],
            key: vec![0],
        };
        let allow = Allowances {
            tables: vec![TableGrant {
                name: "sales".into(),
                ops: TableOps::parse("upsert").unwrap(),
                shape: Some(std::sync::Arc::new(shape)),
            }],
            ..Allowances::default()
        };
        let id = |v: &str| vec![Cell::new("id", TableValue::Text(v.into()))];
        let upsert = |table: &str, v: &str| Mutation::Upsert {
            table: table.into(),
            row: id(v),
        };
        let limits = OutputLimits {
            tables: TableLimits {
                writes: 2,
                row_bytes: 8,
                bytes: 12,
            },
            ..OutputLimits::default()
        };
        assert_eq!(allow.check(&limits, false, &[upsert("sales", "a")]), Ok(()));
        let refusal = |mutations: &[Mutation]| allow.check(&limits, false, mutations).unwrap_err();
        assert!(refusal(&[upsert("pg_authid", "a")]).contains("may not write (declared: sales)"));
        assert!(refusal(&[upsert("sales\"; DROP TABLE sales; --", "a")]).contains("may not write"));
        let delete = Mutation::Delete {
            table: "sales".into(),
            key: id("a"),
        };
        assert!(refusal(&[delete]).contains("may only upsert"));
        assert!(refusal(&[upsert("sales", "123456789")]).contains("at most 8 per write"));
        let three = [
            upsert("sales", "a"),
            upsert("sales", "b"),
            upsert("sales", "c"),
        ];
        assert!(refusal(&three).contains("3 table writes"));
        let big = [upsert("sales", "1234567"), upsert("sales", "1234567")];
        assert!(refusal(&big).contains("14 bytes of table writes"));
        let none = Allowances::default().check(&limits, false, &[upsert("sales", "a")]);
        assert!(none.unwrap_err().contains("it may write none"));
    }
}
