//! Who may call the admin endpoints: bearer `SLUICE_ADMIN_TOKEN`, or, with no token
//! configured, only clients on loopback.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;

use super::{ApiError, AppState};

pub async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let token = state
        .admin_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes());
    authorize(token, presented.map(str::as_bytes), peer)?;
    Ok(next.run(request).await)
}

/// The decision, apart from HTTP.
pub fn authorize(
    token: Option<&[u8]>,
    presented: Option<&[u8]>,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    match (token, presented) {
        (Some(token), Some(presented)) if constant_time_eq(token, presented) => Ok(()),
        (Some(_), _) => Err(ApiError::Unauthorized(
            "admin endpoints need `Authorization: Bearer <SLUICE_ADMIN_TOKEN>`".into(),
        )),
        (None, _) if peer.ip().is_loopback() => Ok(()),
        (None, _) => Err(ApiError::Unauthorized(
            "admin endpoints answer only on loopback unless SLUICE_ADMIN_TOKEN is set".into(),
        )),
    }
}

/// Compare without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_loopback() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert!(authorize(None, None, local).is_ok());
        assert!(authorize(None, None, remote).is_err());
        assert!(
            authorize(Some(b"s3cret"), None, local).is_err(),
            "a token applies to loopback too"
        );
        assert!(authorize(Some(b"s3cret"), Some(b"s3cre"), remote).is_err());
        assert!(authorize(Some(b"s3cret"), Some(b"s3cret!"), remote).is_err());
        assert!(authorize(Some(b"s3cret"), Some(b"s3cret"), remote).is_ok());
    }
}
