//! Rate limits over real HTTP: the login rule, the IETF fields, progressive
//! blocks (with the manual clock), and client addresses behind proxies; the
//! other default rules (registration and password-reset mails 3 an hour,
//! calls 50 a minute, webhooks 100 a minute, the rest of the API 1000 and
//! everything else 100 per 15 minutes; health checks and assets never
//! counted), and per-user budgets for rules keyed by user.

use std::time::Duration;

use kraliki::security::ratelimit::{KeyKind, Rule};
use kraliki::store::users::Role;
use serde_json::json;

use crate::helpers::*;

async fn limited_app(trusted: &[&str]) -> TestApp {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    spawn_app_with(move |s| {
        s.rate_limit.enabled = true;
        s.trusted_proxies = trusted;
    })
    .await
}

async fn bad_login(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/auth/login"))
        // A fresh address each time, so only the address-based rate limit
        // (not the per-address sign-in delay) can refuse it.
        .json(&json!({
            "email": format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple()),
            "password": "wrong-password-123",
        }));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn sixth_login_from_one_address_is_refused_and_logged() {
    let app = limited_app(&[]).await;
    for i in 0..5 {
        let res = bad_login(&app, None).await;
        assert_eq!(res.status(), 401, "attempt {i}");
        assert_eq!(header(&res, "ratelimit-policy"), "\"login\";q=5;w=900");
        assert!(header(&res, "ratelimit").starts_with(&format!("\"login\";r={};t=", 4 - i)));
    }
    let res = bad_login(&app, None).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = header(&res, "retry-after").parse().unwrap();
    assert!(retry > 0 && retry <= 900, "Retry-After {retry}");
    let rl = header(&res, "ratelimit");
    assert!(rl.starts_with("\"login\";r=0;t="), "{rl}");
    let body = assert_problem(res, 429).await;
    assert_eq!(body["code"], "rate_limited");

    // The session route shares the login budget.
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": "nobody@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);

    let line = app
        .log
        .lines()
        .into_iter()
        .find(|l| l["type"] == "RATE_LIMIT_EXCEEDED")
        .expect("a RATE_LIMIT_EXCEEDED line");
    assert_eq!(line["message"], "SECURITY EVENT");
    assert_eq!(line["ip"], "127.0.0.1");
    assert_eq!(line["url"], "/api/auth/login");
    assert_eq!(line["limit"], 5);
    assert_eq!(line["severity"], "HIGH");
    assert_eq!(app.events("RATE_LIMIT_EXCEEDED").await.len(), 1);

    // Other routes are counted separately.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("ratelimit-policy").is_none());
}

