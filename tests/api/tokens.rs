//! Access and refresh tokens, seen from the outside (DESIGN §4, §8): tokens
//! verify against the published JWKS; forged, altered, expired or
//! misdirected tokens are refused with 401 and an `INVALID_TOKEN` event;
//! refresh tokens rotate, and a reused one revokes its family and session
//! (also when two uses race: the loser is reuse);
//! a refresh token expires when left unused past `auth.refresh_idle_secs`,
//! and its family after `auth.refresh_absolute_secs` however often it is
//! used (real waits: these lifetimes are read from the wall clock);
//! sign-out stops both kinds of token.

use std::collections::HashSet;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use kraliki::security::tokens::{generate_signing_key_pem, AccessClaims, KeyRing};
use kraliki::store::users::Role;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

// ---------------------------------------------------------------- helpers

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {part:?}"))
}

/// The three parts of a compact JWS.
fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    assert_eq!(v.len(), 3, "a compact JWS has three parts: {token}");
    (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
}

fn part_json(part: &str) -> Value {
    serde_json::from_slice(&unb64(part)).expect("token part is JSON")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The server's signing key, as the secrets folder holds it (PKCS#8 PEM).
fn server_key_pem(app: &TestApp) -> String {
    std::fs::read_to_string(app.secrets_dir.path().join("jwt_signing_key"))
        .expect("the test secrets folder holds jwt_signing_key")
}

/// A key ring around the server's own signing key.
fn server_ring(app: &TestApp) -> KeyRing {
    KeyRing::from_pem(&server_key_pem(app)).expect("server key is PKCS#8 PEM")
}

/// Sign `header.payload` (both raw JSON) with the server's real key,
/// whatever the header and payload say.
fn sign_raw(app: &TestApp, header: &Value, payload: &Value) -> String {
    let key = SigningKey::from_pkcs8_pem(&server_key_pem(app)).expect("server key");
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}

/// The header the server writes, for a given `alg` and `kid`.
fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

/// The claims of a real access token (not verified: the caller knows it is real).
fn claims_of(token: &str) -> AccessClaims {
    let (_, p, _) = parts(token);
    serde_json::from_slice(&unb64(&p)).expect("access claims")
}

/// A user of a fresh organization, signed in: (user, access token, login body).
async fn signed_in(app: &TestApp, role: Role) -> (TestUser, String, Value) {
    let user = app.org_with(role).await;
    let body = app.login(&user).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    (user, token, body)
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_auth("/api/auth/me", token).await
}

/// `GET /api/auth/me` answers 200 for `user`: the control for forged tokens.
async fn assert_accepted(app: &TestApp, token: &str, user: &TestUser) {
    let res = me(app, token).await;
    assert_eq!(res.status(), 200, "token should be accepted: {token}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], user.id.as_str());
}

/// The reasons of `INVALID_TOKEN` events stored since `before` (a set of ids).
async fn new_invalid_token_reasons(app: &TestApp, before: &HashSet<String>) -> Vec<String> {
    app.events("INVALID_TOKEN")
        .await
        .into_iter()
        .filter(|e| !before.contains(&e.id))
        .map(|e| {
            assert_eq!(e.event_type, "INVALID_TOKEN");
            let details: Value = serde_json::from_str(&e.details).expect("details are JSON");
            details["reason"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

async fn invalid_token_ids(app: &TestApp) -> HashSet<String> {
    app.events("INVALID_TOKEN")
        .await
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Presenting `authorization` to `/api/auth/me` answers a 401 problem and
/// stores exactly one new `INVALID_TOKEN` event with `reason`; neither the
/// answer nor the event repeats the presented credential.
async fn assert_refused_with_header(app: &TestApp, authorization: &str, reason: &str) {
    let before = invalid_token_ids(app).await;
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 401).await;
    assert_eq!(body["code"], "invalid_token", "{authorization}");
    let reasons = new_invalid_token_reasons(app, &before).await;
    assert_eq!(reasons, vec![reason.to_owned()], "{authorization}");

    let secret = authorization
        .rsplit(['.', ' '])
        .next()
        .filter(|s| s.len() >= 16);
    if let Some(secret) = secret {
        assert!(!body.to_string().contains(secret));
        let stored: Vec<String> = app
            .events("INVALID_TOKEN")
            .await
            .into_iter()
            .map(|e| format!("{} {}", e.details, e.url))
            .collect();
        assert!(!stored.iter().any(|s| s.contains(secret)));
    }
}

/// A bearer `token` is refused on `/api/auth/me` with an `INVALID_TOKEN`
/// event of `reason`.
async fn assert_refused(app: &TestApp, token: &str, reason: &str) {
    assert_refused_with_header(app, &format!("Bearer {token}"), reason).await;
}

async fn refresh_raw(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

/// Refresh and return the new token body (asserting 200).
async fn refresh_ok(app: &TestApp, refresh_token: &str) -> Value {
    let res = refresh_raw(app, refresh_token).await;
    assert_eq!(res.status(), 200, "refresh should succeed");
    res.json().await.unwrap()
}

async fn post_bearer(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn str_of<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is a string in {body}"))
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn login_token_verifies_against_the_published_jwks() {
    let app = spawn_app().await;
    let (user, token, body) = signed_in(&app, Role::Agent).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);

    // The published key set: one Ed25519 signing key.
    let res = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1, "{jwks}");
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert!(
        jwk.get("d").is_none(),
        "the JWKS must not publish the private key"
    );
    let x = str_of(jwk, "x");
    let kid = str_of(jwk, "kid");
    let x_bytes: [u8; 32] = unb64(x).try_into().expect("x is 32 bytes");
    let key = VerifyingKey::from_bytes(&x_bytes).expect("x is an Ed25519 point");
    // The kid is the RFC 7638 thumbprint of the key.
    let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    assert_eq!(kid, b64(Sha256::digest(thumbprint_input.as_bytes())));

    // The header.
    let (h, p, s) = parts(&token);
    let header = part_json(&h);
    assert_eq!(
        header,
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}),
        "exact header"
    );

    // The signature, verified here with the published key alone.
    let sig: [u8; 64] = unb64(&s).try_into().expect("64-byte signature");
    key.verify_strict(format!("{h}.{p}").as_bytes(), &Signature::from_bytes(&sig))
        .expect("the access token verifies against the JWKS key");
    // ...and the same key refuses a different message (the check is real).
    assert!(key
        .verify_strict(format!("{h}.{p}x").as_bytes(), &Signature::from_bytes(&sig))
        .is_err());

    // The claims.
    let claims = part_json(&p);
    for name in [
        "iss", "aud", "sub", "org", "role", "sid", "jti", "iat", "nbf", "exp",
    ] {
        assert!(
            claims.get(name).is_some_and(|v| !v.is_null()),
            "claim {name} missing in {claims}"
        );
    }
    let auth = &app.state.settings.auth;
    assert_eq!(claims["iss"], auth.issuer.as_str());
    assert_eq!(claims["aud"], auth.audience.as_str());
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["org"], user.org.as_str());
    assert_eq!(claims["role"], "agent");
    assert!(!str_of(&claims, "sid").is_empty());
    assert!(!str_of(&claims, "jti").is_empty());
    let iat = claims["iat"].as_i64().expect("iat is a number");
    let nbf = claims["nbf"].as_i64().expect("nbf is a number");
    let exp = claims["exp"].as_i64().expect("exp is a number");
    assert_eq!(exp - iat, 900);
    assert!(nbf <= iat + 1);
    assert!((iat - now_secs()).abs() <= 60, "iat is now");

    // The token works, and a second login is a new session with a new jti.
    assert_accepted(&app, &token, &user).await;
    let other = claims_of(&app.token(&user).await);
    assert_ne!(other.sid, str_of(&claims, "sid"));
    assert_ne!(other.jti, str_of(&claims, "jti"));
}

#[tokio::test]
async fn alg_none_in_any_casing_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Admin).await;
    let kid = server_ring(&app).signing_kid().to_owned();
    let (_, p, _) = parts(&token);

    for alg in ["none", "None", "NONE"] {
        let h = b64(header(alg, &kid).to_string());
        assert_refused(&app, &format!("{h}.{p}."), "unsupported_alg").await;
    }
    // The payload alone was fine: the real token is accepted.
    assert_accepted(&app, &token, &user).await;
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_pem_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let ring = server_ring(&app);
    let kid = ring.signing_kid().to_owned();

    // The SPKI PEM of the server's public key, which an attacker can build
    // from the JWKS; check it is really the published key.
    let public = SigningKey::from_pkcs8_pem(&server_key_pem(&app))
        .unwrap()
        .verifying_key();
    let public_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let round_trip = VerifyingKey::from_public_key_pem(&public_pem).unwrap();
    assert_eq!(b64(round_trip.as_bytes()), jwks["keys"][0]["x"]);

    let (_, p, _) = parts(&token);
    for alg in ["HS256", "hs256"] {
        let input = format!("{}.{p}", b64(header(alg, &kid).to_string()));
        for secret in [public_pem.as_bytes(), public_pem.trim_end().as_bytes()] {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(input.as_bytes());
            let forged = format!("{input}.{}", b64(mac.finalize().into_bytes()));
            assert_refused(&app, &forged, "unsupported_alg").await;
        }
    }
    assert_accepted(&app, &token, &user).await;
}

#[tokio::test]
async fn token_signed_by_an_unknown_key_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let claims = claims_of(&token);

    let stranger = KeyRing::from_pem(&generate_signing_key_pem()).unwrap();
    let server = server_ring(&app);
    assert_ne!(stranger.signing_kid(), server.signing_kid());
    let forged = stranger.sign_access(&claims);
    assert_refused(&app, &forged, "unknown_kid").await;

    // The stranger's signature under the server's kid does not verify either.
    let (_, p, s) = parts(&forged);
    let h = b64(header("EdDSA", server.signing_kid()).to_string());
    assert_refused(&app, &format!("{h}.{p}.{s}"), "bad_signature").await;

    // The very same claims signed by the server's key are accepted.
    assert_accepted(&app, &server.sign_access(&claims), &user).await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let ring = server_ring(&app);
    let base = claims_of(&token);
    let now = now_secs();

    let expired = AccessClaims {
        iat: now - 3600,
        nbf: now - 3600,
        exp: now - 600,
        ..base.clone()
    };
    assert_refused(&app, &ring.sign_access(&expired), "expired").await;

    let future = AccessClaims {
        iat: now,
        nbf: now + 3600,
        exp: now + 4500,
        ..base.clone()
    };
    assert_refused(&app, &ring.sign_access(&future), "not_yet_valid").await;

    let issued_in_future = AccessClaims {
        iat: now + 3600,
        nbf: now,
        exp: now + 4500,
        ..base.clone()
    };
    assert_refused(&app, &ring.sign_access(&issued_in_future), "not_yet_valid").await;

    // Control: fresh times on the same claims are accepted.
    let fresh = AccessClaims {
        iat: now,
        nbf: now,
        exp: now + 900,
        ..base
    };
    assert_accepted(&app, &ring.sign_access(&fresh), &user).await;
}

