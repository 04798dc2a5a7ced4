//! Live events over WebSocket: `POST /api/ws/ticket` issues a short-lived,
//! single-use ticket to a signed-in user, and `GET /api/ws?ticket=…`
//! exchanges it for one connection. An access token never travels in a URL.
//!
//! Every frame the server sends is a JSON text message
//! `{"type": "...", "data": {...}}`: `hello` once connected,
//! `security.alert` (HIGH and CRITICAL security events, for admins, scoped
//! like the event stream of `/api/security/events/stream`), and `pong`
//! answering a client's `{"type":"ping"}`. Everything else a client sends is
//! ignored; a message over [`MAX_CLIENT_MESSAGE`] bytes closes the
//! connection with 1009. The server pings every `http.ws_ping_interval_secs`
//! and drops a client that stays silent for two intervals, closes with 1008
//! once the session behind the ticket ends, and with 1001 when the server
//! shuts down.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use crate::error::{problem_response, ApiError, ApiResult, Problem};
use crate::http::json::ApiJson;
use crate::http::principal::{origin_allowed, Auth};
use crate::http::request::{query_param, RequestMeta};
use crate::http::security::{scope, session_still_allowed, EventOut};
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::permissions::{self, Permission};
use crate::security::{random_token, token_hash};
use crate::shutdown::ShutdownListener;
use crate::state::AppState;
use crate::store::events::StoredEvent;
use crate::store::users::Role;
use crate::store::ws_tickets::NewWsTicket;
use crate::store::{self, OrgId};

/// How long a ticket may wait before it is used, seconds.
pub const TICKET_TTL_SECS: i64 = 30;

/// Largest message a client may send, bytes; larger ones close the
/// connection with 1009 (message too big).
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// Frames above this are refused by the WebSocket codec itself, before they
/// are buffered; the connection then ends without a close handshake.
const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// A send that takes longer than this means the client is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the client to answer a close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// Length of a ticket: 256 random bits in unpadded base64url.
const TICKET_LEN: usize = 43;

/// A new WebSocket ticket.
#[derive(Serialize, ToSchema)]
pub struct TicketOut {
    /// Pass as `ticket` to `GET /api/ws`; works once.
    pub ticket: String,
    /// Seconds until the ticket expires.
    pub expires_in: i64,
}

/// The query of `GET /api/ws` (documentation only: the handler reads the
/// raw query so that a missing or malformed ticket is a 401, not a 400).
#[derive(Deserialize, IntoParams)]
#[allow(dead_code, reason = "describes the query for the OpenAPI document")]
pub struct ConnectQuery {
    /// A ticket from `POST /api/ws/ticket`.
    pub ticket: String,
}

/// Issue a single-use ticket for one WebSocket connection, valid for
/// [`TICKET_TTL_SECS`] seconds. Any signed-in user; cookie sessions need
/// `X-CSRF-Token`.
#[utoipa::path(post, path = "/api/ws/ticket", tag = "live",
    responses(
        (status = 201, body = TicketOut),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn create_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<(StatusCode, ApiJson<TicketOut>)> {
    let now = store::now_ms();
    store::ws_tickets::purge_expired(&state.db, now).await?;

    let ticket = random_token();
    store::ws_tickets::create(
        &state.db,
        NewWsTicket {
            org: &p.org,
            user_id: &p.user_id,
            session_id: &p.session_id,
            ticket_hash: &token_hash(&ticket),
            expires_at: now + TICKET_TTL_SECS * 1000,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(TicketOut {
            ticket,
            expires_in: TICKET_TTL_SECS,
        }),
    ))
}

/// Open the live event WebSocket with a ticket from `POST /api/ws/ticket`.
/// No other credential is accepted here: not a bearer header, not a cookie,
/// not a token in the URL. A browser's `Origin` must be the public URL's or
/// an allowed origin.
#[utoipa::path(get, path = "/api/ws", tag = "live", params(ConnectQuery),
    responses(
        (status = 101, description = "Switching Protocols: a WebSocket of JSON text frames \
            {\"type\", \"data\"}: hello, security.alert (admins), pong"),
        (status = 400, body = Problem, description = "Not a WebSocket handshake"),
        (status = 401, body = Problem, description = "Missing, unknown, used or expired \
            ticket, or the session behind it has ended"),
        (status = 403, body = Problem, description = "Origin not allowed"),
        (status = 426, body = Problem, description = "The connection cannot be upgraded")),
    security(("ws_ticket" = [])))]
