//! Sign-in and the credential lifecycle: password checks with per-account
//! delays, second factor, sessions, access and refresh tokens, password
//! resets. HTTP handlers in [`crate::http::auth`] call into this module.

use secrecy::{ExposeSecret, SecretString};

use crate::audit::{AuditEvent, Outcome};
use crate::error::ApiError;
use crate::http::request::RequestMeta;
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::tokens::AccessClaims;
use crate::security::{self, password, seal, totp};
use crate::state::AppState;
use crate::store::sessions::{NewRefresh, NewSession, Session};
use crate::store::users::User;
use crate::store::{self, OrgId};

/// Reset mails one account receives per hour at most.
pub const MAX_RESET_MAILS_PER_HOUR: i64 = 3;

/// Associated data for sealed TOTP secrets.
pub const TOTP_PURPOSE: &[u8] = b"kraliki-totp-v1";

/// The generic answer to any failed sign-in.
fn bad_credentials() -> ApiError {
    ApiError::Unauthorized(
        "invalid_credentials",
        "The e-mail address or password is incorrect.".into(),
    )
}

/// Normalize and check an e-mail address; returns it lower-cased.
pub fn parse_email(field: &str, raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split('@').count() == 2
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::field(
            field,
            "invalid_email",
            "Not a valid e-mail address.",
        ));
    }
    Ok(email)
}

/// Check a new password against the policy, naming `field` on failure.
pub fn check_new_password(
    field: &str,
    password: &str,
    email: &str,
    has_second_factor: bool,
) -> Result<(), ApiError> {
    password::check_password(password, email, has_second_factor)
        .map_err(|r| ApiError::field(field, r.code(), r.reason()))
}

/// Hash a password on the blocking pool.
pub async fn hash_password(state: &AppState, password: &str) -> Result<String, ApiError> {
    state
        .hasher
        .hash(SecretString::from(password.to_string()))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("password hashing: {e}")))
}

/// What a sign-in asks for.
pub struct Credentials<'a> {
    /// E-mail as typed.
    pub email: &'a str,
    /// Password.
    pub password: &'a str,
    /// Current TOTP code, when the account has a second factor.
    pub totp_code: Option<&'a str>,
    /// A recovery code instead of the TOTP code.
    pub recovery_code: Option<&'a str>,
}

/// A successful sign-in.
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// The new session.
    pub session: Session,
}

async fn auth_failure(state: &AppState, meta: &RequestMeta, user: Option<&User>, reason: &str) {
    let mut event =
        SecurityEvent::new(EventType::AuthFailure, Severity::Medium, meta).with("reason", reason);
    let mut entry = AuditEvent::anonymous("auth.login", "user").detail("reason", reason);
    if let Some(u) = user {
        event = event.for_user(&u.id, &u.organization_id);
        entry = AuditEvent::by_user(&u.id, &u.organization_id, "auth.login", "user", Some(&u.id))
            .outcome(Outcome::Failure)
            .detail("reason", reason);
    }
    if reason == "invalid_reset_token" {
        entry.action = "auth.password_reset";
    }
    state.security.record(event).await;
    audit_quietly(state, meta, entry).await;
}

/// Record an audit entry for a refused action; a storage failure is
/// logged rather than changing the refusal into a 500.
async fn audit_quietly(state: &AppState, meta: &RequestMeta, entry: AuditEvent) {
    if let Err(err) = state.audit(meta, entry).await {
        tracing::error!(error = %err, "could not append to the audit log");
    }
}

/// The answer while an account is delayed. `Retry-After` is rounded up, so a
/// client that waits that long is not refused again.
fn account_delayed(until_ms: i64, now_ms: i64) -> ApiError {
    ApiError::TooManyRequests {
        code: "account_delayed",
        detail: "Too many failed sign-ins for this account; try again later.".into(),
        retry_after: ((until_ms - now_ms + 999) / 1000).max(1) as u64,
    }
}