#[tokio::test]
async fn token_without_exp_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let kid = server_ring(&app).signing_kid().to_owned();
    let (_, p, _) = parts(&token);
    let claims = part_json(&p);

    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let forged = sign_raw(&app, &header("EdDSA", &kid), &no_exp);
    assert_refused(&app, &forged, "missing_claim").await;

    let mut null_exp = claims.clone();
    null_exp["exp"] = Value::Null;
    let forged = sign_raw(&app, &header("EdDSA", &kid), &null_exp);
    assert_refused(&app, &forged, "missing_claim").await;

    // Control: the same hand-built signing with `exp` kept is accepted.
    assert_accepted(
        &app,
        &sign_raw(&app, &header("EdDSA", &kid), &claims),
        &user,
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_or_issuer_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let ring = server_ring(&app);
    let base = claims_of(&token);

    let wrong_aud = AccessClaims {
        aud: "some-other-api".into(),
        ..base.clone()
    };
    assert_refused(&app, &ring.sign_access(&wrong_aud), "wrong_audience").await;

    let wrong_iss = AccessClaims {
        iss: format!("{}.evil.example", base.iss),
        ..base.clone()
    };
    assert_refused(&app, &ring.sign_access(&wrong_iss), "wrong_issuer").await;

    // Control: re-signing the unchanged claims is accepted.
    assert_accepted(&app, &ring.sign_access(&base), &user).await;
}

