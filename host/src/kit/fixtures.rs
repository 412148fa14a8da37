//! Fixtures: recorded messages with what a plugin should make of them, one JSON object per
//! line. `sluice plugin test FILE.wasm --fixtures ...` runs them through the real sandbox;
//! `sluice plugin replay` writes them from dead letters and topics.
//!
//! ```json
//! {"name": "an order", "key": "CATALOG-0001", "headers": [{"key": "event-id", "value": "o-1"}],
//!  "payload": "{\"orderId\": ...}", "config": {"max-quantity": "5"},
//!  "expect": {"mutations": [{"productId": "CATALOG-0001", "delta": -1}]}}
//! {"payload": {"base64": "/w=="}, "expect": {"error": "invalid-message", "reason": "UTF-8"}}
//! {"payload": "...", "expect": {"ok": true}}
//! {"key": "user-1", "state": "{\"count\":2}", "payload": "...",
//!  "expect": {"mutations": [{"setState": "{\"count\":3}"},
//!                          {"emit": {"topic": "alerts", "key": "user-1", "value": "..."}}]}}
//! ```
//!
//! `payload`, `key`, `state` and header values are text, `{"base64": "..."}` or `null`. `state`
//! is the key's state the call gets (contract 0.2 plugins; the fixture's route keeps state and
//! may emit anywhere). `expect` is exact mutations (in order: stock adjustments, `emit`s with
//! their topic, key and value, `setState`, `{"clearState": true}`), an error kind (and words its
//! reason contains), or `{"ok": true}`: any mutations, no error (what a replayed dead letter
//! should become once the plugin is fixed).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::domain::tables::{Cell, TableGrant, TableValue};
use crate::domain::{Allowances, Mutation};
use crate::runtime::{HandleError, Plugin, bindings};

/// Bytes as text, or base64 when they are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    Text(String),
    Base64 { base64: String },
}