/// Count a failure against an e-mail address (known or not) and delay it
/// once over the threshold.
async fn count_failure(
    state: &AppState,
    meta: &RequestMeta,
    email_key: &str,
    user: Option<&User>,
) -> Result<(), ApiError> {
    let now = store::now_ms();
    let failures = store::logins::record_failure(&state.db, email_key, now).await?;
    let a = &state.settings.auth;
    if failures >= a.lockout_threshold {
        let doublings = (failures - a.lockout_threshold).min(20) as u32;
        let delay = a
            .lockout_base_secs
            .saturating_mul(1i64 << doublings)
            .min(a.lockout_max_secs);
        store::logins::lock_until(&state.db, email_key, now + delay * 1000).await?;
        let mut event = SecurityEvent::new(EventType::AccountLocked, Severity::High, meta)
            .with("failures", failures)
            .with("delay_secs", delay);
        if let Some(u) = user {
            event = event.for_user(&u.id, &u.organization_id);
        }
        state.security.record(event).await;
    }
    Ok(())
}

/// The key under which failed sign-ins for an address are counted.
pub fn email_key(email: &str) -> String {
    security::token_hash(&email.trim().to_lowercase())
}

/// Verify credentials and open a session of `kind` (`token` or `browser`).
///
/// Known and unknown addresses take the same path: the same delay after
/// repeated failures, the same hashing work, the same answers.
pub async fn sign_in(
    state: &AppState,
    meta: &RequestMeta,
    creds: Credentials<'_>,
    kind: &str,
) -> Result<SignedIn, ApiError> {
    let email = creds.email.trim().to_lowercase();
    let key = email_key(&email);
    let secret = SecretString::from(creds.password.to_string());
    let user = if email.len() <= 254 {
        store::users::find_by_email(&state.db, &email).await?
    } else {
        None
    };

    let now = store::now_ms();
    if let Some(until) = store::logins::locked_until(&state.db, &key, now).await? {
        auth_failure(state, meta, user.as_ref(), "account_delayed").await;
        return Err(account_delayed(until, now));
    }

    let ok = match &user {
        Some(u) => state
            .hasher
            .verify(secret, &u.password_hash)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("password verification: {e}")))?,
        None => {
            state.hasher.verify_dummy(secret).await;
            false
        }
    };
    // Guesses sent in parallel all passed the check above before any of them
    // failed; if another one has delayed the address while this one was being
    // verified, answer as delayed and reveal nothing about this guess.
    let now = store::now_ms();
    if let Some(until) = store::logins::locked_until(&state.db, &key, now).await? {
        auth_failure(state, meta, user.as_ref(), "account_delayed").await;
        return Err(account_delayed(until, now));
    }
    let user = match user {
        Some(u) if ok => u,
        user => {
            auth_failure(state, meta, user.as_ref(), "invalid_credentials").await;
            count_failure(state, meta, &key, user.as_ref()).await?;
            return Err(bad_credentials());
        }
    };
    let org = user.org_id();

    let enrolment = store::totp::get(&state.db, &org, &user.id).await?;
    let enrolled = enrolment.as_ref().is_some_and(|e| e.confirmed_at.is_some());
    if enrolled {
        let passed = match (creds.totp_code, creds.recovery_code) {
            (Some(code), _) => check_totp(state, &user, code).await?,
            (None, Some(code)) => {
                let hash = totp::hash_recovery_code(code);
                store::totp::use_recovery_code(&state.db, &org, &user.id, &hash).await?
            }
            (None, None) => {
                return Err(ApiError::Unauthorized(
                    "totp_required",
                    "This account has a second factor: send totp_code or recovery_code.".into(),
                ));
            }
        };
        if !passed {
            auth_failure(state, meta, Some(&user), "invalid_second_factor").await;
            count_failure(state, meta, &key, Some(&user)).await?;
            return Err(ApiError::Unauthorized(
                "invalid_second_factor",
                "The second-factor code is incorrect.".into(),
            ));
        }
    }
    let organization = store::organizations::get(&state.db, &org)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("user without organization")))?;
    let restricted = !enrolled
        && store::flag(organization.require_totp_privileged)
        && user.role().is_privileged();

    store::logins::clear(&state.db, &key).await?;
    if password::needs_rehash(&user.password_hash) {
        let phc = hash_password(state, creds.password).await?;
        store::users::set_password(&state.db, &org, &user.id, &phc).await?;
    }
    let a = &state.settings.auth;
    let lifetime = if kind == "browser" {
        a.session_absolute_secs
    } else {
        a.refresh_absolute_secs
    };
    let session = store::sessions::create(
        &state.db,
        NewSession {
            org: &org,
            user_id: &user.id,
            kind,
            role: user.role().as_str(),
            restricted,
            lifetime_ms: lifetime * 1000,
            ip: &meta.ip.to_string(),
            user_agent: &meta.user_agent,
        },
    )
    .await?;
    tracing::info!(user_id = %user.id, organization_id = %org, kind, "signed in");
    Ok(SignedIn { user, session })
}

