//! How failures reach HTTP clients: a status and `{"error": "..."}`, never internals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (not JSON, a bad path parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well formed but a value is not acceptable.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The body could not be read as the expected JSON.
    #[error(transparent)]
    Json(#[from] JsonRejection),
    #[error(transparent)]
    Path(#[from] PathRejection),
    #[error(transparent)]
    Query(#[from] QueryRejection),
    /// Anything unexpected: logged with its chain, reported as "internal error".
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Unprocessable(e.0)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database query failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            Self::Conflict(m) => (StatusCode::CONFLICT, m),
            Self::Unavailable(m) => {
                tracing::warn!(error = %m, "service unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, m)
            }
            Self::Json(rejection) => (rejection.status(), rejection.body_text()),
            Self::Path(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()),
            Self::Query(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()),
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
