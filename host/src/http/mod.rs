//! Orders flow, first half, and the read side: the HTTP API (axum, JSON, camelCase).

mod catalogs;
mod dead_letters;
mod error;
mod orders;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::ingest::IngestHealth;
use crate::runtime::Plugin;

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The topic order events are published to.
    pub topic: Arc<str>,
    /// Wakes the outbox relay after an order commits.
    pub relay_wake: Arc<Notify>,
    /// Where redrive verdicts are reported.
    pub status_topic: Arc<str>,
    /// The plugin dead letters are redriven through.
    pub plugin: Arc<Plugin>,
    pub ingest_health: Arc<IngestHealth>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::get))
        .route("/dead-letters/{id}/redrive", post(dead_letters::redrive))
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

/// Ready to take traffic: the database answers and ingest is not stuck.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some(stuck) = state.ingest_health.stuck() {
        return Err(ApiError::Unavailable(stuck));
    }
    healthz(axum::extract::State(state)).await
}

/// Alive: the database answers.
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(format!("database unreachable: {e}")))?;
    Ok(axum::Json(serde_json::json!({ "status": "ok" })))
}
