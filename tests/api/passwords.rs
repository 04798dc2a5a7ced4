//! Passwords: forgot/reset (single-use, expiring tokens that sign the user
//! out everywhere), the acceptance policy, change-password, and the
//! per-account delay after repeated failures.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kraliki::store::users::Role;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;

/// Another password that passes the policy.
const NEW_PASSWORD: &str = "quiet-lantern-harbor-meadow-2291";
/// And a third one.
const OTHER_PASSWORD: &str = "velvet-tundra-compass-ribbon-4417";

/// A fresh address that has no account.
fn unknown_email() -> String {
    format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Settings for tests that present many client addresses: the loopback
/// peer is a trusted proxy, so `X-Forwarded-For` names the client.
fn behind_proxy(settings: &mut kraliki::config::Settings) {
    settings.trusted_proxies = vec!["127.0.0.1/32".into()];
}

async fn forgot(app: &TestApp, email: &str) -> Response {
    app.client
        .post(app.url("/api/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
}

async fn reset(app: &TestApp, token: &str, new_password: &str) -> Response {
    app.client
        .post(app.url("/api/auth/reset-password"))
        .json(&json!({ "token": token, "new_password": new_password }))
        .send()
        .await
        .unwrap()
}

/// Assert a 400 validation problem naming `field`; returns the field error.
async fn assert_field_error(res: Response, field: &str) -> Value {
    let body = assert_problem(res, 400).await;
    assert_eq!(body["code"], "validation_failed", "{body}");
    let first = body["errors"][0].clone();
    assert_eq!(first["field"], field, "{body}");
    assert!(first["code"].is_string() && first["detail"].is_string());
    first
}

async fn login_from(app: &TestApp, email: &str, password: &str, ip: &str) -> Response {
    app.client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

fn retry_after(res: &Response) -> u64 {
    res.headers()
        .get(RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

fn details(event: &kraliki::store::events::StoredEvent) -> Value {
    serde_json::from_str(&event.details).unwrap()
}

// ---------------------------------------------------------------------------
// Forgot / reset

#[tokio::test]
async fn forgot_password_answers_the_same_for_known_and_unknown_addresses() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;

    let unknown = forgot(&app, &unknown_email()).await;
    let unknown_status = unknown.status();
    let unknown_type = unknown.headers()["content-type"].clone();
    let unknown_body = unknown.bytes().await.unwrap();

    let known = forgot(&app, &user.email).await;
    let known_status = known.status();
    let known_type = known.headers()["content-type"].clone();
    let known_body = known.bytes().await.unwrap();

    assert_eq!(known_status, 202);
    assert_eq!(unknown_status, 202);
    assert_eq!(known_type, unknown_type);
    assert_eq!(known_body, unknown_body, "bodies must be byte-identical");

    // The known address gets exactly one mail with a token; the unknown one
    // gets none.
    let token = mailed_reset_token(&app, &user.email, 0).await;
    assert!(token.len() >= 40, "token too short: {token}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outbox = app.outbox();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert!(outbox[0].starts_with(&format!("To: {}\n", user.email)));
}

#[tokio::test]
async fn a_reset_token_works_once_and_signs_the_user_out_everywhere() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Supervisor).await;

    // Credentials issued before the reset: tokens and a browser session.
    let before = app.login(&user).await;
    let old_access = before["access_token"].as_str().unwrap().to_string();
    let old_refresh = before["refresh_token"].as_str().unwrap().to_string();
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set_cookie = res.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let old_cookie = set_cookie.split(';').next().unwrap().to_string();
    let me_cookie = |cookie: String| {
        app.client
            .get(app.url("/api/auth/me"))
            .header(COOKIE, cookie)
            .send()
    };
    assert_eq!(
        app.get_auth("/api/auth/me", &old_access).await.status(),
        200
    );
    assert_eq!(me_cookie(old_cookie.clone()).await.unwrap().status(), 200);

    let token = app.requested_reset_token(&user.email).await;
    let res = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(res.status(), 204);

    // The new password works, the old one does not.
    let res = app.login_raw(&user.email, GOOD_PASSWORD).await;
    assert_problem(res, 401).await;
    let res = app.login_raw(&user.email, NEW_PASSWORD).await;
    assert_eq!(res.status(), 200);

    // The token is spent.
    let res = reset(&app, &token, OTHER_PASSWORD).await;
    let err = assert_field_error(res, "token").await;
    assert_eq!(err["code"], "invalid_token");
    let res = app.login_raw(&user.email, OTHER_PASSWORD).await;
    assert_problem(res, 401).await;

    // Everything issued before the reset is dead.
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({ "refresh_token": old_refresh }))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    let res = app.get_auth("/api/auth/me", &old_access).await;
    assert_problem(res, 401).await;
    let res = me_cookie(old_cookie).await.unwrap();
    assert_problem(res, 401).await;

    // An unknown token is refused the same way as a spent one.
    let res = reset(&app, &"A".repeat(43), OTHER_PASSWORD).await;
    assert_eq!(
        assert_field_error(res, "token").await["code"],
        "invalid_token"
    );
}

#[tokio::test]
async fn an_expired_reset_token_is_refused() {
    let app = spawn_app_with(|s| s.auth.reset_token_ttl_secs = 1).await;
    let user = app.org_with(Role::Agent).await;
    let token = app.requested_reset_token(&user.email).await;

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(
        assert_field_error(res, "token").await["code"],
        "invalid_token"
    );
    // The password did not change.
    assert_eq!(
        app.login_raw(&user.email, GOOD_PASSWORD).await.status(),
        200
    );
    assert_problem(app.login_raw(&user.email, NEW_PASSWORD).await, 401).await;
}

#[tokio::test]
async fn a_rejected_new_password_does_not_burn_the_reset_token() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let token = app.requested_reset_token(&user.email).await;

    let res = reset(&app, &token, "short-pass").await;
    let err = assert_field_error(res, "new_password").await;
    assert_eq!(err["code"], "too_short");
    let local = user.email.split('@').next().unwrap();
    let res = reset(&app, &token, &format!("{local}-plum-orbit-telescope")).await;
    let err = assert_field_error(res, "new_password").await;
    assert_eq!(err["code"], "contains_email");

    // The token still works with an acceptable password, once.
    let res = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.login_raw(&user.email, NEW_PASSWORD).await.status(), 200);
    let res = reset(&app, &token, OTHER_PASSWORD).await;
    assert_field_error(res, "token").await;
}

// ---------------------------------------------------------------------------
// Policy and change-password

#[tokio::test]
async fn registration_enforces_the_password_policy_with_reasons() {
    let app = spawn_app_with(behind_proxy).await;
    // Each attempt comes from its own client address, so no per-address
    // limit on registration can hide the policy's answer.
    let register = |n: u8, email: String, password: String| {
        app.client
            .post(app.url("/api/auth/register"))
            .header("x-forwarded-for", format!("192.0.2.{n}"))
            .json(&json!({
                "organization_name": "Policy Org",
                "email": email,
                "password": password,
            }))
            .send()
    };
    let email = || {
        format!(
            "harborwatch.{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    };

    let built_on_email = email();
    let local = built_on_email.split('@').next().unwrap();
    // (password, address, accepted codes, words one of which the detail uses)
    let cases: [(String, String, &[&str], &[&str]); 3] = [
        // 14 characters.
        (
            "glacier-orbit7".into(),
            email(),
            &["too_short"],
            &["at least 15"],
        ),
        (
            "password1234567".into(),
            email(),
            &["too_common", "too_weak"],
            &["common", "guess"],
        ),
        // Long and otherwise strong, but built on the e-mail's local part.
        (
            format!("{local}-plum-orbit-telescope-lantern"),
            built_on_email.clone(),
            &["contains_email"],
            &["e-mail"],
        ),
    ];
    assert_eq!(cases[0].0.chars().count(), 14);
    for (n, (password, address, codes, says)) in cases.into_iter().enumerate() {
        let res = register(n as u8 + 1, address.clone(), password.clone())
            .await
            .unwrap();
        let body = assert_problem(res, 400).await;
        assert_eq!(body["errors"][0]["field"], "password", "{body}");
        let code = body["errors"][0]["code"].as_str().unwrap();
        assert!(codes.contains(&code), "{password}: {body}");
        let detail = body["errors"][0]["detail"].as_str().unwrap();
        assert!(says.iter().any(|w| detail.contains(w)), "{detail}");
        assert!(
            !body.to_string().contains(&password),
            "a refusal never repeats the password: {body}"
        );
        // Nothing was created.
        let res = app.login_raw(&address, &password).await;
        assert_problem(res, 401).await;
    }

    let address = email();
    let res = register(9, address.clone(), GOOD_PASSWORD.to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], address.as_str());
    assert_eq!(body["role"], "admin");
    assert!(body.get("password_hash").is_none() && !body.to_string().contains("argon2"));
    assert_eq!(app.login_raw(&address, GOOD_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn change_password_checks_the_policy_and_ends_every_session() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let other_session = app.token(&user).await;
    let token = app.token(&user).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/api/auth/change-password"))
            .bearer_auth(&token)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };

    let res = change(GOOD_PASSWORD, "password1234567").await.unwrap();
    let err = assert_field_error(res, "new_password").await;
    assert!(
        ["too_common", "too_weak"].contains(&err["code"].as_str().unwrap()),
        "{err}"
    );
    let res = change(GOOD_PASSWORD, "tiny-pass").await.unwrap();
    assert_eq!(
        assert_field_error(res, "new_password").await["code"],
        "too_short"
    );
    let res = change("not-the-current-password", NEW_PASSWORD)
        .await
        .unwrap();
    assert_field_error(res, "current_password").await;

    // Refused changes leave the password and the sessions alone.
    assert_eq!(app.get_auth("/api/auth/me", &token).await.status(), 200);

    let res = change(GOOD_PASSWORD, NEW_PASSWORD).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get_auth("/api/auth/me", &token).await, 401).await;
    assert_problem(app.get_auth("/api/auth/me", &other_session).await, 401).await;
    assert_problem(app.login_raw(&user.email, GOOD_PASSWORD).await, 401).await;
    assert_eq!(app.login_raw(&user.email, NEW_PASSWORD).await.status(), 200);
}

// ---------------------------------------------------------------------------
// Failed sign-ins

#[tokio::test]
async fn repeated_failures_delay_the_account_whatever_the_client_address() {
    let app = spawn_app_with(behind_proxy).await;
    let user = app.org_with(Role::Agent).await;
    let ips: Vec<String> = (1..=7).map(|i| format!("198.51.100.{i}")).collect();

    for ip in &ips[..5] {
        let res = login_from(&app, &user.email, "wrong-password-guess", ip).await;
        assert_eq!(
            assert_problem(res, 401).await["code"],
            "invalid_credentials"
        );
    }
    // The sixth failure, from a sixth address, is delayed...
    let res = login_from(&app, &user.email, "wrong-password-guess", &ips[5]).await;
    let wait = retry_after(&res);
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    let body = assert_problem(res, 429).await;
    assert_eq!(body["code"], "account_delayed");
    // ...and so is the right password, from a seventh.
    let res = login_from(&app, &user.email, GOOD_PASSWORD, &ips[6]).await;
    assert!((1..=30).contains(&retry_after(&res)));
    assert_problem(res, 429).await;

    let locked = app.events("ACCOUNT_LOCKED").await;
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0].user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(locked[0].severity, "HIGH");
    assert_eq!(locked[0].ip, ips[4]);
    assert_eq!(details(&locked[0])["failures"], 5);
    assert_eq!(details(&locked[0])["delay_secs"], 30);

    let failures: Vec<_> = app
        .events("AUTH_FAILURE")
        .await
        .into_iter()
        .filter(|e| e.user_id.as_deref() == Some(user.id.as_str()))
        .collect();
    // Events of the same millisecond have no fixed order: compare as a map.
    let by_ip: BTreeMap<String, String> = failures
        .iter()
        .map(|e| {
            let reason = details(e)["reason"].as_str().unwrap().to_string();
            (e.ip.clone(), reason)
        })
        .collect();
    assert_eq!(failures.len(), 7, "{failures:?}");
    let expected: BTreeMap<String, String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let reason = if i < 5 {
                "invalid_credentials"
            } else {
                "account_delayed"
            };
            (ip.clone(), reason.to_string())
        })
        .collect();
    assert_eq!(by_ip, expected);

    // Another account is not affected.
    let other = app.org_with(Role::Agent).await;
    assert_eq!(
        login_from(&app, &other.email, GOOD_PASSWORD, &ips[0])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn waiting_the_announced_time_is_enough_and_the_delay_doubles() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.auth.lockout_base_secs = 1;
    })
    .await;
    let user = app.org_with(Role::Agent).await;
    for i in 1..=5 {
        let res = login_from(
            &app,
            &user.email,
            "wrong-password-guess",
            &format!("203.0.113.{i}"),
        )
        .await;
        assert_problem(res, 401).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The delay has passed: a sixth failure is answered, and doubles it.
    let res = login_from(&app, &user.email, "wrong-password-guess", "203.0.113.6").await;
    assert_problem(res, 401).await;
    let res = login_from(&app, &user.email, GOOD_PASSWORD, "203.0.113.7").await;
    let wait = retry_after(&res);
    assert_problem(res, 429).await;
    assert_eq!(wait, 2, "a two-second delay announces Retry-After: 2");

    // Retrying after Retry-After seconds succeeds.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let res = login_from(&app, &user.email, GOOD_PASSWORD, "203.0.113.8").await;
    assert_eq!(res.status(), 200);

    let delays: Vec<Value> = app
        .events("ACCOUNT_LOCKED")
        .await
        .iter()
        .map(|e| details(e)["delay_secs"].clone())
        .collect();
    assert_eq!(delays, [json!(1), json!(2)]);
}

