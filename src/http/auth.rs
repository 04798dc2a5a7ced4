//! `/api/auth/*`: registration, sign-in (tokens or browser session),
//! refresh, sign-out, the current user, password reset and change, and the
//! second factor.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::AuditEvent;
use crate::auth::{self, Credentials};
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::json::ApiJson;
use crate::http::principal::{Auth, AuthEnrolling, Principal, Via, SESSION_COOKIE};
use crate::http::request::RequestMeta;
use crate::http::users::UserOut;
use crate::security::{seal, totp};
use crate::state::AppState;
use crate::store::users::{NewUser, Role};
use crate::store::{self};

/// Longest accepted password input (policy maximum is 128 code points;
/// this bounds hashing work for garbage input).
const MAX_PASSWORD_BYTES: usize = 1024;

/// `POST /api/auth/login` and `/api/auth/session` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    /// Login e-mail.
    pub email: String,
    /// Password.
    #[schema(value_type = String)]
    pub password: SecretString,
    /// Current TOTP code, when the account has a second factor.
    pub totp_code: Option<String>,
    /// A single-use recovery code instead of the TOTP code.
    pub recovery_code: Option<String>,
}

/// Tokens for API clients.
#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    /// EdDSA-signed JWT (`typ: at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime, seconds.
    pub expires_in: i64,
    /// Opaque refresh token (single use; rotate with `/api/auth/refresh`).
    pub refresh_token: String,
    /// The signed-in user.
    pub user: UserOut,
    /// True when the organization requires a second factor the user has
    /// not enrolled yet: only enrolment endpoints accept these tokens.
    pub totp_enrolment_required: bool,
}

/// A browser session (the cookie carries the session itself).
#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    /// Send as `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    /// Absolute expiry, unix milliseconds.
    pub expires_at: i64,
    /// The signed-in user.
    pub user: UserOut,
    /// See [`TokenOut::totp_enrolment_required`].
    pub totp_enrolment_required: bool,
}

/// `POST /api/auth/refresh` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshIn {
    /// The current refresh token.
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// `POST /api/auth/register` body: creates an organization and its admin.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterIn {
    /// Name of the new organization.
    pub organization_name: String,
    /// Admin's e-mail.
    pub email: String,
    /// Admin's password.
    #[schema(value_type = String)]
    pub password: SecretString,
    /// Admin's display name.
    pub display_name: Option<String>,
}

/// `POST /api/auth/forgot-password` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotIn {
    /// The account's e-mail.
    pub email: String,
}

/// The answer to forgot-password, whatever the address.
#[derive(Serialize, ToSchema)]
pub struct AcceptedOut {
    /// Always `accepted`.
    pub status: &'static str,
    /// What happens next.
    pub detail: &'static str,
}

/// `POST /api/auth/reset-password` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetIn {
    /// Token from the reset e-mail.
    #[schema(value_type = String)]
    pub token: SecretString,
    /// New password.
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// `POST /api/auth/change-password` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordIn {
    /// Current password.
    #[schema(value_type = String)]
    pub current_password: SecretString,
    /// New password.
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// A started TOTP enrolment.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolOut {
    /// The shared secret, base32 (for manual entry).
    pub secret: String,
    /// `otpauth://` URI for authenticator apps (QR code).
    pub otpauth_uri: String,
}

/// A TOTP code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeIn {
    /// Six-digit code from the authenticator.
    pub code: String,
}

/// Recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesOut {
    /// Each works once in place of a TOTP code.
    pub recovery_codes: Vec<String>,
    /// Present when the confirmation lifted an enrolment restriction: the
    /// session was replaced by a new one with full rights (a new session
    /// id at every privilege change), and the old credentials no longer
    /// work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<RenewedSession>,
}

/// The credentials of the session that replaced a restricted one. Token
/// sessions get a new access and refresh token; browser sessions a new
/// CSRF token (and the new cookie in `Set-Cookie`).
#[derive(Serialize, ToSchema)]
pub struct RenewedSession {
    /// New access token (token sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// `Bearer` (token sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Access token lifetime in seconds (token sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// New refresh token (token sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// New CSRF token (browser sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// `POST /api/auth/totp/disable` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpDisableIn {
    /// Current password.
    #[schema(value_type = String)]
    pub password: SecretString,
    /// Current TOTP code.
    pub code: String,
}

