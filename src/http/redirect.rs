//! The plain-HTTP listener of a server that speaks HTTPS itself
//! (`tls.redirect_listen`): every request gets a 308 to the same path and
//! query on HTTPS, with the security headers and an empty body.
//!
//! The target host is never taken blindly from the request: with a
//! `public_url` it is that URL's authority whatever the client sent;
//! without one it is the request's host name (port dropped, checked to be a
//! plain host name or IP address) and the HTTPS listener's port.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Router};

use crate::error::{problem_response, Problem};
use crate::http::{headers, limits};

/// Where redirected clients go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// `host[:port]` of the public URL, when one is configured.
    public_authority: Option<String>,
    /// Port of the HTTPS listener, added to a request's host unless 443.
    https_port: u16,
}

impl HttpsRedirect {
    /// Redirects for a server whose public URL is `public_url` (may be
    /// empty) and whose HTTPS listener has port `https_port`.
    pub fn new(public_url: &str, https_port: u16) -> HttpsRedirect {
        let public_authority = public_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .filter(|authority| !authority.is_empty())
            .map(str::to_string);
        HttpsRedirect {
            public_authority,
            https_port,
        }
    }

    /// The `Location` for a request to `host` (the `Host` header or the
    /// request target's authority) and `path_and_query`; `None` when there
    /// is no public URL and `host` is missing or not a plain host.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        let authority = match &self.public_authority {
            Some(authority) => authority.clone(),
            None => {
                let host = host_name(host?)?;
                if self.https_port == 443 {
                    host.to_string()
                } else {
                    format!("{host}:{}", self.https_port)
                }
            }
        };
        Some(format!("https://{authority}{path}"))
    }
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// if it is a DNS name or an IP address and nothing else.
fn host_name(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        let end = host.find(']')?;
        let (v6, rest) = host.split_at(end + 1);
        v6[1..end].parse::<std::net::Ipv6Addr>().ok()?;
        if !(rest.is_empty() || valid_port(rest.strip_prefix(':')?)) {
            return None;
        }
        v6
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        if port.is_some_and(|p| !valid_port(p)) {
            return None;
        }
        name
    };
    let plain = name.starts_with('[')
        || (!name.is_empty()
            && name.len() <= 253
            && !name.starts_with(['.', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    plain.then_some(name)
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The router of the redirect listener: one handler for every method and
/// path, behind the same header-size limit and security headers as the
/// application.
pub fn router(redirect: HttpsRedirect) -> Router {
    Router::new()
        .fallback(redirect_to_https)
        .layer(middleware::from_fn(limits::header_limit))
        .layer(middleware::from_fn(headers::security_headers))
        .with_state(redirect)
}

async fn redirect_to_https(State(redirect): State<HttpsRedirect>, req: Request) -> Response {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = redirect
        .location(host, path)
        .and_then(|l| HeaderValue::try_from(l).ok());
    match location {
        Some(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        None => problem_response(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "This address only redirects to HTTPS, and the request names no valid host.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_wins_over_the_request() {
        let r = HttpsRedirect::new("https://calls.example.com/", 8443);
        assert_eq!(
            r.location(Some("evil.example"), "/api/calls?limit=5")
                .unwrap(),
            "https://calls.example.com/api/calls?limit=5"
        );
        assert_eq!(r.location(None, "/").unwrap(), "https://calls.example.com/");
        let r = HttpsRedirect::new("https://calls.example.com:9443/base", 443);
        assert_eq!(
            r.location(Some("other"), "/x").unwrap(),
            "https://calls.example.com:9443/x"
        );
    }

    #[test]
    fn without_a_public_url_the_request_host_and_the_https_port() {
        let r = HttpsRedirect::new("", 443);
        assert_eq!(
            r.location(Some("localhost:80"), "/a?b=c").unwrap(),
            "https://localhost/a?b=c"
        );
        assert_eq!(
            r.location(Some("[::1]:8080"), "/").unwrap(),
            "https://[::1]/"
        );
        let r = HttpsRedirect::new("", 8443);
        assert_eq!(
            r.location(Some("127.0.0.1"), "/x").unwrap(),
            "https://127.0.0.1:8443/x"
        );
        assert_eq!(
            r.location(Some("calls.example.com:80"), "//evil.example/")
                .unwrap(),
            "https://calls.example.com:8443//evil.example/"
        );
        for bad in [
            "",
            "evil.example/x",
            "user@evil.example",
            "evil.example:80:80",
            "evil.example:port",
            "[::1",
            "[not-v6]:80",
            ".example",
            "a b",
            "evil.example\\@x",
        ] {
            assert_eq!(r.location(Some(bad), "/"), None, "{bad:?}");
        }
        assert_eq!(r.location(None, "/"), None);
    }
}
