//! `GET /metrics` (Prometheus, OpenMetrics text) and the middleware that counts every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::db;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition. The outbox backlog is read now; a database that does not answer leaves
/// the last value (and `/readyz` says why).
pub async fn render(State(state): State<AppState>) -> Response {
    match db::outbox::backlog(&state.pool).await {
        Ok(rows) => {
            state.metrics.outbox_backlog.set(rows);
        }
        Err(e) => tracing::debug!(error = %e, "reading the outbox backlog for /metrics failed"),
    }
    ([(CONTENT_TYPE, OPENMETRICS)], state.metrics.render()).into_response()
}

/// Count and time each request by route pattern (never the raw path: ids would make a
/// series per order), method and status.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .http_request_duration
        .get_or_create(&[("route", route.clone()), ("method", method.clone())])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&[
            ("route", route),
            ("method", method),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    response
}
