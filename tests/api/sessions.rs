//! Browser sessions: the `__Host-kraliki_session` cookie, its CSRF
//! protection (token, Fetch Metadata, Origin), the 415 wall in front of JSON
//! endpoints, idle and absolute expiry (real waits: both are read from the
//! wall clock), tampering and sign-out.

use std::time::Duration;

use kraliki::store::users::Role;
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;

const COOKIE_NAME: &str = "__Host-kraliki_session";

/// A signed-in browser: the cookie pair (`name=value`) and the CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

/// The single `Set-Cookie` header of a response.
fn set_cookie(res: &Response) -> String {
    let all: Vec<_> = res.headers().get_all(SET_COOKIE).iter().collect();
    assert_eq!(all.len(), 1, "exactly one Set-Cookie header: {all:?}");
    all[0].to_str().unwrap().to_string()
}

/// `POST /api/auth/session`, asserting the cookie attributes exactly.
async fn sign_in_browser(app: &TestApp, user: &TestUser) -> Browser {
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let header = set_cookie(&res);
    let mut parts = header.split("; ");
    let pair = parts.next().unwrap();
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, COOKIE_NAME, "{header}");
    assert!(
        !value.is_empty(),
        "cookie value must not be empty: {header}"
    );
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b','),
        "{header}"
    );
    let attributes: Vec<&str> = parts.collect();
    assert_eq!(
        attributes,
        ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"],
        "{header}"
    );
    assert_eq!(
        header,
        format!("{COOKIE_NAME}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
    );

    let body: Value = res.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().expect("csrf_token").to_string();
    assert!(csrf.len() >= 32, "CSRF token too short: {csrf}");
    assert_eq!(body["user"]["email"], user.email.as_str());
    assert!(body["expires_at"].as_i64().unwrap() > 0);
    assert!(
        body.get("access_token").is_none() && body.get("refresh_token").is_none(),
        "a browser session hands out no bearer tokens"
    );
    Browser {
        cookie: pair.to_string(),
        csrf,
    }
}

