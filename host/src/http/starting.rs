//! Before the database is there: every request is answered 503 with what Sluice waits for, so
//! that `/readyz` (and any other route) says why instead of the port refusing connections.

use axum::Router;
use tokio::sync::watch;

use super::error::ApiError;

/// Answers everything with 503 and `{"error": "starting: <reason>"}`, the reason as it is now.
pub fn starting(reason: watch::Receiver<String>) -> Router {
    Router::new().fallback(move || {
        let reason = reason.borrow().clone();
        async move { ApiError::Unavailable(format!("starting: {reason}")) }
    })
}