#[tokio::test]
async fn tampered_or_stripped_signature_is_refused_and_logged() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;
    let (h, p, s) = parts(&token);

    // Promote the agent to admin, keeping the original signature.
    let mut claims = part_json(&p);
    assert_eq!(claims["role"], "agent");
    claims["role"] = json!("admin");
    let admin = b64(claims.to_string());
    assert_refused(&app, &format!("{h}.{admin}.{s}"), "bad_signature").await;

    // Strip the signature.
    assert_refused(&app, &format!("{h}.{p}."), "bad_signature").await;

    // Flip one bit of the signature.
    let mut sig = unb64(&s);
    sig[10] ^= 0x01;
    assert_refused(&app, &format!("{h}.{p}.{}", b64(&sig)), "bad_signature").await;

    // The untouched token still works, as an agent.
    assert_accepted(&app, &token, &user).await;
    let body: Value = me(&app, &token).await.json().await.unwrap();
    assert_eq!(body["user"]["role"], "agent");
}

#[tokio::test]
async fn refresh_token_is_not_an_access_token() {
    let app = spawn_app().await;
    let (user, token, body) = signed_in(&app, Role::Agent).await;
    let refresh = str_of(&body, "refresh_token").to_owned();
    assert_refused(&app, &refresh, "malformed").await;
    // The refresh token itself still works for its purpose, and the access
    // token too.
    refresh_ok(&app, &refresh).await;
    assert_accepted(&app, &token, &user).await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family_and_session() {
    let app = spawn_app().await;
    let (user, a1, login) = signed_in(&app, Role::Agent).await;
    let r1 = str_of(&login, "refresh_token").to_owned();
    // Another, independent sign-in of the same user.
    let other = app.login(&user).await;
    let other_access = str_of(&other, "access_token").to_owned();
    let other_refresh = str_of(&other, "refresh_token").to_owned();

    // Rotation: R1 gives R2 and a new access token of the same session.
    let rotated = refresh_ok(&app, &r1).await;
    assert_eq!(rotated["token_type"], "Bearer");
    assert_eq!(rotated["expires_in"], 900);
    assert_eq!(rotated["user"]["id"], user.id.as_str());
    let a2 = str_of(&rotated, "access_token").to_owned();
    let r2 = str_of(&rotated, "refresh_token").to_owned();
    assert_ne!(r2, r1);
    assert_ne!(a2, a1);
    assert_eq!(claims_of(&a2).sid, claims_of(&a1).sid);
    assert_ne!(claims_of(&a2).jti, claims_of(&a1).jti);
    assert_accepted(&app, &a2, &user).await;
    assert_accepted(&app, &a1, &user).await;
    assert!(app.events("TOKEN_REUSE_DETECTED").await.is_empty());

    // Reuse of R1: refused, and a HIGH event names the user.
    let res = refresh_raw(&app, &r1).await;
    let problem = assert_problem(res, 401).await;
    assert!(problem.get("access_token").is_none());
    let reuse = app.events("TOKEN_REUSE_DETECTED").await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].severity, "HIGH");
    assert_eq!(reuse[0].user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(reuse[0].organization_id.as_deref(), Some(user.org.as_str()));

    // The whole family and its session are dead.
    assert_problem(refresh_raw(&app, &r2).await, 401).await;
    assert_refused(&app, &a2, "session_revoked").await;
    assert_refused(&app, &a1, "session_revoked").await;

    // The other sign-in is untouched.
    assert_accepted(&app, &other_access, &user).await;
    let next = refresh_ok(&app, &other_refresh).await;
    assert_accepted(&app, str_of(&next, "access_token"), &user).await;
    assert_eq!(app.events("TOKEN_REUSE_DETECTED").await.len(), 1);
}

