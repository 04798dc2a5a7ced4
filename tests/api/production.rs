//! Production mode refuses to start on anything unsafe (DESIGN.md §1, §3).
//!
//! These tests run the real `kraliki` binary with a cleared environment, so
//! they prove what an operator sees: the exit status and the message on
//! standard error. The binary-spawning tests use the embedded SQLite
//! database only (with `KRALIKI_ALLOW_SQLITE_IN_PRODUCTION=true` where the
//! case is not about that refusal); `KRALIKI_TEST_DATABASE_URL` does not
//! apply to them, because the database URL is itself a secret and the
//! loader rules are the same for both engines.
//!
//! The process helpers here are shared with `cli.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its listening line, or to exit.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The start of the line `kraliki serve` prints on standard error once it
/// accepts connections; the base URL (`http://…` or `https://…`) follows.
const LISTENING: &str = "kraliki listening on ";

/// The five keys every server needs.
pub const REQUIRED_KEYS: &[&str] = &[
    "jwt_signing_key",
    "session_key",
    "csrf_key",
    "audit_key",
    "data_key",
];

/// `kraliki` with an empty environment except `PATH`.
pub fn kraliki() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraliki"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The output of a finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run a command to completion (with a timeout), feeding `stdin` when given.
pub async fn run(mut cmd: Command, stdin: Option<&str>) -> Finished {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("kraliki starts");
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        // The command may exit before reading (a refused argument): a
        // broken pipe is then expected, and the exit status tells the rest.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let out = tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
        .await
        .expect("command finishes in time")
        .unwrap();
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `kraliki serve` that printed its listening line.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Wait (bounded) for the server to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Everything written to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stop the server and return everything it wrote.
    pub async fn stop(mut self) -> (String, String) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(START_TIMEOUT, self.child.wait()).await;
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }
}

/// What became of a started server.
pub enum Outcome {
    /// It printed the listening line.
    Started(Running),
    /// It exited first.
    Exited(Finished),
}

/// Spawn `cmd` and wait until it either listens or exits.
pub async fn start(mut cmd: Command) -> Outcome {
    let mut child = cmd.spawn().expect("kraliki starts");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();

    let mut out_pipe = child.stdout.take().unwrap();
    let out_buf = stdout.clone();
    let out_reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 8192];
        while let Ok(n) = out_pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            out_buf
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let err_pipe = child.stderr.take().unwrap();
    let err_buf = stderr.clone();
    let err_reader = tokio::spawn(async move {
        let mut lines = BufReader::new(err_pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut b = err_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
            let _ = tx.send(line);
        }
    });

    let waited = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = rx.recv().await {
            if let Some(base) = line.strip_prefix(LISTENING) {
                return Some(base.trim().to_string());
            }
        }
        None
    })
    .await;
    match waited {
        Ok(Some(base)) => Outcome::Started(Running {
            child,
            base,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }),
        Ok(None) => {
            // Standard error closed: the process is exiting.
            let status = tokio::time::timeout(START_TIMEOUT, child.wait())
                .await
                .expect("exits in time")
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), out_reader).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), err_reader).await;
            let stdout = stdout.lock().unwrap().clone();
            let stderr = stderr.lock().unwrap().clone();
            Outcome::Exited(Finished {
                status,
                stdout,
                stderr,
            })
        }
        Err(_) => {
            let _ = child.start_kill();
            let err = stderr.lock().unwrap().clone();
            panic!("kraliki neither listened nor exited within {START_TIMEOUT:?}; stderr:\n{err}");
        }
    }
}

/// Start `cmd` and assert it listens; returns the running server.
pub async fn expect_listening(cmd: Command) -> Running {
    match start(cmd).await {
        Outcome::Started(r) => r,
        Outcome::Exited(f) => panic!(
            "expected the server to start, but it exited with {}; stderr:\n{}",
            f.status, f.stderr
        ),
    }
}

/// Start `cmd` and assert it exits with a failure; returns its output.
pub async fn expect_refused(cmd: Command) -> Finished {
    match start(cmd).await {
        Outcome::Started(r) => {
            let (_, err) = r.stop().await;
            panic!("expected the server to refuse to start, but it listened; stderr:\n{err}")
        }
        Outcome::Exited(f) => {
            assert!(
                !f.status.success(),
                "refusal must be a non-zero exit; stderr:\n{}",
                f.stderr
            );
            assert!(
                !f.stderr.contains(LISTENING),
                "a refused server must never listen"
            );
            f
        }
    }
}

