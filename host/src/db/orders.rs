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

pub async fn insert(tx: &mut Tx<'_>, order: &OrderRow) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )))
    .bind(order.order_id)
    .bind(&order.user_id)
    .bind(&order.product_id)
    .bind(order.quantity)
    .bind(order.unit_price)
    .bind(order.total_price)
    .bind(&order.status)
    .bind(&order.status_reason)
    .bind(order.created_at)
    .bind(&order.plugin)
    .bind(&order.plugin_version)
    .execute(&mut **tx)
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

/// A verdict from the catalog side. The first verdict wins; a redrive may turn a rejection
/// into an application. Returns whether the order changed.
pub async fn record_status(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    status: &str,
    reason: Option<&str>,
    plugin: &str,
    plugin_version: &str,
    redriven: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE orders
         SET status = $2, status_reason = $3, plugin = $4, plugin_version = $5,
             status_updated_at = now()
         WHERE order_id = $1 AND (status = 'PENDING' OR ($6 AND status = 'REJECTED'))",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .bind(plugin)
    .bind(plugin_version)
    .bind(redriven)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}
