//! Plugins' keyed state: one value per plugin and record key, read before a batch's calls,
//! locked and written in the batch's transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Tx;

/// The state of `keys` (those that have one), as committed now: what a batch's calls start from.
pub async fn load(
    pool: &PgPool,
    plugin: &str,
    keys: &[&[u8]],
) -> sqlx::Result<HashMap<Vec<u8>, Vec<u8>>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key, value FROM plugin_state
         WHERE plugin = $1 AND key = ANY($2) AND value IS NOT NULL",
    )
    .bind(plugin)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Lock the state of `keys` (sorted, distinct) until the transaction ends, making a row for
/// each key that has none so that the lock holds against another member deciding it at once;
/// returns the state of those that have one.
pub async fn lock(
    tx: &mut Tx<'_>,
    plugin: &str,
    keys: &[&[u8]],
) -> sqlx::Result<HashMap<Vec<u8>, Vec<u8>>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query(
        "INSERT INTO plugin_state (plugin, key) SELECT $1, UNNEST($2::bytea[])
         ON CONFLICT DO NOTHING",
    )
    .bind(plugin)
    .bind(keys)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT key, value FROM plugin_state WHERE plugin = $1 AND key = ANY($2)
         ORDER BY key FOR UPDATE",
    )
    .bind(plugin)
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect())
}

/// Write the state of keys (locked by [`lock`]): a value, or `None` to clear it.
pub async fn write(
    tx: &mut Tx<'_>,
    plugin: &str,
    changes: &[(&[u8], Option<&[u8]>)],
) -> sqlx::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let (keys, values): (Vec<&[u8]>, Vec<Option<&[u8]>>) = changes.iter().copied().unzip();
    sqlx::query(
        "UPDATE plugin_state AS s SET value = u.value, updated_at = now()
         FROM UNNEST($2::bytea[], $3::bytea[]) AS u(key, value)
         WHERE s.plugin = $1 AND s.key = u.key",
    )
    .bind(plugin)
    .bind(&keys)
    .bind(&values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One key's state and when it was last written (`None`: the key has none).
pub async fn get(
    pool: &PgPool,
    plugin: &str,
    key: &[u8],
) -> sqlx::Result<Option<(Vec<u8>, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT value, updated_at FROM plugin_state
         WHERE plugin = $1 AND key = $2 AND value IS NOT NULL",
    )
    .bind(plugin)
    .bind(key)
    .fetch_optional(pool)
    .await
}