#[tokio::test]
async fn two_racing_uses_of_one_refresh_token_are_reuse() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    // Another, independent sign-in of the same user.
    let other = app.login(&user).await;

    // Several rounds, so that both requests find the token unspent before
    // either retires it in some of them; every ordering must end alike.
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let login = app.login(&user).await;
        let access = str_of(&login, "access_token").to_owned();
        let refresh = str_of(&login, "refresh_token").to_owned();
        let sid = claims_of(&access).sid;

        let (a, b) = tokio::join!(refresh_raw(&app, &refresh), refresh_raw(&app, &refresh));
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 401],
            "round {round}: one wins, one is refused"
        );
        let (winner, loser) = if a.status() == 200 { (a, b) } else { (b, a) };
        let won: Value = winner.json().await.unwrap();
        let problem = assert_problem(loser, 401).await;
        assert_eq!(problem["code"], "invalid_token");
        assert!(problem.get("access_token").is_none());

        // The loser is reuse: one HIGH event naming the user, one audit
        // entry against the session.
        let reuse = app.events("TOKEN_REUSE_DETECTED").await;
        assert_eq!(reuse.len(), round + 1, "round {round}");
        let last = reuse.last().unwrap();
        assert_eq!(last.severity, "HIGH");
        assert_eq!(last.user_id.as_deref(), Some(user.id.as_str()));
        assert_eq!(last.organization_id.as_deref(), Some(user.org.as_str()));
        let audited: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'auth.token_reuse' AND object_id = $1",
        )
        .bind(&sid)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
        assert_eq!(audited, 1, "round {round}");

        // So the family and its session are revoked: the winner's new
        // tokens no longer work, and that is not counted as reuse again.
        let won_access = str_of(&won, "access_token");
        assert_eq!(claims_of(won_access).sid, sid);
        assert_problem(refresh_raw(&app, str_of(&won, "refresh_token")).await, 401).await;
        assert_refused(&app, won_access, "session_revoked").await;
        assert_refused(&app, &access, "session_revoked").await;
        assert_eq!(app.events("TOKEN_REUSE_DETECTED").await.len(), round + 1);
    }

    // The other sign-in is untouched.
    assert_accepted(&app, str_of(&other, "access_token"), &user).await;
    let next = refresh_ok(&app, str_of(&other, "refresh_token")).await;
    assert_accepted(&app, str_of(&next, "access_token"), &user).await;
    assert_eq!(app.events("TOKEN_REUSE_DETECTED").await.len(), ROUNDS);
}

