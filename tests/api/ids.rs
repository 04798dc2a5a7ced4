//! Intrusion detection over real HTTP: events name the rule and field,
//! repeated hits block an address (and only that one), observe mode only
//! logs, off mode inspects nothing, and the repository's corpora replay as
//! expected: zero events for 450+ benign call-center requests, the expected
//! rule for every attack.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// One request of a corpus in `tests/data/`.
#[derive(serde::Deserialize)]
struct Entry {
    method: String,
    path: String,
    query: Option<String>,
    user_agent: String,
    body: Option<Value>,
    content_type: Option<String>,
    expect_rule: Option<String>,
    expect_field: Option<String>,
}

fn corpus(name: &str) -> Vec<Entry> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn send(app: &TestApp, e: &Entry) -> reqwest::Response {
    let url = match &e.query {
        Some(q) => format!("{}{}?{}", app.base, e.path, q),
        None => format!("{}{}", app.base, e.path),
    };
    let method = reqwest::Method::from_bytes(e.method.as_bytes()).unwrap();
    let mut req = app
        .client
        .request(method, url)
        .header("user-agent", &e.user_agent);
    match (&e.body, &e.content_type) {
        (Some(Value::String(raw)), Some(ct)) => {
            req = req.header("content-type", ct).body(raw.clone());
        }
        (Some(v), _) if !v.is_null() => req = req.json(v),
        _ => {}
    }
    req.send().await.unwrap()
}

fn details(e: &kraliki::store::events::StoredEvent) -> Value {
    serde_json::from_str(&e.details).unwrap()
}

async fn suspicious(app: &TestApp) -> Vec<Value> {
    app.events("SUSPICIOUS_ACTIVITY")
        .await
        .iter()
        .map(details)
        .collect()
}

#[tokio::test]
async fn xss_in_the_query_is_reported_by_rule_and_field_without_the_payload() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/calls?q=<script>alert(1)</script>"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the request itself goes on to the route");

    let events = app.events("SUSPICIOUS_ACTIVITY").await;
    assert_eq!(events.len(), 1);
    let d = details(&events[0]);
    assert_eq!(d["rule"], "xss");
    assert_eq!(d["field"], "query.q");
    assert!(
        !events[0].details.contains("alert"),
        "{}",
        events[0].details
    );

    let line = app
        .log
        .lines()
        .into_iter()
        .find(|l| l["type"] == "SUSPICIOUS_ACTIVITY")
        .unwrap();
    assert_eq!(line["message"], "SECURITY EVENT");
    assert_eq!(line["rule"], "xss");
    assert_eq!(line["field"], "query.q");
}