impl Bytes {
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_string()),
            Err(_) => Self::Base64 {
                base64: STANDARD.encode(bytes),
            },
        }
    }

    pub fn to_vec(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Text(text) => Ok(text.clone().into_bytes()),
            Self::Base64 { base64 } => STANDARD.decode(base64).context("a base64 value"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One recorded message and what should come of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub partition: i32,
    #[serde(default)]
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Bytes>,
    /// The key's state the call gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Bytes>,
    /// Configuration values for this message (over the plugin's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    pub expect: Expect,
    /// Where the message came from and what happened to it in production (replayed
    /// fixtures); not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<serde_json::Value>,
}

fn default_topic() -> String {
    "example-order-topic".into()
}

impl Default for Expect {
    fn default() -> Self {
        Self::Ok { ok: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Mutations {
        mutations: Vec<ExpectedMutation>,
    },
    Error {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ok {
        ok: bool,
    },
}

/// A mutation as a fixture writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectedMutation {
    #[serde(rename_all = "camelCase")]
    Stock {
        product_id: String,
        delta: i64,
    },
    Emit {
        emit: ExpectedEmit,
    },
    #[serde(rename_all = "camelCase")]
    SetState {
        set_state: Bytes,
    },
    #[serde(rename_all = "camelCase")]
    ClearState {
        clear_state: bool,
    },
    Upsert {
        upsert: ExpectedWrite,
    },
    Delete {
        delete: ExpectedWrite,
    },
    Add {
        add: ExpectedWrite,
    },
}

/// A table write as a fixture writes it (contract 0.3): the table, the row or key as an
/// object of column → value (`null`, a boolean, a number, a string for text and times, any
/// other JSON for a `json` value), and for `add` the column and delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedWrite {
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<serde_json::Value>,
}

/// A column's value as a fixture writes it.
fn json_value(value: &TableValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        TableValue::Null => J::Null,
        TableValue::Boolean(b) => J::Bool(*b),
        TableValue::Int(i) => J::from(*i),
        TableValue::Float(f) => J::from(f.0),
        TableValue::Text(s) | TableValue::Timestamp(s) => J::String(s.clone()),
        TableValue::Bytes(b) => serde_json::json!({ "base64": STANDARD.encode(b) }),
        TableValue::Json(text) => serde_json::from_str(text).unwrap_or(J::String(text.clone())),
    }
}

fn json_cells(cells: &[Cell]) -> serde_json::Map<String, serde_json::Value> {
    cells
        .iter()
        .map(|c| (c.column.clone(), json_value(&c.value)))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedEmit {
    pub topic: String,
    #[serde(default)]
    pub key: Option<Bytes>,
    #[serde(default)]
    pub value: Option<Bytes>,
}

impl ExpectedMutation {
    fn of(mutation: &Mutation) -> Self {
        match mutation {
            Mutation::StockAdjustment { product_id, delta } => Self::Stock {
                product_id: product_id.to_string(),
                delta: *delta,
            },
            Mutation::Emit(record) => Self::Emit {
                emit: ExpectedEmit {
                    topic: record.topic.clone(),
                    key: record.key.as_deref().map(Bytes::of),
                    value: record.payload.as_deref().map(Bytes::of),
                },
            },
            Mutation::SetState(value) => Self::SetState {
                set_state: Bytes::of(value),
            },
            Mutation::ClearState => Self::ClearState { clear_state: true },
            Mutation::Upsert { table, row } => Self::Upsert {
                upsert: ExpectedWrite {
                    table: table.clone(),
                    row: Some(json_cells(row)),
                    key: None,
                    column: None,
                    delta: None,
                },
            },
            Mutation::Delete { table, key } => Self::Delete {
                delete: ExpectedWrite {
                    table: table.clone(),
                    row: None,
                    key: Some(json_cells(key)),
                    column: None,
                    delta: None,
                },
            },
            Mutation::Add {
                table,
                key,
                column,
                delta,
            } => Self::Add {
                add: ExpectedWrite {
                    table: table.clone(),
                    row: None,
                    key: Some(json_cells(key)),
                    column: Some(column.clone()),
                    delta: Some(json_value(delta)),
                },
            },
        }
    }
}

impl Fixture {
    pub fn message(&self) -> anyhow::Result<bindings::Message> {
        Ok(bindings::Message {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_ref().map(Bytes::to_vec).transpose()?,
            payload: self
                .payload
                .as_ref()
                .map(Bytes::to_vec)
                .transpose()?
                .unwrap_or_default(),
            headers: self
                .headers
                .iter()
                .map(|h| {
                    Ok(bindings::Header {
                        key: h.key.clone(),
                        value: h.value.as_ref().map(Bytes::to_vec).transpose()?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            timestamp_ms: None,
        })
    }

    /// The key's state the call gets.
    pub fn state(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.state.as_ref().map(Bytes::to_vec).transpose()
    }

    /// What is wrong with `got`, if anything.
    pub fn mismatch(&self, got: &Result<Vec<Mutation>, HandleError>) -> Option<String> {
        let got_mutations: Option<Vec<ExpectedMutation>> = got
            .as_ref()
            .ok()
            .map(|mutations| mutations.iter().map(ExpectedMutation::of).collect());
        let got_json = match (got, &got_mutations) {
            (_, Some(mutations)) => serde_json::json!({ "mutations": mutations }),
            (Err(e), None) => serde_json::json!({ "error": e.kind(), "reason": e.to_string() }),
            (Ok(_), None) => serde_json::Value::Null,
        };
        let ok = match (&self.expect, got) {
            (Expect::Ok { ok }, got) => *ok == got.is_ok(),
            (Expect::Mutations { mutations }, Ok(_)) => Some(mutations) == got_mutations.as_ref(),
            (Expect::Error { error, reason }, Err(e)) => {
                e.kind().as_str() == error
                    && reason
                        .as_ref()
                        .is_none_or(|words| e.to_string().contains(words.as_str()))
            }
            _ => false,
        };
        if ok {
            return None;
        }
        let expected = serde_json::to_string(&self.expect).unwrap_or_default();
        Some(format!(
            "    expected: {expected}\n         got: {}",
            serde_json::to_string(&got_json).unwrap_or_default()
        ))
    }
}

/// The fixtures of a `.jsonl` file, or of every `.jsonl` file in a directory; with where each
/// came from (`file:line`).
pub fn load(path: &Path) -> anyhow::Result<Vec<(String, Fixture)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut fixtures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let place = format!("{}:{}", file.display(), i + 1);
            let fixture: Fixture =
                serde_json::from_str(line).with_context(|| format!("{place}: not a fixture"))?;
            fixtures.push((place, fixture));
        }
    }
    Ok(fixtures)
}

/// Run `fixtures` through `plugin`; print a line per fixture, a diff per mismatch and a
/// summary. Returns how many failed.
pub fn run(plugin: &Plugin, fixtures: &[(String, Fixture)]) -> usize {
    let mut failed = 0;
    for (place, fixture) in fixtures {
        let name = fixture.name.clone().unwrap_or_else(|| place.clone());
        let message = match fixture.message() {
            Ok(message) => message,
            Err(e) => {
                failed += 1;
                println!("FAILED {name}\n    the fixture is not usable: {e:#}");
                continue;
            }
        };
        let state = match fixture.state() {
            Ok(state) => state,
            Err(e) => {
                failed += 1;
                println!("FAILED {name}\n    the fixture's state is not usable: {e:#}");
                continue;
            }
        };
        let mut config: HashMap<String, String> = plugin.config().clone();
        config.extend(fixture.config.clone());
        // A fixture's route keeps state, may emit anywhere and write any table (unchecked: no
        // catalog here): the plugin's logic is tested, not an operator's allowances.
        let route = Allowances {
            state: true,
            emit_to: vec!["*".to_string()],
            tables: vec![TableGrant::any()],
        };
        let got = plugin.handle_with(&message, state.as_deref(), &route, &Arc::new(config));
        match fixture.mismatch(&got) {
            None => println!("ok     {name}"),
            Some(diff) => {
                failed += 1;
                println!("FAILED {name} ({place})\n{diff}");
            }
        }
    }
    println!(
        "\nfixtures: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        fixtures.len() - failed
    );
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;

    fn mutation(product: &str, delta: i64) -> Mutation {
        Mutation::StockAdjustment {
            product_id: ProductId::parse(product).unwrap(),
            delta,
        }
    }

    #[test]
    fn fixtures_read_and_compare() {
        let fixture: Fixture = serde_json::from_str(
            r#"{"name":"one","key":"K","headers":[{"key":"event-id","value":"e"},
                {"key":"bin","value":{"base64":"/w=="}},{"key":"none","value":null}],
                "payload":"{}","expect":{"mutations":[{"productId":"P","delta":-1}]}}"#,
        )
        .unwrap();
        let message = fixture.message().unwrap();
        assert_eq!(message.key.as_deref(), Some(&b"K"[..]));
        assert_eq!(message.headers[1].value.as_deref(), Some(&[0xff][..]));
        assert_eq!(message.headers[2].value, None);
        assert_eq!(fixture.mismatch(&Ok(vec![mutation("P", -1)])), None);
        let diff = fixture.mismatch(&Ok(vec![mutation("P", -2)])).unwrap();
        assert!(diff.contains("expected") && diff.contains("-2"), "{diff}");

        let error: Fixture = serde_json::from_str(
            r#"{"payload":"x","expect":{"error":"invalid-message","reason":"not JSON"}}"#,
        )
        .unwrap();
        let got = Err(HandleError::InvalidMessage("payload is not JSON".into()));
        assert_eq!(error.mismatch(&got), None);
        assert!(error.mismatch(&Ok(Vec::new())).is_some());

        let any: Fixture = serde_json::from_str(r#"{"expect":{"ok":true}}"#).unwrap();
        assert_eq!(any.mismatch(&Ok(vec![mutation("P", 1)])), None);
        assert!(
            any.mismatch(&Err(HandleError::Trap("boom".into())))
                .is_some()
        );
        let round = serde_json::to_string(&fixture).unwrap();
        assert_eq!(serde_json::from_str::<Fixture>(&round).unwrap(), fixture);
    }
}
