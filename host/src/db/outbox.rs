//! The outbox table: Kafka records committed with the change that caused them, waiting to be
//! published by the relay.

use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::Tx;

/// A Kafka record as it will be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// A record header; Kafka allows binary and null values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Option<Vec<u8>>,
}

impl Header {
    pub fn text(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            value: Some(value.into().into_bytes()),
        }
    }
}

/// Queue records in the caller's transaction; they are published after it commits.
pub async fn enqueue(tx: &mut Tx<'_>, records: &[Record]) -> sqlx::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    let keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
    let payloads: Vec<Option<&[u8]>> = records.iter().map(|r| r.payload.as_deref()).collect();
    let headers: Vec<Json<&Vec<Header>>> = records.iter().map(|r| Json(&r.headers)).collect();
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])",
    )
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&headers)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Json<Vec<Header>>,
}

/// Take the oldest unpublished rows, skipping rows another relay holds.
pub async fn claim(tx: &mut Tx<'_>, limit: i64) -> sqlx::Result<Vec<(i64, Record)>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, topic, key, payload, headers FROM outbox
         ORDER BY id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let record = Record {
                topic: row.topic,
                key: row.key,
                payload: row.payload,
                headers: row.headers.0,
            };
            (row.id, record)
        })
        .collect())
}

pub async fn delete(tx: &mut Tx<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Binary header values as base64 strings in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