/// The current user, with the CSRF token for cookie sessions.
#[derive(Serialize, ToSchema)]
pub struct MeOut {
    /// The user.
    pub user: UserOut,
    /// Present for cookie sessions.
    pub csrf_token: Option<String>,
    /// Whether a second factor is enrolled.
    pub totp_enabled: bool,
    /// Whether the session may only enrol a second factor.
    pub totp_enrolment_required: bool,
}

fn bounded(field: &str, s: &SecretString) -> Result<(), ApiError> {
    if s.expose_secret().is_empty() {
        return Err(ApiError::field(field, "required", "Must not be empty."));
    }
    if s.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::field(field, "too_long", "Too long."));
    }
    Ok(())
}

async fn credentials_sign_in(
    state: &AppState,
    meta: &RequestMeta,
    body: &LoginIn,
    kind: &str,
) -> ApiResult<auth::SignedIn> {
    if body.email.trim().is_empty() {
        return Err(ApiError::field("email", "required", "Must not be empty."));
    }
    bounded("password", &body.password)?;
    auth::sign_in(
        state,
        meta,
        Credentials {
            email: &body.email,
            password: body.password.expose_secret(),
            totp_code: body.totp_code.as_deref(),
            recovery_code: body.recovery_code.as_deref(),
        },
        kind,
    )
    .await
}

async fn audit_sign_in(
    state: &AppState,
    meta: &RequestMeta,
    signed: &auth::SignedIn,
) -> ApiResult<()> {
    let s = &signed.session;
    let entry = AuditEvent::by_user(
        &s.user_id,
        &s.organization_id,
        "auth.login",
        "session",
        Some(&s.id),
    )
    .detail("kind", s.kind.clone())
    .detail("restricted", store::flag(s.restricted));
    state.audit(meta, entry).await
}

/// Sign in with e-mail and password (and second factor) for API tokens.
/// Public.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginIn,
    responses((status = 200, body = TokenOut),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 415, body = Problem), (status = 429, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginIn>,
) -> ApiResult<ApiJson<TokenOut>> {
    let signed = credentials_sign_in(&state, &meta, &body, "token").await?;
    audit_sign_in(&state, &meta, &signed).await?;
    let (access_token, expires_in) = auth::issue_access_token(&state, &signed.session);
    let refresh_token = auth::start_refresh_family(&state, &signed.session).await?;
    Ok(ApiJson(TokenOut {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token,
        totp_enrolment_required: store::flag(signed.session.restricted),
        user: UserOut::from(&signed.user),
    }))
}

/// The `Set-Cookie` value for a session.
fn session_cookie(state: &AppState, session_id: &str) -> String {
    let sealed = state.keys.get().seal_session(session_id);
    format!("{SESSION_COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Sign in for a browser: sets the `__Host-kraliki_session` cookie and
/// returns the CSRF token. Public.
#[utoipa::path(post, path = "/api/auth/session", tag = "auth", request_body = LoginIn,
    responses((status = 200, body = SessionOut,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 415, body = Problem), (status = 429, body = Problem)))]
pub async fn create_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginIn>,
) -> ApiResult<Response> {
    let signed = credentials_sign_in(&state, &meta, &body, "browser").await?;
    audit_sign_in(&state, &meta, &signed).await?;
    let out = SessionOut {
        csrf_token: state.keys.get().csrf_token(&signed.session.id),
        expires_at: signed.session.absolute_expires_at,
        user: UserOut::from(&signed.user),
        totp_enrolment_required: store::flag(signed.session.restricted),
    };
    let cookie = session_cookie(&state, &signed.session.id);
    let mut res = ApiJson(out).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?,
    );
    Ok(res)
}

