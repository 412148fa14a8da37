//! Orders flow, first half, and the read side: the HTTP API (axum, JSON, camelCase).

mod admin;
mod catalogs;
mod dead_letters;
mod error;
mod metrics;
mod orders;
mod plugins;
mod server;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Router, middleware};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::control::PluginControl;
use crate::ingest::IngestHealth;

pub use error::ApiError;
pub use server::{EdgeLimits, serve};

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
    pub routes: crate::config::Routes,
    pub ingest_health: Arc<IngestHealth>,
    pub admin: crate::config::AdminAccess,
    /// Dead letters readable without admin access.
    pub public_dead_letters: bool,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn router(state: AppState) -> Router {
    let dead_letters = Router::new()
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::get));
    let (public_dead_letters, admin_dead_letters) = if state.public_dead_letters {
        (dead_letters, Router::new())
    } else {
        (Router::new(), dead_letters)
    };
    let admin = Router::new()
        .merge(admin_dead_letters)
        .route("/plugins", get(plugins::list))
        .route(
            "/plugins/{name}",
            get(plugins::get)
                .put(plugins::put)
                .delete(plugins::delete)
                .layer(DefaultBodyLimit::max(
                    state
                        .control
                        .registry()
                        .compile_limits()
                        .max_component_bytes,
                )),
        )
        .route("/plugins/{name}/rollback", post(plugins::rollback))
        .route(
            "/plugins/{name}/shadow",
            get(plugins::shadow).delete(plugins::discard),
        )
        .route("/plugins/{name}/shadow/promote", post(plugins::promote))
        .route("/catalogs/{product_id}", put(catalogs::put))
        .route("/dead-letters/{id}/redrive", post(dead_letters::redrive))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/orders", post(orders::create))
        .route("/orders/{order_id}", get(orders::get))
        .route("/users/{user_id}/orders", get(orders::list_for_user))
        .route("/catalogs", get(catalogs::list))
        .route("/catalogs/{product_id}", get(catalogs::get))
        .merge(public_dead_letters)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Ready to take traffic: the database answers and ingest is not stuck.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some(stuck) = state.ingest_health.stuck() {
        return Err(ApiError::Unavailable(stuck));
    }
    if let Some(over) = state.control.registry().sandbox().overdue() {
        return Err(ApiError::Unavailable(format!(
            "a plugin call is running {:.1} s past its deadline",
            over.as_secs_f64()
        )));
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