#[tokio::test]
async fn logout_revokes_the_sessions_access_and_refresh_tokens() {
    let app = spawn_app().await;
    let (user, access, login) = signed_in(&app, Role::Agent).await;
    let refresh = str_of(&login, "refresh_token").to_owned();
    let other = app.login(&user).await;
    let other_access = str_of(&other, "access_token").to_owned();
    assert_accepted(&app, &access, &user).await;

    let res = post_bearer(&app, "/api/auth/logout", &access).await;
    assert_eq!(res.status(), 204);

    assert_refused(&app, &access, "session_revoked").await;
    assert_problem(refresh_raw(&app, &refresh).await, 401).await;
    // A revoked refresh token is refused, but it is not reuse.
    assert!(app.events("TOKEN_REUSE_DETECTED").await.is_empty());
    // Logging out again with the dead token is refused too.
    assert_problem(post_bearer(&app, "/api/auth/logout", &access).await, 401).await;
    // Only that session ended.
    assert_accepted(&app, &other_access, &user).await;
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Supervisor).await;
    let colleague = app.create_user(&user.org, Role::Agent).await;
    let first = app.login(&user).await;
    let second = app.login(&user).await;
    let theirs = app.login(&colleague).await;
    let (a1, r1) = (
        str_of(&first, "access_token"),
        str_of(&first, "refresh_token"),
    );
    let (a2, r2) = (
        str_of(&second, "access_token"),
        str_of(&second, "refresh_token"),
    );
    assert_ne!(claims_of(a1).sid, claims_of(a2).sid);
    assert_accepted(&app, a1, &user).await;
    assert_accepted(&app, a2, &user).await;

    let res = post_bearer(&app, "/api/auth/logout-all", a1).await;
    assert_eq!(res.status(), 204);

    assert_refused(&app, a1, "session_revoked").await;
    assert_refused(&app, a2, "session_revoked").await;
    assert_problem(refresh_raw(&app, r1).await, 401).await;
    assert_problem(refresh_raw(&app, r2).await, 401).await;

    // A colleague in the same organization keeps their session.
    assert_accepted(&app, str_of(&theirs, "access_token"), &colleague).await;
    refresh_ok(&app, str_of(&theirs, "refresh_token")).await;
}

