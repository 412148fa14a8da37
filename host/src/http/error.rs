//! How failures reach HTTP clients: a status and `{"error": "..."}`, never internals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::order_writer::WriteError;
use crate::control::InstallError;
use crate::domain::ValidationError;
use crate::ingest::redrive::RedriveError;

/// A JSON body; a body that is not the expected JSON is an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters; one that does not parse is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters; one that does not parse is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line for people; never internals.
    pub error: String,
}

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
    /// The client did not send its request in time.
    #[error("{0}")]
    Timeout(String),
    /// The body is larger than the endpoint accepts.
    #[error("{0}")]
    TooLarge(String),
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

impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> Self {
        match e {
            InstallError::Invalid(_) | InstallError::BadName(_) => {
                Self::Unprocessable(e.to_string())
            }
            InstallError::Unknown(_) => Self::NotFound(e.to_string()),
            InstallError::NoPrevious(_)
            | InstallError::NoShadow(_)
            | InstallError::Routed(..)
            | InstallError::Unproven(_)
            | InstallError::Tables(_) => Self::Conflict(e.to_string()),
            InstallError::Database(e) => e.into(),
        }
    }
}

impl From<RedriveError> for ApiError {
    fn from(e: RedriveError) -> Self {
        match e {
            RedriveError::NotFound(_) => Self::NotFound(e.to_string()),
            RedriveError::AlreadyResolved(_) | RedriveError::NoPlugin(_) => {
                Self::Conflict(e.to_string())
            }
            RedriveError::Database(e) => e.into(),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Database(e) => match std::sync::Arc::try_unwrap(e) {
                Ok(e) => e.into(),
                // Shared by the orders of one group: the same answer for each.
                Err(shared) if database_unavailable(&shared) => {
                    tracing::warn!(error = %shared, "database unavailable");
                    Self::Unavailable("the database is unavailable; retry later".into())
                }
                Err(shared) => {
                    Self::Internal(anyhow::anyhow!("{shared}").context("database query failed"))
                }
            },
            WriteError::Stopped => Self::Unavailable("the service is shutting down; retry".into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Self::Unavailable("the database is unavailable; retry later".into());
        }
        Self::Internal(anyhow::Error::new(e).context("database query failed"))
    }
}

/// Whether reading the body failed because the client stopped sending it.
pub fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An error that says the database cannot be reached or is going away, rather than that a
/// query failed: the client may retry later.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P0x: the server is shutting down or starting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
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
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            Self::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, m),
            Self::Json(rejection) if body_timed_out(&rejection) => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time".to_string(),
            ),
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
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        if matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            // The body was not read to its end, so this connection cannot carry another request:
            // say so, or a client that pools connections sends its next request into a closed one.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
