//! The test harness: `spawn_app` starts a server on 127.0.0.1:0 with its
//! own data folder, secrets folder and database, and a captured security
//! log.
//!
//! With `KRALIKI_TEST_DATABASE_URL=postgres://…/<db>` every app gets a
//! fresh PostgreSQL database named `kraliki_test_<uuid>`; the server must
//! answer or the test fails (never skips).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kraliki::config::Settings;
use kraliki::security::events::LogSink;
use kraliki::security::ratelimit::ManualClock;
use kraliki::state::AppState;
use kraliki::store::events::StoredEvent;
use kraliki::store::users::{NewUser, Role};
use kraliki::store::{self, OrgId};
use serde_json::{json, Value};
use sqlx::Connection;

/// A password that passes the policy.
pub const GOOD_PASSWORD: &str = "correct-horse-battery-staple-orbit";

/// A captured log: every security event line written by the server.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The captured lines, parsed as JSON.
    pub fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("security log lines are JSON"))
            .collect()
    }
}

/// A running server.
pub struct TestApp {
    /// Address the server listens on.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client without a cookie store.
    pub client: reqwest::Client,
    /// The server's state (database, keys, secrets).
    pub state: AppState,
    /// The security log.
    pub log: Captured,
    /// Data folder (mail outbox, SQLite file).
    pub data_dir: tempfile::TempDir,
    /// Secrets folder.
    pub secrets_dir: tempfile::TempDir,
    /// The clock of time-based controls (rate limits); advance it instead
    /// of sleeping.
    pub clock: ManualClock,
}

