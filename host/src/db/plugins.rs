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
    /// A candidate running in the shadow of the active version.
    pub shadow_version: Option<String>,
    /// Whether the guard watches this plugin's new versions.
    pub guard: bool,
    /// `watching`, `passed` or `rolled-back`; `None` when there is nothing to watch.
    pub guard_state: Option<String>,
    /// The version the guard state is about (after a rollback: the version rolled back).
    pub guard_version: Option<String>,
    pub guard_reason: Option<String>,
    pub guard_changed_at: Option<DateTime<Utc>>,
}

const ACTIVE: &str = "name, version, previous_version, source, activated_at, shadow_version, \
                      guard, guard_state, guard_version, guard_reason, guard_changed_at";

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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACTIVE} FROM active_plugins WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
}

/// Tell every instance that plugin `name` changed (delivered when the transaction commits).
pub async fn notify(tx: &mut Tx<'_>, name: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Run `version` (or nothing) in the shadow of `name`'s active version, fleet-wide.
pub async fn set_shadow(tx: &mut Tx<'_>, name: &str, version: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE active_plugins SET shadow_version = $2,
             shadow_since = CASE WHEN $2::text IS NULL THEN NULL ELSE now() END
         WHERE name = $1",
    )
    .bind(name)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    notify(tx, name).await
}

/// Forget plugin `name`: its active version and every stored version.
pub async fn delete(tx: &mut Tx<'_>, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM active_plugins WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    for table in [
        "plugin_versions",
        "plugin_shadow_stats",
        "plugin_shadow_differences",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE name = $1"
        )))
        .bind(name)
        .execute(&mut **tx)
        .await?;
    }
    notify(tx, name).await?;
    Ok(done.rows_affected() > 0)
}

/// What a batch's shadow comparison adds to the tally.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowTally {
    pub name: String,
    pub shadow_version: String,
    pub compared: i64,
    pub agreed: i64,
    /// (topic, partition, offset, active output, shadow output)
    pub differences: Vec<(String, i32, i64, serde_json::Value, serde_json::Value)>,
}

/// Differences kept per candidate.
const KEPT_DIFFERENCES: i64 = 20;

pub async fn record_shadow(tx: &mut Tx<'_>, tally: &ShadowTally) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO plugin_shadow_stats (name, shadow_version, compared, agreed)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, shadow_version) DO UPDATE
             SET compared = plugin_shadow_stats.compared + EXCLUDED.compared,
                 agreed = plugin_shadow_stats.agreed + EXCLUDED.agreed",
    )
    .bind(&tally.name)
    .bind(&tally.shadow_version)
    .bind(tally.compared)
    .bind(tally.agreed)
    .execute(&mut **tx)
    .await?;
    for (topic, partition, offset, active, shadow) in &tally.differences {
        sqlx::query(
            "INSERT INTO plugin_shadow_differences
                 (name, shadow_version, topic, partition, \"offset\", active, shadow)
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE (SELECT count(*) FROM plugin_shadow_differences
                    WHERE name = $1 AND shadow_version = $2) < $8",
        )
        .bind(&tally.name)
        .bind(&tally.shadow_version)
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .bind(sqlx::types::Json(active))
        .bind(sqlx::types::Json(shadow))
        .bind(KEPT_DIFFERENCES)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A candidate's tally so far.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShadowStats {
    pub compared: i64,
    pub agreed: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShadowDifference {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub active: sqlx::types::Json<serde_json::Value>,
    pub shadow: sqlx::types::Json<serde_json::Value>,
    pub noted_at: DateTime<Utc>,
}

pub async fn shadow_report(
    pool: &PgPool,
    name: &str,
    version: &str,
) -> sqlx::Result<(ShadowStats, Vec<ShadowDifference>)> {
    let stats = sqlx::query_as(
        "SELECT compared, agreed FROM plugin_shadow_stats WHERE name = $1 AND shadow_version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?
    .unwrap_or(ShadowStats {
        compared: 0,
        agreed: 0,
    });
    let differences = sqlx::query_as(
        "SELECT topic, partition, \"offset\", active, shadow, noted_at
         FROM plugin_shadow_differences WHERE name = $1 AND shadow_version = $2 ORDER BY id",
    )
    .bind(name)
    .bind(version)
    .fetch_all(pool)
    .await?;
    Ok((stats, differences))
}

/// Make `version` active and tell every instance. The guard watches it unless it comes back
/// by a rollback.
pub async fn set_active(
    tx: &mut Tx<'_>,
    name: &str,
    version: &str,
    previous_version: Option<&str>,
    source: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO active_plugins (name, version, previous_version, source, activated_at,
                                     guard_state, guard_version, guard_changed_at)
         VALUES ($1, $2, $3, $4, now(),
                 CASE WHEN $4 = 'rollback' THEN NULL ELSE 'watching' END, $2, now())
         ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,
             previous_version = EXCLUDED.previous_version, source = EXCLUDED.source,
             activated_at = EXCLUDED.activated_at, shadow_version = NULL, shadow_since = NULL,
             guard_state = EXCLUDED.guard_state, guard_version = EXCLUDED.guard_version,
             guard_reason = NULL, guard_changed_at = EXCLUDED.guard_changed_at",
    )
    .bind(name)
    .bind(version)
    .bind(previous_version)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    // Delivered when the transaction commits, and only then.
    notify(tx, name).await
}

pub async fn list_active(pool: &PgPool) -> sqlx::Result<Vec<Active>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACTIVE} FROM active_plugins ORDER BY name"
    )))
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

