//! Ingest bookkeeping: consumer positions, message outcomes, seen event ids.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use sqlx::types::Json;

use super::Tx;
use super::outbox::Header;

/// Create any missing position rows and lock all of them, in partition order, for the
/// rest of the transaction. Returns partition → next offset to apply.
///
/// The lock is the fence between consumers: a stale owner that still holds a batch waits
/// here, then sees the position its successor committed and skips what was applied.
pub async fn lock_positions(
    tx: &mut Tx<'_>,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
) -> sqlx::Result<HashMap<i32, i64>> {
    sqlx::query(
        "INSERT INTO consumer_positions (group_id, topic, partition, next_offset)
         SELECT $1, $2, p, 0 FROM UNNEST($3::int[]) AS p
         ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(topic)
    .bind(partitions)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_positions
         WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)
         ORDER BY partition
         FOR UPDATE",
    )
    .bind(group_id)
    .bind(topic)
    .bind(partitions)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The stored positions, to resume from on partition assignment.
pub async fn load_positions(
    pool: &PgPool,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
) -> sqlx::Result<HashMap<i32, i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_positions
         WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)",
    )
    .bind(group_id)
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

pub async fn set_positions(
    tx: &mut Tx<'_>,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
    next_offsets: &[i64],
) -> sqlx::Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE consumer_positions AS c
         SET next_offset = u.next_offset, updated_at = now()
         FROM UNNEST($3::int[], $4::bigint[]) AS u(partition, next_offset)
         WHERE c.group_id = $1 AND c.topic = $2 AND c.partition = u.partition
           AND c.next_offset < u.next_offset",
    )
    .bind(group_id)
    .bind(topic)
    .bind(partitions)
    .bind(next_offsets)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Which of these event ids this group has already decided.
pub async fn seen_events(
    tx: &mut Tx<'_>,
    group_id: &str,
    event_ids: &[String],
) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT event_id FROM processed_events WHERE group_id = $1 AND event_id = ANY($2)",
    )
    .bind(group_id)
    .bind(event_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn record_events(
    tx: &mut Tx<'_>,
    group_id: &str,
    event_ids: &[String],
) -> sqlx::Result<()> {
    if event_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO processed_events (group_id, event_id)
         SELECT $1, e FROM UNNEST($2::text[]) AS e
         ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(event_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The outcomes of a batch, column by column (one `UNNEST` insert for the whole batch).
#[derive(Debug, Default)]
pub struct Outcomes {
    pub partition: Vec<i32>,
    pub offset: Vec<i64>,
    pub event_id: Vec<Option<String>>,
    pub outcome: Vec<&'static str>,
    pub error_kind: Vec<Option<&'static str>>,
    pub reason: Vec<Option<String>>,
    pub mutations: Vec<Option<serde_json::Value>>,
    pub plugin: Vec<String>,
    pub plugin_version: Vec<String>,
}

pub async fn record_outcomes(
    tx: &mut Tx<'_>,
    group_id: &str,
    topic: &str,
    rows: &Outcomes,
) -> sqlx::Result<()> {
    if rows.offset.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO processed_messages (group_id, topic, partition, \"offset\", event_id, outcome,
                                         error_kind, reason, mutations, plugin, plugin_version)
         SELECT $1, $2, u.* FROM UNNEST($3::int[], $4::bigint[], $5::text[], $6::text[],
                                       $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::text[]) AS u",
    )
    .bind(group_id)
    .bind(topic)
    .bind(&rows.partition)
    .bind(&rows.offset)
    .bind(&rows.event_id)
    .bind(&rows.outcome)
    .bind(&rows.error_kind)
    .bind(&rows.reason)
    .bind(&rows.mutations)
    .bind(&rows.plugin)
    .bind(&rows.plugin_version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A poison record, kept whole.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub event_id: Option<String>,
    pub error_kind: &'static str,
    pub error: String,
}

pub async fn insert_dead_letters(
    tx: &mut Tx<'_>,
    group_id: &str,
    plugin: &str,
    plugin_version: &str,
    rows: &[DeadLetterRow],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = rows.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
    let keys: Vec<Option<&[u8]>> = rows.iter().map(|r| r.key.as_deref()).collect();
    let payloads: Vec<Option<&[u8]>> = rows.iter().map(|r| r.payload.as_deref()).collect();
    let headers: Vec<Json<&Vec<Header>>> = rows.iter().map(|r| Json(&r.headers)).collect();
    let event_ids: Vec<Option<&str>> = rows.iter().map(|r| r.event_id.as_deref()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.error_kind).collect();
    let errors: Vec<&str> = rows.iter().map(|r| r.error.as_str()).collect();
    sqlx::query(
        "INSERT INTO dead_letters (group_id, plugin, plugin_version, topic, partition, \"offset\",
                                   key, payload, headers, event_id, error_kind, error)
         SELECT $1, $2, $3, u.* FROM UNNEST($4::text[], $5::int[], $6::bigint[], $7::bytea[],
                $8::bytea[], $9::jsonb[], $10::text[], $11::text[], $12::text[]) AS u
         ON CONFLICT (group_id, topic, partition, \"offset\") DO NOTHING",
    )
    .bind(group_id)
    .bind(plugin)
    .bind(plugin_version)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&keys)
    .bind(&payloads)
    .bind(&headers)
    .bind(&event_ids)
    .bind(&kinds)
    .bind(&errors)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forget event ids decided longer ago than the dedupe window.
pub async fn forget_events_before(
    pool: &PgPool,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