/// `kraliki keys generate --format dir --out <dir>`: asserts success and
/// that every file is private.
pub async fn generate_key_dir(dir: &Path) {
    let mut cmd = kraliki();
    cmd.args(["keys", "generate", "--format", "dir", "--out"])
        .arg(dir);
    let done = run(cmd, None).await;
    assert!(done.status.success(), "keys generate: {}", done.stderr);
    for name in REQUIRED_KEYS {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
}

/// Folders of one production test.
struct Prod {
    secrets: tempfile::TempDir,
    data: tempfile::TempDir,
    other: tempfile::TempDir,
}

impl Prod {
    /// A complete, valid secrets folder made by `keys generate`.
    async fn new() -> Prod {
        let p = Prod {
            secrets: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
            other: tempfile::tempdir().unwrap(),
        };
        generate_key_dir(p.secrets.path()).await;
        p
    }

    fn secret_path(&self, name: &str) -> std::path::PathBuf {
        self.secrets.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.secret_path(name)).unwrap()
    }

    /// Move a secret out of the secrets folder; returns its value.
    fn take(&self, name: &str) -> String {
        let value = self.read(name);
        std::fs::remove_file(self.secret_path(name)).unwrap();
        value
    }

    /// Write a file outside the secrets folder (for `_FILE` variables).
    fn outside(&self, name: &str, value: &str) -> std::path::PathBuf {
        let path = self.other.path().join(name);
        std::fs::write(&path, value).unwrap();
        path
    }

    /// `kraliki serve` in production, SQLite opted in.
    fn serve(&self) -> Command {
        let mut cmd = self.serve_without_sqlite_opt_in();
        cmd.env("KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "true");
        cmd
    }

    fn serve_without_sqlite_opt_in(&self) -> Command {
        self.serve_in(self.data.path())
    }

    /// Production `kraliki serve` on another data folder, SQLite opted in.
    fn serve_in(&self, data: &Path) -> Command {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_ENV", "production")
            .env("KRALIKI_PUBLIC_URL", "https://calls.example.test")
            .env("KRALIKI_SMTP__HOST", "smtp.example.test")
            .env("KRALIKI_SECRETS_DIR", self.secrets.path())
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"]);
        cmd
    }
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in:\n{text}");
    }
}

