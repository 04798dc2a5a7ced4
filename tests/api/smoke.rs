//! Basic routes: health, readiness, the start page, problem documents.

use crate::helpers::*;

#[tokio::test]
async fn health_ready_and_index_answer() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Voice by Kraliki"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_with_the_request_id() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/nothing-here"))
        .header("x-request-id", "test-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "test-req-1");
    let body = assert_problem(res, 404).await;
    assert_eq!(body["instance"], "test-req-1");

    let res = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_problem(res, 405).await;

    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn a_slow_body_upload_gets_408() {
    let app = spawn_app_with(|s| s.http.request_timeout_secs = 1).await;
    let text = slow_body_answer(&app).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| s.http.header_read_timeout_secs = 1).await;
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head; the server must close the connection.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed by the server");

    // A normal client is still served.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
