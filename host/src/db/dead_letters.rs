//! The dead-letter table: poison records and what redriving them did.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;

use super::Tx;
use crate::domain::{Consumed, ErrorKind, Header, Outcome};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Json<Vec<Header>>,
    pub event_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub error_kind: ErrorKind,
    pub error: String,
    pub plugin: String,
    pub plugin_version: String,
    pub created_at: DateTime<Utc>,
    pub redrive_count: i32,
    pub last_redrive_at: Option<DateTime<Utc>>,
    pub last_redrive_outcome: Option<String>,
    pub last_redrive_reason: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// The record as it was consumed.
    pub fn record(&self) -> Consumed {
        Consumed {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.0.clone(),
            timestamp_ms: None,
        }
    }
}

const COLUMNS: &str = "id, group_id, topic, partition, \"offset\", key, payload, headers, event_id, \
    error_kind, error, plugin, plugin_version, created_at, redrive_count, last_redrive_at, \
    last_redrive_outcome, last_redrive_reason, resolved_at";

/// Newest first; `before` pages backwards by id.
pub async fn list(pool: &PgPool, limit: i64, before: Option<i64>) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE ($1::bigint IS NULL OR id < $1)
         ORDER BY id DESC
         LIMIT $2"
    )))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Lock one dead letter for a redrive.
pub async fn lock(tx: &mut Tx<'_>, id: i64) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn record_redrive(
    tx: &mut Tx<'_>,
    id: i64,
    outcome: Outcome,
    reason: Option<&str>,
    resolved: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE dead_letters
         SET redrive_count = redrive_count + 1, last_redrive_at = now(),
             last_redrive_outcome = $2, last_redrive_reason = $3,
             resolved_at = CASE WHEN $4 THEN now() ELSE resolved_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(outcome.as_str())
    .bind(reason)
    .bind(resolved)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