#[tokio::test]
async fn starts_with_keys_from_keys_generate_and_never_prints_them() {
    let p = Prod::new().await;
    let values: Vec<String> = REQUIRED_KEYS.iter().map(|n| p.read(n)).collect();
    let server = expect_listening(p.serve()).await;

    // It answers, and an event-raising request goes through the log too.
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{}/api/auth/login", server.base))
        .json(
            &serde_json::json!({"email": "nobody@example.com", "password": "wrong password here"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let (stdout, stderr) = server.stop().await;
    // The loader says where each secret came from…
    assert!(stderr.contains("secret loaded"), "{stderr}");
    assert!(stderr.contains("secrets folder"), "{stderr}");
    // …and never what it is, in any form.
    for value in &values {
        let forms = [
            value.trim().to_string(),
            kraliki::secrets::pem_to_one_line(value),
        ];
        for form in forms.iter().filter(|f| f.len() >= 16) {
            assert!(!stdout.contains(form.as_str()), "a secret leaked to stdout");
            assert!(!stderr.contains(form.as_str()), "a secret leaked to stderr");
        }
        // Not even a recognizable piece of a PEM body.
        for line in value
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        {
            assert!(!stdout.contains(line) && !stderr.contains(line));
        }
    }
}

#[tokio::test]
async fn a_secret_in_a_plain_environment_variable_is_refused() {
    let p = Prod::new().await;
    let key = p.take("session_key");
    let mut cmd = p.serve();
    cmd.env("KRALIKI_SESSION_KEY", key.trim());
    let done = expect_refused(cmd).await;
    assert_mentions(
        &done.stderr,
        &[
            "KRALIKI_SESSION_KEY",
            "session_key",
            "KRALIKI_SESSION_KEY_FILE",
        ],
    );
    // The refusal does not echo the value.
    assert!(!done.stderr.contains(key.trim()));
    assert!(!done.stdout.contains(key.trim()));
}

#[tokio::test]
async fn the_same_secret_through_a_file_variable_starts() {
    let p = Prod::new().await;
    let key = p.take("session_key");
    let file = p.outside("session_key", &key);
    let mut cmd = p.serve();
    cmd.env("KRALIKI_SESSION_KEY_FILE", &file);
    let server = expect_listening(cmd).await;
    let (stdout, stderr) = server.stop().await;
    assert!(stderr.contains("_FILE variable"), "{stderr}");
    assert!(!stderr.contains(key.trim()) && !stdout.contains(key.trim()));
}

#[tokio::test]
async fn the_secrets_folder_is_read_before_the_file_variable() {
    // A good key in the folder wins over a placeholder named by _FILE.
    let p = Prod::new().await;
    let placeholder = p.outside("session_key", "changeme\n");
    let mut cmd = p.serve();
    cmd.env("KRALIKI_SESSION_KEY_FILE", &placeholder);
    let server = expect_listening(cmd).await;
    server.stop().await;

    // The reverse: a placeholder in the folder is used (and refused) even
    // though _FILE names a good key.
    let p = Prod::new().await;
    let good = p.read("session_key");
    std::fs::write(p.secret_path("session_key"), "changeme\n").unwrap();
    let good_file = p.outside("session_key", &good);
    let mut cmd = p.serve();
    cmd.env("KRALIKI_SESSION_KEY_FILE", &good_file);
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["session_key", "placeholder"]);
}

#[tokio::test]
async fn a_placeholder_secret_is_refused() {
    let p = Prod::new().await;
    std::fs::write(p.secret_path("session_key"), "changeme").unwrap();
    let done = expect_refused(p.serve()).await;
    assert_mentions(
        &done.stderr,
        &["session_key", "placeholder", "kraliki keys generate"],
    );
}

#[tokio::test]
async fn a_short_key_is_refused_naming_its_size() {
    let p = Prod::new().await;
    let short = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    std::fs::write(p.secret_path("csrf_key"), short).unwrap();
    let done = expect_refused(p.serve()).await;
    assert_mentions(&done.stderr, &["csrf_key", "16 bytes", "at least 32"]);
}

#[tokio::test]
async fn a_missing_key_is_refused_with_the_way_to_make_one() {
    let p = Prod::new().await;
    p.take("audit_key");
    let done = expect_refused(p.serve()).await;
    assert_mentions(
        &done.stderr,
        &[
            "audit_key",
            "missing",
            "KRALIKI_AUDIT_KEY_FILE",
            "kraliki keys generate",
        ],
    );
    // Production never falls back to generating keys.
    assert!(!p.data.path().join("secrets").exists());
}

#[tokio::test]
async fn a_database_with_demo_accounts_is_refused() {
    let p = Prod::new().await;
    // Development `serve --demo` on the same data folder and secrets.
    let mut dev = kraliki();
    dev.env("KRALIKI_SECRETS_DIR", p.secrets.path())
        .arg("--data-dir")
        .arg(p.data.path())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"]);
    let server = expect_listening(dev).await;
    let (_, stderr) = server.stop().await;
    assert!(stderr.contains("demo organization"), "{stderr}");

    let done = expect_refused(p.serve()).await;
    assert_mentions(&done.stderr, &["demo accounts", "--demo"]);

    // The same folders without the demo data start fine: it really was the
    // demo accounts.
    let fresh = tempfile::tempdir().unwrap();
    let mut cmd = p.serve_in(fresh.path());
    cmd.env("KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "true");
    expect_listening(cmd).await.stop().await;
}

#[tokio::test]
async fn sqlite_without_the_opt_in_is_refused() {
    let p = Prod::new().await;
    let done = expect_refused(p.serve_without_sqlite_opt_in()).await;
    assert_mentions(
        &done.stderr,
        &["KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "database_url"],
    );
    let mut cmd = p.serve_without_sqlite_opt_in();
    cmd.env("KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "false");
    expect_refused(cmd).await;
}

#[tokio::test]
async fn serve_demo_is_refused_in_production() {
    let p = Prod::new().await;
    let mut cmd = p.serve();
    cmd.arg("--demo");
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["--demo", "production"]);
    // Nothing was created.
    assert!(!p.data.path().join("kraliki.db").exists());
}

#[tokio::test]
async fn insecure_public_url_and_missing_smtp_are_refused() {
    let p = Prod::new().await;
    let mut cmd = p.serve();
    cmd.env("KRALIKI_PUBLIC_URL", "http://calls.example.test");
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["KRALIKI_PUBLIC_URL", "https://"]);

    let mut cmd = p.serve();
    cmd.env_remove("KRALIKI_SMTP__HOST");
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["KRALIKI_SMTP__HOST"]);

    let mut cmd = p.serve();
    cmd.env("KRALIKI_ALLOWED_ORIGINS", "*");
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["KRALIKI_ALLOWED_ORIGINS", "wildcard"]);
}

#[tokio::test]
async fn a_variable_and_its_file_twin_together_are_refused() {
    let p = Prod::new().await;
    let key = p.take("data_key");
    let file = p.outside("data_key", &key);
    let mut cmd = p.serve();
    cmd.env("KRALIKI_DATA_KEY_FILE", &file)
        .env("KRALIKI_DATA_KEY", key.trim());
    let done = expect_refused(cmd).await;
    assert_mentions(&done.stderr, &["KRALIKI_DATA_KEY", "KRALIKI_DATA_KEY_FILE"]);
    assert!(!done.stderr.contains(key.trim()));
}

/// The number of organizations in a stopped server's SQLite database.
async fn organizations_in(data: &Path) -> i64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let file = data.join("kraliki.db");
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn registration_is_closed_in_production_unless_opened() {
    let p = Prod::new().await;
    let register = |base: &str| {
        reqwest::Client::new()
            .post(format!("{base}/api/auth/register"))
            .json(&serde_json::json!({
                "organization_name": "Walk-In Calls",
                "email": "walk-in@example.com",
                "password": crate::helpers::GOOD_PASSWORD,
            }))
            .send()
    };

    let server = expect_listening(p.serve()).await;
    let res = register(&server.base).await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "registration_closed");
    server.stop().await;
    assert_eq!(organizations_in(p.data.path()).await, 0);

    // The operator may open it explicitly.
    let mut cmd = p.serve();
    cmd.env("KRALIKI_OPEN_REGISTRATION", "true");
    let server = expect_listening(cmd).await;
    assert_eq!(register(&server.base).await.unwrap().status(), 201);
    server.stop().await;
    assert_eq!(organizations_in(p.data.path()).await, 1);
}
