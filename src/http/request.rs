//! Per-request context: the request id (kept from the client when
//! well-formed), the trustworthy client address, and one tracing span.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
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

/// Query parameters that carry credentials (the WebSocket ticket): their
/// values never reach logs or security events.
const CREDENTIAL_PARAMS: &[&str] = &["ticket"];

/// A query string component, percent-decoded (`+` as a space); `None` when
/// it does not decode to UTF-8.
fn decode_component(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The first value of the query parameter `name` (names compared after
/// decoding), percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(key).as_deref() == Some(name) {
            decode_component(value)
        } else {
            None
        }
    })
}

/// `path_and_query` with the values of [`CREDENTIAL_PARAMS`] replaced by
/// `[redacted]`.
fn redact_credentials(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let is_credential = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        decode_component(key).is_some_and(|k| CREDENTIAL_PARAMS.contains(&k.as_str()))
    };
    if !query.split('&').any(is_credential) {
        return Cow::Borrowed(path_and_query);
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_credential(pair) => format!("{key}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
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

/// Middleware: attach [`RequestMeta`], run the request in a span, echo
/// the request id on the response, and count the request in the metrics.
pub async fn context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| crate::metrics::UNMATCHED.to_string());
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
        .map(|pq| truncate(&redact_credentials(pq.as_str()), 2048))
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
    let method = meta.method.clone();
    req.extensions_mut().insert(meta);

    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    state
        .metrics
        .http_request(&method, &route, res.status().as_u16(), started.elapsed());
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

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&ticket=abc"), "ticket").as_deref(),
            Some("abc")
        );
        assert_eq!(
            query_param(Some("%74icket=a%2Db"), "ticket").as_deref(),
            Some("a-b")
        );
        assert_eq!(query_param(Some("ticket"), "ticket").as_deref(), Some(""));
        assert_eq!(query_param(Some("tickets=x"), "ticket"), None);
        assert_eq!(query_param(None, "ticket"), None);
    }

    #[test]
    fn credentials_in_the_query_are_redacted() {
        assert_eq!(redact_credentials("/api/ws"), "/api/ws");
        assert_eq!(
            redact_credentials("/api/calls?limit=5"),
            "/api/calls?limit=5"
        );
        assert_eq!(
            redact_credentials("/api/ws?ticket=s3cret&x=1"),
            "/api/ws?ticket=[redacted]&x=1"
        );
        assert_eq!(
            redact_credentials("/api/ws?%74icket=s3cret"),
            "/api/ws?%74icket=[redacted]"
        );
    }
}