#[tokio::test]
async fn malformed_authorization_header_is_refused() {
    let app = spawn_app().await;
    let (user, token, _) = signed_in(&app, Role::Agent).await;

    assert_refused_with_header(&app, "Basic dXNlcjpwYXNz", "bad_authorization_header").await;
    // A perfectly valid token under the wrong scheme is still refused.
    assert_refused_with_header(&app, &format!("Basic {token}"), "bad_authorization_header").await;
    assert_refused_with_header(&app, &format!("Token {token}"), "bad_authorization_header").await;
    assert_refused_with_header(&app, &format!("Bearer{token}"), "bad_authorization_header").await;
    // A bearer header whose token is not a JWS at all.
    assert_refused_with_header(&app, "Bearer not-a-jwt", "malformed").await;
    // A bad header is not rescued by anything else: no fallback to anonymous.
    assert_accepted(&app, &token, &user).await;
}

#[tokio::test]
async fn refresh_with_unknown_or_empty_token() {
    let app = spawn_app().await;
    let (user, _, login) = signed_in(&app, Role::Agent).await;

    // Unknown: well-formed like a real one, but never issued.
    let unknown = b64(rand::random::<[u8; 32]>());
    let before = invalid_token_ids(&app).await;
    let problem = assert_problem(refresh_raw(&app, &unknown).await, 401).await;
    assert_eq!(problem["code"], "invalid_token");
    assert!(problem.get("access_token").is_none());
    let reasons = new_invalid_token_reasons(&app, &before).await;
    assert_eq!(reasons, vec!["unknown_refresh_token".to_owned()]);
    assert!(app.events("TOKEN_REUSE_DETECTED").await.is_empty());

    // Empty: a validation problem naming the field.
    let problem = assert_problem(refresh_raw(&app, "").await, 400).await;
    let errors = problem["errors"].as_array().expect("field errors");
    assert_eq!(errors.len(), 1, "{problem}");
    assert_eq!(errors[0]["field"], "refresh_token");
    assert!(str_of(&problem, "detail").contains("refresh_token"));

    // Neither attempt hurt the real refresh token.
    let refreshed = refresh_ok(&app, str_of(&login, "refresh_token")).await;
    assert_accepted(&app, str_of(&refreshed, "access_token"), &user).await;
}

