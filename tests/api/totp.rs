//! The second factor (DESIGN.md §4): TOTP enrolment, sign-in with a code,
//! replay protection, single-use recovery codes, and the organization
//! policy that requires a factor for supervisors and admins.

use kraliki::security::totp::code_at;
use kraliki::store::users::Role;
use serde_json::{json, Value};

use crate::helpers::*;

/// Decode RFC 4648 base32 without padding (the form the API returns).
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("{:?} is not base32", c as char)) as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An enrolled authenticator: the secret and the last step the server has
/// seen, so each code the test sends is one the server has not used yet.
/// Shared with `audit_actions.rs`.
pub(crate) struct Authenticator {
    secret: Vec<u8>,
    last_step: Option<u64>,
}

impl Authenticator {
    /// A code for a step the server has not used, waiting for the clock when
    /// the next fresh step is not yet within the server's window.
    pub(crate) async fn fresh_code(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now / 30;
            let step = self.last_step.map_or(current, |l| current.max(l + 1));
            if step <= current + 1 {
                self.last_step = Some(step);
                return code_at(&self.secret, step * 30);
            }
            let wait = (current + 1) * 30 - now;
            tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 200)).await;
        }
    }

    /// Six digits that are not the code of any step near now.
    pub(crate) fn wrong_code(&self) -> String {
        let now = unix_now();
        let near: Vec<String> = (0..6)
            .map(|i| code_at(&self.secret, (now / 30 + i).saturating_sub(2) * 30))
            .collect();
        (0..1_000_000u64)
            .map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000))
            .find(|c| !near.contains(c))
            .unwrap()
    }
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_empty(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn login_with(app: &TestApp, user: &TestUser, extra: Value) -> reqwest::Response {
    let mut body = json!({"email": user.email, "password": user.password});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.client
        .post(app.url("/api/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Start an enrolment; returns the authenticator (not yet confirmed).
pub(crate) async fn begin(app: &TestApp, token: &str) -> Authenticator {
    let res = post_empty(app, "/api/auth/totp/enrol", token).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap();
    assert!(!secret.contains('='), "unpadded base32");
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    let bytes = base32_decode(secret);
    assert_eq!(bytes.len(), 20, "a 160-bit secret");
    Authenticator {
        secret: bytes,
        last_step: None,
    }
}

/// Enrol and confirm; returns the authenticator and the recovery codes.
async fn enrol(app: &TestApp, token: &str) -> (Authenticator, Vec<String>) {
    let mut auth = begin(app, token).await;
    let code = auth.fresh_code().await;
    let res = post_json(app, "/api/auth/totp/verify", token, json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (auth, codes)
}

async fn set_policy(app: &TestApp, token: &str, on: bool) -> reqwest::Response {
    app.client
        .put(app.url("/api/organization/security"))
        .bearer_auth(token)
        .json(&json!({"require_totp_for_privileged": on}))
        .send()
        .await
        .unwrap()
}

async fn me(app: &TestApp, token: &str) -> Value {
    let res = app.get_auth("/api/auth/me", token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Value {
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn enrolment_then_sign_in_needs_a_fresh_code() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let token = app.token(&user).await;
    assert_eq!(me(&app, &token).await["totp_enabled"], false);

    // Verify before enrol: nothing to confirm.
    let res = post_json(
        &app,
        "/api/auth/totp/verify",
        &token,
        json!({"code": "123456"}),
    )
    .await;
    assert_problem(res, 409).await;

    let mut auth = begin(&app, &token).await;
    // Until confirmed, the factor is not required at sign-in.
    app.login(&user).await;
    // A wrong first code is refused, naming the field.
    let res = post_json(
        &app,
        "/api/auth/totp/verify",
        &token,
        json!({"code": auth.wrong_code()}),
    )
    .await;
    let body = assert_problem(res, 400).await;
    assert_eq!(body["errors"][0]["field"], "code");

    let code = auth.fresh_code().await;
    let res = post_json(&app, "/api/auth/totp/verify", &token, json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let codes = body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), 10);
    assert_eq!(me(&app, &token).await["totp_enabled"], true);

    // Confirming again, or starting over, is a conflict: the factor stays.
    let res = post_json(&app, "/api/auth/totp/verify", &token, json!({"code": code})).await;
    assert_problem(res, 409).await;
    let res = post_empty(&app, "/api/auth/totp/enrol", &token).await;
    assert_problem(res, 409).await;

    // The secret is stored sealed, the recovery codes only hashed.
    let secret_b32 = kraliki::security::totp::secret_base32(&auth.secret);
    let sealed: String =
        sqlx::query_scalar("SELECT secret_sealed FROM totp_enrolments WHERE user_id = $1")
            .bind(&user.id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert!(!sealed.contains(&secret_b32));
    assert!(!sealed.contains(&hex::encode(&auth.secret)));
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT code_hash FROM recovery_codes WHERE user_id = $1")
            .bind(&user.id)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(hashes.len(), 10);
    for c in codes {
        let c = c.as_str().unwrap();
        assert!(!hashes.iter().any(|h| h.contains(c)));
    }

    // Sign-in without a code.
    let body = assert_problem(login_with(&app, &user, json!({})).await, 401).await;
    assert_eq!(body["code"], "totp_required");
    // With a wrong code.
    let res = login_with(&app, &user, json!({"totp_code": auth.wrong_code()})).await;
    let body = assert_problem(res, 401).await;
    assert_eq!(body["code"], "invalid_second_factor");
    // With a valid code.
    let code = auth.fresh_code().await;
    let res = login_with(&app, &user, json!({"totp_code": code})).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["totp_enrolment_required"], false);
    assert_eq!(
        app.get_auth("/api/calls", &access(&tokens)).await.status(),
        200
    );
    // The same code again, within its validity window: a replay.
    let res = login_with(&app, &user, json!({"totp_code": code})).await;
    let body = assert_problem(res, 401).await;
    assert_eq!(body["code"], "invalid_second_factor");
    // Garbage is refused the same way (three more failures keep the
    // account below the delay threshold of five).
    for bad in ["12345", "1234567", "abcdef"] {
        let res = login_with(&app, &user, json!({"totp_code": bad})).await;
        let body = assert_problem(res, 401).await;
        assert_eq!(body["code"], "invalid_second_factor", "{bad:?}");
    }

    let failures: Vec<_> = app
        .events("AUTH_FAILURE")
        .await
        .into_iter()
        .filter(|e| e.details.contains("invalid_second_factor"))
        .collect();
    assert!(failures.len() >= 2, "second-factor failures are events");
}

#[tokio::test]
async fn recovery_codes_work_once() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let token = app.token(&user).await;
    let (_auth, codes) = enrol(&app, &token).await;

    let res = login_with(&app, &user, json!({"recovery_code": codes[0]})).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(
        app.get_auth("/api/calls", &access(&tokens)).await.status(),
        200
    );

    let res = login_with(&app, &user, json!({"recovery_code": codes[0]})).await;
    let body = assert_problem(res, 401).await;
    assert_eq!(body["code"], "invalid_second_factor");
    // However it is typed.
    let shouted = codes[0].to_uppercase().replace('-', " ");
    let res = login_with(&app, &user, json!({"recovery_code": shouted})).await;
    assert_problem(res, 401).await;

    // Another code, typed loosely, works once.
    let loose = codes[1].to_uppercase().replace('-', "");
    let res = login_with(&app, &user, json!({"recovery_code": loose})).await;
    assert_eq!(res.status(), 200);
    let res = login_with(&app, &user, json!({"recovery_code": codes[1]})).await;
    assert_problem(res, 401).await;

    // A made-up code does nothing.
    let res = login_with(&app, &user, json!({"recovery_code": "aaaa-bbbb-cccc"})).await;
    assert_problem(res, 401).await;
    let res = login_with(&app, &user, json!({"recovery_code": codes[2]})).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn only_an_enrolled_admin_can_require_a_second_factor() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let supervisor = app.create_user(&admin.org, Role::Supervisor).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let token = app.token(&admin).await;

    // Without a factor of their own the admin would lock themselves out.
    let body = assert_problem(set_policy(&app, &token, true).await, 409).await;
    assert_eq!(body["code"], "conflict");
    // Other roles may not change the policy at all.
    for user in [&supervisor, &agent] {
        let t = app.token(user).await;
        assert_problem(set_policy(&app, &t, true).await, 403).await;
        assert_problem(set_policy(&app, &t, false).await, 403).await;
    }
    let org = app.get_auth("/api/organization", &token).await;
    let org: Value = org.json().await.unwrap();
    assert_eq!(org["require_totp_for_privileged"], false);

    enrol(&app, &token).await;
    let res = set_policy(&app, &token, true).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["require_totp_for_privileged"], true);
    let org: Value = app
        .get_auth("/api/organization", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(org["require_totp_for_privileged"], true);

    // Turning it off needs no factor check, and takes effect.
    let res = set_policy(&app, &token, false).await;
    assert_eq!(res.status(), 200);
    let tokens = app.login(&supervisor).await;
    assert_eq!(tokens["totp_enrolment_required"], false);
}

#[tokio::test]
async fn the_policy_gates_privileged_sign_ins() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let org = admin.org.clone();
    let other_admin = app.create_user(&org, Role::Admin).await;
    let supervisor = app.create_user(&org, Role::Supervisor).await;
    let agent = app.create_user(&org, Role::Agent).await;

    let admin_token = app.token(&admin).await;
    let (mut admin_auth, _) = enrol(&app, &admin_token).await;
    assert_eq!(set_policy(&app, &admin_token, true).await.status(), 200);

    // An enrolled admin: no tokens without a valid code.
    let body = assert_problem(login_with(&app, &admin, json!({})).await, 401).await;
    assert_eq!(body["code"], "totp_required");
    let res = login_with(&app, &admin, json!({"totp_code": admin_auth.wrong_code()})).await;
    assert_problem(res, 401).await;
    let code = admin_auth.fresh_code().await;
    let res = login_with(&app, &admin, json!({"totp_code": code})).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["totp_enrolment_required"], false);
    assert_eq!(
        app.get_auth("/api/users", &access(&tokens)).await.status(),
        200
    );

    // An admin without a factor gets tokens that only allow enrolment,
    // and refreshing them does not lift that.
    let tokens = app.login(&other_admin).await;
    assert_eq!(tokens["totp_enrolment_required"], true);
    let t = access(&tokens);
    for path in ["/api/calls", "/api/users", "/api/organization"] {
        let body = assert_problem(app.get_auth(path, &t).await, 403).await;
        assert_eq!(body["code"], "totp_enrolment_required", "{path}");
    }
    assert_problem(set_policy(&app, &t, false).await, 403).await;
    let res = post_json(
        &app,
        "/api/users",
        &t,
        json!({"email": "x@example.com", "role": "agent", "password": GOOD_PASSWORD}),
    )
    .await;
    assert_problem(res, 403).await;
    let refreshed = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed["totp_enrolment_required"], true);
    let body = assert_problem(app.get_auth("/api/calls", &access(&refreshed)).await, 403).await;
    assert_eq!(body["code"], "totp_enrolment_required");
    // The browser session is restricted the same way.
    let res = app
        .client
        .post(app.url("/api/auth/session"))
        .json(&json!({"email": other_admin.email, "password": other_admin.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["totp_enrolment_required"], true);

    // A supervisor without a factor: restricted tokens that still reach
    // the enrolment endpoints; enrolling replaces that session by a new
    // one with full rights (a new session id at the privilege change).
    let tokens = app.login(&supervisor).await;
    assert_eq!(tokens["totp_enrolment_required"], true);
    let t = access(&tokens);
    let body = assert_problem(app.get_auth("/api/calls", &t).await, 403).await;
    assert_eq!(body["code"], "totp_enrolment_required");
    let who = me(&app, &t).await;
    assert_eq!(who["totp_enrolment_required"], true);
    assert_eq!(who["totp_enabled"], false);
    let mut sup_auth = begin(&app, &t).await;
    // Still restricted between enrol and verify.
    assert_problem(app.get_auth("/api/calls", &t).await, 403).await;
    let code = sup_auth.fresh_code().await;
    let res = post_json(&app, "/api/auth/totp/verify", &t, json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let verified: Value = res.json().await.unwrap();
    assert_eq!(verified["recovery_codes"].as_array().unwrap().len(), 10);
    let renewed = &verified["session"];
    assert_eq!(renewed["token_type"], "Bearer", "{verified}");
    assert!(renewed.get("csrf_token").is_none(), "{verified}");
    // The restricted credentials are dead: access and refresh token alike.
    assert_problem(app.get_auth("/api/calls", &t).await, 401).await;
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    // The new ones have full rights.
    let t = access(renewed);
    assert_eq!(app.get_auth("/api/calls", &t).await.status(), 200);
    let who = me(&app, &t).await;
    assert_eq!(who["totp_enrolment_required"], false);
    assert_eq!(who["totp_enabled"], true);
    let refreshed = refresh(&app, renewed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed["totp_enrolment_required"], false);
    assert_eq!(
        app.get_auth("/api/calls", &access(&refreshed))
            .await
            .status(),
        200
    );
    // From now on the supervisor signs in with a code like the admin.
    let body = assert_problem(login_with(&app, &supervisor, json!({})).await, 401).await;
    assert_eq!(body["code"], "totp_required");

    // Agents are not affected by the policy.
    let tokens = app.login(&agent).await;
    assert_eq!(tokens["totp_enrolment_required"], false);
    assert_eq!(
        app.get_auth("/api/calls", &access(&tokens)).await.status(),
        200
    );
}

#[tokio::test]
async fn sessions_opened_before_the_policy_must_enrol_too() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let supervisor = app.create_user(&admin.org, Role::Supervisor).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    // Signed in while the policy is off.
    let sup_tokens = app.login(&supervisor).await;
    let sup = access(&sup_tokens);
    let agent_token = app.token(&agent).await;
    assert_eq!(app.get_auth("/api/calls", &sup).await.status(), 200);

    let admin_token = app.token(&admin).await;
    enrol(&app, &admin_token).await;
    assert_eq!(set_policy(&app, &admin_token, true).await.status(), 200);

    // The enrolled admin's own session keeps working; so does the agent's.
    assert_eq!(app.get_auth("/api/users", &admin_token).await.status(), 200);
    assert_eq!(app.get_auth("/api/calls", &agent_token).await.status(), 200);
    // The supervisor's existing session is now limited to enrolment, and
    // refreshing it does not escape that.
    let body = assert_problem(app.get_auth("/api/calls", &sup).await, 403).await;
    assert_eq!(body["code"], "totp_enrolment_required");
    let refreshed = refresh(&app, sup_tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed["totp_enrolment_required"], true);
    let sup = access(&refreshed);
    assert_problem(app.get_auth("/api/calls", &sup).await, 403).await;
    // Enrolling lifts it, in a new session.
    let mut auth = begin(&app, &sup).await;
    let code = auth.fresh_code().await;
    let res = post_json(&app, "/api/auth/totp/verify", &sup, json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let verified: Value = res.json().await.unwrap();
    assert_problem(app.get_auth("/api/calls", &sup).await, 401).await;
    let sup = access(&verified["session"]);
    assert_eq!(app.get_auth("/api/calls", &sup).await.status(), 200);
}

#[tokio::test]
async fn disabling_the_factor_follows_the_policy() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let admin_token = app.token(&admin).await;
    let (mut admin_auth, _) = enrol(&app, &admin_token).await;
    assert_eq!(set_policy(&app, &admin_token, true).await.status(), 200);

    // A privileged user may not remove a required factor, even with the
    // right password and code.
    let code = admin_auth.fresh_code().await;
    let res = post_json(
        &app,
        "/api/auth/totp/disable",
        &admin_token,
        json!({"password": admin.password, "code": code}),
    )
    .await;
    let body = assert_problem(res, 403).await;
    assert_eq!(body["code"], "totp_required_by_policy");
    assert_eq!(me(&app, &admin_token).await["totp_enabled"], true);
    let body = assert_problem(login_with(&app, &admin, json!({})).await, 401).await;
    assert_eq!(body["code"], "totp_required");

    // An agent may, with the password and a current code.
    let agent_token = app.token(&agent).await;
    let (mut agent_auth, _) = enrol(&app, &agent_token).await;
    let res = post_json(
        &app,
        "/api/auth/totp/disable",
        &agent_token,
        json!({"password": "not the password at all", "code": agent_auth.wrong_code()}),
    )
    .await;
    let body = assert_problem(res, 400).await;
    assert_eq!(body["errors"][0]["field"], "password");
    let res = post_json(
        &app,
        "/api/auth/totp/disable",
        &agent_token,
        json!({"password": agent.password, "code": agent_auth.wrong_code()}),
    )
    .await;
    let body = assert_problem(res, 400).await;
    assert_eq!(body["errors"][0]["field"], "code");
    assert_eq!(me(&app, &agent_token).await["totp_enabled"], true);
    let code = agent_auth.fresh_code().await;
    let res = post_json(
        &app,
        "/api/auth/totp/disable",
        &agent_token,
        json!({"password": agent.password, "code": code}),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(me(&app, &agent_token).await["totp_enabled"], false);
    // Signing in no longer asks for a code, and the agent can enrol again.
    app.login(&agent).await;
    begin(&app, &agent_token).await;

    // Without the policy, an admin may remove their own factor.
    let lone = app.org_with(Role::Admin).await;
    let lone_token = app.token(&lone).await;
    let (mut lone_auth, _) = enrol(&app, &lone_token).await;
    let code = lone_auth.fresh_code().await;
    let res = post_json(
        &app,
        "/api/auth/totp/disable",
        &lone_token,
        json!({"password": lone.password, "code": code}),
    )
    .await;
    assert_eq!(res.status(), 204);
    app.login(&lone).await;
}

#[tokio::test]
async fn a_restricted_browser_session_is_replaced_when_enrolment_completes() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let admin_token = app.token(&admin).await;
    enrol(&app, &admin_token).await;
    assert_eq!(set_policy(&app, &admin_token, true).await.status(), 200);
    let supervisor = app.create_user(&admin.org, Role::Supervisor).await;

    let BrowserSession {
        cookie: old_cookie,
        csrf: old_csrf,
        body: session,
    } = app.browser_session(&supervisor).await;
    assert_eq!(session["totp_enrolment_required"], true);
    let with_cookie = |path: &str, cookie: &str, csrf: &str| {
        app.client
            .post(app.url(path))
            .header("cookie", cookie.to_string())
            .header("x-csrf-token", csrf.to_string())
    };

    let res = with_cookie("/api/auth/totp/enrol", &old_cookie, &old_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let mut auth = Authenticator {
        secret: base32_decode(body["secret"].as_str().unwrap()),
        last_step: None,
    };
    let code = auth.fresh_code().await;
    let res = with_cookie("/api/auth/totp/verify", &old_cookie, &old_csrf)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("__Host-kraliki_session=")
            && set_cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{set_cookie}"
    );
    let new_cookie = set_cookie.split(';').next().unwrap().to_string();
    assert_ne!(new_cookie, old_cookie);
    let verified: Value = res.json().await.unwrap();
    let renewed = &verified["session"];
    assert!(renewed.get("access_token").is_none(), "{verified}");
    let new_csrf = renewed["csrf_token"].as_str().unwrap().to_string();
    assert_ne!(new_csrf, old_csrf);

    // The old cookie is signed out; the new one has full rights, with its
    // own CSRF token only.
    let res = app
        .client
        .get(app.url("/api/calls"))
        .header("cookie", old_cookie.clone())
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    let res = app
        .client
        .get(app.url("/api/calls"))
        .header("cookie", new_cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = with_cookie("/api/auth/logout", &new_cookie, &old_csrf)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    let res = with_cookie("/api/auth/logout", &new_cookie, &new_csrf)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());

    // The renewal is audited, naming the session it replaced.
    let org = kraliki::store::OrgId(admin.org.clone());
    let entries = kraliki::store::audit::list(
        &app.state.db,
        &org,
        false,
        Some("auth.session_renew"),
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].actor_id.as_deref(), Some(supervisor.id.as_str()));
    assert!(entries[0].details.contains("second factor enrolled"));
}

#[tokio::test]
async fn two_racing_verifications_confirm_once_and_renew_one_session() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let admin_token = app.token(&admin).await;
    enrol(&app, &admin_token).await;
    assert_eq!(set_policy(&app, &admin_token, true).await.status(), 200);
    let supervisor = app.create_user(&admin.org, Role::Supervisor).await;
    let restricted = access(&app.login(&supervisor).await);
    let mut auth = begin(&app, &restricted).await;
    let code = auth.fresh_code().await;

    let verify = || {
        post_json(
            &app,
            "/api/auth/totp/verify",
            &restricted,
            json!({"code": code}),
        )
    };
    let (first, second) = tokio::join!(verify(), verify());
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses[1] == 400 || statuses[1] == 409,
        "the other is refused: {statuses:?}"
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(&supervisor.id)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(live, 1, "one session replaced the restricted one");
    let codes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1")
        .bind(&supervisor.id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(codes, 10, "one set of recovery codes");
}
