//! The web console at `/`: one page and its script and style, embedded in the binary (the
//! console works offline), reading the same HTTP API as everyone else.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// Only this origin's script, style and API; no inline script, no framing. The console shows
/// client-supplied text (ids, payloads) as text, and this keeps a slip from becoming a script.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// A static asset: its bytes and media type, never cached stale across upgrades.
fn asset(body: &'static str, media_type: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (CONTENT_TYPE, media_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    include_str!("../../web/console.html"),
                    "text/html; charset=utf-8",
                )
            }),
        )
        .route(
            "/console.js",
            get(|| async {
                asset(
                    include_str!("../../web/console.js"),
                    "text/javascript; charset=utf-8",
                )
            }),
        )
        .route(
            "/console.css",
            get(|| async {
                asset(
                    include_str!("../../web/console.css"),
                    "text/css; charset=utf-8",
                )
            }),
        )
}
