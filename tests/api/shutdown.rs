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