#[tokio::test]
async fn a_successful_sign_in_resets_the_failure_count() {
    let app = spawn_app_with(behind_proxy).await;
    let user = app.org_with(Role::Agent).await;
    let wrong = "wrong-password-guess";
    let plan = [
        wrong,
        wrong,
        wrong,
        wrong,
        GOOD_PASSWORD,
        wrong,
        wrong,
        wrong,
        wrong,
        GOOD_PASSWORD,
    ];
    for (i, password) in plan.into_iter().enumerate() {
        let res = login_from(&app, &user.email, password, &format!("198.18.0.{i}")).await;
        if password == GOOD_PASSWORD {
            assert_eq!(res.status(), 200, "attempt {i}");
        } else {
            assert_problem(res, 401).await;
        }
    }
    assert!(app.events("ACCOUNT_LOCKED").await.is_empty());
}

#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_delay() {
    let app = spawn_app_with(behind_proxy).await;
    let user = app.org_with(Role::Agent).await;
    // Twenty guesses at once, each from its own address: only about as many
    // as the threshold may be evaluated; the rest must be delayed.
    let mut tasks = Vec::new();
    for i in 1..=20 {
        let client = app.client.clone();
        let url = app.url("/api/auth/login");
        let email = user.email.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("x-forwarded-for", format!("100.64.0.{i}"))
                .json(&json!({ "email": email, "password": format!("wrong-password-guess-{i}") }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let delayed = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(evaluated + delayed, 20, "{statuses:?}");
    // With the threshold at 5, a few more may slip through while in flight
    // (hashing runs two at a time in tests), never most of them.
    assert!(
        (5..=8).contains(&evaluated),
        "{evaluated} guesses were answered: {statuses:?}"
    );
    let res = login_from(&app, &user.email, GOOD_PASSWORD, "100.64.1.1").await;
    assert_problem(res, 429).await;
}

#[tokio::test]
async fn an_unknown_address_answers_exactly_like_a_wrong_password() {
    let app = spawn_app_with(behind_proxy).await;
    let user = app.org_with(Role::Agent).await;

    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("instance");
        v
    };
    let known = login_from(&app, &user.email, "wrong-password-guess", "192.0.2.10").await;
    let known_status = known.status();
    let known_type = known.headers()["content-type"].clone();
    let known_body: Value = known.json().await.unwrap();
    let unknown = login_from(&app, &unknown_email(), "wrong-password-guess", "192.0.2.11").await;
    let unknown_status = unknown.status();
    let unknown_type = unknown.headers()["content-type"].clone();
    let unknown_body: Value = unknown.json().await.unwrap();

    assert_eq!(known_status, 401);
    assert_eq!(unknown_status, known_status);
    assert_eq!(unknown_type, known_type);
    assert!(known_body["instance"].is_string());
    assert_ne!(known_body["instance"], unknown_body["instance"]);
    assert_eq!(strip(unknown_body), strip(known_body));

    // Both are recorded, from their own addresses.
    let ips: BTreeSet<String> = app
        .events("AUTH_FAILURE")
        .await
        .into_iter()
        .map(|e| e.ip)
        .collect();
    assert_eq!(
        ips,
        BTreeSet::from(["192.0.2.10".to_string(), "192.0.2.11".to_string()])
    );
}

#[tokio::test]
async fn unknown_addresses_are_delayed_exactly_like_accounts() {
    let app = spawn_app_with(behind_proxy).await;
    let user = app.org_with(Role::Agent).await;
    let nobody = unknown_email();

    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("instance");
        v
    };
    let mut answers = Vec::new();
    for email in [user.email.as_str(), nobody.as_str()] {
        for i in 0..5 {
            let res =
                login_from(&app, email, "wrong-password-guess", &format!("192.0.2.{i}")).await;
            assert_eq!(res.status(), 401);
        }
        let sixth = login_from(&app, email, "wrong-password-guess", "192.0.2.99").await;
        assert_eq!(
            sixth.status(),
            429,
            "the 6th attempt for {email} is delayed"
        );
        let retry = retry_after(&sixth);
        answers.push((retry, strip(sixth.json().await.unwrap())));
    }
    assert_eq!(
        answers[0], answers[1],
        "known and unknown addresses answer alike"
    );

    let locked = app.events("ACCOUNT_LOCKED").await;
    assert_eq!(locked.len(), 2);
    assert_eq!(locked[0].user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(locked[1].user_id, None);
}

#[tokio::test]
async fn a_reset_or_password_change_spends_every_other_reset_token() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;

    let older = app.requested_reset_token(&user.email).await;
    let newer = app.requested_reset_token(&user.email).await;
    assert_ne!(older, newer);
    assert_eq!(reset(&app, &newer, NEW_PASSWORD).await.status(), 204);
    assert_field_error(reset(&app, &older, OTHER_PASSWORD).await, "token").await;

    // The same after a password change.
    let pending = app.requested_reset_token(&user.email).await;
    let token = app
        .login(&TestUser {
            password: NEW_PASSWORD.into(),
            ..user.clone()
        })
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .client
        .post(app.url("/api/auth/change-password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": NEW_PASSWORD, "new_password": OTHER_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_field_error(reset(&app, &pending, GOOD_PASSWORD).await, "token").await;
}

#[tokio::test]
async fn one_mailbox_gets_at_most_three_reset_mails_an_hour() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    for _ in 0..3 {
        app.requested_reset_token(&user.email).await;
    }
    let res = forgot(&app, &user.email).await;
    assert_eq!(res.status(), 202, "the answer never changes");
    // Give the background task time to (not) send a fourth mail.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mails = app
        .outbox()
        .into_iter()
        .filter(|m| m.starts_with(&format!("To: {}\n", user.email)))
        .count();
    assert_eq!(mails, 3);
}

#[tokio::test]
async fn the_dummy_hash_for_unknown_addresses_is_ready_before_the_first_request() {
    // Otherwise the first sign-in with an unknown address would also pay
    // for computing it, and be told apart from a wrong password by time.
    let app = spawn_app().await;
    assert!(app.state.hasher.is_warm());
    let res = app.login_raw(&unknown_email(), "wrong-password-123").await;
    assert_eq!(res.status(), 401);
}
