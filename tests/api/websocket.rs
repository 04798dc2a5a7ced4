//! Live events over WebSocket (`POST /api/ws/ticket`, `GET /api/ws`): the
//! single-use ticket, refusals of every other credential and of cross-site
//! pages, the frames, admin-only security alerts, closing on oversized
//! messages, ended sessions, silent clients, and at shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kraliki::store::users::Role;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;
use crate::production::{expect_listening, generate_key_dir, kraliki};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `POST /api/ws/ticket` with a bearer token.
async fn ticket_raw(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/ws/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A new ticket for the bearer of `token` (asserting 201).
async fn ticket(app: &TestApp, token: &str) -> String {
    let res = ticket_raw(app, token).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["ticket"].as_str().expect("ticket").to_string()
}

/// A WebSocket handshake to `/api/ws?<query>` at `base`, with headers.
async fn handshake(
    base: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let url = format!("{}/api/ws?{query}", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the handshake is answered")
}

/// Connect with `ticket` and read the hello frame.
async fn connect(app: &TestApp, ticket: &str) -> (Ws, Value) {
    let (mut ws, res) = handshake(&app.base, &format!("ticket={ticket}"), &[])
        .await
        .expect("the ticket opens a WebSocket");
    assert_eq!(res.status(), 101);
    let hello = next_frame(&mut ws, Duration::from_secs(5))
        .await
        .expect("a hello frame");
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// A refused handshake: the problem document, after checking its status
/// and media type.
async fn refused(result: Result<(Ws, impl std::fmt::Debug), WsError>, status: u16) -> Value {
    let res = match result {
        Err(WsError::Http(res)) => res,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok((_, res)) => panic!("expected a refusal, got {res:?}"),
    };
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let body: Value = serde_json::from_slice(res.body().as_deref().expect("a body")).unwrap();
    assert_eq!(body["status"], status);
    assert!(body["detail"].is_string() && body["instance"].is_string());
    body
}

/// What came next on a connection.
#[derive(Debug)]
enum Next {
    Frame(Value),
    Closed(Option<CloseFrame>),
    Ended,
    Nothing,
}

/// The next JSON frame or the end, skipping pings and pongs, within `wait`.
async fn next_event(ws: &mut Ws, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Next::Nothing,
            Ok(None) | Ok(Some(Err(_))) => return Next::Ended,
            Ok(Some(Ok(Message::Text(text)))) => {
                return Next::Frame(serde_json::from_str(text.as_str()).expect("JSON frames"))
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Next::Closed(frame),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
        }
    }
}

/// The next JSON frame within `wait`, `None` when nothing came.
async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<Value> {
    match next_event(ws, wait).await {
        Next::Frame(v) => Some(v),
        Next::Nothing => None,
        other => panic!("the connection ended: {other:?}"),
    }
}

/// The close frame that ends the connection within `wait`.
async fn close_frame(ws: &mut Ws, wait: Duration) -> CloseFrame {
    match next_event(ws, wait).await {
        Next::Closed(Some(frame)) => frame,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Reasons of the `INVALID_TOKEN` events about WebSocket tickets, oldest
/// first.
async fn ticket_refusals(app: &TestApp) -> Vec<String> {
    // In the order the log wrote them: stored events of one millisecond
    // may list in either order.
    let logged: Vec<String> = app
        .log
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "INVALID_TOKEN" && l["credential"] == "ws_ticket")
        .map(|l| l["reason"].as_str().unwrap().to_string())
        .collect();
    // Every one is stored as well.
    let mut stored: Vec<String> = app
        .events("INVALID_TOKEN")
        .await
        .into_iter()
        .map(|e| serde_json::from_str::<Value>(&e.details).unwrap())
        .filter(|d| d["credential"] == "ws_ticket")
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = logged.clone();
    sorted.sort();
    stored.sort();
    assert_eq!(sorted, stored, "logged and stored alike");
    logged
}

#[tokio::test]
async fn a_ticket_opens_a_websocket_that_says_hello_and_answers_pings() {
    let app = spawn_app().await;
    let agent = app.org_with(Role::Agent).await;
    let token = app.token(&agent).await;

    let res = ticket_raw(&app, &token).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().unwrap().to_string();
    assert_eq!(ticket.len(), 43, "256 bits in base64url");
    // Stored only as its SHA-256, with who it is for and when it expires.
    let row: (String, String, String, i64) =
        sqlx::query_as("SELECT ticket_hash, organization_id, user_id, expires_at FROM ws_tickets")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(row.0, kraliki::security::token_hash(&ticket));
    assert_ne!(row.0, ticket);
    assert_eq!(
        (row.1.as_str(), row.2.as_str()),
        (agent.org.as_str(), agent.id.as_str())
    );
    let left = row.3 - kraliki::store::now_ms();
    assert!((25_000..=30_000).contains(&left), "expires in 30 s: {left}");

    let (mut ws, res) = handshake(&app.base, &format!("ticket={ticket}"), &[])
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    // The upgrade answer carries the security headers like any other.
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(res.headers().get("server").is_none());
    let hello = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        hello,
        json!({"type": "hello", "data": {"user_id": agent.id, "role": "agent"}})
    );
    // Spent: the row is gone.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ws_tickets")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Other client text is ignored; a JSON ping is answered.
    ws.send(Message::text("hello?")).await.unwrap();
    ws.send(Message::text(r#"{"type":"subscribe"}"#))
        .await
        .unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let pong = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong["type"], "pong", "{pong}");
    // Protocol pings are answered by the server.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(data))) => return data,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&answered[..], b"are you there");
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_ticket_works_once_and_never_reaches_the_logs() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    let ticket = ticket(&app, &token).await;

    let (mut ws, hello) = connect(&app, &ticket).await;
    assert_eq!(hello["data"]["role"], "admin");
    let again = handshake(&app.base, &format!("ticket={ticket}"), &[]).await;
    let body = refused(again, 401).await;
    assert_eq!(body["code"], "invalid_ticket");
    assert_eq!(ticket_refusals(&app).await, ["unknown_ticket"]);
    // The event names the request without the ticket.
    let event = app.events("INVALID_TOKEN").await.pop().unwrap();
    assert_eq!(event.url, "/api/ws?ticket=[redacted]");
    let log: Vec<String> = app.log.lines().iter().map(Value::to_string).collect();
    let log = log.join("\n");
    assert!(log.contains("INVALID_TOKEN"));
    assert!(!log.contains(&ticket), "the ticket is in the security log");

    // The first connection is unaffected.
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let pong = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn only_a_live_ticket_opens_a_websocket() {
    let app = spawn_app().await;
    let agent = app.org_with(Role::Agent).await;
    let login = app.login(&agent).await;
    let token = login["access_token"].as_str().unwrap().to_string();
    let ws = |query: String, headers: Vec<(&'static str, String)>| {
        let base = app.base.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            handshake(&base, &query, &headers).await
        }
    };

    // A ticket needs a signed-in user.
    let res = app
        .client
        .post(app.url("/api/ws/ticket"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;

    // No ticket, junk, a well-formed ticket never issued.
    let body = refused(ws(String::new(), vec![]).await, 401).await;
    assert_eq!(body["code"], "invalid_ticket");
    refused(ws("ticket=".into(), vec![]).await, 401).await;
    refused(ws("ticket=not-a-ticket%00".into(), vec![]).await, 401).await;
    let never_issued = kraliki::security::random_token();
    refused(ws(format!("ticket={never_issued}"), vec![]).await, 401).await;

    // Access tokens are no ticket: not in the URL under any name, and not
    // in a header either.
    for query in [
        format!("ticket={token}"),
        format!("access_token={token}"),
        format!("token={token}"),
    ] {
        refused(ws(query, vec![]).await, 401).await;
    }
    let bearer = format!("Bearer {token}");
    refused(
        ws(String::new(), vec![("authorization", bearer)]).await,
        401,
    )
    .await;

    // Expired.
    let expired = ticket(&app, &token).await;
    sqlx::query("UPDATE ws_tickets SET expires_at = $1 WHERE ticket_hash = $2")
        .bind(kraliki::store::now_ms() - 1)
        .bind(kraliki::security::token_hash(&expired))
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    refused(ws(format!("ticket={expired}"), vec![]).await, 401).await;

    // Issued, but the session behind it has since signed out.
    let orphan = ticket(&app, &token).await;
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    refused(ws(format!("ticket={orphan}"), vec![]).await, 401).await;

    assert_eq!(
        ticket_refusals(&app).await,
        [
            "missing_ticket",
            "malformed_ticket",
            "malformed_ticket",
            "unknown_ticket",
            "malformed_ticket",
            "missing_ticket",
            "missing_ticket",
            "missing_ticket",
            "ticket_expired",
            "session_revoked",
        ]
    );

    // A plain GET is refused the same way without a ticket, and with a
    // ticket is told to make a handshake, without spending the ticket.
    let res = app.client.get(app.url("/api/ws")).send().await.unwrap();
    let body = assert_problem(res, 401).await;
    assert_eq!(body["code"], "invalid_ticket");
    let other = app.create_user(&agent.org, Role::Agent).await;
    let other_token = app.token(&other).await;
    let kept = ticket(&app, &other_token).await;
    let res = app
        .client
        .get(app.url("/api/ws"))
        .query(&[("ticket", &kept)])
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 400).await;
    assert_eq!(body["code"], "websocket_handshake_required");
    let (_ws, hello) = connect(&app, &kept).await;
    assert_eq!(hello["data"]["user_id"], other.id.as_str());

    // Expired tickets do not pile up: issuing a ticket purges them.
    sqlx::query("UPDATE ws_tickets SET expires_at = $1")
        .bind(kraliki::store::now_ms() - 1)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let _fresh = ticket(&app, &other_token).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ws_tickets")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "only the fresh ticket is left");
}

#[tokio::test]
async fn browser_sessions_get_tickets_with_the_csrf_token_and_cross_site_pages_are_refused() {
    let app = spawn_app().await;
    let agent = app.org_with(Role::Agent).await;
    let BrowserSession { cookie, csrf, .. } = app.browser_session(&agent).await;
    let post = |csrf: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/api/ws/ticket"))
            .header("cookie", &cookie);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };

    let res = post(None).await.unwrap();
    let body = assert_problem(res, 403).await;
    assert_eq!(body["code"], "csrf_violation");
    let res = post(Some(&csrf)).await.unwrap();
    assert_eq!(res.status(), 201);
    let ticket = res.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_string();

    // A page of another site cannot use it; the refusal spends nothing.
    let query = format!("ticket={ticket}");
    for origin in [
        "https://evil.example",
        "null",
        &app.base.replace("127.0.0.1", "localhost"),
    ] {
        let body = refused(
            handshake(&app.base, &query, &[("origin", origin)]).await,
            403,
        )
        .await;
        assert_eq!(body["code"], "origin_not_allowed", "{origin}");
    }
    let refusals = app
        .events("CSRF_VIOLATION")
        .await
        .into_iter()
        .filter(|e| e.details.contains("websocket_origin_not_allowed"))
        .count();
    assert_eq!(refusals, 3);

    // The server's own origin may.
    let (mut ws, res) = handshake(&app.base, &query, &[("origin", &app.base)])
        .await
        .expect("same-origin upgrade");
    assert_eq!(res.status(), 101);
    let hello = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(hello["data"]["user_id"], agent.id.as_str());
}

#[tokio::test]
async fn allowed_origins_may_connect() {
    let app = spawn_app_with(|s| s.allowed_origins = vec!["https://console.example".into()]).await;
    let agent = app.org_with(Role::Agent).await;
    let token = app.token(&agent).await;
    let query = format!("ticket={}", ticket(&app, &token).await);
    let (_ws, res) = handshake(&app.base, &query, &[("origin", "https://console.example")])
        .await
        .expect("an allowed origin may connect");
    assert_eq!(res.status(), 101);
}

#[tokio::test]
async fn admins_get_security_alerts_of_their_organization_and_agents_get_none() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let other_admin = app.org_with(Role::Admin).await;
    let (mut admin_ws, _) = connect(&app, &ticket(&app, &app.token(&admin).await).await).await;
    let (mut agent_ws, hello) = connect(&app, &ticket(&app, &app.token(&agent).await).await).await;
    assert_eq!(hello["data"]["role"], "agent");
    let (mut other_ws, _) =
        connect(&app, &ticket(&app, &app.token(&other_admin).await).await).await;

    // A MEDIUM event is not an alert; then a HIGH one in the organization.
    let res = app.get_auth("/api/users", &app.token(&agent).await).await;
    assert_eq!(res.status(), 403);
    app.reuse_refresh_token(&agent).await;

    let alert = next_frame(&mut admin_ws, Duration::from_secs(10))
        .await
        .expect("an alert within ten seconds");
    assert_eq!(alert["type"], "security.alert", "{alert}");
    let data = &alert["data"];
    assert_eq!(data["type"], "TOKEN_REUSE_DETECTED");
    assert_eq!(data["severity"], "HIGH");
    assert_eq!(data["organization_id"], admin.org.as_str());
    assert_eq!(data["user_id"], agent.id.as_str());
    assert_eq!(data["url"], "/api/auth/refresh");
    assert!(data["id"].is_string() && data["timestamp"].is_string());
    let stored = app.events("TOKEN_REUSE_DETECTED").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(data["id"], stored[0].id.as_str());

    for (who, ws) in [
        ("agent", &mut agent_ws),
        ("other organization", &mut other_ws),
    ] {
        assert!(
            next_frame(ws, Duration::from_millis(700)).await.is_none(),
            "{who} got an alert"
        );
    }
    assert!(next_frame(&mut admin_ws, Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn oversized_messages_close_the_connection_with_1009() {
    let app = spawn_app().await;
    let agent = app.org_with(Role::Agent).await;
    let token = app.token(&agent).await;

    // 4 KiB is fine (and ignored).
    let (mut ws, _) = connect(&app, &ticket(&app, &token).await).await;
    ws.send(Message::text("x".repeat(4096))).await.unwrap();
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let pong = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong["type"], "pong");

    // One byte more is not.
    ws.send(Message::text("x".repeat(4097))).await.unwrap();
    let frame = close_frame(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(frame.code, CloseCode::Size);

    let (mut ws, _) = connect(&app, &ticket(&app, &token).await).await;
    ws.send(Message::binary(vec![0u8; 8 * 1024])).await.unwrap();
    let frame = close_frame(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(frame.code, CloseCode::Size);
}

#[tokio::test]
async fn a_websocket_lives_while_answering_pings_and_closes_when_its_session_ends() {
    let app = spawn_app_with(|s| s.http.ws_ping_interval_secs = 1).await;
    let admin = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    let (mut ws, _) = connect(&app, &ticket(&app, &token).await).await;

    // Reading answers the server's pings: still open after three intervals.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(msg) = tokio::time::timeout_at(until, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "the server pings every second: {pings}");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(
        next_frame(&mut ws, Duration::from_secs(5)).await.unwrap()["type"],
        "pong"
    );

    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let frame = close_frame(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "session ended");
}

#[tokio::test]
async fn a_silent_client_is_disconnected() {
    let app = spawn_app_with(|s| s.http.ws_ping_interval_secs = 1).await;
    let agent = app.org_with(Role::Agent).await;
    let (mut ws, _) = connect(&app, &ticket(&app, &app.token(&agent).await).await).await;

    // Read nothing, so the server's pings go unanswered.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                None | Some(Err(_)) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server dropped the silent connection");
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_ends_event_streams() {
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", secrets.path())
        .env("KRALIKI_RATE_LIMIT__ENABLED", "false")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let mut server = expect_listening(cmd).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();

    let res = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({
            "organization_name": "Shutdown Test",
            "email": "admin@shutdown.example",
            "password": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "admin@shutdown.example", "password": GOOD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = client
        .post(format!("{base}/api/ws/ticket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let ticket = res.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut ws, _) = handshake(&base, &format!("ticket={ticket}"), &[])
        .await
        .expect("connected");
    let hello = next_frame(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(hello["data"]["role"], "admin");
    let mut stream = client
        .get(format!("{base}/api/security/events/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let started = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let frame = close_frame(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(frame.code, CloseCode::Away);
    // The event stream finishes cleanly (no error, no keep-alive wait).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the event stream ends");
    assert!(ended.is_ok(), "the event stream ends cleanly: {ended:?}");

    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the server exits");
    assert!(status.success(), "clean exit, got {status}");
    // Far sooner than the 30 s grace: nothing held the drain.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}