/// Check a TOTP code for a user with a confirmed enrolment (replay-safe).
pub async fn check_totp(state: &AppState, user: &User, code: &str) -> Result<bool, ApiError> {
    let org = user.org_id();
    let Some(enrolment) = store::totp::get(&state.db, &org, &user.id).await? else {
        return Ok(false);
    };
    let secret = seal::open(
        &state.secrets.data_key,
        TOTP_PURPOSE,
        &enrolment.secret_sealed,
    )
    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("TOTP secret does not open")))?;
    let now = (store::now_ms() / 1000) as u64;
    let last = enrolment.last_used_step.map(|s| s as u64);
    let Some(step) = totp::verify_code(&secret, code.trim(), now, last) else {
        return Ok(false);
    };
    Ok(store::totp::use_step(&state.db, &org, &user.id, step as i64).await?)
}

/// A signed access token and its lifetime in seconds.
pub fn issue_access_token(state: &AppState, session: &Session) -> (String, i64) {
    let now = store::now_ms() / 1000;
    let ttl = state.settings.auth.access_token_ttl_secs;
    let claims = AccessClaims {
        iss: state.token_expectations.issuer.clone(),
        aud: state.token_expectations.audience.clone(),
        sub: session.user_id.clone(),
        org: session.organization_id.clone(),
        role: session.role.clone(),
        sid: session.id.clone(),
        jti: store::new_id(),
        iat: now,
        nbf: now,
        exp: now + ttl,
    };
    (state.keys.get().tokens.sign_access(&claims), ttl)
}

/// Start a refresh family for a token session; returns the opaque token.
pub async fn start_refresh_family(state: &AppState, session: &Session) -> Result<String, ApiError> {
    let token = security::random_token();
    let now = store::now_ms();
    let family = store::new_id();
    store::sessions::create_refresh(
        &state.db,
        NewRefresh {
            family_id: &family,
            session_id: &session.id,
            org: &OrgId(session.organization_id.clone()),
            user_id: &session.user_id,
            token_hash: &security::token_hash(&token),
            expires_at: now + state.settings.auth.refresh_idle_secs * 1000,
            family_expires_at: session.absolute_expires_at,
        },
    )
    .await?;
    Ok(token)
}

/// The result of a refresh: a new access token and refresh token.
pub struct Refreshed {
    /// The session the tokens belong to.
    pub session: Session,
    /// The user.
    pub user: User,
    /// New refresh token.
    pub refresh_token: String,
}

