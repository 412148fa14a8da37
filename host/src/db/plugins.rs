//! Plugin versions and which one is active, for the whole fleet.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Tx;

/// The channel instances LISTEN on; the payload is the plugin name.
pub const CHANNEL: &str = "sluice_plugins";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Active {
    pub name: String,
    pub version: String,
    pub previous_version: Option<String>,
    pub source: String,
    pub activated_at: DateTime<Utc>,
}

pub async fn save_version(
    tx: &mut Tx<'_>,
    name: &str,
    version: &str,
    component: &[u8],
    source: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO plugin_versions (name, version, component, source) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, version) DO UPDATE SET created_at = now()",
    )
    .bind(name)
    .bind(version)
    .bind(component)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Remove the versions of `name` beyond the `keep` newest, never the active or the previous
/// one. Returns how many were removed.
pub async fn prune_versions(tx: &mut Tx<'_>, name: &str, keep: u32) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM plugin_versions v
         WHERE v.name = $1
           AND v.version NOT IN (
               SELECT version FROM active_plugins WHERE name = $1
               UNION ALL
               SELECT previous_version FROM active_plugins
               WHERE name = $1 AND previous_version IS NOT NULL)
           AND v.version NOT IN (
               SELECT version FROM plugin_versions WHERE name = $1
               ORDER BY created_at DESC, version LIMIT $2)",
    )
    .bind(name)
    .bind(i64::from(keep))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// The active version of `name`, locked until the transaction ends.
pub async fn lock_active(tx: &mut Tx<'_>, name: &str) -> sqlx::Result<Option<Active>> {
    sqlx::query_as(
        "SELECT name, version, previous_version, source, activated_at FROM active_plugins
         WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
}

/// Make `version` active and tell every instance.
pub async fn set_active(
    tx: &mut Tx<'_>,
    name: &str,
    version: &str,
    previous_version: Option<&str>,
    source: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO active_plugins (name, version, previous_version, source, activated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,
             previous_version = EXCLUDED.previous_version, source = EXCLUDED.source,
             activated_at = EXCLUDED.activated_at",
    )
    .bind(name)
    .bind(version)
    .bind(previous_version)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    // Delivered when the transaction commits, and only then.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn list_active(pool: &PgPool) -> sqlx::Result<Vec<Active>> {
    sqlx::query_as(
        "SELECT name, version, previous_version, source, activated_at FROM active_plugins
         ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

pub async fn component(pool: &PgPool, name: &str, version: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT component FROM plugin_versions WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(pool)
        .await
}

/// Record `version` as the active one unless the fleet already has an active version of
/// `name`: the first instance to start seeds the fleet with its default. Returns whether it did.
pub async fn adopt_default(
    tx: &mut Tx<'_>,
    name: &str,
    version: &str,
    component: &[u8],
) -> sqlx::Result<bool> {
    save_version(tx, name, version, component, "default").await?;
    let done = sqlx::query(
        "INSERT INTO active_plugins (name, version, source) VALUES ($1, $2, 'default')
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}
