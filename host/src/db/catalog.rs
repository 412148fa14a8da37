//! The catalog table: products and their stock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Tx;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Product {
    pub product_id: String,
    pub product_name: String,
    pub stock: i64,
    pub unit_price: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "product_id, product_name, stock, unit_price, created_at, updated_at";

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Product>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM catalog ORDER BY product_id"
    )))
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, product_id: &str) -> sqlx::Result<Option<Product>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM catalog WHERE product_id = $1"
    )))
    .bind(product_id)
    .fetch_optional(pool)
    .await
}

/// Insert or replace a product. Returns the row and whether it was created.
pub async fn upsert(
    pool: &PgPool,
    product_id: &str,
    product_name: &str,
    stock: i64,
    unit_price: i64,
) -> sqlx::Result<(Product, bool)> {
    let row: ProductWithInsert = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO catalog (product_id, product_name, stock, unit_price)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (product_id) DO UPDATE
                SET product_name = EXCLUDED.product_name,
                    stock = EXCLUDED.stock,
                    unit_price = EXCLUDED.unit_price,
                    updated_at = now()
             RETURNING {COLUMNS}, (xmax = 0) AS inserted"
    )))
    .bind(product_id)
    .bind(product_name)
    .bind(stock)
    .bind(unit_price)
    .fetch_one(pool)
    .await?;
    Ok((row.product, row.inserted))
}

#[derive(sqlx::FromRow)]
struct ProductWithInsert {
    #[sqlx(flatten)]
    product: Product,
    inserted: bool,
}

/// Lock the given products, in id order so that concurrent batches cannot deadlock, and
/// return their stock. Unknown ids are absent from the map.
pub async fn lock_stock(
    tx: &mut Tx<'_>,
    product_ids: &[&str],
) -> sqlx::Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT product_id, stock FROM catalog
         WHERE product_id = ANY($1)
         ORDER BY product_id
         FOR UPDATE",
    )
    .bind(product_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Set the stock of many products at once.
pub async fn set_stock(tx: &mut Tx<'_>, product_ids: &[&str], stock: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE catalog AS c SET stock = u.stock, updated_at = now()
         FROM UNNEST($1::text[], $2::bigint[]) AS u(product_id, stock)
         WHERE c.product_id = u.product_id",
    )
    .bind(product_ids)
    .bind(stock)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
