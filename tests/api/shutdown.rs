//! Graceful shutdown of the real binary: SIGTERM stops new connections and
//! lets every request in flight finish with a full response.

use std::time::Duration;

use serde_json::{json, Value};

use crate::production::{expect_listening, generate_key_dir, kraliki};

#[tokio::test]
async fn sigterm_lets_fifty_requests_in_flight_complete() {
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", secrets.path())
        // One hash at a time: the 50 sign-ins queue up and stay in flight.
        .env("KRALIKI_AUTH__HASH_CONCURRENCY", "1")
        .env("KRALIKI_RATE_LIMIT__ENABLED", "false")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let mut server = expect_listening(cmd).await;
    let base = server.base.clone();

    let client = reqwest::Client::new();
    let mut in_flight = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let url = format!("{base}/api/auth/login");
        in_flight.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .json(&json!({"email": format!("nobody-{i}@example.com"), "password": "wrong-password-123"}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            Ok::<_, reqwest::Error>((status, body))
        }));
    }
    // Let every request reach the server, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    for (i, task) in in_flight.into_iter().enumerate() {
        let (status, body) = task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} lost at shutdown: {e}"));
        assert_eq!(status, 401, "request {i}");
        assert_eq!(body["code"], "invalid_credentials", "request {i}");
    }

    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the server exits after draining");
    assert!(status.success(), "clean exit, got {status}");
    let refused = client.get(format!("{base}/health")).send().await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn a_request_that_outlasts_the_shutdown_grace_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", secrets.path())
        .env("KRALIKI_HTTP__SHUTDOWN_GRACE_SECS", "1")
        // Without the grace bound, the held request below would keep the
        // server alive for two minutes.
        .env("KRALIKI_HTTP__REQUEST_TIMEOUT_SECS", "120")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let mut server = expect_listening(cmd).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // A body upload that never completes: in flight until cut off.
    let mut held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    held.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the server exits once the grace is over, not when the request would time out");
    assert!(status.success(), "clean exit, got {status}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("shutdown grace period over"),
        "the cut-off is logged:\n{stderr}"
    );
    // The held connection was closed without an answer.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 2"),
        "{answer:?}"
    );
}
