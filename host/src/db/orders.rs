//! The orders table.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Tx;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: i64,
    pub total_price: i64,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub plugin: Option<String>,
    pub plugin_version: Option<String>,
}

const COLUMNS: &str = "order_id, user_id, product_id, quantity, unit_price, total_price, \
                       status, status_reason, created_at, plugin, plugin_version";

/// Insert orders and queue their events as one outbox row, in one statement (so one
/// transaction and one round trip, however many orders).
pub async fn insert_with_events(
    pool: &PgPool,
    orders: &[(&OrderRow, &crate::domain::Record)],
) -> sqlx::Result<()> {
    let rows = || orders.iter().map(|(row, _)| *row);
    let events: Vec<&crate::domain::Record> = orders.iter().map(|(_, event)| *event).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH inserted AS (
             INSERT INTO orders ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                                  $6::bigint[], $7::text[], $8::text[], $9::timestamptz[],
                                  $10::text[], $11::text[])
         )
         INSERT INTO outbox (records) VALUES ($12)"
    )))
    .bind(rows().map(|o| o.order_id).collect::<Vec<_>>())
    .bind(rows().map(|o| o.user_id.as_str()).collect::<Vec<_>>())
    .bind(rows().map(|o| o.product_id.as_str()).collect::<Vec<_>>())
    .bind(rows().map(|o| o.quantity).collect::<Vec<_>>())
    .bind(rows().map(|o| o.unit_price).collect::<Vec<_>>())
    .bind(rows().map(|o| o.total_price).collect::<Vec<_>>())
    .bind(rows().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(
        rows()
            .map(|o| o.status_reason.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows().map(|o| o.created_at).collect::<Vec<_>>())
    .bind(rows().map(|o| o.plugin.as_deref()).collect::<Vec<_>>())
    .bind(
        rows()
            .map(|o| o.plugin_version.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(crate::domain::encode_records(&events))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

pub async fn list_by_user(pool: &PgPool, user_id: &str, limit: i64) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC, order_id LIMIT $2"
    )))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest orders of all users.
pub async fn list_recent(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders ORDER BY created_at DESC, order_id LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Verdicts from the catalog side, at most one per order. The first verdict wins; a redrive
/// may turn a rejection into an application. Returns how many orders changed.
pub async fn record_statuses(
    tx: &mut Tx<'_>,
    verdicts: &[(Uuid, &crate::domain::StatusEvent)],
) -> sqlx::Result<usize> {
    if verdicts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = verdicts.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<&str> = verdicts.iter().map(|(_, e)| e.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = verdicts.iter().map(|(_, e)| e.reason.as_deref()).collect();
    let plugins: Vec<&str> = verdicts.iter().map(|(_, e)| e.plugin.as_str()).collect();
    let versions: Vec<&str> = verdicts
        .iter()
        .map(|(_, e)| e.plugin_version.as_str())
        .collect();
    let redriven: Vec<bool> = verdicts.iter().map(|(_, e)| e.redriven).collect();
    let done = sqlx::query(
        "UPDATE orders AS o
         SET status = v.status, status_reason = v.reason, plugin = v.plugin,
             plugin_version = v.version, status_updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
              AS v(order_id, status, reason, plugin, version, redriven)
         WHERE o.order_id = v.order_id
           AND (o.status = 'PENDING' OR (v.redriven AND o.status = 'REJECTED'))",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&plugins)
    .bind(&versions)
    .bind(&redriven)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() as usize)
}