pub async fn connect(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // Browsers send Origin on every handshake: refuse cross-site pages
    // before looking at anything else.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| origin_allowed(&state, o));
        if !allowed {
            state
                .security
                .record(
                    SecurityEvent::new(EventType::CsrfViolation, Severity::High, &meta)
                        .with("reason", "websocket_origin_not_allowed"),
                )
                .await;
            return Err(ApiError::Forbidden(
                "origin_not_allowed",
                "WebSocket connections are accepted only from the public URL's origin or an \
                 allowed origin."
                    .into(),
            ));
        }
    }

    let Some(ticket) = query_param(query.as_deref(), "ticket") else {
        return Err(invalid_ticket(&state, &meta, "missing_ticket").await);
    };
    if !well_formed_ticket(&ticket) {
        return Err(invalid_ticket(&state, &meta, "malformed_ticket").await);
    }
    // A request that is not a handshake does not spend the ticket.
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            let status = rejection.status();
            return Ok(problem_response(Problem::new(
                status,
                "websocket_handshake_required",
                "Open this route with a WebSocket handshake (GET with Upgrade: websocket).",
            )));
        }
    };

    let now = store::now_ms();
    let Some(ticket) = store::ws_tickets::consume(&state.db, &token_hash(&ticket)).await? else {
        // Unknown, or already used: both look the same.
        return Err(invalid_ticket(&state, &meta, "unknown_ticket").await);
    };
    if ticket.expires_at <= now {
        return Err(invalid_ticket(&state, &meta, "ticket_expired").await);
    }
    let org = OrgId(ticket.organization_id.clone());
    let Some(role) =
        live_session_role(&state, &org, &ticket.session_id, &ticket.user_id, now).await?
    else {
        return Err(invalid_ticket(&state, &meta, "session_revoked").await);
    };

    let client = LiveClient {
        user_id: ticket.user_id,
        org,
        session_id: ticket.session_id,
        role,
    };
    // Subscribe before answering, so nothing raised from now on is missed
    // and a shutdown that starts meanwhile still reaches this connection.
    // With Redis, events raised on other instances arrive here too
    // (`security::fanout`).
    let alerts = permissions::allows(role, Permission::ViewSecurityEvents)
        .then(|| state.security.subscribe());
    let stopping = state.shutdown.subscribe();
    tracing::info!(user_id = %client.user_id, role = role.as_str(), "websocket connected");
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| live(socket, state, client, alerts, stopping)))
}

/// 401 and an `INVALID_TOKEN` event naming `reason`.
async fn invalid_ticket(state: &AppState, meta: &RequestMeta, reason: &str) -> ApiError {
    state
        .security
        .record(
            SecurityEvent::new(EventType::InvalidToken, Severity::Medium, meta)
                .with("reason", reason)
                .with("credential", "ws_ticket"),
        )
        .await;
    ApiError::Unauthorized(
        "invalid_ticket",
        "The WebSocket ticket is missing, invalid, already used or expired: get a new one \
         with POST /api/ws/ticket."
            .into(),
    )
}

