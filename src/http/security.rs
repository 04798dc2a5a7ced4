//! `/api/security/events`: stored security events for admins, and a live
//! stream of HIGH and CRITICAL ones over server-sent events.
//!
//! Admins see their organization's events; admins of the operator
//! organization (setting `operator_organization`) see the whole
//! deployment's, including events tied to no organization.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, Problem};
use crate::http::json::{int_param, ApiJson, ApiQuery};
use crate::http::principal::Auth;
use crate::http::users::page_params;
use crate::security::client_ip;
use crate::security::permissions::{self, Permission};
use crate::state::AppState;
use crate::store::events::{EventFilter, StoredEvent};
use crate::store::users::Role;
use crate::store::{self, Db, OrgId};

const TYPES: &[&str] = &[
    "RATE_LIMIT_EXCEEDED",
    "SUSPICIOUS_ACTIVITY",
    "AUTH_FAILURE",
    "ACCOUNT_LOCKED",
    "CSRF_VIOLATION",
    "INVALID_TOKEN",
    "TOKEN_REUSE_DETECTED",
    "ACCESS_DENIED",
    "WEBHOOK_SIGNATURE_INVALID",
    "IP_BLOCKED",
    "SECRET_ROTATED",
    "DEGRADED",
];
const SEVERITIES: &[&str] = &["LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// Filters and paging for security events.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Page size, 1–100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only this type, e.g. `AUTH_FAILURE`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only this severity or above: `LOW`, `MEDIUM`, `HIGH`, `CRITICAL`.
    pub severity: Option<String>,
    /// Only from this client address.
    pub ip: Option<String>,
    /// Only at or after this time (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
    pub since: Option<String>,
}

/// A security event as the API shows it.
#[derive(Serialize, ToSchema, Clone)]
pub struct EventOut {
    /// Id.
    pub id: String,
    /// Type, e.g. `AUTH_FAILURE`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    pub severity: String,
    /// RFC 3339 time with milliseconds.
    pub timestamp: String,
    /// Client address.
    pub ip: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Request id.
    pub request_id: String,
    /// User, when known.
    pub user_id: Option<String>,
    /// Organization, when known.
    pub organization_id: Option<String>,
    /// Type-specific fields (`reason`, `limit`, `rule`, …).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<StoredEvent> for EventOut {
    fn from(e: StoredEvent) -> Self {
        EventOut {
            timestamp: crate::security::events::rfc3339_ms(e.created_at),
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            id: e.id,
            event_type: e.event_type,
            severity: e.severity,
            ip: e.ip,
            method: e.method,
            url: e.url,
            request_id: e.request_id,
            user_id: e.user_id,
            organization_id: e.organization_id,
        }
    }
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Events, newest first.
    pub items: Vec<EventOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The organization scope of the security events an admin of `org` sees:
/// `None` means everything (the operator organization).
pub(crate) fn scope(state: &AppState, org: &OrgId) -> Option<String> {
    let operator = &state.settings.operator_organization;
    (operator.is_empty() || *operator != org.0).then(|| org.0.clone())
}

/// Search stored security events, newest first. Needs
/// `view_security_events` (admin).
#[utoipa::path(get, path = "/api/security/events", tag = "security", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn list_events(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<ApiJson<EventPage>> {
    p.require(&state, Permission::ViewSecurityEvents).await?;
    let (limit, cursor) =
        page_params(int_param("limit", q.limit.as_deref())?, q.cursor.as_deref())?;
    if let Some(t) = q.event_type.as_deref() {
        if !TYPES.contains(&t) {
            return Err(ApiError::field(
                "type",
                "invalid",
                format!("Must be one of: {}.", TYPES.join(", ")),
            ));
        }
    }
    let severities: &[&str] = match q.severity.as_deref() {
        None => &[],
        Some(s) => match SEVERITIES.iter().position(|v| *v == s) {
            Some(i) => &SEVERITIES[i..],
            None => {
                return Err(ApiError::field(
                    "severity",
                    "invalid",
                    "Must be LOW, MEDIUM, HIGH or CRITICAL.",
                ))
            }
        },
    };
    // Events store addresses in canonical text form (IPv4-mapped IPv6 as
    // IPv4, IPv6 compressed), so compare in that form.
    let ip = match q.ip.as_deref() {
        None => None,
        Some(raw) => match raw.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => Some(client_ip::canonical(ip).to_string()),
            Err(_) => return Err(ApiError::field("ip", "invalid", "Must be an IP address.")),
        },
    };
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| ApiError::field("since", "invalid", "Must be an RFC 3339 time."))?,
        ),
    };
    let org = scope(&state, &p.org);
    let filter = EventFilter {
        organization_id: org.as_deref(),
        event_type: q.event_type.as_deref(),
        severities,
        ip: ip.as_deref(),
        since,
    };
    let mut rows = store::events::search(&state.db, &filter, cursor.as_ref(), limit + 1).await?;
    let next_cursor = store::paginate(&mut rows, limit, |e| (e.created_at, &e.id));
    Ok(ApiJson(EventPage {
        items: rows.into_iter().map(EventOut::from).collect(),
        next_cursor,
    }))
}

/// Live HIGH and CRITICAL security events as server-sent events (event
/// name `security.alert`, data: the event as JSON). Needs
/// `view_security_events` (admin).
#[utoipa::path(get, path = "/api/security/events/stream", tag = "security",
    responses((status = 200, description = "text/event-stream of security.alert events",
            content_type = "text/event-stream"),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn stream_events(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    p.require(&state, Permission::ViewSecurityEvents).await?;
    let org = scope(&state, &p.org);
    let mut rx = state.security.subscribe();
    let db = state.db.clone();
    let mut stopping = state.shutdown.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            let received = tokio::select! {
                // The client went away: stop now, not at the next event.
                _ = tx.closed() => break,
                // The server is stopping: end the stream, so the response
                // completes and the connection can close.
                () = stopping.begun() => break,
                received = rx.recv() => received,
            };
            match received {
                Ok(e) => {
                    if org.is_some() && e.organization_id != org {
                        continue;
                    }
                    // The stream outlives the check made when it opened:
                    // end it once the session is signed out, expired or
                    // revoked by a role change.
                    if !session_still_allowed(&db, &p.org, &p.session_id).await {
                        break;
                    }
                    let data = serde_json::to_string(&EventOut::from(e)).unwrap_or_default();
                    if tx
                        .send(Ok(Event::default().event("security.alert").data(data)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "security event stream lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Whether the session that opened a stream is still live and its role may
/// still see security events. A database error counts as no.
pub(crate) async fn session_still_allowed(db: &Db, org: &OrgId, session_id: &str) -> bool {
    match store::sessions::get(db, org, session_id).await {
        Ok(Some(s)) => {
            s.revoked_at.is_none()
                && s.absolute_expires_at > store::now_ms()
                && Role::parse(&s.role)
                    .is_some_and(|r| permissions::allows(r, Permission::ViewSecurityEvents))
        }
        Ok(None) => false,
        Err(err) => {
            tracing::warn!(error = %err, "security event stream: session check failed");
            false
        }
    }
}

/// A stream fed by a task through a bounded channel; the task ends when
/// the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
