//! Rate limits over real HTTP: the login rule, the IETF fields, progressive
//! blocks (with the manual clock), and client addresses behind proxies.

use std::time::Duration;

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