// ------------------------------------------------------------- lifetimes

/// The stored row of a refresh token: (retired_at, revoked_at, expires_at,
/// family_expires_at).
async fn refresh_row(app: &TestApp, refresh_token: &str) -> (Option<i64>, Option<i64>, i64, i64) {
    sqlx::query_as(
        "SELECT retired_at, revoked_at, expires_at, family_expires_at FROM refresh_tokens \
         WHERE token_hash = $1",
    )
    .bind(hex::encode(Sha256::digest(refresh_token.as_bytes())))
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap()
}

/// Refreshing with `refresh_token` is refused as expired: a 401 and one new
/// `INVALID_TOKEN` event saying so. The token was neither spent nor revoked,
/// so only its lifetime can have refused it.
async fn assert_refresh_expired(app: &TestApp, refresh_token: &str) {
    let (retired, revoked, _, _) = refresh_row(app, refresh_token).await;
    assert_eq!((retired, revoked), (None, None), "a live, unspent token");
    let before = invalid_token_ids(app).await;
    let res = refresh_raw(app, refresh_token).await;
    assert_eq!(assert_problem(res, 401).await["code"], "invalid_token");
    assert_eq!(
        new_invalid_token_reasons(app, &before).await,
        ["refresh_token_expired_or_revoked"]
    );
    assert!(app.events("TOKEN_REUSE_DETECTED").await.is_empty());
}

#[tokio::test]
async fn a_refresh_token_left_unused_past_the_idle_lifetime_is_refused() {
    // One second of idle lifetime; the family may live 30 days.
    let app = spawn_app_with(|s| s.auth.refresh_idle_secs = 1).await;
    let (_, _, login) = signed_in(&app, Role::Agent).await;
    let first = str_of(&login, "refresh_token").to_owned();
    let (_, _, first_idle_end, family_end) = refresh_row(&app, &first).await;

    // Used within the idle lifetime, it works, and its successor gets an
    // idle lifetime of its own, counted from this use…
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = refresh_ok(&app, &first).await;
    let refresh = str_of(&next, "refresh_token").to_owned();
    let (_, _, idle_end, same_family_end) = refresh_row(&app, &refresh).await;
    assert!(idle_end >= first_idle_end + 300, "a fresh idle lifetime");
    assert_eq!(same_family_end, family_end);
    assert!(
        family_end - idle_end > 24 * 3600 * 1000,
        "the family itself may live 30 days"
    );

    // …but left unused for longer than that, it is refused.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_refresh_expired(&app, &refresh).await;
}

#[tokio::test]
async fn a_refresh_family_past_its_absolute_lifetime_is_refused_however_busy() {
    // Two seconds of absolute lifetime; the idle lifetime stays 7 days.
    let app = spawn_app_with(|s| s.auth.refresh_absolute_secs = 2).await;
    let (_, _, login) = signed_in(&app, Role::Agent).await;
    let mut refresh = str_of(&login, "refresh_token").to_owned();
    let mut access = str_of(&login, "access_token").to_owned();
    let (_, _, _, family_end) = refresh_row(&app, &refresh).await;
    let session_end: i64 =
        sqlx::query_scalar("SELECT absolute_expires_at FROM sessions WHERE id = $1")
            .bind(claims_of(&access).sid)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(family_end, session_end, "the family ends with its session");

    // Used well within the idle lifetime, again and again.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let next = refresh_ok(&app, &refresh).await;
        refresh = str_of(&next, "refresh_token").to_owned();
        access = str_of(&next, "access_token").to_owned();
        // Rotation never extends the family.
        assert_eq!(refresh_row(&app, &refresh).await.3, family_end);
    }

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_refresh_expired(&app, &refresh).await;
    // The session is over too: its last access token no longer works,
    // although the token itself is valid for 15 minutes.
    assert!(claims_of(&access).exp > now_secs() + 60);
    assert_refused(&app, &access, "session_revoked").await;
}
