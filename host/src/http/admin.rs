//! Who may call the admin endpoints: bearer `SLUICE_ADMIN_TOKEN`, or, where the operator chose
//! it (`sluice dev`, `sluice serve --admin-open-on-loopback`), clients on loopback that did not
//! come through a proxy.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;

use secrecy::SecretString;

use super::{ApiError, AppState};

/// Who may use the admin endpoints.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// `Authorization: Bearer <token>`, from anywhere.
    Token(SecretString),
    /// Clients on loopback whose request was not forwarded by a proxy.
    Loopback,
}

impl AdminAccess {
    /// The token when there is one; else loopback only.
    pub fn from_token(token: Option<SecretString>) -> Self {
        token.map_or(Self::Loopback, Self::Token)
    }
}

/// Headers a reverse proxy adds: a request carrying one did not start on this host, whatever
/// its peer address says.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

pub async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state.admin, request.headers(), peer)?;
    Ok(next.run(request).await)
}

/// The decision, apart from the middleware.
pub fn authorize(
    access: &AdminAccess,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    match access {
        AdminAccess::Token(token) => match bearer(headers) {
            Some(presented)
                if constant_time_eq(token.expose_secret().as_bytes(), presented.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(ApiError::Unauthorized(
                "admin endpoints need `Authorization: Bearer <SLUICE_ADMIN_TOKEN>`".into(),
            )),
        },
        AdminAccess::Loopback => {
            if !peer.ip().is_loopback() {
                return Err(ApiError::Unauthorized(
                    "admin endpoints answer only on loopback unless SLUICE_ADMIN_TOKEN is set"
                        .into(),
                ));
            }
            if PROXY_HEADERS.iter().any(|h| headers.contains_key(*h)) {
                return Err(ApiError::Unauthorized(
                    "admin endpoints do not answer requests forwarded by a proxy unless \
                     SLUICE_ADMIN_TOKEN is set"
                        .into(),
                ));
            }
            Ok(())
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compare without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn a_token_is_needed_from_everywhere_when_one_is_set() {
        let token = AdminAccess::Token("s3cret".to_string().into());
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert!(
            authorize(&token, &headers(&[]), local).is_err(),
            "loopback too"
        );
        for (value, ok) in [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("BEARER  s3cret ", true),
            ("Bearer s3cre", false),
            ("Bearer s3cret!", false),
            ("Basic s3cret", false),
            ("s3cret", false),
        ] {
            let result = authorize(&token, &headers(&[("authorization", value)]), remote);
            assert_eq!(result.is_ok(), ok, "{value:?}");
        }
    }

    #[test]
    fn loopback_access_refuses_remote_and_proxied_clients() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let open = AdminAccess::Loopback;
        assert!(authorize(&open, &headers(&[]), local).is_ok());
        assert!(authorize(&open, &headers(&[]), remote).is_err());
        for proxy in PROXY_HEADERS {
            let proxied = headers(&[(proxy, "198.51.100.4")]);
            assert!(authorize(&open, &proxied, local).is_err(), "{proxy}");
        }
    }
}