#[tokio::test]
async fn ten_hits_in_five_minutes_block_that_address_only() {
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let attack = |ip: &'static str| {
        app.client
            .get(app.url("/api/calls?q=<script>alert(1)</script>"))
            .header("x-forwarded-for", ip)
            .send()
    };
    for i in 0..9 {
        assert_eq!(
            attack("198.51.100.20").await.unwrap().status(),
            401,
            "hit {i}"
        );
    }
    let tenth = attack("198.51.100.20").await.unwrap();
    let body = assert_problem(tenth, 403).await;
    assert_eq!(body["code"], "ip_blocked");

    let blocked = app.events("IP_BLOCKED").await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].ip, "198.51.100.20");
    assert_eq!(blocked[0].severity, "HIGH");

    // Everything from the blocked address is refused, attacks or not.
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-forwarded-for", "198.51.100.20")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().contains_key("retry-after"));

    // Another address is served normally.
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-forwarded-for", "198.51.100.21")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The block ends by itself.
    app.clock.advance(Duration::from_secs(3601));
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-forwarded-for", "198.51.100.20")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn hits_spread_beyond_the_window_do_not_block() {
    let app = spawn_app().await;
    for _ in 0..9 {
        app.client
            .get(app.url("/api/calls?q=<script>alert(1)</script>"))
            .send()
            .await
            .unwrap();
    }
    app.clock.advance(Duration::from_secs(301));
    let res = app
        .client
        .get(app.url("/api/calls?q=<script>alert(1)</script>"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(app.events("IP_BLOCKED").await.is_empty());
}

#[tokio::test]
async fn observe_mode_logs_but_never_blocks() {
    let app = spawn_app_with(|s| s.ids.mode = kraliki::config::IdsMode::Observe).await;
    for _ in 0..12 {
        let res = app
            .client
            .get(app.url("/api/calls?path=../../etc/passwd"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let events = suspicious(&app).await;
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|d| d["mode"] == "observe"));
    assert!(app.events("IP_BLOCKED").await.is_empty());
}

#[tokio::test]
async fn off_mode_inspects_nothing_and_never_blocks() {
    use kraliki::config::IdsMode;
    // A threshold of one: any inspection would block at the first attack.
    let strict = |mode: IdsMode| {
        move |s: &mut kraliki::config::Settings| {
            s.ids.mode = mode;
            s.ids.block_threshold = 1;
        }
    };
    let attack = |app: &TestApp| {
        app.client
            .get(app.url(
                "/api/calls?q=<script>alert(1)</script>&path=../../etc/passwd\
                 &id=1'%20UNION%20SELECT%20password%20FROM%20users--",
            ))
            .header("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")
            .send()
    };

    // The control: the same request is found, and blocked, when enforced.
    let enforced = spawn_app_with(strict(IdsMode::Enforce)).await;
    assert_eq!(attack(&enforced).await.unwrap().status(), 403);
    assert!(!suspicious(&enforced).await.is_empty());

    let app = spawn_app_with(strict(IdsMode::Off)).await;
    for i in 0..12 {
        let res = attack(&app).await.unwrap();
        assert_eq!(res.status(), 401, "request {i} goes on to its route");
    }
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    assert!(suspicious(&app).await.is_empty());
    assert!(app.events("IP_BLOCKED").await.is_empty());
    let logged: Vec<Value> = app
        .log
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "SUSPICIOUS_ACTIVITY" || l["type"] == "IP_BLOCKED")
        .collect();
    assert!(logged.is_empty(), "{logged:?}");
}

#[tokio::test]
async fn the_benign_corpus_raises_no_event() {
    let app = spawn_app().await;
    let entries = corpus("ids_benign.json");
    assert!(
        entries.len() >= 300,
        "the corpus has {} requests",
        entries.len()
    );
    for e in &entries {
        let res = send(&app, e).await;
        assert_ne!(res.status(), 403, "{} {} was blocked", e.method, e.path);
        let events = suspicious(&app).await;
        assert!(
            events.is_empty(),
            "{} {} {:?} raised {events:?}",
            e.method,
            e.path,
            e.query
        );
    }
    assert!(app.events("IP_BLOCKED").await.is_empty());
}

#[tokio::test]
async fn every_attack_of_the_corpus_is_reported_with_its_rule_and_field() {
    let app = spawn_app_with(|s| s.ids.block_threshold = 100_000).await;
    let entries = corpus("ids_attacks.json");
    assert!(entries.len() >= 80);
    // Events are told apart by id, not by position: two requests within
    // one millisecond may list their events in either order.
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        send(&app, e).await;
        let new: Vec<Value> = app
            .events("SUSPICIOUS_ACTIVITY")
            .await
            .iter()
            .filter(|ev| seen.insert(ev.id.clone()))
            .map(details)
            .collect();
        let rule = e.expect_rule.as_deref().unwrap();
        let field = e.expect_field.as_deref().unwrap();
        assert!(
            new.iter().any(|d| d["rule"] == rule && d["field"] == field),
            "{} {} {:?}: expected {rule} in {field}, got {new:?}",
            e.method,
            e.path,
            e.query
        );
    }
}