/// Exchange a refresh token for a new access and refresh token. The old
/// refresh token stops working; presenting it again revokes the family.
/// Public.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshIn,
    responses((status = 200, body = TokenOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 415, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RefreshIn>,
) -> ApiResult<ApiJson<TokenOut>> {
    bounded("refresh_token", &body.refresh_token)?;
    let r = auth::refresh(&state, &meta, &body.refresh_token).await?;
    let (access_token, expires_in) = auth::issue_access_token(&state, &r.session);
    Ok(ApiJson(TokenOut {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token: r.refresh_token,
        totp_enrolment_required: store::flag(r.session.restricted),
        user: UserOut::from(&r.user),
    }))
}

/// Create an organization and its first admin. Open in development; in
/// production only when `open_registration = true`. Public.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterIn,
    responses((status = 201, body = UserOut), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 415, body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RegisterIn>,
) -> ApiResult<(StatusCode, ApiJson<UserOut>)> {
    if !state.settings.registration_open() {
        return Err(ApiError::Forbidden(
            "registration_closed",
            "Registration is closed; ask an administrator for an account.".into(),
        ));
    }
    let org_name = body.organization_name.trim();
    if org_name.is_empty() || org_name.chars().count() > 200 {
        return Err(ApiError::field(
            "organization_name",
            "invalid",
            "Must be 1 to 200 characters.",
        ));
    }
    let email = auth::parse_email("email", &body.email)?;
    let display_name = display_name_or_default(body.display_name.as_deref(), &email)?;
    bounded("password", &body.password)?;
    auth::check_new_password("password", body.password.expose_secret(), &email, false)?;
    if store::users::find_by_email(&state.db, &email)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "An account with this e-mail address already exists.".into(),
        ));
    }
    let phc = auth::hash_password(&state, body.password.expose_secret()).await?;
    let org = store::organizations::create(&state.db, org_name, false).await?;
    let user = store::users::create(
        &state.db,
        NewUser {
            org: &org.org_id(),
            email: &email,
            display_name: &display_name,
            role: Role::Admin,
            password_hash: &phc,
            is_demo: false,
        },
    )
    .await?;
    let entry = AuditEvent::by_user(
        &user.id,
        &org.id,
        "auth.register",
        "organization",
        Some(&org.id),
    );
    state.audit(&meta, entry).await?;
    Ok((StatusCode::CREATED, ApiJson(UserOut::from(&user))))
}

/// Validate an optional display name, defaulting to the e-mail's local part.
pub fn display_name_or_default(name: Option<&str>, email: &str) -> ApiResult<String> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    match name {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            Err(ApiError::field(
                "display_name",
                "invalid",
                "At most 200 printable characters.",
            ))
        }
        Some(n) => Ok(n.to_string()),
        None => Ok(email.split('@').next().unwrap_or(email).to_string()),
    }
}

/// Sign out of the current session (tokens and cookie). Authenticated.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    AuthEnrolling(p): AuthEnrolling,
) -> ApiResult<Response> {
    store::sessions::revoke(&state.db, &p.org, &p.session_id).await?;
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.logout",
        "session",
        Some(&p.session_id),
    );
    state.audit(&p.meta, entry).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if p.via == Via::Cookie {
        res.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&clear_cookie()).map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(res)
}

/// Sign out of every session of the current user. Authenticated.
#[utoipa::path(post, path = "/api/auth/logout-all", tag = "auth",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn logout_all(
    State(state): State<AppState>,
    AuthEnrolling(p): AuthEnrolling,
) -> ApiResult<Response> {
    let revoked = store::sessions::revoke_all_for_user(&state.db, &p.org, &p.user_id).await?;
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.logout_all",
        "user",
        Some(&p.user_id),
    )
    .detail("sessions_revoked", revoked);
    state.audit(&p.meta, entry).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if p.via == Via::Cookie {
        res.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&clear_cookie()).map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(res)
}

/// The signed-in user. Authenticated (also during second-factor
/// enrolment).
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = MeOut), (status = 401, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn me(
    State(state): State<AppState>,
    AuthEnrolling(p): AuthEnrolling,
) -> ApiResult<ApiJson<MeOut>> {
    let user = store::users::get(&state.db, &p.org, &p.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let totp_enabled = store::totp::get(&state.db, &p.org, &p.user_id)
        .await?
        .is_some_and(|e| e.confirmed_at.is_some());
    Ok(ApiJson(MeOut {
        user: UserOut::from(&user),
        csrf_token: (p.via == Via::Cookie).then(|| state.keys.get().csrf_token(&p.session_id)),
        totp_enabled,
        totp_enrolment_required: p.restricted,
    }))
}

/// Ask for a password-reset e-mail. Always 202 with the same body, whether
/// or not the address has an account. Public.
#[utoipa::path(post, path = "/api/auth/forgot-password", tag = "auth", request_body = ForgotIn,
    responses((status = 202, body = AcceptedOut), (status = 400, body = Problem),
        (status = 415, body = Problem)))]
pub async fn forgot_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ForgotIn>,
) -> ApiResult<(StatusCode, ApiJson<AcceptedOut>)> {
    let email = auth::parse_email("email", &body.email)?;
    auth::forgot_password(state.clone(), meta, email);
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(AcceptedOut {
            status: "accepted",
            detail: "If an account exists for this address, a reset message is on its way.",
        }),
    ))
}

