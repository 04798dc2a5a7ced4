//! Who is making a request: the extractors every protected route uses.
//!
//! A principal comes from a bearer access token or from the browser session
//! cookie. Cookie-authenticated requests that change state must pass the
//! CSRF checks (token, Fetch Metadata, Origin); bearer requests carry no
//! ambient credentials and are exempt.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

use crate::audit::{AuditEvent, Outcome};
use crate::error::ApiError;
use crate::http::request::RequestMeta;
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::permissions::{self, Permission};
use crate::state::AppState;
use crate::store::users::Role;
use crate::store::{self, OrgId};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "__Host-kraliki_session";
/// Associated data for sealed session cookies.
pub use crate::keys::SESSION_PURPOSE;
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <access token>`.
    Bearer,
    /// The session cookie.
    Cookie,
}

/// An authenticated user acting within their organization.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Organization every query is scoped to.
    pub org: OrgId,
    /// Role.
    pub role: Role,
    /// Session id.
    pub session_id: String,
    /// How they authenticated.
    pub via: Via,
    /// The session may only enrol a second factor.
    pub restricted: bool,
    /// The request, for events.
    pub meta: RequestMeta,
}

impl Principal {
    /// Refuse with 403 and an `ACCESS_DENIED` event unless the role holds
    /// `permission`.
    pub async fn require(&self, state: &AppState, permission: Permission) -> Result<(), ApiError> {
        if permissions::allows(self.role, permission) {
            return Ok(());
        }
        Err(self
            .deny(state, permission, "Your role does not allow this action.")
            .await)
    }

    /// Record an `ACCESS_DENIED` event and an audit entry for `permission`,
    /// and return the 403 saying `detail`.
    pub async fn deny(&self, state: &AppState, permission: Permission, detail: &str) -> ApiError {
        state
            .security
            .record(
                SecurityEvent::new(EventType::AccessDenied, Severity::Medium, &self.meta)
                    .for_user(&self.user_id, &self.org.0)
                    .with("permission", permission.as_str())
                    .with("role", self.role.as_str()),
            )
            .await;
        let entry = AuditEvent::by_user(
            &self.user_id,
            &self.org.0,
            "access.denied",
            "permission",
            Some(permission.as_str()),
        )
        .outcome(Outcome::Denied);
        if let Err(err) = state.audit(&self.meta, entry).await {
            tracing::error!(error = %err, "could not append to the audit log");
        }
        ApiError::Forbidden("forbidden", detail.into())
    }
}

/// Any signed-in user whose session is complete (not restricted to
/// second-factor enrolment).
pub struct Auth(pub Principal);

/// Any signed-in user, including sessions that must first enrol a second
/// factor. Only the enrolment and sign-out routes use this.
pub struct AuthEnrolling(pub Principal);

impl FromRequestParts<AppState> for AuthEnrolling {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(AuthEnrolling)
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if p.restricted {
            return Err(ApiError::Forbidden(
                "totp_enrolment_required",
                "Your organization requires a second factor: enrol one with \
                 POST /api/auth/totp/enrol before doing anything else."
                    .into(),
            ));
        }
        Ok(Auth(p))
    }
}

fn unauthenticated() -> ApiError {
    ApiError::Unauthorized("unauthenticated", "Sign in to continue.".into())
}

async fn invalid_token(state: &AppState, meta: &RequestMeta, reason: &str) -> ApiError {
    state
        .security
        .record(
            SecurityEvent::new(EventType::InvalidToken, Severity::Medium, meta)
                .with("reason", reason),
        )
        .await;
    ApiError::Unauthorized(
        "invalid_token",
        "The credentials are invalid or expired.".into(),
    )
}

async fn csrf_violation(state: &AppState, p: &Principal, reason: &str) -> ApiError {
    state
        .security
        .record(
            SecurityEvent::new(EventType::CsrfViolation, Severity::High, &p.meta)
                .for_user(&p.user_id, &p.org.0)
                .with("reason", reason),
        )
        .await;
    ApiError::Forbidden(
        "csrf_violation",
        "The request failed the CSRF checks.".into(),
    )
}

/// Read a cookie by name from the `Cookie` headers.
pub fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    let meta = RequestMeta::from_request_parts(parts, state)
        .await
        .unwrap_or_else(|never| match never {});
    let now_ms = store::now_ms();

    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        let Some(token) = token else {
            return Err(invalid_token(state, &meta, "bad_authorization_header").await);
        };
        let claims = match state.keys.get().tokens.verify_access(
            token.trim(),
            &state.token_expectations,
            now_ms / 1000,
        ) {
            Ok(c) => c,
            Err(e) => return Err(invalid_token(state, &meta, e.reason()).await),
        };
        let org = OrgId(claims.org.clone());
        let session = store::sessions::get(&state.db, &org, &claims.sid).await?;
        let Some(session) = session.filter(|s| {
            s.revoked_at.is_none() && s.absolute_expires_at > now_ms && s.user_id == claims.sub
        }) else {
            return Err(invalid_token(state, &meta, "session_revoked").await);
        };
        return Ok(Principal {
            user_id: claims.sub,
            org,
            role: Role::parse(&session.role).unwrap_or(Role::Agent),
            session_id: session.id,
            via: Via::Bearer,
            restricted: store::flag(session.restricted),
            meta,
        });
    }

    let Some(cookie) = cookie_value(parts, SESSION_COOKIE) else {
        return Err(unauthenticated());
    };
    let Some(session_id) = state.keys.get().open_session(cookie, now_ms / 1000) else {
        return Err(invalid_token(state, &meta, "bad_session_cookie").await);
    };
    let session = store::sessions::get_unscoped(&state.db, &session_id).await?;
    let Some(session) = session.filter(|s| s.kind == "browser" && s.revoked_at.is_none()) else {
        return Err(invalid_token(state, &meta, "session_revoked").await);
    };
    let org = OrgId(session.organization_id.clone());
    let idle_ms = state.settings.auth.session_idle_secs * 1000;
    if session.absolute_expires_at <= now_ms || session.last_seen_at + idle_ms <= now_ms {
        store::sessions::revoke(&state.db, &org, &session.id).await?;
        return Err(invalid_token(state, &meta, "session_expired").await);
    }
    let principal = Principal {
        user_id: session.user_id.clone(),
        org: org.clone(),
        role: Role::parse(&session.role).unwrap_or(Role::Agent),
        session_id: session.id.clone(),
        via: Via::Cookie,
        restricted: store::flag(session.restricted),
        meta,
    };

    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        check_csrf(parts, state, &principal).await?;
    }
    if now_ms - session.last_seen_at > 30_000 {
        store::sessions::touch(&state.db, &org, &session.id, now_ms).await?;
    }
    Ok(principal)
}

async fn check_csrf(parts: &Parts, state: &AppState, p: &Principal) -> Result<(), ApiError> {
    let header_str = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header_str("sec-fetch-site") == Some("cross-site") {
        return Err(csrf_violation(state, p, "cross_site_request").await);
    }
    if let Some(origin) = header_str("origin") {
        if !origin_allowed(state, origin) {
            return Err(csrf_violation(state, p, "origin_not_allowed").await);
        }
    }
    match header_str(CSRF_HEADER) {
        None => Err(csrf_violation(state, p, "missing_csrf_token").await),
        Some(t)
            if !state
                .keys
                .get()
                .csrf_valid(&p.session_id, t, store::now_ms() / 1000) =>
        {
            Err(csrf_violation(state, p, "csrf_token_mismatch").await)
        }
        Some(_) => Ok(()),
    }
}

/// Whether `origin` may make cookie-authenticated requests: the public
/// URL's own origin or one listed in `allowed_origins`.
pub fn origin_allowed(state: &AppState, origin: &str) -> bool {
    let own = state.settings.public_base_url();
    origin == own
        || state
            .settings
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin)
}