#[tokio::test]
async fn each_further_violation_doubles_the_block() {
    let app = limited_app(&[]).await;
    for _ in 0..5 {
        bad_login(&app, None).await;
    }
    let first = bad_login(&app, None).await;
    assert_eq!(first.status(), 429);
    let first_retry: u64 = header(&first, "retry-after").parse().unwrap();
    assert!(first_retry <= 900);

    // The first block lasts until the window resets.
    app.clock.advance(Duration::from_secs(first_retry + 1));
    for i in 0..5 {
        assert_eq!(bad_login(&app, None).await.status(), 401, "attempt {i}");
    }
    let second = bad_login(&app, None).await;
    assert_eq!(second.status(), 429);
    let second_retry: u64 = header(&second, "retry-after").parse().unwrap();
    assert_eq!(second_retry, 1800, "the second block is twice the window");

    // Still blocked halfway through, without escalating.
    app.clock.advance(Duration::from_secs(900));
    let mid = bad_login(&app, None).await;
    assert_eq!(mid.status(), 429);
    assert_eq!(header(&mid, "retry-after"), "900");

    app.clock.advance(Duration::from_secs(901));
    for _ in 0..5 {
        assert_eq!(bad_login(&app, None).await.status(), 401);
    }
    let third = bad_login(&app, None).await;
    assert_eq!(header(&third, "retry-after"), "3600");

    let events = app.events("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(events.len(), 3);
    let last: serde_json::Value = serde_json::from_str(&events[2].details).unwrap();
    assert_eq!(last["violations"], 3);
    assert_eq!(events[2].severity, "HIGH");
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let app = limited_app(&[]).await;
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        assert_eq!(bad_login(&app, Some(&xff)).await.status(), 401);
    }
    let res = bad_login(&app, Some("203.0.113.99")).await;
    assert_eq!(res.status(), 429, "rotating X-Forwarded-For must not help");
    let events = app.events("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(events[0].ip, "127.0.0.1");
}

#[tokio::test]
async fn forwarded_for_is_used_from_trusted_proxies() {
    let app = limited_app(&["127.0.0.1/32"]).await;
    for _ in 0..5 {
        assert_eq!(bad_login(&app, Some("198.51.100.7")).await.status(), 401);
    }
    let res = bad_login(&app, Some("198.51.100.7")).await;
    assert_eq!(res.status(), 429);
    // Another client behind the same proxy is its own key.
    let res = bad_login(&app, Some("198.51.100.8")).await;
    assert_eq!(res.status(), 401);
    let events = app.events("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(events[0].ip, "198.51.100.7");
}

/// `POST /api/auth/register` for a new organization with a fresh address.
async fn register(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/register"))
        .json(&json!({
            "organization_name": "Limited Calls",
            "email": format!("founder-{}@example.com", uuid::Uuid::new_v4().simple()),
            "password": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap()
}

/// `POST /api/auth/forgot-password` for `email`.
async fn forgot(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
}

async fn organization_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// Assert a 429 of rule `name` (`limit` per `window` seconds): problem
/// document, `Retry-After` within the window, both IETF fields naming the
/// rule.
async fn assert_limited(res: reqwest::Response, name: &str, limit: u64, window: u64) {
    assert_eq!(
        header(&res, "ratelimit-policy"),
        format!("\"{name}\";q={limit};w={window}")
    );
    let rl = header(&res, "ratelimit");
    assert!(rl.starts_with(&format!("\"{name}\";r=0;t=")), "{rl}");
    let retry: u64 = header(&res, "retry-after").parse().unwrap();
    assert!(retry > 0 && retry <= window, "Retry-After {retry}");
    assert_eq!(assert_problem(res, 429).await["code"], "rate_limited");
}

/// The `rule` of every stored RATE_LIMIT_EXCEEDED event, oldest first.
async fn exceeded_rules(app: &TestApp) -> Vec<String> {
    app.events("RATE_LIMIT_EXCEEDED")
        .await
        .iter()
        .map(|e| {
            let details: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            details["rule"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test]
async fn registration_allows_three_an_hour_from_one_address() {
    let app = limited_app(&[]).await;
    for i in 0..3 {
        let res = register(&app).await;
        assert_eq!(res.status(), 201, "registration {i}");
        assert_eq!(header(&res, "ratelimit-policy"), "\"register\";q=3;w=3600");
        assert!(header(&res, "ratelimit").starts_with(&format!("\"register\";r={};t=", 2 - i)));
    }
    let orgs = organization_count(&app).await;
    assert_limited(register(&app).await, "register", 3, 3600).await;
    assert_eq!(organization_count(&app).await, orgs, "nothing was created");
    assert_eq!(exceeded_rules(&app).await, ["register"]);
    // Signing in is another budget.
    assert_eq!(bad_login(&app, None).await.status(), 401);

    // Still refused late in the hour; allowed again once it is over.
    app.clock.advance(Duration::from_secs(3500));
    assert_eq!(register(&app).await.status(), 429);
    app.clock.advance(Duration::from_secs(101));
    assert_eq!(register(&app).await.status(), 201);
}

#[tokio::test]
async fn reset_mails_can_be_asked_for_three_times_an_hour_from_one_address() {
    let app = limited_app(&[]).await;
    for i in 0..3 {
        // Different addresses: the limit is on the client, not the mailbox.
        let res = forgot(&app, &format!("someone-{i}@example.com")).await;
        assert_eq!(res.status(), 202, "request {i}");
        assert_eq!(
            header(&res, "ratelimit-policy"),
            "\"forgot_password\";q=3;w=3600"
        );
    }
    let res = forgot(&app, "someone-else@example.com").await;
    assert_limited(res, "forgot_password", 3, 3600).await;
    assert_eq!(exceeded_rules(&app).await, ["forgot_password"]);
    // Registration is another budget.
    assert_eq!(register(&app).await.status(), 201);

    app.clock.advance(Duration::from_secs(3601));
    assert_eq!(forgot(&app, "someone-0@example.com").await.status(), 202);
}

#[tokio::test]
async fn calls_allow_fifty_a_minute_from_one_address() {
    let app = limited_app(&[]).await;
    let user = app.org_with(Role::Agent).await;
    let token = app.token(&user).await;
    let call = app
        .create_call(&user.org, Some(&user.id), "completed")
        .await;
    for i in 0..50 {
        // The list and single calls share the budget.
        let path = if i % 2 == 0 {
            "/api/calls".to_string()
        } else {
            format!("/api/calls/{call}")
        };
        let res = app.get_auth(&path, &token).await;
        assert_eq!(res.status(), 200, "request {i} to {path}");
        assert_eq!(header(&res, "ratelimit-policy"), "\"calls\";q=50;w=60");
    }
    assert_limited(app.get_auth("/api/calls", &token).await, "calls", 50, 60).await;
    let res = app.get_auth(&format!("/api/calls/{call}"), &token).await;
    assert_eq!(res.status(), 429);
    assert_eq!(exceeded_rules(&app).await, ["calls"]);

    // The rest of the API is another budget.
    let res = app.get_auth("/api/auth/me", &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ratelimit-policy"), "\"api\";q=1000;w=900");

    // A minute later calls are allowed again.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(app.get_auth("/api/calls", &token).await.status(), 200);
}

/// `GET /api/calls` with a bearer token.
async fn calls(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_auth("/api/calls", token).await
}

#[tokio::test]
async fn a_rule_keyed_by_user_gives_each_user_of_one_address_a_budget() {
    // The defaults key every rule by address; operators can key one by user.
    assert!(kraliki::security::ratelimit::RateLimitSettings::default()
        .rules
        .iter()
        .all(|r| r.key == KeyKind::Ip));
    let app = spawn_app_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rules = vec![
            Rule {
                key: KeyKind::User,
                ..Rule::limited("calls_per_user", Some("GET"), "/api/calls", 3, 60)
            },
            Rule::limited("default", None, "*", 1000, 900),
        ];
    })
    .await;
    let first = app.org_with(Role::Agent).await;
    let second = app.create_user(&first.org, Role::Agent).await;
    let first_token = app.token(&first).await;
    let second_token = app.token(&second).await;

    for i in 0..3 {
        let res = calls(&app, &first_token).await;
        assert_eq!(res.status(), 200, "first user, request {i}");
        assert_eq!(
            header(&res, "ratelimit-policy"),
            "\"calls_per_user\";q=3;w=60"
        );
    }
    assert_limited(calls(&app, &first_token).await, "calls_per_user", 3, 60).await;

    // Same address, another user: a budget of their own.
    for i in 0..3 {
        assert_eq!(
            calls(&app, &second_token).await.status(),
            200,
            "second user, request {i}"
        );
    }
    assert_eq!(calls(&app, &second_token).await.status(), 429);

    // The budget is the user's, not the token's: signing in again does not
    // reset it.
    let another_token = app.token(&first).await;
    assert_eq!(calls(&app, &another_token).await.status(), 429);
    // Requests without a user count by address, apart from both users.
    let res = app.client.get(app.url("/api/calls")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        header(&res, "ratelimit-policy"),
        "\"calls_per_user\";q=3;w=60"
    );
    assert!(header(&res, "ratelimit").starts_with("\"calls_per_user\";r=2;t="));
}

#[tokio::test]
async fn a_users_browser_sessions_and_tokens_share_one_budget_under_a_user_rule() {
    let app = spawn_app_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rules = vec![
            Rule {
                key: KeyKind::User,
                ..Rule::limited("calls_per_user", Some("GET"), "/api/calls", 4, 60)
            },
            Rule::limited("default", None, "*", 1000, 900),
        ];
    })
    .await;
    let user = app.org_with(Role::Agent).await;
    let other = app.create_user(&user.org, Role::Agent).await;
    let first = app.browser_session(&user).await.cookie;
    let BrowserSession {
        cookie: second,
        csrf: second_csrf,
        ..
    } = app.browser_session(&user).await;
    assert_ne!(first, second, "two sessions");
    let with_cookie = |cookie: &str| {
        app.client
            .get(app.url("/api/calls"))
            .header("cookie", cookie.to_string())
            .send()
    };
    // Two requests from each session and none left: one budget, the user's.
    for cookie in [&first, &second, &first] {
        assert_eq!(with_cookie(cookie).await.unwrap().status(), 200);
    }
    let token = app.token(&user).await;
    assert_eq!(calls(&app, &token).await.status(), 200);
    assert_limited(with_cookie(&second).await.unwrap(), "calls_per_user", 4, 60).await;
    assert_eq!(calls(&app, &token).await.status(), 429);
    // Another user from the same address is not affected.
    let theirs = app.browser_session(&other).await.cookie;
    assert_eq!(with_cookie(&theirs).await.unwrap().status(), 200);
    // A signed-out session no longer names its user: it counts by address
    // (a fresh budget here), and is refused as signed out.
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .header("cookie", second.clone())
        .header("x-csrf-token", second_csrf)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let res = with_cookie(&second).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        header(&res, "ratelimit").starts_with("\"calls_per_user\";r=3;t="),
        "{}",
        header(&res, "ratelimit")
    );
}

#[tokio::test]
async fn severity_rises_with_repeated_violations() {
    let app = spawn_app_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rules = vec![
            Rule::limited("tiny", Some("GET"), "/api/openapi.json", 1, 60),
            Rule::limited("default", None, "*", 1000, 900),
        ];
    })
    .await;
    let get = || async {
        app.client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
    };
    // Four violations, each after the previous block has ended.
    for violation in 1..=4 {
        assert_eq!(
            get().await.status(),
            200,
            "allowed before violation {violation}"
        );
        let refused = get().await;
        assert_eq!(refused.status(), 429, "violation {violation}");
        let retry: u64 = header(&refused, "retry-after").parse().unwrap();
        app.clock.advance(Duration::from_secs(retry + 1));
    }
    // In the order the log wrote them (stored events of one millisecond may
    // list in either order).
    let severities: Vec<String> = app
        .log
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "RATE_LIMIT_EXCEEDED")
        .map(|l| l["severity"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(app.events("RATE_LIMIT_EXCEEDED").await.len(), 4);
    // Not the sign-in rule: the first violation is MEDIUM, the second and
    // third HIGH, the fourth and later CRITICAL.
    assert_eq!(severities, ["MEDIUM", "HIGH", "HIGH", "CRITICAL"]);
}

/// `GET path` without credentials.
async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

/// Assert an allowed answer of rule `name` (`limit` per `window` seconds)
/// with `left` requests left.
fn assert_counted(res: &reqwest::Response, name: &str, limit: u64, window: u64, left: u64) {
    assert_ne!(res.status(), 429, "{} was refused", res.url());
    assert_eq!(
        header(res, "ratelimit-policy"),
        format!("\"{name}\";q={limit};w={window}"),
        "{}",
        res.url()
    );
    let rl = header(res, "ratelimit");
    assert!(
        rl.starts_with(&format!("\"{name}\";r={left};t=")),
        "{}: {rl}",
        res.url()
    );
}

#[tokio::test]
async fn the_api_allows_a_thousand_requests_per_fifteen_minutes_from_one_address() {
    let app = limited_app(&[]).await;
    // Answered, refused and unknown routes under /api share the budget.
    let paths = ["/api/auth/me", "/api/users", "/api/no-such-route", "/api"];
    for i in 0..1000u64 {
        let path = paths[i as usize % paths.len()];
        let res = get(&app, path).await;
        let expected = if path.starts_with("/api/auth") || path == "/api/users" {
            401
        } else {
            404
        };
        assert_eq!(res.status(), expected, "request {i} to {path}");
        assert_counted(&res, "api", 1000, 900, 999 - i);
    }
    assert_limited(get(&app, "/api/auth/me").await, "api", 1000, 900).await;
    assert_eq!(get(&app, "/api/no-such-route").await.status(), 429);
    assert_eq!(exceeded_rules(&app).await, ["api"]);

    // Calls and the console are other budgets.
    let user = app.org_with(Role::Agent).await;
    let res = app.get_auth("/api/calls", &app.token(&user).await).await;
    assert_eq!(res.status(), 200);
    assert_counted(&res, "calls", 50, 60, 49);
    let res = get(&app, "/").await;
    assert_eq!(res.status(), 200);
    assert_counted(&res, "default", 100, 900, 99);

    // Still refused late in the window; allowed again once it is over.
    app.clock.advance(Duration::from_secs(850));
    assert_eq!(get(&app, "/api/auth/me").await.status(), 429);
    app.clock.advance(Duration::from_secs(51));
    let res = get(&app, "/api/auth/me").await;
    assert_eq!(res.status(), 401);
    assert_counted(&res, "api", 1000, 900, 999);
}

#[tokio::test]
async fn everything_else_allows_a_hundred_requests_per_fifteen_minutes_from_one_address() {
    let app = limited_app(&[]).await;
    // The console, the key set, the metrics and unknown pages share it.
    let paths = [
        ("/", 200),
        ("/.well-known/jwks.json", 200),
        ("/metrics", 401),
        ("/no-such-page", 404),
        // Only the exact exempt paths are exempt.
        ("/healthz", 404),
    ];
    for i in 0..100u64 {
        let (path, status) = paths[i as usize % paths.len()];
        let res = get(&app, path).await;
        assert_eq!(res.status(), status, "request {i} to {path}");
        assert_counted(&res, "default", 100, 900, 99 - i);
    }
    assert_limited(get(&app, "/").await, "default", 100, 900).await;
    assert_eq!(get(&app, "/.well-known/jwks.json").await.status(), 429);
    assert_eq!(exceeded_rules(&app).await, ["default"]);

    // The API is another budget.
    let res = get(&app, "/api/auth/me").await;
    assert_eq!(res.status(), 401);
    assert_counted(&res, "api", 1000, 900, 999);

    app.clock.advance(Duration::from_secs(901));
    let res = get(&app, "/").await;
    assert_eq!(res.status(), 200);
    assert_counted(&res, "default", 100, 900, 99);
}

#[tokio::test]
async fn health_ready_and_assets_are_never_counted_or_limited() {
    let app = limited_app(&[]).await;
    let exempt = [
        ("/health", 200),
        ("/ready", 200),
        ("/assets/kraliki.css", 200),
        ("/favicon.ico", 200),
        ("/static/app.js", 404),
    ];
    // Well past the default budget of 100 on each of them.
    for i in 0..120 {
        for (path, status) in exempt {
            let res = get(&app, path).await;
            assert_eq!(res.status(), status, "request {i} to {path}");
            assert!(
                res.headers().get("ratelimit-policy").is_none()
                    && res.headers().get("ratelimit").is_none(),
                "{path} carries rate-limit fields"
            );
        }
    }
    // None of that was counted against the address's default budget...
    let res = get(&app, "/").await;
    assert_counted(&res, "default", 100, 900, 99);

    // ...and they stay open to an address refused everywhere else.
    for _ in 0..99 {
        get(&app, "/").await;
    }
    assert_eq!(get(&app, "/").await.status(), 429);
    for (path, status) in exempt {
        let res = get(&app, path).await;
        assert_eq!(res.status(), status, "{path} after the default limit");
        assert!(res.headers().get("ratelimit-policy").is_none());
    }
    assert_eq!(exceeded_rules(&app).await, ["default"]);
}

#[tokio::test]
async fn webhooks_allow_a_hundred_a_minute_even_without_a_route() {
    let app = limited_app(&[]).await;
    let paths = [
        "/api/webhooks/twilio/voice",
        "/api/webhooks/telnyx",
        "/api/webhooks",
    ];
    let post = |path: &str| {
        app.client
            .post(app.url(path))
            .json(&json!({"CallSid": "CA00000000000000000000000000000000"}))
            .send()
    };
    for i in 0..100u64 {
        let path = paths[i as usize % paths.len()];
        let res = post(path).await.unwrap();
        assert_eq!(res.status(), 404, "request {i} to {path}: no route yet");
        assert_counted(&res, "webhooks", 100, 60, 99 - i);
    }
    assert_limited(
        post("/api/webhooks/twilio/voice").await.unwrap(),
        "webhooks",
        100,
        60,
    )
    .await;
    let res = app
        .client
        .get(app.url("/api/webhooks/telnyx"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "every method shares the budget");
    assert_eq!(exceeded_rules(&app).await, ["webhooks"]);

    // The rest of the API is another budget.
    let res = get(&app, "/api/auth/me").await;
    assert_eq!(res.status(), 401);
    assert_counted(&res, "api", 1000, 900, 999);

    // A minute later webhooks are allowed again.
    app.clock.advance(Duration::from_secs(61));
    let res = post("/api/webhooks/telnyx").await.unwrap();
    assert_eq!(res.status(), 404);
    assert_counted(&res, "webhooks", 100, 60, 99);
}