/// Whether `ticket` looks like one this server issues (so an access token
/// or other junk is refused without a database lookup).
fn well_formed_ticket(ticket: &str) -> bool {
    ticket.len() == TICKET_LEN
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The role of a session that may still open a connection: not revoked,
/// not past its absolute or (browser) idle expiry, not restricted to
/// second-factor enrolment, and belonging to `user_id`.
async fn live_session_role(
    state: &AppState,
    org: &OrgId,
    session_id: &str,
    user_id: &str,
    now: i64,
) -> ApiResult<Option<Role>> {
    let Some(s) = store::sessions::get(&state.db, org, session_id).await? else {
        return Ok(None);
    };
    let idle_ms = state.settings.auth.session_idle_secs * 1000;
    let idle_expired = s.kind == "browser" && s.last_seen_at + idle_ms <= now;
    let live = s.revoked_at.is_none()
        && s.absolute_expires_at > now
        && !idle_expired
        && !store::flag(s.restricted)
        && s.user_id == user_id;
    if !live {
        return Ok(None);
    }
    Ok(Role::parse(&s.role))
}

/// Who is on the other end of a connection.
struct LiveClient {
    user_id: String,
    org: OrgId,
    session_id: String,
    role: Role,
}

/// How a connection ends.
enum Ending {
    /// Send a close frame with this code and reason, then wait briefly for
    /// the client's answer.
    Close(u16, &'static str),
    /// The client closed; its close frame is answered by the codec.
    ClientClosed,
    /// The connection is dead or unusable: just drop it.
    Drop,
}

/// A server frame: `{"type": kind, "data": data}` as a text message.
fn frame(kind: &str, data: Value) -> Message {
    Message::Text(json!({ "type": kind, "data": data }).to_string().into())
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// The next live security event, or never when the client receives none.
async fn next_alert(
    alerts: &mut Option<broadcast::Receiver<StoredEvent>>,
) -> Result<StoredEvent, broadcast::error::RecvError> {
    match alerts {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a client text message is `{"type":"ping"}`.
fn is_ping(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| v["type"] == "ping")
}

/// Serve one connection until it ends.
async fn live(
    mut socket: WebSocket,
    state: AppState,
    client: LiveClient,
    mut alerts: Option<broadcast::Receiver<StoredEvent>>,
    mut stopping: ShutdownListener,
) {
    let hello = json!({ "user_id": client.user_id, "role": client.role.as_str() });
    if !send(&mut socket, frame("hello", hello)).await {
        return;
    }
    let alert_scope = scope(&state, &client.org);
    let interval = Duration::from_secs(state.settings.http.ws_ping_interval_secs);
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    let ending = loop {
        tokio::select! {
            () = stopping.begun() => break Ending::Close(close_code::AWAY, "server shutting down"),
            _ = ping.tick() => {
                if last_heard.elapsed() >= interval * 2 {
                    tracing::info!(user_id = %client.user_id, "websocket silent; dropping it");
                    break Ending::Drop;
                }
                // The connection outlives the check made when it opened:
                // end it once the session is signed out, expired or revoked.
                if !session_still_live(&state, &client).await {
                    break Ending::Close(close_code::POLICY, "session ended");
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    break Ending::Drop;
                }
            }
            received = next_alert(&mut alerts) => match received {
                Ok(event) => {
                    if alert_scope.is_some() && event.organization_id != alert_scope {
                        continue;
                    }
                    if !session_still_allowed(&state.db, &client.org, &client.session_id).await {
                        break Ending::Close(close_code::POLICY, "session ended");
                    }
                    let data = serde_json::to_value(EventOut::from(event)).unwrap_or_default();
                    if !send(&mut socket, frame("security.alert", data)).await {
                        break Ending::Drop;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "websocket security alerts lagged");
                }
                Err(broadcast::error::RecvError::Closed) => alerts = None,
            },
            incoming = socket.recv() => {
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    // Gone, or broke the protocol (a frame over the codec's
                    // limit included).
                    None | Some(Err(_)) => break Ending::Drop,
                };
                last_heard = Instant::now();
                match msg {
                    Message::Text(text) if text.as_str().len() > MAX_CLIENT_MESSAGE => {
                        break Ending::Close(close_code::SIZE, "message too big");
                    }
                    Message::Binary(data) if data.len() > MAX_CLIENT_MESSAGE => {
                        break Ending::Close(close_code::SIZE, "message too big");
                    }
                    Message::Text(text) => {
                        if is_ping(text.as_str())
                            && !send(&mut socket, frame("pong", json!({}))).await
                        {
                            break Ending::Drop;
                        }
                    }
                    Message::Close(_) => break Ending::ClientClosed,
                    // Binary messages are ignored; pings are answered by
                    // the codec; a pong only shows the client is alive.
                    Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    };

    match ending {
        Ending::Close(code, reason) => {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            if send(&mut socket, close).await {
                // Read until the client's close frame (or the end), so the
                // closing handshake completes before the socket is dropped.
                let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if matches!(msg, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        Ending::ClientClosed => {
            // Reading once more sends the codec's answer to the close frame.
            let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, socket.recv()).await;
        }
        Ending::Drop => {}
    }
    tracing::info!(user_id = %client.user_id, "websocket closed");
    drop(stopping);
}

/// Whether the session behind a connection is still live (any role).
async fn session_still_live(state: &AppState, client: &LiveClient) -> bool {
    let now = store::now_ms();
    match live_session_role(state, &client.org, &client.session_id, &client.user_id, now).await {
        Ok(role) => role.is_some(),
        Err(err) => {
            tracing::warn!(error = %err, "websocket: session check failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_recognized_by_shape() {
        assert!(well_formed_ticket(&random_token()));
        assert!(!well_formed_ticket(""));
        assert!(!well_formed_ticket(
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
        ));
        assert!(!well_formed_ticket(&"a".repeat(44)));
        assert!(!well_formed_ticket(&format!("{}+", "a".repeat(42))));
    }

    #[test]
    fn only_a_ping_is_a_ping() {
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(is_ping(r#"{"type":"ping","data":{}}"#));
        assert!(!is_ping(r#"{"type":"pong"}"#));
        assert!(!is_ping("ping"));
        assert!(!is_ping("[]"));
    }
}
