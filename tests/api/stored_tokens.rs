//! Credentials at rest (DESIGN.md §4): refresh tokens and password-reset
//! tokens are stored only as their SHA-256 (hex), so a copy of the database
//! cannot be replayed. Every column of every row is searched for the raw
//! token; `websocket.rs` does the same for WebSocket tickets.

use kraliki::store::users::Role;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Column, Row};

use crate::helpers::*;

/// SHA-256 of `token`, lower-case hex.
fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Every value of every row of `table`, as text (text and integer columns
/// are all these tables hold).
async fn cells(app: &TestApp, table: &str) -> Vec<(String, String)> {
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(!rows.is_empty(), "{table} has rows");
    let mut out = Vec::new();
    for row in &rows {
        for (i, column) in row.columns().iter().enumerate() {
            let value = match row.try_get::<Option<String>, _>(i) {
                Ok(v) => v,
                Err(_) => row
                    .try_get::<Option<i64>, _>(i)
                    .unwrap_or_else(|e| panic!("{table}.{}: {e}", column.name()))
                    .map(|n| n.to_string()),
            };
            out.push((column.name().to_string(), value.unwrap_or_default()));
        }
    }
    out
}

/// Assert that `token` appears in no column of `table`, and that its
/// SHA-256 is the `token_hash` of exactly one row.
async fn assert_stored_hashed(app: &TestApp, table: &str, token: &str) {
    assert!(token.len() >= 32, "a real token: {token:?}");
    let cells = cells(app, table).await;
    for (column, value) in &cells {
        assert!(
            !value.contains(token),
            "the raw token is stored in {table}.{column}"
        );
    }
    let hash = sha256_hex(token);
    let matches: Vec<&String> = cells
        .iter()
        .filter(|(_, v)| *v == hash)
        .map(|(c, _)| c)
        .collect();
    assert_eq!(matches, ["token_hash"], "the SHA-256 is stored, once");
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_sha256() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let login = app.login(&user).await;
    let first = login["refresh_token"].as_str().unwrap().to_string();
    assert_stored_hashed(&app, "refresh_tokens", &first).await;

    // The rotated successor too, with the spent token still only a hash.
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({ "refresh_token": first }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let second = body["refresh_token"].as_str().unwrap().to_string();
    assert_stored_hashed(&app, "refresh_tokens", &second).await;
    assert_stored_hashed(&app, "refresh_tokens", &first).await;
    // Nor does the raw token sit in the session it belongs to.
    for (column, value) in cells(&app, "sessions").await {
        assert!(
            !value.contains(&first) && !value.contains(&second),
            "{column}"
        );
    }
}

#[tokio::test]
async fn reset_tokens_are_stored_only_as_sha256() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let token = app.requested_reset_token(&user.email).await;
    assert_stored_hashed(&app, "password_resets", &token).await;

    // The stored hash is the one the reset endpoint looks up: the token
    // works (so the hash really is of this token).
    let res = app
        .client
        .post(app.url("/api/auth/reset-password"))
        .json(&json!({
            "token": token,
            "new_password": "quiet-lantern-harbor-meadow-2291",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_stored_hashed(&app, "password_resets", &token).await;
}
