//! Key rotation on a running server: `kraliki keys rotate`, then SIGHUP.
//! Tokens, browser sessions and CSRF tokens made before the rotation keep
//! working for the grace period and stop after it; everything new uses the
//! new keys; a WebSocket stays connected throughout.
//!
//! These run the real binary in development mode on SQLite, like
//! `cli.rs` and `shutdown.rs`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::GOOD_PASSWORD;
use crate::production::{expect_listening, generate_key_dir, kraliki, run, Finished, Running};

const ADMIN: &str = "ops-admin@example.com";

/// One development installation with keys in a secrets folder.
struct Install {
    data: tempfile::TempDir,
    secrets: tempfile::TempDir,
    org: String,
}

impl Install {
    async fn new() -> Install {
        let install = Install {
            data: tempfile::tempdir().unwrap(),
            secrets: tempfile::tempdir().unwrap(),
            org: String::new(),
        };
        generate_key_dir(install.secrets.path()).await;
        let done = run(install.cmd(&["orgs", "create", "--name", "Operator"]), None).await;
        assert!(done.status.success(), "orgs create: {}", done.stderr);
        let org = done.stdout.trim().to_string();
        let user = run(
            install.cmd(&[
                "users", "create", "--org", &org, "--email", ADMIN, "--role", "admin",
            ]),
            Some(&format!("{GOOD_PASSWORD}\n")),
        )
        .await;
        assert!(user.status.success(), "users create: {}", user.stderr);
        Install { org, ..install }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_SECRETS_DIR", self.secrets.path())
            .env("KRALIKI_OPERATOR_ORGANIZATION", &self.org)
            .env("KRALIKI_RATE_LIMIT__ENABLED", "false")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args);
        cmd
    }

    async fn serve(&self) -> Running {
        expect_listening(self.cmd(&["serve", "--listen", "127.0.0.1:0"])).await
    }

    async fn keys(&self, args: &[&str]) -> Finished {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        run(self.cmd(&all), None).await
    }

    fn secret(&self, name: &str) -> std::path::PathBuf {
        self.secrets.path().join(name)
    }
}

fn hangup(server: &Running) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

