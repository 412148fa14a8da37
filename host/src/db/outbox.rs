//! The outbox table: Kafka records committed with the change that caused them, waiting to be
//! published by the relay.

use sqlx::types::Json;

use super::Tx;
use crate::domain::{self, Header, Record};

/// Bytes of records one outbox row holds at most (a batch's records fill more rows, far under
/// PostgreSQL's 1 GB per value).
const ROW_BYTES: usize = 4 << 20;

/// Queue many records as rows of up to `ROW_BYTES`, published in order, in one statement.
pub async fn enqueue_batch(tx: &mut Tx<'_>, records: &[Record]) -> sqlx::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, record) in records.iter().enumerate() {
        let size = record.topic.len()
            + record.key.as_ref().map_or(0, Vec::len)
            + record.payload.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        if i > start && bytes + size > ROW_BYTES {
            rows.push(domain::encode_records(&records[start..i]));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    rows.push(domain::encode_records(&records[start..]));
    // Rows are numbered in the order UNNEST gives them: the records' order.
    sqlx::query("INSERT INTO outbox (records) SELECT UNNEST($1::bytea[])")
        .bind(&rows)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    topic: Option<String>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Json<Vec<Header>>,
    records: Option<Vec<u8>>,
}

/// An outbox row taken for publishing.
pub struct Claimed {
    pub id: i64,
    /// When the change that queued it committed.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its records, or why they cannot be decoded (a row written by a different build).
    pub records: Result<Vec<Record>, String>,
}

/// Take the oldest unpublished rows, skipping rows another relay holds.
pub async fn claim(tx: &mut Tx<'_>, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, created_at, topic, key, payload, headers, records FROM outbox
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
            let records = match (row.records, row.topic) {
                (Some(encoded), _) => domain::decode_records(&encoded),
                (None, Some(topic)) => Ok(vec![Record {
                    topic,
                    key: row.key,
                    payload: row.payload,
                    headers: row.headers.0,
                }]),
                (None, None) => Err("an outbox row with neither a topic nor records".into()),
            };
            Claimed {
                id: row.id,
                created_at: row.created_at,
                records,
            }
        })
        .collect())
}

/// Rows waiting to be published.
pub async fn backlog(pool: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}

pub async fn delete(tx: &mut Tx<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
