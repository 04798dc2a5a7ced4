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
