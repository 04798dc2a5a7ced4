//! The HTTP security headers of DESIGN.md §5 on every kind of response:
//! success and error statuses made by handlers, by the framework and by the
//! limit layers, the console page, static assets and the event stream.
//!
//! Values are written out here as the design states them, not imported
//! from the server, so a changed constant fails this test.

use reqwest::header::HeaderMap;
use serde_json::json;

use crate::helpers::*;
use kraliki::store::users::Role;

/// Headers every response carries, with their exact values.
const EVERY_RESPONSE: &[(&str, &str)] = &[
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

const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// What one response must show besides the common headers.
struct Expect {
    /// A name for failure messages.
    label: &'static str,
    /// Status.
    status: u16,
    /// The API policy (else the console policy).
    api: bool,
    /// `Cache-Control` value, when one is required.
    cache_control: Option<&'static str>,
    /// Under `/api/`: `Vary` names the request headers the answer depends
    /// on (Origin, Fetch Metadata, credentials).
    vary: bool,
}

fn api(label: &'static str, status: u16) -> Expect {
    Expect {
        label,
        status,
        api: true,
        cache_control: Some("no-store"),
        vary: true,
    }
}

fn console(label: &'static str, status: u16, cache_control: Option<&'static str>) -> Expect {
    Expect {
        label,
        status,
        api: false,
        cache_control,
        vary: false,
    }
}

/// The one value of `name`, asserting it appears exactly once.
fn single(label: &str, headers: &HeaderMap, name: &str) -> String {
    let count = headers.get_all(name).iter().count();
    assert_eq!(count, 1, "{label}: {name} appears {count} times");
    headers[name]
        .to_str()
        .unwrap_or_else(|_| panic!("{label}: {name} is not text"))
        .to_string()
}

fn check(e: &Expect, status: u16, headers: &HeaderMap) {
    let label = e.label;
    assert_eq!(status, e.status, "{label}: status");

    for (name, value) in EVERY_RESPONSE {
        assert_eq!(single(label, headers, name), *value, "{label}: {name}");
    }
    let csp = single(label, headers, "content-security-policy");
    assert_eq!(
        csp,
        if e.api { API_CSP } else { CONSOLE_CSP },
        "{label}: Content-Security-Policy"
    );
    match e.cache_control {
        Some(v) => assert_eq!(
            single(label, headers, "cache-control"),
            v,
            "{label}: Cache-Control"
        ),
        None => assert!(
            headers.get_all("cache-control").iter().count() <= 1,
            "{label}: Cache-Control twice"
        ),
    }
    if e.vary {
        let vary = single(label, headers, "vary");
        assert!(vary.contains("Origin"), "{label}: Vary {vary:?}");
    }

    let id = single(label, headers, "x-request-id");
    assert!(!id.is_empty(), "{label}: empty X-Request-Id");

    // Nothing names the software or its version.
    let version = env!("CARGO_PKG_VERSION");
    for (name, value) in headers {
        let n = name.as_str();
        assert!(
            !["server", "powered", "version", "runtime"]
                .iter()
                .any(|w| n.contains(w)),
            "{label}: header {n} names the software"
        );
        let v = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        assert!(
            !v.contains(version)
                && !["kraliki/", "axum", "hyper", "tokio", "rustc"]
                    .iter()
                    .any(|w| v.contains(w)),
            "{label}: {n}: {v:?} names the software or its version"
        );
    }
}

fn check_response(e: Expect, res: reqwest::Response) {
    check(&e, res.status().as_u16(), res.headers());
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let admin_token = app.token(&admin).await;
    let agent_token = app.token(&agent).await;
    let c = &app.client;

    // 200, JSON, authenticated.
    let res = app.get_auth("/api/auth/me", &admin_token).await;
    check_response(api("200 /api/auth/me", 200), res);

    // 201.
    let res = c
        .post(app.url("/api/users"))
        .bearer_auth(&admin_token)
        .json(&json!({
            "email": "new-agent@example.com",
            "role": "agent",
            "password": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    check_response(api("201 POST /api/users", 201), res);

    // 400: a validation failure naming a field.
    let res = c
        .post(app.url("/api/users"))
        .bearer_auth(&admin_token)
        .json(&json!({"email": "not-an-address", "role": "agent", "password": GOOD_PASSWORD}))
        .send()
        .await
        .unwrap();
    check_response(api("400 validation", 400), res);

    // 401.
    let res = c.get(app.url("/api/auth/me")).send().await.unwrap();
    check_response(api("401 no credentials", 401), res);

    // 403.
    let res = app.get_auth("/api/users", &agent_token).await;
    check_response(api("403 agent on /api/users", 403), res);

    // 404, under the API and outside it.
    let res = c.get(app.url("/api/no-such-route")).send().await.unwrap();
    check_response(api("404 API", 404), res);
    let res = c.get(app.url("/no-such-page")).send().await.unwrap();
    check_response(console("404 console", 404, None), res);

    // 405.
    let res = c
        .delete(app.url("/api/auth/me"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    check_response(api("405", 405), res);

    // 413: a body over 1 MiB.
    let big = format!(
        "{{\"email\":\"a@example.com\",\"password\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 16)
    );
    let res = c
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    check_response(api("413", 413), res);

    // 415.
    let res = c
        .post(app.url("/api/auth/login"))
        .header("content-type", "text/plain")
        .body("email=a@example.com")
        .send()
        .await
        .unwrap();
    check_response(api("415", 415), res);

    // 431: a header block over 16 KiB.
    let res = c
        .get(app.url("/api/auth/me"))
        .header("x-filler", "a".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    check_response(api("431", 431), res);

    // The console page and its assets; cacheable only without credentials.
    let res = c.get(app.url("/")).send().await.unwrap();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    check_response(console("200 /", 200, None), res);
    let res = c
        .get(app.url("/"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    check_response(console("200 / authenticated", 200, Some("no-store")), res);
    let res = c.get(app.url("/assets/kraliki.css")).send().await.unwrap();
    check_response(console("200 asset", 200, Some("public, max-age=3600")), res);
    let res = c.get(app.url("/favicon.ico")).send().await.unwrap();
    check_response(
        console("200 favicon", 200, Some("public, max-age=3600")),
        res,
    );
    let res = c
        .get(app.url("/assets/kraliki.css"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    check_response(
        console("200 asset authenticated", 200, Some("no-store")),
        res,
    );
    let res = c.get(app.url("/assets/nothing.js")).send().await.unwrap();
    check_response(console("404 unknown asset", 404, None), res);

    // Operational routes answer with the API policy.
    let res = c.get(app.url("/health")).send().await.unwrap();
    let health = Expect {
        label: "200 /health",
        status: 200,
        api: true,
        cache_control: None,
        vary: false,
    };
    check_response(health, res);

    // The event stream: only the headers, never waiting for the body.
    let res = app
        .get_auth("/api/security/events/stream", &admin_token)
        .await;
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Dropping the response closes the stream unread.
    check_response(api("200 SSE stream", 200), res);

    // 204, last: it ends the admin's session.
    let res = c
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    check_response(api("204 logout", 204), res);
}

#[tokio::test]
async fn cookie_authenticated_responses_are_not_stored() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": admin.email, "password": admin.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    for (path, label) in [
        ("/", "cookie /"),
        ("/assets/kraliki.css", "cookie asset"),
        ("/api/auth/me", "cookie /api/auth/me"),
    ] {
        let res = app
            .client
            .get(app.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let e = Expect {
            label,
            status: 200,
            api: path.starts_with("/api/"),
            cache_control: Some("no-store"),
            vary: path.starts_with("/api/"),
        };
        check(&e, res.status().as_u16(), res.headers());
    }
}

#[tokio::test]
async fn a_rate_limited_answer_carries_the_security_headers() {
    let app = spawn_app_with(|s| s.rate_limit.enabled = true).await;
    let login = || {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": "nobody@example.com", "password": "wrong-password-123"}))
            .send()
    };
    for _ in 0..5 {
        let res = login().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = login().await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    check_response(api("429", 429), res);

    // Static assets are exempt from the limits.
    for _ in 0..120 {
        let res = app
            .client
            .get(app.url("/assets/favicon.svg"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn assets_are_the_known_files_with_their_types() {
    let app = spawn_app().await;
    let get = |path: &'static str| app.client.get(app.url(path)).send();

    let res = get("/assets/kraliki.css").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/css; charset=utf-8");
    let css = res.text().await.unwrap();
    assert!(css.contains("body"), "a stylesheet");

    for path in ["/assets/favicon.svg", "/favicon.ico"] {
        let res = get(path).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "image/svg+xml", "{path}");
        let svg = res.text().await.unwrap();
        assert!(svg.starts_with("<svg"), "{path}");
        assert!(!svg.contains("<script"), "{path}: no script in the icon");
    }

    // The start page links the stylesheet and has nothing inline that the
    // console policy would block.
    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("<link rel=\"stylesheet\" href=\"/assets/kraliki.css\">"));
    assert!(!page.contains("<style") && !page.contains("style=\""));
    assert!(!page.contains("<script"));

    // Only the listed files exist; nothing reaches the file system.
    for path in [
        "/assets/nothing.css",
        "/assets/KRALIKI.CSS",
        "/assets/..%2FCargo.toml",
        "/assets/%2e%2e%2fCargo.toml",
        "/assets/",
        "/assets/a/kraliki.css",
    ] {
        let res = get(path).await.unwrap();
        let status = res.status().as_u16();
        // The intrusion detection may refuse traversal attempts first.
        assert!(status == 404 || status == 400, "{path}: {status}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "application/problem+json", "{path}");
    }

    // HEAD works like GET without a body.
    let res = app
        .client
        .head(app.url("/assets/kraliki.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/css; charset=utf-8");

    // Both routes are in the OpenAPI document.
    let doc: serde_json::Value = get("/api/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/assets/{file}", "/favicon.ico"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} documented");
    }
    assert_eq!(
        doc["paths"]["/assets/{file}"]["get"]["responses"]["404"]["content"]
            ["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
}

/// Parse the status and headers of a raw HTTP/1.1 response head.
fn parse_head(raw: &str) -> (u16, HeaderMap) {
    let mut lines = raw.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    (status, headers)
}

#[tokio::test]
async fn a_request_timeout_answer_carries_the_security_headers() {
    let app = spawn_app_with(|s| s.http.request_timeout_secs = 1).await;
    let (status, headers) = parse_head(&slow_body_answer(&app).await);
    check(&api("408 request timeout", 408), status, &headers);
}

#[tokio::test]
async fn a_caught_panic_is_an_opaque_500_with_the_security_headers() {
    let app = spawn_app().await;
    // A route that panics, behind exactly the server's middleware stack.
    let routes = axum::Router::new().route(
        "/api/boom",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("a handler bug");
            }
            "unreachable"
        }),
    );
    let router = kraliki::http::with_layers(routes, app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let res = app
        .client
        .get(format!("http://{addr}/api/boom"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    check(&api("500 caught panic", 500), status, &headers);
    assert_eq!(headers["content-type"], "application/problem+json");
    let body = res.text().await.unwrap();
    assert!(!body.contains("a handler bug"), "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], 500);

    // The server goes on serving.
    let res = app
        .client
        .get(format!("http://{addr}/api/boom-not"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