/// Exchange a refresh token for a new pair. A retired token revokes its
/// whole family and session (`TOKEN_REUSE_DETECTED`).
pub async fn refresh(
    state: &AppState,
    meta: &RequestMeta,
    presented: &SecretString,
) -> Result<Refreshed, ApiError> {
    let refused = || {
        ApiError::Unauthorized(
            "invalid_token",
            "The refresh token is invalid or expired.".into(),
        )
    };
    let hash = security::token_hash(presented.expose_secret());
    let Some(token) = store::sessions::find_refresh(&state.db, &hash).await? else {
        state
            .security
            .record(
                SecurityEvent::new(EventType::InvalidToken, Severity::Medium, meta)
                    .with("reason", "unknown_refresh_token"),
            )
            .await;
        return Err(refused());
    };
    let org = OrgId(token.organization_id.clone());
    let now = store::now_ms();

    if token.retired_at.is_some() {
        store::sessions::revoke_family(&state.db, &token).await?;
        state
            .security
            .record(
                SecurityEvent::new(EventType::TokenReuseDetected, Severity::High, meta)
                    .for_user(&token.user_id, &token.organization_id)
                    .with("family_id", token.family_id.clone()),
            )
            .await;
        let entry = AuditEvent::by_user(
            &token.user_id,
            &token.organization_id,
            "auth.token_reuse",
            "session",
            Some(&token.session_id),
        )
        .outcome(Outcome::Failure);
        audit_quietly(state, meta, entry).await;
        return Err(refused());
    }
    if token.revoked_at.is_some() || token.expires_at <= now || token.family_expires_at <= now {
        state
            .security
            .record(
                SecurityEvent::new(EventType::InvalidToken, Severity::Medium, meta)
                    .for_user(&token.user_id, &token.organization_id)
                    .with("reason", "refresh_token_expired_or_revoked"),
            )
            .await;
        return Err(refused());
    }
    let session = store::sessions::get(&state.db, &org, &token.session_id).await?;
    let user = store::users::get(&state.db, &org, &token.user_id).await?;
    let (Some(session), Some(user)) = (
        session.filter(|s| s.revoked_at.is_none() && s.absolute_expires_at > now),
        user,
    ) else {
        return Err(refused());
    };

    let new_token = security::random_token();
    let rotated = store::sessions::rotate_refresh(
        &state.db,
        &token,
        NewRefresh {
            family_id: &token.family_id,
            session_id: &token.session_id,
            org: &org,
            user_id: &token.user_id,
            token_hash: &security::token_hash(&new_token),
            expires_at: (now + state.settings.auth.refresh_idle_secs * 1000)
                .min(token.family_expires_at),
            family_expires_at: token.family_expires_at,
        },
    )
    .await?;
    if !rotated {
        // Lost a race with another use of the same token: that is reuse.
        store::sessions::revoke_family(&state.db, &token).await?;
        state
            .security
            .record(
                SecurityEvent::new(EventType::TokenReuseDetected, Severity::High, meta)
                    .for_user(&token.user_id, &token.organization_id)
                    .with("family_id", token.family_id.clone()),
            )
            .await;
        let entry = AuditEvent::by_user(
            &token.user_id,
            &token.organization_id,
            "auth.token_reuse",
            "session",
            Some(&token.session_id),
        )
        .outcome(Outcome::Failure);
        audit_quietly(state, meta, entry).await;
        return Err(refused());
    }
    Ok(Refreshed {
        session,
        user,
        refresh_token: new_token,
    })
}

/// Create a reset token for `email` and mail it, if the account exists,
/// and audit the request against that account (by someone not identified:
/// anyone may ask). Runs detached from the request so the answer and its
/// timing never depend on whether the address is known; unknown addresses
/// leave no entry.
pub fn forgot_password(state: AppState, meta: RequestMeta, email: String) {
    tokio::spawn(async move {
        if let Err(err) = send_reset(&state, &meta, &email).await {
            tracing::error!(error = format!("{err:#}"), "password reset mail failed");
        }
    });
}