/// Turn the guard of plugin `name` on or off, and tell every instance.
pub async fn set_guard(tx: &mut Tx<'_>, name: &str, enabled: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE active_plugins SET guard = $2 WHERE name = $1")
        .bind(name)
        .bind(enabled)
        .execute(&mut **tx)
        .await?;
    notify(tx, name).await
}

/// The active versions the guard watches: guard on, state `watching`.
pub async fn guard_watching(pool: &PgPool) -> sqlx::Result<Vec<Active>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ACTIVE} FROM active_plugins
         WHERE guard AND guard_state = 'watching' ORDER BY name"
    )))
    .fetch_all(pool)
    .await
}

/// Records `version` of `name` decided since `since` (duplicates aside), and how many of them
/// became dead letters, fleet-wide.
pub async fn outcome_tally(
    pool: &PgPool,
    (name, version): (&str, &str),
    since: DateTime<Utc>,
) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT coalesce(sum(decided), 0)::bigint, coalesce(sum(dead_lettered), 0)::bigint
         FROM processed_batches
         WHERE plugin = $1 AND plugin_version = $2 AND processed_at >= $3",
    )
    .bind(name)
    .bind(version)
    .bind(since)
    .fetch_one(pool)
    .await
}

/// Records the last batches (up to 50) of `version` of `name` before `until` decided, and how
/// many became dead letters: a version's recent failure rate.
pub async fn recent_tally(
    pool: &PgPool,
    (name, version): (&str, &str),
    until: DateTime<Utc>,
) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT coalesce(sum(decided), 0)::bigint, coalesce(sum(dead_lettered), 0)::bigint
         FROM (SELECT decided, dead_lettered FROM processed_batches
               WHERE plugin = $1 AND plugin_version = $2 AND processed_at < $3
               ORDER BY id DESC LIMIT 50) AS recent",
    )
    .bind(name)
    .bind(version)
    .bind(until)
    .fetch_one(pool)
    .await
}

/// The guard's judgement of `version` of `name`, while it is the watched active version:
/// `passed`, or `failed` (bad, with nothing to roll back to).
pub async fn guard_judged(
    pool: &PgPool,
    (name, version): (&str, &str),
    state: &str,
    why: &str,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE active_plugins SET guard_state = $4, guard_reason = $3,
             guard_changed_at = now()
         WHERE name = $1 AND version = $2 AND guard_state = 'watching'",
    )
    .bind(name)
    .bind(version)
    .bind(why)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx, name).await?;
    tx.commit().await
}

/// The guard rolled `version` of `name` back (after the rollback made another one active).
pub async fn guard_rolled_back(
    tx: &mut Tx<'_>,
    name: &str,
    version: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE active_plugins SET guard_state = 'rolled-back', guard_version = $2,
             guard_reason = $3, guard_changed_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .bind(version)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
