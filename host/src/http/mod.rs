//! Orders flow, first half, and the read side: the HTTP API (axum, JSON, camelCase).

mod catalogs;
mod error;
mod orders;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::sync::Notify;

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The topic order events are published to.
    pub topic: Arc<str>,
    /// Wakes the outbox relay after an order commits.
    pub relay_wake: Arc<Notify>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/orders", post(orders::create))
        .route("/orders/{order_id}", get(orders::get))
        .route("/users/{user_id}/orders", get(orders::list_for_user))
        .route("/catalogs", get(catalogs::list))
        .route(
            "/catalogs/{product_id}",
            get(catalogs::get).put(catalogs::put),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(format!("database unreachable: {e}")))?;
    Ok(axum::Json(serde_json::json!({ "status": "ok" })))
}
