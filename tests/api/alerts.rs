//! The alert webhook end to end: security events raised through real HTTP
//! reach a local receiver, signed with the secret from the test's secrets
//! folder, de-duplicated per type and address, retried when the receiver
//! fails (and given up after `alerts.max_attempts`), and free of secrets.
//! Start-up refusals (production rules, a secret under 32 characters) run
//! the real binary.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use kraliki::config::Settings;
use kraliki::store::users::Role;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::production::{expect_listening, expect_refused, generate_key_dir, kraliki};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    at: Instant,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("alert bodies are JSON")
    }
}

#[derive(Clone, Default)]
struct Inbox {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Statuses to answer, in order; 200 once empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

/// A local alert receiver on 127.0.0.1:0, answering `POST /hook`.
struct Receiver {
    addr: SocketAddr,
    inbox: Inbox,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let inbox = Inbox {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Inbox::default()
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inbox }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.inbox.deliveries.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        eventually(|| async {
            let all = self.deliveries();
            (all.len() >= n).then_some(all)
        })
        .await
    }
}

async fn receive(
    State(inbox): State<Inbox>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    inbox.deliveries.lock().unwrap().push(Delivery {
        timestamp: header("x-kraliki-timestamp"),
        signature: header("x-kraliki-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let status = inbox.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// A server alerting to `receiver`, with a fresh `alert_webhook_secret`
/// in its secrets folder, 127.0.0.1 allow-listed and short retries.
async fn alerting_app(receiver: &Receiver, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let url = receiver.url();
    spawn_app_with_secrets(
        |dir| {
            let secret = kraliki::secrets::generate_value("alert_webhook_secret");
            std::fs::write(dir.join("alert_webhook_secret"), secret).unwrap();
        },
        |s| {
            s.alert_webhook_url = url;
            s.outbound.allow = vec!["127.0.0.1".into()];
            s.alerts.retry_base_ms = 50;
            configure(s);
        },
    )
    .await
}

/// The secret as the test's secrets folder holds it.
fn secret_of(app: &TestApp) -> String {
    std::fs::read_to_string(app.secrets_dir.path().join("alert_webhook_secret")).unwrap()
}

/// Check a delivery's signature independently of the server's code.
fn assert_signed(app: &TestApp, d: &Delivery) {
    let secret = secret_of(app);
    let ts: u64 = d.timestamp.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts.abs_diff(now) < 300, "timestamp {ts} is not now ({now})");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.", d.timestamp).as_bytes());
    mac.update(&d.body);
    let hex = d.signature.strip_prefix("v1=").expect("v1= scheme");
    mac.verify_slice(&hex::decode(hex).expect("hex signature"))
        .expect("signature verifies with alert_webhook_secret");
    assert_eq!(d.content_type, "application/json");

    let mut forged = Hmac::<sha2::Sha256>::new_from_slice(b"another key entirely").unwrap();
    forged.update(format!("{}.", d.timestamp).as_bytes());
    forged.update(&d.body);
    assert!(forged.verify_slice(&hex::decode(hex).unwrap()).is_err());
}

/// A signed-in browser session: the cookie pair.
async fn browser_cookie(app: &TestApp, user: &TestUser) -> String {
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let header = res.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    header.split(';').next().unwrap().to_string()
}

/// A cookie-authenticated change without the CSRF token: 403 and a HIGH
/// `CSRF_VIOLATION`.
async fn csrf_violation(app: &TestApp, cookie: &str) {
    let res = app
        .client
        .put(app.url("/api/organization/security"))
        .header(COOKIE, cookie)
        .json(&json!({"require_totp_for_privileged": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_problem(res, 403).await["code"], "csrf_violation");
}

/// Spend a refresh token twice: a HIGH `TOKEN_REUSE_DETECTED`. Returns the
/// refresh tokens involved.
async fn token_reuse(app: &TestApp, user: &TestUser) -> Vec<String> {
    let first = app.login(user).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = |token: String| async move {
        app.client
            .post(app.url("/api/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .unwrap()
    };
    let res = refresh(first.clone()).await;
    assert_eq!(res.status(), 200);
    let second: Value = res.json().await.unwrap();
    assert_problem(refresh(first.clone()).await, 401).await;
    vec![first, second["refresh_token"].as_str().unwrap().to_string()]
}

/// Alerts of one type, in arrival order.
fn of_type(deliveries: &[Delivery], event_type: &str) -> Vec<Value> {
    deliveries
        .iter()
        .map(Delivery::json)
        .filter(|v| v["type"] == event_type)
        .collect()
}

#[tokio::test]
async fn repeats_make_one_alert_and_another_type_its_own() {
    let receiver = Receiver::start(&[]).await;
    let app = alerting_app(&receiver, |_| {}).await;
    let admin = app.org_with(Role::Admin).await;
    let cookie = browser_cookie(&app, &admin).await;

    csrf_violation(&app, &cookie).await;
    csrf_violation(&app, &cookie).await;
    let refresh_tokens = token_reuse(&app, &admin).await;
    assert_eq!(app.events("CSRF_VIOLATION").await.len(), 2);

    // The queue is first in, first out: once the reuse alert is in, the
    // repeated CSRF event has been handled too.
    let all = receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_now = receiver.deliveries();
    assert_eq!(all_now.len(), 2, "one alert per type: {all:?}");
    for d in &all_now {
        assert_signed(&app, d);
    }

    let csrf = of_type(&all_now, "CSRF_VIOLATION");
    assert_eq!(csrf.len(), 1);
    let alert = &csrf[0];
    assert_eq!(alert["severity"], "HIGH");
    assert_eq!(alert["ip"], "127.0.0.1");
    assert_eq!(alert["method"], "PUT");
    assert_eq!(alert["url"], "/api/organization/security");
    assert_eq!(alert["user_id"], admin.id.as_str());
    assert_eq!(alert["organization_id"], admin.org.as_str());
    assert_eq!(alert["suppressed"], 0);
    let timestamp = alert["timestamp"].as_str().unwrap();
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z'),
        "{timestamp}"
    );
    let stored = app.events("CSRF_VIOLATION").await;
    assert_eq!(alert["id"], stored[0].id.as_str());

    let reuse = of_type(&all_now, "TOKEN_REUSE_DETECTED");
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0]["severity"], "HIGH");
    assert_eq!(reuse[0]["ip"], "127.0.0.1");

    // Nothing secret leaves: not the signing secret, the session cookie,
    // the password or any refresh token.
    let (_, cookie_value) = cookie.split_once('=').unwrap();
    let mut secrets = vec![
        secret_of(&app),
        cookie_value.to_string(),
        admin.password.clone(),
    ];
    secrets.extend(refresh_tokens);
    for d in &all_now {
        let text = String::from_utf8(d.body.clone()).unwrap();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "an alert carries a secret: {text}"
            );
        }
    }

    // After the window, the next alert of the type reports the repeat.
    app.clock.advance(Duration::from_secs(601));
    csrf_violation(&app, &cookie).await;
    let all = receiver.wait_for(3).await;
    let csrf = of_type(&all, "CSRF_VIOLATION");
    assert_eq!(csrf.len(), 2);
    assert_eq!(csrf[1]["suppressed"], 1);
    assert_signed(&app, &all[2]);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_until_it_accepts() {
    let receiver = Receiver::start(&[500, 503, 200]).await;
    let app = alerting_app(&receiver, |_| {}).await;
    let admin = app.org_with(Role::Admin).await;
    let cookie = browser_cookie(&app, &admin).await;

    csrf_violation(&app, &cookie).await;

    let all = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.deliveries().len(), 3, "no attempt after a 200");
    for d in &all {
        assert_signed(&app, d);
    }
    assert!(all.windows(2).all(|w| w[0].body == w[1].body));
    assert!(all[1].at - all[0].at >= Duration::from_millis(50));
    assert!(all[2].at - all[1].at >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_receiver_refusing_the_alert_is_not_asked_again() {
    let receiver = Receiver::start(&[400]).await;
    let app = alerting_app(&receiver, |s| s.alerts.max_attempts = 3).await;
    let admin = app.org_with(Role::Admin).await;
    let cookie = browser_cookie(&app, &admin).await;

    csrf_violation(&app, &cookie).await;
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.deliveries().len(), 1);

    // Delivery goes on for the next alert.
    token_reuse(&app, &admin).await;
    let all = receiver.wait_for(2).await;
    assert_eq!(of_type(&all, "TOKEN_REUSE_DETECTED").len(), 1);
}

#[tokio::test]
async fn a_receiver_failing_every_time_is_given_up_after_max_attempts() {
    let receiver = Receiver::start(&[500; 20]).await;
    let app = alerting_app(&receiver, |s| {
        s.alerts.max_attempts = 4;
        s.alerts.retry_base_ms = 20;
    })
    .await;
    let admin = app.org_with(Role::Admin).await;
    let cookie = browser_cookie(&app, &admin).await;

    csrf_violation(&app, &cookie).await;
    let all = receiver.wait_for(4).await;
    // A fifth attempt would come 160 ms after the fourth.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.deliveries().len(), 4, "four attempts, then none");
    assert!(all.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(of_type(&all, "CSRF_VIOLATION").len(), 4);

    // Giving up on one alert does not stop the next, which gets its own
    // four attempts.
    token_reuse(&app, &admin).await;
    receiver.wait_for(8).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all = receiver.deliveries();
    assert_eq!(all.len(), 8);
    assert_eq!(of_type(&all, "TOKEN_REUSE_DETECTED").len(), 4);
}

#[tokio::test]
async fn medium_events_raise_no_alert() {
    let receiver = Receiver::start(&[]).await;
    let app = alerting_app(&receiver, |_| {}).await;
    let admin = app.org_with(Role::Admin).await;

    // A wrong password: AUTH_FAILURE, MEDIUM.
    let res = app.login_raw(&admin.email, "not-the-password-at-all").await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.events("AUTH_FAILURE").await.len(), 1);
    let cookie = browser_cookie(&app, &admin).await;
    csrf_violation(&app, &cookie).await;

    let all = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.deliveries().len(), 1);
    assert_eq!(all[0].json()["type"], "CSRF_VIOLATION");
}

/// Production `kraliki serve` with keys from `keys generate` and the given
/// alert webhook URL.
fn production_serve(
    secrets: &std::path::Path,
    data: &std::path::Path,
    url: &str,
) -> tokio::process::Command {
    let mut cmd = kraliki();
    cmd.env("KRALIKI_ENV", "production")
        .env("KRALIKI_PUBLIC_URL", "https://calls.example.test")
        .env("KRALIKI_SMTP__HOST", "smtp.example.test")
        .env("KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "true")
        .env("KRALIKI_SECRETS_DIR", secrets)
        .env("KRALIKI_ALERT_WEBHOOK_URL", url)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    cmd
}

#[tokio::test]
async fn production_refuses_an_unsigned_or_plain_http_webhook() {
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let signing_secret =
        std::fs::read_to_string(secrets.path().join("alert_webhook_secret")).unwrap();

    let done = expect_refused(production_serve(
        secrets.path(),
        data.path(),
        "http://alerts.example.test/hook/s3cr3t-path",
    ))
    .await;
    assert!(done.stderr.contains("https://"), "{}", done.stderr);
    assert!(!done.stderr.contains("s3cr3t-path"), "{}", done.stderr);

    let done = expect_refused(production_serve(
        secrets.path(),
        data.path(),
        "https://10.0.0.5/hook",
    ))
    .await;
    assert!(done.stderr.contains("outbound.allow"), "{}", done.stderr);

    let running = expect_listening(production_serve(
        secrets.path(),
        data.path(),
        "https://alerts.example.test/hook/s3cr3t-path",
    ))
    .await;
    let (out, err) = running.stop().await;
    assert!(err.contains("alerts.example.test") || out.contains("alerts.example.test"));
    for text in [&out, &err] {
        assert!(!text.contains("s3cr3t-path"), "{text}");
        assert!(!text.contains(signing_secret.trim()), "{text}");
    }

    std::fs::remove_file(secrets.path().join("alert_webhook_secret")).unwrap();
    let done = expect_refused(production_serve(
        secrets.path(),
        data.path(),
        "https://alerts.example.test/hook",
    ))
    .await;
    assert!(
        done.stderr.contains("alert_webhook_secret"),
        "{}",
        done.stderr
    );
}

/// Development `kraliki serve` with the secrets in `secrets`, alerting to a
/// local address the outbound guard is told to allow.
fn development_serve(secrets: &std::path::Path, data: &std::path::Path) -> tokio::process::Command {
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", secrets)
        .env("KRALIKI_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .env("KRALIKI_OUTBOUND__ALLOW", "127.0.0.1")
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    cmd
}

#[tokio::test]
async fn an_alert_webhook_secret_under_32_characters_is_refused_at_start() {
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let file = secrets.path().join("alert_webhook_secret");
    let generated = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(generated.len() > 32, "keys generate makes a longer one");

    // 31 characters, and the same padded with blanks past 32: refused, in
    // development too, naming the secret and never showing it.
    let short = &generated[..31];
    for value in [short.to_string(), format!("  {short}  \n")] {
        std::fs::write(&file, &value).unwrap();
        let done = expect_refused(development_serve(secrets.path(), data.path())).await;
        assert!(
            done.stderr.contains("alert_webhook_secret") && done.stderr.contains("32"),
            "{}",
            done.stderr
        );
        assert!(!done.stderr.contains(short), "{}", done.stderr);
        assert!(!done.stdout.contains(short), "{}", done.stdout);
    }

    // 32 characters are enough.
    std::fs::write(&file, &generated[..32]).unwrap();
    let running = expect_listening(development_serve(secrets.path(), data.path())).await;
    running.stop().await;
}