/// `GET /api/auth/me` with a cookie header.
async fn me_with_cookie(app: &TestApp, cookie: &str) -> Response {
    app.client
        .get(app.url("/api/auth/me"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// `PUT /api/organization/security` (harmless: keeps the policy off) with the
/// cookie and the given extra headers.
async fn put_policy(app: &TestApp, cookie: &str, headers: &[(&str, &str)]) -> Response {
    let mut map = HeaderMap::new();
    map.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    for (k, v) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    app.client
        .put(app.url("/api/organization/security"))
        .headers(map)
        .json(&json!({"require_totp_for_privileged": false}))
        .send()
        .await
        .unwrap()
}

/// The `reason` of each stored CSRF_VIOLATION event, oldest first.
async fn csrf_reasons(app: &TestApp) -> Vec<String> {
    app.events("CSRF_VIOLATION")
        .await
        .iter()
        .map(|e| {
            let details: Value = serde_json::from_str(&e.details).unwrap();
            details["reason"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test]
async fn session_sign_in_sets_a_host_cookie_and_me_returns_the_same_csrf_token() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let browser = sign_in_browser(&app, &user).await;

    let res = me_with_cookie(&app, &browser.cookie).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["csrf_token"], browser.csrf.as_str());
    assert_eq!(me["user"]["id"], user.id.as_str());

    // Without any credentials, the same request is refused.
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;

    // A bearer session reports no CSRF token: it needs none.
    let token = app.token(&user).await;
    let me: Value = app
        .get_auth("/api/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(me["csrf_token"].is_null(), "{me}");

    // Each browser sign-in is a new session with its own cookie and token.
    let second = sign_in_browser(&app, &user).await;
    assert_ne!(second.cookie, browser.cookie);
    assert_ne!(second.csrf, browser.csrf);
}

#[tokio::test]
async fn cookie_requests_that_change_state_must_pass_every_csrf_check() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let browser = sign_in_browser(&app, &admin).await;
    let other = sign_in_browser(&app, &admin).await;
    let cookie = browser.cookie.as_str();
    assert!(app.events("CSRF_VIOLATION").await.is_empty());

    // 1. No X-CSRF-Token at all.
    let res = put_policy(&app, cookie, &[("sec-fetch-site", "same-origin")]).await;
    let body = assert_problem(res, 403).await;
    assert_eq!(body["code"], "csrf_violation");
    let events = app.events("CSRF_VIOLATION").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user_id.as_deref(), Some(admin.id.as_str()));
    assert_eq!(events[0].severity, "HIGH");
    assert_eq!(events[0].method, "PUT");
    assert_eq!(events[0].url, "/api/organization/security");

    // 2. A wrong token, and the valid token of another session.
    let wrong = format!("{}x", &browser.csrf[..browser.csrf.len() - 1]);
    let res = put_policy(&app, cookie, &[("x-csrf-token", &wrong)]).await;
    assert_eq!(assert_problem(res, 403).await["code"], "csrf_violation");
    let res = put_policy(&app, cookie, &[("x-csrf-token", "")]).await;
    assert_problem(res, 403).await;
    let res = put_policy(&app, cookie, &[("x-csrf-token", &other.csrf)]).await;
    assert_problem(res, 403).await;

    // 3. The right token, but the browser says the request is cross-site.
    let res = put_policy(
        &app,
        cookie,
        &[
            ("x-csrf-token", &browser.csrf),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_problem(res, 403).await;

    // 4. The right token, from an origin that is not allowed.
    for origin in [
        "https://evil.example",
        "null",
        &format!("{}.evil.example", app.base),
    ] {
        let res = put_policy(
            &app,
            cookie,
            &[("x-csrf-token", &browser.csrf), ("origin", origin)],
        )
        .await;
        assert_problem(res, 403).await;
    }

    // Events of the same millisecond have no fixed order: compare sorted.
    let mut reasons = csrf_reasons(&app).await;
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "cross_site_request",
            "csrf_token_mismatch",
            "csrf_token_mismatch",
            "csrf_token_mismatch",
            "missing_csrf_token",
            "origin_not_allowed",
            "origin_not_allowed",
            "origin_not_allowed",
        ]
    );

    // The failed attempts did not end the session.
    let res = me_with_cookie(&app, cookie).await;
    assert_eq!(res.status(), 200);

    // 5. The right token from the same origin succeeds.
    let res = put_policy(
        &app,
        cookie,
        &[
            ("x-csrf-token", &browser.csrf),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = put_policy(
        &app,
        cookie,
        &[("x-csrf-token", &browser.csrf), ("origin", &app.base)],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.events("CSRF_VIOLATION").await.len(), 8);

    // A creating request needs the token too.
    let new_user = json!({
        "email": format!("new-{}@example.com", uuid::Uuid::new_v4().simple()),
        "password": GOOD_PASSWORD,
        "role": "agent",
        "display_name": "New Agent",
    });
    let res = app
        .client
        .post(app.url("/api/users"))
        .header(COOKIE, cookie)
        .json(&new_user)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    assert_eq!(app.events("CSRF_VIOLATION").await.len(), 9);
    let res = app
        .client
        .post(app.url("/api/users"))
        .header(COOKIE, cookie)
        .header("x-csrf-token", &browser.csrf)
        .header("sec-fetch-site", "same-origin")
        .json(&new_user)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Bearer requests carry no ambient credentials and need no token.
    let token = app.token(&admin).await;
    let res = app
        .client
        .put(app.url("/api/organization/security"))
        .bearer_auth(&token)
        .json(&json!({"require_totp_for_privileged": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Sign-out is state-changing too: refused without the token...
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    assert_eq!(me_with_cookie(&app, cookie).await.status(), 200);

    // ...and with it, the session ends and the cookie is cleared.
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .header(COOKIE, cookie)
        .header("x-csrf-token", &browser.csrf)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cleared = set_cookie(&res);
    assert!(
        cleared.starts_with(&format!("{COOKIE_NAME}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let res = me_with_cookie(&app, cookie).await;
    assert_eq!(assert_problem(res, 401).await["code"], "invalid_token");
    let res = put_policy(
        &app,
        cookie,
        &[
            ("x-csrf-token", &browser.csrf),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_problem(res, 401).await;

    // Only that session ended: the other one still works.
    assert_eq!(me_with_cookie(&app, &other.cookie).await.status(), 200);
}

#[tokio::test]
async fn json_endpoints_refuse_text_plain_and_form_bodies() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    // Correct credentials, valid JSON text: only the media type is wrong, as
    // in a cross-site `<form enctype="text/plain">`.
    let json_text = json!({"email": user.email, "password": user.password}).to_string();
    let form_text = format!(
        "email={}&password={}",
        user.email.replace('@', "%40"),
        user.password
    );
    for path in ["/api/auth/login", "/api/auth/session"] {
        for (content_type, body) in [
            ("text/plain", json_text.clone()),
            ("text/plain;charset=UTF-8", json_text.clone()),
            ("application/x-www-form-urlencoded", form_text.clone()),
        ] {
            let res = app
                .client
                .post(app.url(path))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(
                res.headers().get(SET_COOKIE).is_none(),
                "{path} {content_type}"
            );
            let problem = assert_problem(res, 415).await;
            assert_eq!(
                problem["code"], "unsupported_media_type",
                "{path} {content_type}"
            );
        }
    }
    // No content type at all is refused as well.
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .body(json_text.clone())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;
    assert!(
        app.events("AUTH_FAILURE").await.is_empty(),
        "the bodies never reached the sign-in logic"
    );
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app_with(|s| s.auth.session_idle_secs = 1).await;
    let user = app.org_with(Role::Agent).await;
    let browser = sign_in_browser(&app, &user).await;
    assert_eq!(me_with_cookie(&app, &browser.cookie).await.status(), 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = me_with_cookie(&app, &browser.cookie).await;
    assert_eq!(assert_problem(res, 401).await["code"], "invalid_token");
    // And it stays dead: an expired session is revoked, not merely idle.
    assert_problem(me_with_cookie(&app, &browser.cookie).await, 401).await;

    // A fresh sign-in works again.
    let again = sign_in_browser(&app, &user).await;
    assert_eq!(me_with_cookie(&app, &again.cookie).await.status(), 200);
}

#[tokio::test]
async fn a_session_past_its_absolute_lifetime_ends_however_busy() {
    // Two seconds of absolute lifetime; the idle timeout stays 30 minutes.
    let app = spawn_app_with(|s| s.auth.session_absolute_secs = 2).await;
    let user = app.org_with(Role::Agent).await;
    let browser = sign_in_browser(&app, &user).await;

    // In use all along, well within the idle timeout…
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(me_with_cookie(&app, &browser.cookie).await.status(), 200);
    }
    // …and still over once it is two seconds old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = app.events("INVALID_TOKEN").await.len();
    let res = me_with_cookie(&app, &browser.cookie).await;
    assert_eq!(assert_problem(res, 401).await["code"], "invalid_token");
    let events = app.events("INVALID_TOKEN").await;
    assert_eq!(events.len(), before + 1);
    let details: Value = serde_json::from_str(&events[before].details).unwrap();
    assert_eq!(details["reason"], "session_expired");
    // The session is revoked, so it stays over.
    let revoked: Option<i64> =
        sqlx::query_scalar("SELECT revoked_at FROM sessions WHERE user_id = $1")
            .bind(&user.id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert!(revoked.is_some());
    assert_problem(me_with_cookie(&app, &browser.cookie).await, 401).await;
}

#[tokio::test]
async fn a_tampered_or_forged_cookie_is_refused() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let browser = sign_in_browser(&app, &user).await;
    let value = browser.cookie.split_once('=').unwrap().1.to_string();

    // Flip one character at several positions of the sealed value.
    for at in [0, value.len() / 2, value.len() - 1] {
        let mut bytes = value.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_ne!(tampered, value);
        let res = me_with_cookie(&app, &format!("{COOKIE_NAME}={tampered}")).await;
        assert_eq!(
            assert_problem(res, 401).await["code"],
            "invalid_token",
            "position {at}"
        );
    }
    // Truncated, extended, empty and plain session ids are refused too.
    for forged in [
        value[..value.len() - 4].to_string(),
        format!("{value}AAAA"),
        String::new(),
        user.id.clone(),
    ] {
        let res = me_with_cookie(&app, &format!("{COOKIE_NAME}={forged}")).await;
        assert_problem(res, 401).await;
    }
    assert!(!app.events("INVALID_TOKEN").await.is_empty());

    // The genuine cookie still works.
    assert_eq!(me_with_cookie(&app, &browser.cookie).await.status(), 200);
}
