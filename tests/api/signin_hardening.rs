//! The finer points of sign-in hardening: the bound on password input, the
//! upgrade of weaker stored hashes, the cap and the memory of the
//! per-account delay, and wrong second-factor codes counting toward it.

use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kraliki::store::users::{NewUser, Role};
use kraliki::store::{self, OrgId};
use serde_json::{json, Value};

use crate::helpers::*;

/// `delay_secs` of every `ACCOUNT_LOCKED` event so far, oldest first.
async fn delays(app: &TestApp) -> Vec<i64> {
    app.events("ACCOUNT_LOCKED")
        .await
        .iter()
        .map(|e| {
            let details: Value = serde_json::from_str(&e.details).unwrap();
            details["delay_secs"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_password_is_refused_and_not_counted_as_a_guess() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let res = app.login_raw(&user.email, &"x".repeat(1025)).await;
    let body = assert_problem(res, 400).await;
    assert_eq!(body["errors"][0]["field"], "password", "{body}");
    assert_eq!(body["errors"][0]["code"], "too_long", "{body}");
    // Not a failed guess: it does not count toward the delay.
    assert!(app.events("AUTH_FAILURE").await.is_empty());
    // 1024 bytes is still an ordinary (wrong) password.
    let res = app.login_raw(&user.email, &"x".repeat(1024)).await;
    assert_problem(res, 401).await;
}

#[tokio::test]
async fn a_weaker_stored_hash_is_replaced_at_the_next_sign_in() {
    let app = spawn_app().await;
    let org = app.create_org("Old Hashes").await;
    let email = format!("legacy-{}@example.com", uuid::Uuid::new_v4().simple());
    // A hash made with weaker parameters than today's, as an older release
    // might have stored it.
    let weak = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8192, 1, 1, None).unwrap(),
    )
    .hash_password(
        GOOD_PASSWORD.as_bytes(),
        &SaltString::generate(&mut rand::rngs::OsRng),
    )
    .unwrap()
    .to_string();
    assert!(weak.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"));
    let user = store::users::create(
        &app.state.db,
        NewUser {
            org: &OrgId(org.clone()),
            email: &email,
            display_name: "Legacy",
            role: Role::Agent,
            password_hash: &weak,
            is_demo: false,
        },
    )
    .await
    .unwrap();

    let res = app.login_raw(&email, GOOD_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let stored = store::users::get(&app.state.db, &OrgId(org.clone()), &user.id)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert_ne!(stored, weak);
    // The new hash verifies the same password.
    let res = app.login_raw(&email, GOOD_PASSWORD).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_sign_in_delay_never_grows_past_its_cap() {
    let app = spawn_app_with(|s| {
        s.auth.lockout_threshold = 1;
        s.auth.lockout_base_secs = 1;
        s.auth.lockout_max_secs = 1;
    })
    .await;
    let user = app.org_with(Role::Agent).await;
    for _ in 0..2 {
        let res = app.login_raw(&user.email, "not-the-password-at-all").await;
        assert_problem(res, 401).await;
        // The delay uses the wall clock: wait it out.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Without the cap the second delay would be 2 s (doubling).
    assert_eq!(delays(&app).await, vec![1, 1]);
}

#[tokio::test]
async fn a_run_of_failures_is_forgotten_a_day_after_its_last_failure() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    for _ in 0..4 {
        let res = app.login_raw(&user.email, "not-the-password-at-all").await;
        assert_problem(res, 401).await;
    }
    // A day and a second pass (moved back in the database: the count uses
    // the wall clock).
    sqlx::query("UPDATE login_failures SET updated_at = updated_at - $1")
        .bind(24 * 3600 * 1000 + 1000_i64)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    // The fifth failure starts a new run instead of delaying the account…
    let res = app.login_raw(&user.email, "not-the-password-at-all").await;
    assert_problem(res, 401).await;
    assert!(delays(&app).await.is_empty());
    // …which delays it at its own fifth failure.
    for _ in 0..4 {
        let res = app.login_raw(&user.email, "not-the-password-at-all").await;
        assert_problem(res, 401).await;
    }
    assert_eq!(delays(&app).await, vec![30]);
    let res = app.login_raw(&user.email, GOOD_PASSWORD).await;
    let body = assert_problem(res, 429).await;
    assert_eq!(body["code"], "account_delayed");
}

#[tokio::test]
async fn wrong_second_factor_codes_count_toward_the_delay() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let token = app.token(&user).await;
    let mut auth = crate::totp::begin(&app, &token).await;
    let code = auth.fresh_code().await;
    let res = app
        .client
        .post(app.url("/api/auth/totp/verify"))
        .bearer_auth(&token)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The right password with a wrong code, five times.
    let attempt = |code: String| {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": user.email, "password": user.password, "totp_code": code}))
            .send()
    };
    for _ in 0..5 {
        let body = assert_problem(attempt(auth.wrong_code()).await.unwrap(), 401).await;
        assert_eq!(body["code"], "invalid_second_factor");
    }
    assert_eq!(delays(&app).await, vec![30]);
    // Now even the right code waits.
    let code = auth.fresh_code().await;
    let body = assert_problem(attempt(code).await.unwrap(), 429).await;
    assert_eq!(body["code"], "account_delayed");
}