/// The PostgreSQL URL for tests, when the suite runs against PostgreSQL.
pub fn postgres_url() -> Option<String> {
    std::env::var("KRALIKI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Create a fresh PostgreSQL database and return its URL.
pub async fn fresh_postgres_database(admin_url: &str) -> String {
    let name = format!("kraliki_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("KRALIKI_TEST_DATABASE_URL is set but PostgreSQL does not answer: {e}")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    format!("{base}/{name}")
}

/// Write a complete, fresh set of secrets into `dir`.
pub fn write_secrets(dir: &std::path::Path) {
    for name in [
        "jwt_signing_key",
        "session_key",
        "csrf_key",
        "audit_key",
        "data_key",
    ] {
        std::fs::write(dir.join(name), kraliki::secrets::generate_value(name)).unwrap();
    }
}

/// Start a server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start a server after adjusting its settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_secrets(|_| {}, configure).await
}

/// Start a server after adding files to its secrets folder (e.g.
/// `alert_webhook_secret`) with `add_secrets`, and adjusting its settings
/// with `configure`. Otherwise the same as [`spawn_app_with`].
pub async fn spawn_app_with_secrets(
    add_secrets: impl FnOnce(&std::path::Path),
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let secrets_dir = tempfile::tempdir().unwrap();
    write_secrets(secrets_dir.path());
    add_secrets(secrets_dir.path());
    if let Some(url) = postgres_url() {
        let db_url = fresh_postgres_database(&url).await;
        std::fs::write(secrets_dir.path().join("database_url"), db_url).unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = Settings {
        listen: addr,
        data_dir: data_dir.path().to_path_buf(),
        secrets_dir: secrets_dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.auth.hash_concurrency = 2;
    // Rate limits have their own tests; elsewhere they would only get in the
    // way of tests that sign in many times from one address.
    settings.rate_limit.enabled = false;
    configure(&mut settings);

    let secrets = kraliki::secrets::load(&settings, &BTreeMap::new()).expect("secrets load");
    let log = Captured::default();
    let sink: LogSink = Arc::new(Mutex::new(Box::new(log.clone())));
    let clock = ManualClock::new(store::now_ms() as u64);
    let state =
        kraliki::startup::build_state_with_clock(settings, secrets, sink, Arc::new(clock.clone()))
            .await
            .expect("server builds");
    let served = state.clone();
    tokio::spawn(async move {
        let _ = kraliki::startup::serve(listener, served).await;
    });
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        log,
        data_dir,
        secrets_dir,
        clock,
    }
}

/// A browser signed in with `POST /api/auth/session`.
pub struct BrowserSession {
    /// `name=value` of the session cookie, for a `Cookie` header.
    pub cookie: String,
    /// The CSRF token.
    pub csrf: String,
    /// The whole answer.
    pub body: Value,
}

/// A user made directly in the database.
#[derive(Clone, Debug)]
pub struct TestUser {
    /// Id.
    pub id: String,
    /// Organization id.
    pub org: String,
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

impl TestApp {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Create an organization.
    pub async fn create_org(&self, name: &str) -> String {
        store::organizations::create(&self.state.db, name, false)
            .await
            .unwrap()
            .id
    }

    /// Create an organization with a chosen id (the operator organization,
    /// which settings name before it exists).
    pub async fn create_org_with_id(&self, id: &str, name: &str) {
        sqlx::query(
            "INSERT INTO organizations (id, name, require_totp_privileged, is_demo, created_at) \
             VALUES ($1, $2, 0, 0, $3)",
        )
        .bind(id)
        .bind(name)
        .bind(store::now_ms())
        .execute(&self.state.db.pool)
        .await
        .unwrap();
    }

    /// Create a user with [`GOOD_PASSWORD`] in organization `org`.
    pub async fn create_user(&self, org: &str, role: Role) -> TestUser {
        let email = format!(
            "{}-{}@example.com",
            role.as_str(),
            uuid::Uuid::new_v4().simple()
        );
        let phc = kraliki::auth::hash_password(&self.state, GOOD_PASSWORD)
            .await
            .unwrap();
        let user = store::users::create(
            &self.state.db,
            NewUser {
                org: &OrgId(org.to_string()),
                email: &email,
                display_name: "Test User",
                role,
                password_hash: &phc,
                is_demo: false,
            },
        )
        .await
        .unwrap();
        TestUser {
            id: user.id,
            org: org.to_string(),
            email,
            password: GOOD_PASSWORD.to_string(),
        }
    }

    /// A new organization with one user of `role`.
    pub async fn org_with(&self, role: Role) -> TestUser {
        let org = self.create_org("Test Org").await;
        self.create_user(&org, role).await
    }

    /// `POST /api/auth/login`; returns the response.
    pub async fn login_raw(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Sign `user` in for a browser (asserting 200).
    pub async fn browser_session(&self, user: &TestUser) -> BrowserSession {
        let res = self
            .client
            .post(self.url("/api/auth/session"))
            .json(&json!({"email": user.email, "password": user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "browser sign-in of {} failed",
            user.email
        );
        let cookie = res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let body: Value = res.json().await.unwrap();
        let csrf = body["csrf_token"].as_str().unwrap().to_string();
        BrowserSession { cookie, csrf, body }
    }

    /// Raise `TOKEN_REUSE_DETECTED` (HIGH) for `user` by presenting a
    /// retired refresh token.
    pub async fn reuse_refresh_token(&self, user: &TestUser) {
        let first = self.login(user).await["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        let refresh = |token: String| {
            self.client
                .post(self.url("/api/auth/refresh"))
                .json(&json!({"refresh_token": token}))
                .send()
        };
        assert_eq!(refresh(first.clone()).await.unwrap().status(), 200);
        assert_eq!(refresh(first).await.unwrap().status(), 401);
    }

    /// Ask for a password reset for `email` (asserting 202) and return the
    /// token of the mail that comes of it.
    pub async fn requested_reset_token(&self, email: &str) -> String {
        let before = self.outbox().len();
        let res = self
            .client
            .post(self.url("/api/auth/forgot-password"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        mailed_reset_token(self, email, before).await
    }

    /// Log in and return the token response body (asserting 200).
    pub async fn login(&self, user: &TestUser) -> Value {
        let res = self.login_raw(&user.email, &user.password).await;
        assert_eq!(res.status(), 200, "login of {} failed", user.email);
        res.json().await.unwrap()
    }

    /// Log in and return the access token.
    pub async fn token(&self, user: &TestUser) -> String {
        self.login(user).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// GET with a bearer token.
    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Stored security events of one type, oldest first.
    pub async fn events(&self, event_type: &str) -> Vec<StoredEvent> {
        let mut list = store::events::list(&self.state.db, Some(event_type), None, 1000)
            .await
            .unwrap();
        list.reverse();
        list
    }

    /// The mail outbox, oldest first.
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.data_dir.path().join("outbox");
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        files.sort();
        files
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Create a call in `org`, for `agent`.
    pub async fn create_call(&self, org: &str, agent: Option<&str>, status: &str) -> String {
        store::calls::create(
            &self.state.db,
            &OrgId(org.to_string()),
            store::calls::NewCall {
                agent_id: agent,
                direction: "inbound",
                status,
                from_number: "+14155550100",
                to_number: "+14155550199",
            },
        )
        .await
        .unwrap()
        .id
    }
}

/// Start a login whose body never arrives in full and return the server's
/// answer head (as text) once it comes, within ten seconds. With a short
/// `http.request_timeout_secs`, that is the timeout layer's 408.
pub async fn slow_body_answer(app: &TestApp) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the server answered within the timeout");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Wait for a completely written password-reset mail to `email` among the
/// outbox mails after the first `skip`, and return its token.
pub async fn mailed_reset_token(app: &TestApp, email: &str, skip: usize) -> String {
    let to = format!("To: {email}\n");
    eventually(|| {
        let found = app
            .outbox()
            .into_iter()
            .skip(skip)
            .filter(|m| m.starts_with(&to))
            .find_map(|mail| {
                let (_, rest) = mail.split_once("Reset token: ")?;
                let (token, _) = rest.split_once('\n')?;
                Some(token.trim().to_string())
            });
        async move { found }
    })
    .await
}

/// Assert a problem+json response with `status`; returns the body.
pub async fn assert_problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string());
    assert!(body["detail"].is_string());
    body
}

/// Poll until `f` returns Some, for up to five seconds.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not met within five seconds");
}