async fn login(client: &reqwest::Client, base: &str) -> String {
    let res = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": ADMIN, "password": GOOD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// A browser session: the cookie pair to send back and the CSRF token.
async fn browser_session(client: &reqwest::Client, base: &str) -> (String, String) {
    let res = client
        .post(format!("{base}/api/auth/session"))
        .json(&json!({"email": ADMIN, "password": GOOD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: Value = res.json().await.unwrap();
    (cookie, body["csrf_token"].as_str().unwrap().to_string())
}

async fn me_with_token(client: &reqwest::Client, base: &str, token: &str) -> u16 {
    client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn me_with_cookie(client: &reqwest::Client, base: &str, cookie: &str) -> (u16, Value) {
    let res = client
        .get(format!("{base}/api/auth/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A state-changing request with a cookie session: asks for a WebSocket
/// ticket, which needs the CSRF token.
async fn cookie_post(client: &reqwest::Client, base: &str, cookie: &str, csrf: &str) -> u16 {
    client
        .post(format!("{base}/api/ws/ticket"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn jwks_kids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let body: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn get_json(client: &reqwest::Client, url: String, token: &str) -> Value {
    let res = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_websocket(client: &reqwest::Client, base: &str, token: &str) -> Ws {
    let res = client
        .post(format!("{base}/api/ws/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let ticket: Value = res.json().await.unwrap();
    let url = format!(
        "{}/api/ws?ticket={}",
        base.replacen("http://", "ws://", 1),
        ticket["ticket"].as_str().unwrap()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("the WebSocket is open")
            .expect("a frame, not an error");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The same connection still answers: a ping frame gets its pong.
async fn still_connected(ws: &mut Ws) {
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "pong" {
            return;
        }
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rotated_keys_take_effect_on_sighup_with_a_grace_for_what_came_before() {
    let install = Install::new().await;
    let server = install.serve().await;
    let base = server.base.clone();
    let client = reqwest::Client::new();

    let old_token = login(&client, &base).await;
    let old_kid = kid_of(&old_token);
    let (old_cookie, old_csrf) = browser_session(&client, &base).await;
    let mut ws = open_websocket(&client, &base, &old_token).await;
    assert_eq!(jwks_kids(&client, &base).await, vec![old_kid.clone()]);

    // Rotate all three keys with a short grace, then tell the server.
    let grace = Duration::from_secs(8);
    let rotated_at = Instant::now();
    let done = install.keys(&["rotate", "--grace", "8s"]).await;
    assert!(done.status.success(), "keys rotate: {}", done.stderr);
    assert!(done.stdout.contains(&old_kid), "{}", done.stdout);
    assert!(done
        .stderr
        .contains("shorter than the access-token lifetime"));
    for name in ["jwt_signing_key", "session_key", "csrf_key"] {
        let retired: Vec<_> = std::fs::read_dir(install.secrets.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{name}.retired.")))
            .collect();
        assert_eq!(retired.len(), 1, "{name}: {retired:?}");
    }
    hangup(&server);
    wait_for("the JWKS to list two keys", || async {
        jwks_kids(&client, &base).await.len() == 2
    })
    .await;

    // New tokens carry the new kid; the JWKS lists both during the grace.
    let new_token = login(&client, &base).await;
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, old_kid);
    let kids = jwks_kids(&client, &base).await;
    assert_eq!(kids[0], new_kid, "the signing key comes first");
    assert!(kids.contains(&old_kid));

    // What was made before still works during the grace.
    assert_eq!(me_with_token(&client, &base, &old_token).await, 200);
    let (status, me) = me_with_cookie(&client, &base, &old_cookie).await;
    assert_eq!(status, 200, "the old session cookie opens during the grace");
    assert_eq!(
        cookie_post(&client, &base, &old_cookie, &old_csrf).await,
        201
    );
    let fresh_csrf = me["csrf_token"].as_str().unwrap().to_string();
    assert_ne!(
        fresh_csrf, old_csrf,
        "CSRF tokens now come from the new key"
    );
    assert_eq!(
        cookie_post(&client, &base, &old_cookie, &fresh_csrf).await,
        201
    );
    let (new_cookie, new_csrf) = browser_session(&client, &base).await;
    still_connected(&mut ws).await;

    // The rotation is visible as security events and audit entries.
    let events = get_json(
        &client,
        format!("{base}/api/security/events?type=SECRET_ROTATED"),
        &new_token,
    )
    .await;
    let mut rotated: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["secret"].as_str().unwrap().to_string())
        .collect();
    rotated.sort();
    assert_eq!(rotated, ["csrf_key", "jwt_signing_key", "session_key"]);
    let jwt_event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["secret"] == "jwt_signing_key")
        .unwrap();
    assert_eq!(jwt_event["details"]["kid"], new_kid.as_str());
    assert_eq!(jwt_event["details"]["previous_kid"], old_kid.as_str());
    let text = serde_json::to_string(&events).unwrap();
    for name in ["session_key", "csrf_key"] {
        let value = std::fs::read_to_string(install.secret(name)).unwrap();
        assert!(!text.contains(value.trim()), "{name} must not be shown");
    }
    let audit = get_json(
        &client,
        format!("{base}/api/audit?action=secret.rotate"),
        &new_token,
    )
    .await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{audit}");
    assert!(entries.iter().all(|e| e["actor_type"] == "system"));

    // After the grace, only what the new keys made is accepted.
    let left = grace.saturating_sub(rotated_at.elapsed()) + Duration::from_secs(1);
    tokio::time::sleep(left).await;
    assert_eq!(me_with_token(&client, &base, &old_token).await, 401);
    assert_eq!(me_with_cookie(&client, &base, &old_cookie).await.0, 401);
    assert_eq!(me_with_token(&client, &base, &new_token).await, 200);
    assert_eq!(me_with_cookie(&client, &base, &new_cookie).await.0, 200);
    assert_eq!(
        cookie_post(&client, &base, &new_cookie, &new_csrf).await,
        201
    );
    assert_eq!(jwks_kids(&client, &base).await, vec![new_kid]);
    still_connected(&mut ws).await;

    drop(ws);
    let output = server.stop().await;
    let verify = run(install.cmd(&["audit", "verify"]), None).await;
    assert!(
        verify.status.success(),
        "the audit chain with the rotation entries verifies: {}\n{}",
        verify.stderr,
        output.1
    );
}

#[tokio::test]
async fn a_broken_key_on_disk_leaves_the_running_keys_in_force() {
    let install = Install::new().await;
    let server = install.serve().await;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let token = login(&client, &base).await;
    let kid = kid_of(&token);

    std::fs::write(install.secret("jwt_signing_key"), "changeme\n").unwrap();
    hangup(&server);
    wait_for("the failed reload to be logged", || async {
        server.stderr().contains("reload failed")
    })
    .await;
    assert_eq!(me_with_token(&client, &base, &token).await, 200);
    assert_eq!(kid_of(&login(&client, &base).await), kid);
    assert_eq!(jwks_kids(&client, &base).await, vec![kid]);
    assert!(
        !server.stderr().contains("changeme"),
        "the bad value is not echoed"
    );
}

fn set_age(path: &Path, days: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

fn line_of<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
}

#[tokio::test]
async fn keys_status_reports_ages_and_warns_about_overdue_keys() {
    let install = Install::new().await;
    let fresh = install.keys(&["status"]).await;
    assert!(fresh.status.success(), "{}", fresh.stderr);
    assert!(!fresh.stdout.contains("WARNING"), "{}", fresh.stdout);
    assert!(line_of(&fresh.stdout, "jwt_signing_key").contains("rotate every 90 days"));
    assert!(line_of(&fresh.stdout, "session_key").contains("rotate every 30 days"));
    assert!(line_of(&fresh.stdout, "csrf_key").contains("rotate every 30 days"));
    let check = install.keys(&["status", "--check"]).await;
    assert!(check.status.success(), "nothing overdue: {}", check.stderr);

    set_age(&install.secret("jwt_signing_key"), 91);
    set_age(&install.secret("session_key"), 31);
    set_age(&install.secret("csrf_key"), 29);
    let old = install.keys(&["status"]).await;
    assert!(old.status.success(), "warnings alone do not fail");
    assert!(line_of(&old.stdout, "jwt_signing_key").contains("91 days"));
    assert!(line_of(&old.stdout, "jwt_signing_key").contains("WARNING"));
    assert!(line_of(&old.stdout, "session_key").contains("WARNING"));
    assert!(!line_of(&old.stdout, "csrf_key").contains("WARNING"));
    assert!(old.stderr.contains("2 secret(s) overdue"), "{}", old.stderr);
    let check = install.keys(&["status", "--check"]).await;
    assert!(
        !check.status.success(),
        "--check fails when a key is overdue"
    );

    // Rotating resets the age and lists the retired key with its time left.
    let done = install
        .keys(&["rotate", "--grace", "24h", "--key", "jwt_signing_key"])
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    let after = install.keys(&["status"]).await;
    assert!(!line_of(&after.stdout, "jwt_signing_key").contains("WARNING"));
    assert!(
        after.stdout.contains("jwt_signing_key.retired.") && after.stdout.contains("more"),
        "{}",
        after.stdout
    );
    assert!(line_of(&after.stdout, "session_key").contains("WARNING"));
}

#[tokio::test]
async fn keys_rotate_refuses_what_it_cannot_rotate_safely() {
    let install = Install::new().await;
    for (args, says) in [
        (&["rotate", "--grace", "0s"][..], "zero"),
        (&["rotate", "--grace", "soon"][..], "not a duration"),
        (&["rotate", "--key", "audit_key"][..], "audit_key"),
        (&["rotate", "--key", "data_key"][..], "data_key"),
    ] {
        let done = install.keys(args).await;
        assert!(!done.status.success(), "{args:?} must fail");
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
    }
    // A key held in a plain environment variable cannot be rotated in place.
    let session = std::fs::read_to_string(install.secret("session_key")).unwrap();
    std::fs::remove_file(install.secret("session_key")).unwrap();
    let mut cmd = install.cmd(&["keys", "rotate", "--key", "session_key"]);
    cmd.env("KRALIKI_SESSION_KEY", session.trim());
    let done = run(cmd, None).await;
    assert!(!done.status.success());
    assert!(
        done.stderr.contains("KRALIKI_SESSION_KEY") && done.stderr.contains("files"),
        "{}",
        done.stderr
    );
    // A folder without the key is an error naming the file.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = kraliki();
    cmd.args(["keys", "rotate", "--dir"]).arg(empty.path());
    let done = run(cmd, None).await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("does not exist"), "{}", done.stderr);
}
