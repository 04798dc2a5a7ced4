//! `kraliki healthcheck`: the container health check (deploy/Dockerfile).
//!
//! Runs the real binary, like `tests/api/cli.rs`, with a cleared
//! environment: against a real `kraliki serve`, against nothing, against a
//! peer that never answers, and against one that answers 503. A separate
//! test target so it needs nothing from the API suite's helpers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// `kraliki` with an empty environment except `PATH`.
fn kraliki() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraliki"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Exit status and output of a finished command.
struct Finished {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

async fn run(mut cmd: Command) -> Finished {
    let start = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("finishes in time")
        .expect("kraliki runs");
    Finished {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// A development `kraliki serve` on `listen`; returns it and its address.
async fn serve(listen: &str) -> (Child, std::net::SocketAddr, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut child = kraliki()
        .env("KRALIKI_SECRETS_DIR", dirs[1].path())
        .arg("--data-dir")
        .arg(dirs[0].path())
        .args(["serve", "--listen", listen])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("kraliki listening on http://") {
                return addr.trim().parse().unwrap();
            }
        }
        panic!("kraliki serve exited before listening");
    })
    .await
    .expect("kraliki serve listens");
    (child, addr, dirs)
}

/// `kraliki healthcheck` that reads its address from `KRALIKI_LISTEN`.
fn healthcheck_for(listen: &str) -> Command {
    let mut cmd = kraliki();
    cmd.env("KRALIKI_LISTEN", listen).arg("healthcheck");
    cmd
}

#[tokio::test]
async fn healthcheck_passes_against_a_ready_server() {
    let (_server, addr, _dirs) = serve("127.0.0.1:0").await;

    let done = run(healthcheck_for(&addr.to_string())).await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(
        done.stdout,
        format!("ready: http://{addr}/ready answered 200\n"),
        "one line"
    );

    let mut cmd = kraliki();
    cmd.args(["healthcheck", "--url", &format!("http://{addr}/ready")]);
    let done = run(cmd).await;
    assert!(done.success, "{}", done.stderr);
}

#[tokio::test]
async fn healthcheck_probes_loopback_when_listening_on_every_address() {
    // The container listens on 0.0.0.0:3018; the probe goes to 127.0.0.1.
    let (_server, addr, _dirs) = serve("0.0.0.0:0").await;
    let listen = format!("0.0.0.0:{}", addr.port());

    let done = run(healthcheck_for(&listen)).await;
    assert!(done.success, "{}", done.stderr);
    assert!(
        done.stdout
            .starts_with(&format!("ready: http://127.0.0.1:{}/ready", addr.port())),
        "{}",
        done.stdout
    );
}

#[tokio::test]
async fn healthcheck_needs_no_secrets() {
    let (_server, addr, _dirs) = serve("127.0.0.1:0").await;
    let empty = tempfile::tempdir().unwrap();

    // Production settings with an empty secrets folder and a secret in a
    // plain variable: `serve` would refuse both; the probe reads neither.
    let mut cmd = healthcheck_for(&addr.to_string());
    cmd.env("KRALIKI_ENV", "production")
        .env("KRALIKI_PUBLIC_URL", "https://calls.example.com")
        .env("KRALIKI_SMTP__HOST", "smtp.example.com")
        .env("KRALIKI_SECRETS_DIR", empty.path())
        .env("KRALIKI_SESSION_KEY", "changeme");
    let done = run(cmd).await;
    assert!(done.success, "{}", done.stderr);
    assert!(!done.stderr.contains("secret"), "{}", done.stderr);
}

#[tokio::test]
async fn healthcheck_fails_with_one_line_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let done = run(healthcheck_for(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(done.stdout, "");
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    assert!(
        done.stderr
            .contains(&format!("not ready: http://127.0.0.1:{port}/ready")),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn healthcheck_gives_up_after_three_seconds_of_silence() {
    // Accepts connections and reads, but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            held.push(stream);
        }
    });

    let done = run(healthcheck_for(&addr.to_string())).await;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("within 3 s"), "{}", done.stderr);
    assert!(
        done.took >= Duration::from_millis(2900) && done.took < Duration::from_secs(10),
        "took {:?}",
        done.took
    );
}

#[tokio::test]
async fn healthcheck_fails_on_anything_but_200() {
    // A peer that answers every request 503, like /ready without its
    // database.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });

    let done = run(healthcheck_for(&addr.to_string())).await;
    assert_eq!(done.code, Some(1));
    assert!(done.stderr.contains("answered 503"), "{}", done.stderr);
    let request = rx.recv().await.unwrap();
    assert!(
        request.starts_with(&format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\n")),
        "{request}"
    );

    // A URL that is not plain http:// is refused before any connection.
    let mut cmd = kraliki();
    cmd.args(["healthcheck", "--url", "https://127.0.0.1:3018/ready"]);
    let done = run(cmd).await;
    assert_eq!(done.code, Some(1));
    assert!(done.stderr.contains("http://"), "{}", done.stderr);
}
