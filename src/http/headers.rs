//! Security headers on every response: API routes, console pages, errors
//! made by the framework, timeouts and caught panics alike.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Content-Security-Policy of console pages and static assets.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Content-Security-Policy of API responses (JSON, never rendered).
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Headers every response carries, whatever the route.
const COMMON: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains; preload",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "0"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), geolocation=(), payment=(), microphone=(self)",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Whether a path is served with the API policy (machine-readable answers)
/// rather than the console policy (pages and their assets).
pub fn is_api_path(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || path.starts_with("/.well-known/")
        || matches!(path, "/health" | "/ready" | "/metrics")
}

/// Middleware: set the security headers, replacing any earlier value so
/// none appears twice.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let authenticated = req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key(header::COOKIE);
    let mut res = next.run(req).await;
    apply(res.headers_mut(), &path, authenticated);
    res
}

fn apply(headers: &mut HeaderMap, path: &str, authenticated: bool) {
    for (name, value) in COMMON {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let api = is_api_path(path);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if api { API_CSP } else { CONSOLE_CSP }),
    );
    if path == "/api" || path.starts_with("/api/") || authenticated {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if path.starts_with("/api/") {
        // Cookie-authenticated answers depend on Fetch Metadata and Origin.
        headers.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Sec-Fetch-Site, Cookie, Authorization"),
        );
    }
    headers.remove(header::SERVER);
    headers.remove("x-powered-by");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_console_paths() {
        assert!(is_api_path("/api/calls"));
        assert!(is_api_path("/.well-known/jwks.json"));
        assert!(is_api_path("/health"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/apis"));
        assert!(!is_api_path("/assets/app.js"));
    }

    #[test]
    fn authenticated_responses_are_not_stored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        apply(&mut h, "/", true);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONSOLE_CSP);
        let mut h = HeaderMap::new();
        apply(&mut h, "/.well-known/jwks.json", false);
        assert!(h.get(header::CACHE_CONTROL).is_none());
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], API_CSP);
    }
}
