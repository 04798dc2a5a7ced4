//! Stored security events for admins (`GET /api/security/events`): access,
//! organization scope, filters, paging and refusals of bad filters; the
//! deployment-wide view of the operator organization; and the live stream
//! of HIGH and CRITICAL events (`GET /api/security/events/stream`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use kraliki::http::request::RequestMeta;
use kraliki::security::events::{rfc3339_ms, EventType, SecurityEvent, Severity};
use kraliki::store;
use kraliki::store::events::StoredEvent;
use kraliki::store::users::Role;
use serde_json::{json, Value};

use crate::helpers::*;

const SEVERITIES: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];

fn rank(severity: &str) -> usize {
    SEVERITIES
        .iter()
        .position(|s| *s == severity)
        .unwrap_or_else(|| panic!("unknown severity {severity}"))
}

/// Store an event directly, `ago_ms` in the past.
async fn seed(
    app: &TestApp,
    org: Option<&str>,
    event_type: &str,
    severity: &str,
    ip: &str,
    ago_ms: i64,
) -> String {
    let e = StoredEvent {
        id: store::new_id(),
        organization_id: org.map(str::to_string),
        event_type: event_type.into(),
        severity: severity.into(),
        ip: ip.into(),
        method: "GET".into(),
        url: "/seeded".into(),
        request_id: format!("seed-{}", uuid::Uuid::new_v4().simple()),
        user_id: None,
        details: "{}".into(),
        created_at: store::now_ms() - ago_ms,
    };
    store::events::insert(&app.state.db, &e).await.unwrap();
    e.id
}

/// `GET /api/security/events` with `query`; the response.
async fn list_raw(app: &TestApp, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(app.url("/api/security/events"))
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .unwrap()
}

