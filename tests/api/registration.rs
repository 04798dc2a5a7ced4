//! Open registration: `POST /api/auth/register` creates an organization and
//! its first admin only while `open_registration` is on (by default on in
//! development and off in production; `production.rs` checks the
//! production default with the real binary). Closed, it is refused with 403
//! `registration_closed` before anything is created.

use serde_json::{json, Value};

use crate::helpers::*;

async fn register(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/register"))
        .json(&json!({
            "organization_name": "Self-Service Calls",
            "email": email,
            "password": GOOD_PASSWORD,
            "display_name": "Founder",
        }))
        .send()
        .await
        .unwrap()
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

fn fresh_email() -> String {
    format!("founder-{}@example.com", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn closed_registration_is_refused_and_creates_nothing() {
    let app = spawn_app_with(|s| s.open_registration = Some(false)).await;
    let email = fresh_email();
    let res = register(&app, &email).await;
    let body = assert_problem(res, 403).await;
    assert_eq!(body["code"], "registration_closed");
    for table in ["organizations", "users", "audit_log"] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    assert_problem(app.login_raw(&email, GOOD_PASSWORD).await, 401).await;
}

#[tokio::test]
async fn open_registration_creates_an_organization_and_its_admin() {
    let app = spawn_app_with(|s| s.open_registration = Some(true)).await;
    let email = fresh_email();
    let res = register(&app, &email).await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["role"], "admin");
    assert_eq!(count(&app, "organizations").await, 1);

    // The new admin signs in to the new organization.
    let res = app.login_raw(&email, GOOD_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let token: Value = res.json().await.unwrap();
    let res = app
        .get_auth("/api/organization", token["access_token"].as_str().unwrap())
        .await;
    assert_eq!(res.status(), 200);
    let org: Value = res.json().await.unwrap();
    assert_eq!(org["id"], user["organization_id"]);
    assert_eq!(org["name"], "Self-Service Calls");
}
