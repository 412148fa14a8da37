//! Orders flow, first half, and the read side: the HTTP API (axum, JSON, camelCase).

mod admin;
mod catalogs;
mod dead_letters;
mod error;
mod orders;
mod plugins;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Router, middleware};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::control::PluginControl;
use crate::ingest::IngestHealth;

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
    /// Plugin installs, rollbacks and the active versions (dead letters are redriven
    /// through the version active now).
    pub control: Arc<PluginControl>,
    /// topic → plugin name.
    pub routes: Arc<[(String, String)]>,
    pub ingest_health: Arc<IngestHealth>,
    pub admin_token: Option<secrecy::SecretString>,
}

/// Largest plugin upload.
const MAX_COMPONENT_BYTES: usize = 64 << 20;

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/plugins", get(plugins::list))
        .route(
            "/plugins/{name}",
            get(plugins::get)
                .put(plugins::put)
                .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/plugins/{name}/rollback", post(plugins::rollback))
        .route("/catalogs/{product_id}", put(catalogs::put))
        .route("/dead-letters/{id}/redrive", post(dead_letters::redrive))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/orders", post(orders::create))
        .route("/orders/{order_id}", get(orders::get))
        .route("/users/{user_id}/orders", get(orders::list_for_user))
        .route("/catalogs", get(catalogs::list))
        .route("/catalogs/{product_id}", get(catalogs::get))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::get))
        .merge(admin)
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