async fn send_reset(state: &AppState, meta: &RequestMeta, email: &str) -> anyhow::Result<()> {
    let Some(user) = store::users::find_by_email(&state.db, email).await? else {
        return Ok(());
    };
    let mut entry =
        AuditEvent::anonymous("auth.password_reset_request", "user").outcome(Outcome::Success);
    entry.organization_id = Some(user.organization_id.clone());
    entry.object_id = Some(user.id.clone());
    // However many addresses ask, one mailbox gets at most a few reset mails
    // an hour (the per-address rate limit cannot see requests spread over
    // many client addresses).
    let hour_ago = store::now_ms() - 3600 * 1000;
    if store::resets::count_since(&state.db, &user.org_id(), &user.id, hour_ago).await?
        >= MAX_RESET_MAILS_PER_HOUR
    {
        // Not audited: anyone may ask, and the chain must not grow with
        // every request of a flood (the per-address rate limit and this
        // warning show it).
        tracing::warn!(user_id = %user.id, "password reset mail suppressed: too many this hour");
        return Ok(());
    }
    let token = security::random_token();
    let expires = store::now_ms() + state.settings.auth.reset_token_ttl_secs * 1000;
    store::resets::create(
        &state.db,
        &user.org_id(),
        &user.id,
        &security::token_hash(&token),
        expires,
    )
    .await?;
    let minutes = state.settings.auth.reset_token_ttl_secs / 60;
    let body = format!(
        "Someone asked to reset the password of your Voice by Kraliki account.\n\n\
         Reset token: {token}\n\
         Or open: {}/reset-password#token={token}\n\n\
         The token works once and expires in {minutes} minutes. If you did not ask for this, \
         ignore this message.",
        state.settings.public_base_url()
    );
    state
        .mailer
        .send(&user.email, "Reset your Voice by Kraliki password", &body)
        .await?;
    // Once the mail is out, so the entry never claims one that failed.
    state
        .audit(meta, entry.detail("mailed", true))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Set a new password with a reset token; every session and refresh family
/// of the user is revoked.
pub async fn reset_password(
    state: &AppState,
    meta: &RequestMeta,
    token: &str,
    new_password: &str,
) -> Result<(), ApiError> {
    let invalid = || {
        ApiError::field(
            "token",
            "invalid_token",
            "The reset token is invalid, used or expired.",
        )
    };
    let hash = security::token_hash(token.trim());
    // Validate the password before spending the token, so a rejected
    // password does not burn it.
    let Some(candidate) = store::resets::peek(&state.db, &hash, store::now_ms()).await? else {
        auth_failure(state, meta, None, "invalid_reset_token").await;
        return Err(invalid());
    };
    let org = OrgId(candidate.organization_id.clone());
    let user = store::users::get(&state.db, &org, &candidate.user_id)
        .await?
        .ok_or_else(invalid)?;
    let enrolled = store::totp::get(&state.db, &org, &user.id)
        .await?
        .is_some_and(|e| e.confirmed_at.is_some());
    check_new_password("new_password", new_password, &user.email, enrolled)?;

    let Some(reset) = store::resets::consume(&state.db, &hash, store::now_ms()).await? else {
        return Err(invalid());
    };
    let phc = hash_password(state, new_password).await?;
    store::users::set_password(&state.db, &org, &reset.user_id, &phc).await?;
    store::sessions::revoke_all_for_user(&state.db, &org, &reset.user_id).await?;
    store::resets::revoke_all_for_user(&state.db, &org, &reset.user_id, store::now_ms()).await?;
    // The mailbox owner proved themselves: lift any sign-in delay.
    store::logins::clear(&state.db, &email_key(&user.email)).await?;
    state
        .audit(
            meta,
            AuditEvent::by_user(
                &reset.user_id,
                &reset.organization_id,
                "auth.password_reset",
                "user",
                Some(&reset.user_id),
            ),
        )
        .await?;
    tracing::info!(user_id = %reset.user_id, "password reset");
    Ok(())
}
