//! The outbox table: events committed with their order, waiting to be published.

use super::Tx;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub event_id: String,
    pub payload: Vec<u8>,
}

pub async fn enqueue(
    tx: &mut Tx<'_>,
    topic: &str,
    key: &str,
    event_id: &str,
    payload: &[u8],
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO outbox (topic, key, event_id, payload) VALUES ($1, $2, $3, $4)")
        .bind(topic)
        .bind(key)
        .bind(event_id)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Take the oldest unpublished rows, skipping rows another relay holds.
pub async fn claim(tx: &mut Tx<'_>, limit: i64) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(
        "SELECT id, topic, key, event_id, payload FROM outbox
         ORDER BY id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub async fn delete(tx: &mut Tx<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
