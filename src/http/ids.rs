//! Intrusion detection on every request: path, query, selected headers and
//! the first 64 KiB of the body go through [`crate::security::ids`]; each
//! finding is a `SUSPICIOUS_ACTIVITY` event naming the rule and the field
//! (never the payload). In `enforce` mode an address with too many hits is
//! blocked (`IP_BLOCKED`) and gets 403 until the block ends.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::IdsMode;
use crate::error::{ApiError, Problem, ProblemBody};
use crate::http::request::RequestMeta;
use crate::http::BODY_LIMIT;
use crate::security::blocklist::HitOutcome;
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::ids::{self, Inspected};
use crate::state::AppState;

/// At most this many findings of one request become events.
const MAX_EVENTS_PER_REQUEST: usize = 5;

fn blocked_response(retry_after_secs: u64) -> Response {
    let mut res = StatusCode::FORBIDDEN.into_response();
    res.extensions_mut().insert(ProblemBody(Problem::new(
        StatusCode::FORBIDDEN,
        "ip_blocked",
        "Requests from your address are blocked for a while after repeated attacks.",
    )));
    res.headers_mut()
        .insert(header::RETRY_AFTER, retry_after_secs.max(1).into());
    res
}

/// Middleware: inspect, record, and block.
pub async fn inspect(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mode = state.settings.ids.mode;
    if mode == IdsMode::Off {
        return next.run(req).await;
    }
    let Some(meta) = req.extensions().get::<RequestMeta>().cloned() else {
        return next.run(req).await;
    };
    let now = state.clock.now_ms();
    if mode == IdsMode::Enforce {
        if let Some(until) = state.blocklist.blocked_until(meta.ip, now).await {
            return blocked_response(until.saturating_sub(now).div_ceil(1000));
        }
    }

    // Buffer the body (bounded by the API's body limit) so it can be
    // inspected and still handed to the route.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let headers: Vec<(&str, &str)> = ids::INSPECTED_HEADERS
        .iter()
        .filter_map(|name| {
            parts
                .headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (*name, v))
        })
        .collect();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let findings = ids::inspect(&Inspected {
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
        body: (!bytes.is_empty()).then_some(&bytes[..bytes.len().min(ids::MAX_BODY_INSPECTED)]),
        content_type,
    });

    if !findings.is_empty() {
        for f in findings.iter().take(MAX_EVENTS_PER_REQUEST) {
            state
                .security
                .record(
                    SecurityEvent::new(EventType::SuspiciousActivity, Severity::Medium, &meta)
                        .with("rule", f.rule.as_str())
                        .with("field", f.field.clone())
                        .with(
                            "reason",
                            format!("{} pattern in {}", f.rule.as_str(), f.field),
                        )
                        .with(
                            "mode",
                            if mode == IdsMode::Enforce {
                                "enforce"
                            } else {
                                "observe"
                            },
                        ),
                )
                .await;
        }
        if mode == IdsMode::Enforce {
            let outcome = state.blocklist.hit(meta.ip, now).await;
            if let HitOutcome::StillBlocked(until) = outcome {
                return blocked_response(until.saturating_sub(now).div_ceil(1000));
            }
            if let HitOutcome::Blocked(until) = outcome {
                let secs = until.saturating_sub(now).div_ceil(1000);
                state
                    .security
                    .record(
                        SecurityEvent::new(EventType::IpBlocked, Severity::High, &meta)
                            .with("block_secs", secs)
                            .with("hits", state.settings.ids.block_threshold)
                            .with("window_secs", state.settings.ids.block_window_secs),
                    )
                    .await;
                return blocked_response(secs);
            }
        }
    }

    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
