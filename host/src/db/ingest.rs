//! Ingest bookkeeping: consumer positions, message outcomes, seen event ids.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use sqlx::types::Json;

use super::Tx;
use crate::domain::{Consumed, ErrorKind, Header, Outcome};

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

/// Remember these event keys (`domain::EventKeys`, sorted, distinct) as decided by this
/// transaction; for each, whether it is new (`false`: a decision of this group holds it
/// already). The events of a batch are new almost always, so all are inserted at once, in a
/// savepoint; only when one is not are the decided ones looked up and the rest inserted. A
/// member deciding one of them concurrently makes the insert wait for its commit: then the key
/// is its.
pub async fn claim_events<'k>(
    tx: &mut Tx<'_>,
    keys: impl ExactSizeIterator<Item = &'k [u8]>,
) -> sqlx::Result<Vec<bool>> {
    let keys: Vec<&[u8]> = keys.collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SAVEPOINT claim_events")
        .execute(&mut **tx)
        .await?;
    match insert_events(tx, &keys).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT claim_events")
                .execute(&mut **tx)
                .await?;
            return Ok(vec![true; keys.len()]);
        }
        Err(e) if is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT claim_events")
                .execute(&mut **tx)
                .await?;
        }
        Err(e) => return Err(e),
    }
    // One index lookup per key, whatever the planner's statistics say (the lateral `LIMIT 1`
    // keeps it from scanning the whole table, which it picks for a young table).
    let seen: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT k FROM UNNEST($1::bytea[]) AS k
         CROSS JOIN LATERAL (SELECT 1 FROM processed_events WHERE key = k LIMIT 1) AS seen",
    )
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    let seen: HashSet<Vec<u8>> = seen.into_iter().map(|(key,)| key).collect();
    let new: Vec<bool> = keys.iter().map(|key| !seen.contains(*key)).collect();
    let fresh: Vec<&[u8]> = keys
        .iter()
        .zip(&new)
        .filter(|(_, new)| **new)
        .map(|(key, _)| *key)
        .collect();
    insert_events(tx, &fresh).await?;
    Ok(new)
}

async fn insert_events(tx: &mut Tx<'_>, keys: &[&[u8]]) -> sqlx::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO processed_events (key) SELECT UNNEST($1::bytea[])")
        .bind(keys)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The outcomes of a batch, column by column (one `UNNEST` insert for the whole batch).
#[derive(Debug, Default)]
pub struct Outcomes {
    pub partition: Vec<i32>,
    pub offset: Vec<i64>,
    pub event_id: Vec<Option<String>>,
    pub outcome: Vec<Outcome>,
    pub error_kind: Vec<Option<ErrorKind>>,
    pub reason: Vec<Option<String>>,
    /// JSON text.
    pub mutations: Vec<Option<Vec<u8>>>,
}

/// The outcomes of one topic's batch, decided by one plugin version.
pub async fn record_outcomes(
    tx: &mut Tx<'_>,
    group_id: &str,
    topic: &str,
    (plugin, plugin_version): (&str, &str),
    rows: &Outcomes,
) -> sqlx::Result<()> {
    if rows.offset.is_empty() {
        return Ok(());
    }
    let mutations: Vec<Option<&str>> = rows
        .mutations
        .iter()
        .map(|m| m.as_deref().and_then(|json| std::str::from_utf8(json).ok()))
        .collect();
    let decided = rows
        .outcome
        .iter()
        .filter(|o| **o != Outcome::Duplicate)
        .count();
    let dead_lettered = rows
        .outcome
        .iter()
        .filter(|o| **o == Outcome::DeadLetter)
        .count();
    let outcomes: Vec<&str> = rows.outcome.iter().map(|o| o.as_str()).collect();
    let kinds: Vec<Option<&str>> = rows
        .error_kind
        .iter()
        .map(|k| k.map(ErrorKind::as_str))
        .collect();
    // The batch's row, then its records' (one round trip).
    sqlx::query(
        "WITH batch AS (
             INSERT INTO processed_batches (group_id, topic, plugin, plugin_version, decided,
                                            dead_lettered)
             VALUES ($1, $2, $10, $11, $12, $13) RETURNING id
         )
         INSERT INTO processed_records (batch, partition, \"offset\", event_id, outcome, error_kind,
                                        reason, mutations)
         SELECT batch.id, u.partition, u.offset, u.event_id, u.outcome, u.error_kind, u.reason,
                u.mutations::json
         FROM batch, UNNEST($3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                            $8::text[], $9::text[])
              AS u(partition, \"offset\", event_id, outcome, error_kind, reason, mutations)",
    )
    .bind(group_id)
    .bind(topic)
    .bind(&rows.partition)
    .bind(&rows.offset)
    .bind(&rows.event_id)
    .bind(&outcomes)
    .bind(&kinds)
    .bind(&rows.reason)
    .bind(&mutations)
    .bind(plugin)
    .bind(plugin_version)
    .bind(i32::try_from(decided).unwrap_or(i32::MAX))
    .bind(i32::try_from(dead_lettered).unwrap_or(i32::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A poison record, kept whole.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub record: Consumed,
    pub event_id: Option<String>,
    pub error_kind: ErrorKind,
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
    let records = rows.iter().map(|r| &r.record);
    let topics: Vec<&str> = records.clone().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = records.clone().map(|r| r.partition).collect();
    let offsets: Vec<i64> = records.clone().map(|r| r.offset).collect();
    let keys: Vec<Option<&[u8]>> = records.clone().map(|r| r.key.as_deref()).collect();
    let payloads: Vec<Option<&[u8]>> = records.clone().map(|r| r.payload.as_deref()).collect();
    let headers: Vec<Json<&Vec<Header>>> = records.map(|r| Json(&r.headers)).collect();
    let event_ids: Vec<Option<&str>> = rows.iter().map(|r| r.event_id.as_deref()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.error_kind.as_str()).collect();
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

/// Forget outcomes and event ids decided longer ago than the dedupe window. Returns how
/// many outcomes went.
pub async fn forget_events_before(
    pool: &PgPool,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "DELETE FROM processed_records r USING processed_batches b
         WHERE r.batch = b.id AND b.processed_at < $1",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM processed_batches WHERE processed_at < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