/// Every event matching `query`, walking the pages of `limit`.
async fn walk(app: &TestApp, token: &str, query: &[(&str, &str)], limit: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..500 {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let res = list_raw(app, token, &q).await;
        assert_eq!(res.status(), 200, "{query:?}");
        let page: Value = res.json().await.unwrap();
        let page_items = page["items"].as_array().unwrap();
        assert!(page_items.len() <= limit.parse::<usize>().unwrap());
        items.extend(page_items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("paging does not end");
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of `all` that satisfy `keep`, in order.
fn expected(all: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<String> {
    ids(&all.iter().filter(|e| keep(e)).cloned().collect::<Vec<_>>())
}

#[tokio::test]
async fn admins_search_their_organizations_events_with_filters_and_paging() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let other = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    let agent_token = app.token(&agent).await;
    let other_token = app.token(&other).await;

    // An agent is refused, and that is an ACCESS_DENIED event.
    let res = list_raw(&app, &agent_token, &[]).await;
    assert_problem(res, 403).await;
    let res = app
        .get_auth("/api/security/events/stream", &agent_token)
        .await;
    assert_problem(res, 403).await;
    let res = app
        .client
        .get(app.url("/api/security/events"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;

    let org = Some(admin.org.as_str());
    let low = seed(&app, org, "AUTH_FAILURE", "LOW", "198.51.100.7", 7_200_000).await;
    let medium = seed(
        &app,
        org,
        "SUSPICIOUS_ACTIVITY",
        "MEDIUM",
        "198.51.100.7",
        1_800_000,
    )
    .await;
    let high = seed(&app, org, "CSRF_VIOLATION", "HIGH", "2001:db8::1", 600_000).await;
    let critical = seed(&app, org, "IP_BLOCKED", "CRITICAL", "203.0.113.9", 60_000).await;
    let theirs = seed(
        &app,
        Some(&other.org),
        "AUTH_FAILURE",
        "HIGH",
        "198.51.100.7",
        0,
    )
    .await;
    let nobodys = seed(&app, None, "AUTH_FAILURE", "MEDIUM", "198.51.100.7", 0).await;

    // Everything of the organization, newest first, the same whether
    // walked two at a time or read in one page.
    let all = walk(&app, &token, &[], "100").await;
    let by_two = walk(&app, &token, &[], "2").await;
    assert_eq!(ids(&by_two), ids(&all), "limit=2 walks the same list");
    let unique: HashSet<String> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len(), "no duplicates");
    for id in [&low, &medium, &high, &critical] {
        assert!(unique.contains(id), "own event {id} listed");
    }
    assert!(!unique.contains(&theirs), "another organization's event");
    assert!(!unique.contains(&nobodys), "an event of no organization");
    assert!(all
        .iter()
        .all(|e| e["organization_id"] == admin.org.as_str()));
    let times: Vec<String> = all
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap().to_string())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(
        times.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
        "{times:?}"
    );

    // The agent's refusal is there, naming who and what.
    let denied: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "ACCESS_DENIED")
        .collect();
    assert_eq!(denied.len(), 2, "one per refused request: {denied:#?}");
    for e in &denied {
        assert_eq!(e["user_id"], agent.id.as_str());
        assert_eq!(e["severity"], "MEDIUM");
        assert_eq!(e["ip"], "127.0.0.1");
        assert_eq!(e["details"]["permission"], "view_security_events");
        assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }

    // type
    let got = walk(&app, &token, &[("type", "AUTH_FAILURE")], "2").await;
    assert_eq!(ids(&got), expected(&all, |e| e["type"] == "AUTH_FAILURE"));
    assert_eq!(ids(&got), vec![low.clone()]);

    // severity: this level and above.
    for level in SEVERITIES {
        let got = walk(&app, &token, &[("severity", level)], "2").await;
        assert_eq!(
            ids(&got),
            expected(&all, |e| rank(e["severity"].as_str().unwrap())
                >= rank(level)),
            "severity={level}"
        );
    }
    let got = walk(&app, &token, &[("severity", "HIGH")], "100").await;
    assert_eq!(ids(&got), vec![critical.clone(), high.clone()]);

    // ip, in any spelling of the address.
    for (spelling, want) in [
        ("198.51.100.7", vec![medium.clone(), low.clone()]),
        ("::ffff:198.51.100.7", vec![medium.clone(), low.clone()]),
        ("2001:DB8:0:0:0:0:0:1", vec![high.clone()]),
        ("192.0.2.200", vec![]),
    ] {
        let got = walk(&app, &token, &[("ip", spelling)], "2").await;
        assert_eq!(ids(&got), want, "ip={spelling}");
    }

    // since (RFC 3339), in UTC and with an offset.
    let hour_ago = store::now_ms() - 3_600_000;
    let utc = rfc3339_ms(hour_ago);
    let offset = time::OffsetDateTime::from_unix_timestamp(hour_ago / 1000)
        .unwrap()
        .to_offset(time::macros::offset!(+2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for since in [&utc, &offset] {
        let got = walk(&app, &token, &[("since", since)], "2").await;
        let want = expected(&all, |e| e["id"] != low.as_str());
        assert_eq!(ids(&got), want, "since={since}");
    }

    // Filters combine.
    let got = walk(
        &app,
        &token,
        &[
            ("type", "SUSPICIOUS_ACTIVITY"),
            ("severity", "MEDIUM"),
            ("ip", "198.51.100.7"),
            ("since", &utc),
        ],
        "1",
    )
    .await;
    assert_eq!(ids(&got), vec![medium.clone()]);

    // The other organization's admin sees only theirs.
    let their_view = walk(&app, &other_token, &[], "100").await;
    assert!(ids(&their_view).contains(&theirs));
    assert!(their_view
        .iter()
        .all(|e| e["organization_id"] == other.org.as_str()));

    // Bad values are refused, naming the field.
    for (field, value) in [
        ("type", "auth_failure"),
        ("type", "NOT_A_TYPE"),
        ("severity", "SEVERE"),
        ("severity", "high"),
        ("ip", "999.1.1.1"),
        ("ip", "example.com"),
        ("since", "yesterday"),
        ("since", "2026-01-01"),
        ("since", "1700000000"),
        ("limit", "0"),
        ("limit", "101"),
        ("limit", "ten"),
        ("cursor", "not-a-cursor"),
        ("unexpected", "1"),
    ] {
        let res = list_raw(&app, &token, &[(field, value)]).await;
        let body = assert_problem(res, 400).await;
        assert_eq!(body["errors"][0]["field"], field, "{field}={value}: {body}");
    }
}

#[tokio::test]
async fn operator_admins_see_the_whole_deployment() {
    let operator = uuid::Uuid::new_v4().to_string();
    let configured = operator.clone();
    let app = spawn_app_with(move |s| s.operator_organization = configured).await;
    app.create_org_with_id(&operator, "Operator").await;
    let op_admin = app.create_user(&operator, Role::Admin).await;
    let op_token = app.token(&op_admin).await;
    let customer = app.org_with(Role::Admin).await;
    let customer_token = app.token(&customer).await;
    let customer_agent = app.create_user(&customer.org, Role::Agent).await;
    let agent_token = app.token(&customer_agent).await;

    // A failed sign-in for an e-mail nobody has: an event of no
    // organization.
    let ghost = format!("ghost-{}@example.com", uuid::Uuid::new_v4().simple());
    let res = app.login_raw(&ghost, "wrong-password-123").await;
    assert_eq!(res.status(), 401);
    // A refusal inside the customer organization.
    let res = app.get_auth("/api/users", &agent_token).await;
    assert_eq!(res.status(), 403);

    let everything = walk(&app, &op_token, &[], "2").await;
    let unscoped: Vec<&Value> = everything
        .iter()
        .filter(|e| e["type"] == "AUTH_FAILURE" && e["organization_id"].is_null())
        .collect();
    assert_eq!(unscoped.len(), 1, "{everything:#?}");
    assert_eq!(unscoped[0]["url"], "/api/auth/login");
    assert!(everything.iter().any(|e| e["type"] == "ACCESS_DENIED"
        && e["organization_id"] == customer.org.as_str()
        && e["user_id"] == customer_agent.id.as_str()));
    let unique: HashSet<String> = ids(&everything).into_iter().collect();
    assert_eq!(unique.len(), everything.len(), "no duplicates");

    // Filters apply to the wide view too.
    let failures = walk(&app, &op_token, &[("type", "AUTH_FAILURE")], "2").await;
    assert_eq!(
        ids(&failures),
        expected(&everything, |e| e["type"] == "AUTH_FAILURE")
    );
    assert!(!failures.is_empty());

    // The customer's admin sees the refusal but not the unscoped event.
    let theirs = walk(&app, &customer_token, &[], "2").await;
    assert!(theirs.iter().any(|e| e["type"] == "ACCESS_DENIED"));
    assert!(theirs
        .iter()
        .all(|e| e["organization_id"] == customer.org.as_str()));
}

/// One server-sent event.
#[derive(Debug)]
struct Message {
    event: String,
    data: Value,
}

/// Reads server-sent events from a response, a chunk at a time.
struct SseReader {
    res: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(app: &TestApp, token: &str) -> SseReader {
        let res = app.get_auth("/api/security/events/stream", token).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            res,
            buffer: String::new(),
        }
    }

    /// The next message with an event name (keep-alive comments are
    /// skipped), or `None` when nothing arrives within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Message> {
        self.read(wait, false).await
    }

    /// Like [`SseReader::next`], but the stream may also end.
    async fn next_or_end(&mut self, wait: Duration) -> Option<Message> {
        self.read(wait, true).await
    }

    async fn read(&mut self, wait: Duration, may_end: bool) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if !event.is_empty() {
                    let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
                    return Some(Message { event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) if may_end => return None,
                Ok(Ok(None)) => panic!("the stream ended"),
                Ok(Err(e)) => panic!("the stream failed: {e}"),
            }
        }
    }
}

/// Record a HIGH event tied to no organization, as the server does for
/// blocked addresses.
async fn unscoped_high_event(app: &TestApp) {
    let meta = RequestMeta {
        ip: "192.0.2.66".parse::<IpAddr>().unwrap(),
        method: "GET".into(),
        url: "/wp-login.php".into(),
        request_id: "unscoped-high".into(),
        user_agent: String::new(),
    };
    app.state
        .security
        .record(SecurityEvent::new(
            EventType::IpBlocked,
            Severity::High,
            &meta,
        ))
        .await;
}

#[tokio::test]
async fn the_stream_delivers_high_events_of_the_admins_organization_only() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let other = app.org_with(Role::Admin).await;
    let other_agent = app.create_user(&other.org, Role::Agent).await;
    let token = app.token(&admin).await;
    let other_token = app.token(&other).await;

    let res = app
        .client
        .get(app.url("/api/security/events/stream"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;

    let mut mine = SseReader::open(&app, &token).await;
    let mut theirs = SseReader::open(&app, &other_token).await;

    // First another organization's HIGH event and one of no organization,
    // then one of the admin's own: the first message must be the last.
    app.reuse_refresh_token(&other_agent).await;
    unscoped_high_event(&app).await;
    // A MEDIUM event of the admin's own organization is not streamed.
    let res = app.get_auth("/api/users", &app.token(&agent).await).await;
    assert_eq!(res.status(), 403);
    app.reuse_refresh_token(&agent).await;

    let msg = mine
        .next(Duration::from_secs(10))
        .await
        .expect("an alert within ten seconds");
    assert_eq!(msg.event, "security.alert");
    assert_eq!(msg.data["type"], "TOKEN_REUSE_DETECTED", "{:?}", msg.data);
    assert_eq!(msg.data["severity"], "HIGH");
    assert_eq!(msg.data["organization_id"], admin.org.as_str());
    assert_eq!(msg.data["user_id"], agent.id.as_str());
    assert_eq!(msg.data["url"], "/api/auth/refresh");
    assert!(msg.data["id"].is_string() && msg.data["timestamp"].is_string());
    assert!(msg.data["details"]["family_id"].is_string());
    // The stored event is the one streamed.
    let stored = walk(&app, &token, &[("type", "TOKEN_REUSE_DETECTED")], "100").await;
    assert_eq!(
        ids(&stored),
        vec![msg.data["id"].as_str().unwrap().to_string()]
    );
    assert!(
        mine.next(Duration::from_millis(500)).await.is_none(),
        "nothing else for this organization"
    );

    // The other admin got their own event, and nothing of this one's.
    let msg = theirs
        .next(Duration::from_secs(10))
        .await
        .expect("their alert");
    assert_eq!(msg.data["organization_id"], other.org.as_str());
    assert_eq!(msg.data["user_id"], other_agent.id.as_str());
    assert!(
        theirs.next(Duration::from_millis(500)).await.is_none(),
        "no other organization's or unscoped alerts"
    );
}

#[tokio::test]
async fn the_operator_stream_carries_every_high_event() {
    let operator = uuid::Uuid::new_v4().to_string();
    let configured = operator.clone();
    let app = spawn_app_with(move |s| s.operator_organization = configured).await;
    app.create_org_with_id(&operator, "Operator").await;
    let op_admin = app.create_user(&operator, Role::Admin).await;
    let customer_agent = app.org_with(Role::Agent).await;
    let mut stream = SseReader::open(&app, &app.token(&op_admin).await).await;

    unscoped_high_event(&app).await;
    app.reuse_refresh_token(&customer_agent).await;

    let first = stream.next(Duration::from_secs(10)).await.expect("alert");
    assert_eq!(first.event, "security.alert");
    assert_eq!(first.data["type"], "IP_BLOCKED");
    assert!(first.data["organization_id"].is_null());
    assert_eq!(first.data["request_id"], "unscoped-high");
    let second = stream.next(Duration::from_secs(10)).await.expect("alert");
    assert_eq!(second.data["type"], "TOKEN_REUSE_DETECTED");
    assert_eq!(second.data["organization_id"], customer_agent.org.as_str());
}

#[tokio::test]
async fn a_stream_stops_when_its_session_ends_or_loses_the_role() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let leaving = app.create_user(&admin.org, Role::Admin).await;
    let demoted = app.create_user(&admin.org, Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let token = app.token(&admin).await;
    let leaving_token = app.token(&leaving).await;
    let mut staying = SseReader::open(&app, &token).await;
    let mut signed_out = SseReader::open(&app, &leaving_token).await;
    let mut demoted_stream = SseReader::open(&app, &app.token(&demoted).await).await;

    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&leaving_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // A role change signs the user out everywhere.
    let res = app
        .client
        .patch(app.url(&format!("/api/users/{}", demoted.id)))
        .bearer_auth(&token)
        .json(&json!({"role": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.reuse_refresh_token(&agent).await;

    let msg = staying
        .next(Duration::from_secs(10))
        .await
        .expect("the admin still signed in gets the alert");
    assert_eq!(msg.data["type"], "TOKEN_REUSE_DETECTED");
    for (who, stream) in [
        ("signed out", &mut signed_out),
        ("demoted", &mut demoted_stream),
    ] {
        assert!(
            stream.next_or_end(Duration::from_secs(1)).await.is_none(),
            "{who}: no alert after the session ended"
        );
    }
}
