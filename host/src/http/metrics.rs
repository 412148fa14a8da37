//! `GET /metrics` (Prometheus, OpenMetrics text) and the middleware that counts every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::db;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics in the OpenMetrics text format, for Prometheus.
///
/// The outbox backlog is read now; a database that does not answer leaves the last value
/// (and `/readyz` says why).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "The exposition", body = String,
        content_type = "application/openmetrics-text"))
)]
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
/// series per order), method and status. Labels come from bounded sets only, so no client can
/// make series without end.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    state.metrics.http_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The method's label: the standard ones by name, anything else (any token is a valid method)
/// as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"X-FLOOD-12345").unwrap();
        assert_eq!(method_label(&invented), "other");
    }
}
