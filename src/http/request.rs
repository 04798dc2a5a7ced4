//! Per-request context: the request id (kept from the client when
//! well-formed), the trustworthy client address, and one tracing span.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::security::client_ip;
use crate::state::AppState;

/// The `X-Request-Id` header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What security events and audit entries need to know about a request.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Client address (see [`client_ip::resolve`]).
    pub ip: IpAddr,
    /// HTTP method.
    pub method: String,
    /// Path and query as received (bounded length).
    pub url: String,
    /// Request id.
    pub request_id: String,
    /// User agent (bounded length).
    pub user_agent: String,
}

/// Whether a client-supplied request id may be kept.
fn well_formed_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Middleware: attach [`RequestMeta`], run the request in a span, and echo
/// the request id on the response.
pub async fn context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip::resolve(peer, forwarded, &state.trusted_proxies);
    let url = req
        .uri()
        .path_and_query()
        .map(|pq| truncate(pq.as_str(), 2048))
        .unwrap_or_else(|| "/".into());
    let user_agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v, 256))
        .unwrap_or_default();
    let meta = RequestMeta {
        ip,
        method: req.method().to_string(),
        url,
        request_id: request_id.clone(),
        user_agent,
    };
    let span = tracing::info_span!(
        "request",
        method = %meta.method,
        path = %req.uri().path(),
        ip = %meta.ip,
        request_id = %request_id,
    );
    req.extensions_mut().insert(meta);

    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    res
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_else(|| RequestMeta {
                ip: IpAddr::from([127, 0, 0, 1]),
                method: parts.method.to_string(),
                url: parts.uri.path().to_string(),
                request_id: String::new(),
                user_agent: String::new(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(well_formed_id("abc-123_x.y"));
        assert!(!well_formed_id(""));
        assert!(!well_formed_id("a b"));
        assert!(!well_formed_id(&"a".repeat(129)));
        assert!(!well_formed_id("x\ny"));
    }
}