/// Set a new password with the token from the reset e-mail. Signs the user
/// out everywhere. Public.
#[utoipa::path(post, path = "/api/auth/reset-password", tag = "auth", request_body = ResetIn,
    responses((status = 204), (status = 400, body = Problem), (status = 415, body = Problem)))]
pub async fn reset_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ResetIn>,
) -> ApiResult<StatusCode> {
    bounded("token", &body.token)?;
    bounded("new_password", &body.new_password)?;
    auth::reset_password(
        &state,
        &meta,
        body.token.expose_secret(),
        body.new_password.expose_secret(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password; signs the user out of every session, this one
/// included. Authenticated.
#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth",
    request_body = ChangePasswordIn,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<ChangePasswordIn>,
) -> ApiResult<StatusCode> {
    bounded("current_password", &body.current_password)?;
    bounded("new_password", &body.new_password)?;
    let user = store::users::get(&state.db, &p.org, &p.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ok = state
        .hasher
        .verify(body.current_password.clone(), &user.password_hash)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("password verification: {e}")))?;
    if !ok {
        return Err(ApiError::field(
            "current_password",
            "incorrect",
            "The current password is incorrect.",
        ));
    }
    let enrolled = store::totp::get(&state.db, &p.org, &p.user_id)
        .await?
        .is_some_and(|e| e.confirmed_at.is_some());
    auth::check_new_password(
        "new_password",
        body.new_password.expose_secret(),
        &user.email,
        enrolled,
    )?;
    let phc = auth::hash_password(&state, body.new_password.expose_secret()).await?;
    store::users::set_password(&state.db, &p.org, &p.user_id, &phc).await?;
    store::sessions::revoke_all_for_user(&state.db, &p.org, &p.user_id).await?;
    store::resets::revoke_all_for_user(&state.db, &p.org, &p.user_id, store::now_ms()).await?;
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.password_change",
        "user",
        Some(&p.user_id),
    );
    state.audit(&p.meta, entry).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start enrolling a TOTP second factor. Authenticated (also during
/// required enrolment).
#[utoipa::path(post, path = "/api/auth/totp/enrol", tag = "auth",
    responses((status = 200, body = TotpEnrolOut), (status = 401, body = Problem),
        (status = 409, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn totp_enrol(
    State(state): State<AppState>,
    AuthEnrolling(p): AuthEnrolling,
) -> ApiResult<ApiJson<TotpEnrolOut>> {
    let user = store::users::get(&state.db, &p.org, &p.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let secret = totp::generate_secret();
    let sealed = seal::seal(&state.secrets.data_key, auth::TOTP_PURPOSE, &secret);
    if !store::totp::begin(&state.db, &p.org, &p.user_id, &sealed).await? {
        return Err(ApiError::Conflict(
            "A second factor is already enrolled; disable it first.".into(),
        ));
    }
    Ok(ApiJson(TotpEnrolOut {
        secret: totp::secret_base32(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, "Voice by Kraliki", &user.email),
    }))
}

/// Confirm the enrolment with a first code; returns recovery codes once.
/// A session restricted to enrolment (the organization requires a second
/// factor) is replaced by a new one with full rights: its new credentials
/// come back in `session` (and `Set-Cookie`), and the old ones stop
/// working. Authenticated (also during required enrolment).
#[utoipa::path(post, path = "/api/auth/totp/verify", tag = "auth", request_body = TotpCodeIn,
    responses((status = 200, body = RecoveryCodesOut,
            headers(("Set-Cookie" = String, description = "The new session cookie, when a restricted browser session was replaced"))),
        (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn totp_verify(
    State(state): State<AppState>,
    AuthEnrolling(p): AuthEnrolling,
    ApiJson(body): ApiJson<TotpCodeIn>,
) -> ApiResult<Response> {
    let enrolment = store::totp::get(&state.db, &p.org, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::Conflict("Start with POST /api/auth/totp/enrol.".into()))?;
    if enrolment.confirmed_at.is_some() {
        return Err(ApiError::Conflict(
            "The second factor is already confirmed.".into(),
        ));
    }
    let secret = seal::open(
        &state.secrets.data_key,
        auth::TOTP_PURPOSE,
        &enrolment.secret_sealed,
    )
    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("TOTP secret does not open")))?;
    let now = (store::now_ms() / 1000) as u64;
    let Some(step) = totp::verify_code(&secret, body.code.trim(), now, None) else {
        return Err(ApiError::field(
            "code",
            "invalid_code",
            "The code is incorrect.",
        ));
    };
    // Spend the step first: a code works once, also against a second
    // verification racing this one.
    if !store::totp::use_step(&state.db, &p.org, &p.user_id, step as i64).await? {
        return Err(ApiError::field(
            "code",
            "invalid_code",
            "The code is incorrect.",
        ));
    }
    let codes = totp::generate_recovery_codes(10);
    let hashes: Vec<String> = codes.iter().map(|c| totp::hash_recovery_code(c)).collect();
    if !store::totp::confirm(&state.db, &p.org, &p.user_id, &hashes).await? {
        return Err(ApiError::Conflict(
            "The second factor is already confirmed.".into(),
        ));
    }
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.totp_enable",
        "user",
        Some(&p.user_id),
    );
    state.audit(&p.meta, entry).await?;
    let renewed = if p.restricted {
        Some(renew_session(&state, &p).await?)
    } else {
        None
    };
    let (session, cookie) = match renewed {
        Some((session, cookie)) => (Some(session), cookie),
        None => (None, None),
    };
    let mut res = ApiJson(RecoveryCodesOut {
        recovery_codes: codes,
        session,
    })
    .into_response();
    if let Some(cookie) = cookie {
        res.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(res)
}

/// Replace the restricted session of `p` by an unrestricted one of the same
/// kind that ends when the old one would have, and revoke the old one (its
/// refresh family and access tokens with it). Returns the new credentials
/// and, for a browser session, the new cookie.
async fn renew_session(
    state: &AppState,
    p: &Principal,
) -> ApiResult<(RenewedSession, Option<String>)> {
    let old = store::sessions::get(&state.db, &p.org, &p.session_id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("session of a live principal is gone"))
        })?;
    let remaining_ms = (old.absolute_expires_at - store::now_ms()).max(1000);
    let session = store::sessions::create(
        &state.db,
        store::sessions::NewSession {
            org: &p.org,
            user_id: &p.user_id,
            kind: &old.kind,
            role: &old.role,
            restricted: false,
            lifetime_ms: remaining_ms,
            ip: &p.meta.ip.to_string(),
            user_agent: &p.meta.user_agent,
        },
    )
    .await?;
    store::sessions::revoke(&state.db, &p.org, &old.id).await?;
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.session_renew",
        "session",
        Some(&session.id),
    )
    .detail("previous", old.id.clone())
    .detail("reason", "second factor enrolled");
    state.audit(&p.meta, entry).await?;
    if old.kind == "browser" {
        let renewed = RenewedSession {
            access_token: None,
            token_type: None,
            expires_in: None,
            refresh_token: None,
            csrf_token: Some(state.keys.get().csrf_token(&session.id)),
        };
        return Ok((renewed, Some(session_cookie(state, &session.id))));
    }
    let (access_token, expires_in) = auth::issue_access_token(state, &session);
    let refresh_token = auth::start_refresh_family(state, &session).await?;
    let renewed = RenewedSession {
        access_token: Some(access_token),
        token_type: Some("Bearer"),
        expires_in: Some(expires_in),
        refresh_token: Some(refresh_token),
        csrf_token: None,
    };
    Ok((renewed, None))
}

/// Remove the second factor (password and a current code required).
/// Refused when the organization requires one for the user's role.
/// Authenticated.
#[utoipa::path(post, path = "/api/auth/totp/disable", tag = "auth", request_body = TotpDisableIn,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn totp_disable(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<TotpDisableIn>,
) -> ApiResult<StatusCode> {
    let org = store::organizations::get(&state.db, &p.org)
        .await?
        .ok_or(ApiError::NotFound)?;
    if store::flag(org.require_totp_privileged) && p.role.is_privileged() {
        return Err(ApiError::Forbidden(
            "totp_required_by_policy",
            "Your organization requires a second factor for your role.".into(),
        ));
    }
    let user = store::users::get(&state.db, &p.org, &p.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ok = state
        .hasher
        .verify(body.password.clone(), &user.password_hash)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("password verification: {e}")))?;
    if !ok {
        return Err(ApiError::field(
            "password",
            "incorrect",
            "The password is incorrect.",
        ));
    }
    if !auth::check_totp(&state, &user, &body.code).await? {
        return Err(ApiError::field(
            "code",
            "invalid_code",
            "The code is incorrect.",
        ));
    }
    store::totp::remove(&state.db, &p.org, &p.user_id).await?;
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "auth.totp_disable",
        "user",
        Some(&p.user_id),
    );
    state.audit(&p.meta, entry).await?;
    Ok(StatusCode::NO_CONTENT)
}
