//! Rate limiting of every request by the most specific rule (DESIGN §5),
//! with the IETF draft-10 `RateLimit-Policy` and `RateLimit` fields on
//! limited routes, 429 problem documents with `Retry-After`, and security
//! events for violations and for falling back from Redis.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Problem, ProblemBody};
use crate::http::principal::{cookie_value, SESSION_COOKIE};
use crate::http::request::RequestMeta;
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::ratelimit::{self, Decision, KeyKind, Rule};
use crate::state::AppState;
use crate::store;

static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Who a per-user rule should count a request against, as far as the
/// request itself says: the verified bearer subject, or the session id in
/// a cookie this server sealed.
enum Claimed {
    User(String),
    Session(String),
}

fn claimed(state: &AppState, req: &Request) -> Option<Claimed> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    if let Some(token) = bearer {
        let now = (state.clock.now_ms() / 1000) as i64;
        if let Ok(claims) =
            state
                .keys
                .get()
                .tokens
                .verify_access(token.trim(), &state.token_expectations, now)
        {
            return Some(Claimed::User(claims.sub));
        }
    }
    let (parts, _) = clone_parts(req);
    cookie_value(&parts, SESSION_COOKIE)
        .and_then(|c| state.keys.get().open_session(c, store::now_ms() / 1000))
        .map(Claimed::Session)
}

/// The key a rule counts by: the client address, or for per-user rules the
/// authenticated user (the bearer token's subject, or the user of the
/// session cookie, so all of a user's sessions share one budget), else the
/// address.
async fn key_for(
    state: &AppState,
    rule: &Rule,
    claimed: Option<Claimed>,
    meta: &RequestMeta,
) -> String {
    if rule.key == KeyKind::User {
        match claimed {
            Some(Claimed::User(id)) => return format!("user:{id}"),
            Some(Claimed::Session(sid)) => {
                // Only a live browser session (the checks of the principal
                // extractor) names its user; a revoked, expired or unknown
                // one, or a database error, counts by address like any
                // anonymous request. Per-user rules are opt-in; each costs
                // this one read per cookie request.
                let now = store::now_ms();
                let idle_ms = state.settings.auth.session_idle_secs * 1000;
                if let Ok(Some(s)) = store::sessions::get_unscoped(&state.db, &sid).await {
                    let live = s.kind == "browser"
                        && s.revoked_at.is_none()
                        && s.absolute_expires_at > now
                        && s.last_seen_at + idle_ms > now;
                    if live {
                        return format!("user:{}", s.user_id);
                    }
                }
            }
            None => {}
        }
    }
    format!("ip:{}", ratelimit::ip_key(meta.ip))
}

/// Headers-only copy of a request's parts (for the cookie helper).
fn clone_parts(req: &Request) -> (axum::http::request::Parts, ()) {
    let mut builder = axum::http::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone());
    for (n, v) in req.headers() {
        builder = builder.header(n, v);
    }
    let (parts, _) = builder
        .body(())
        .expect("copied request is valid")
        .into_parts();
    (parts, ())
}

/// Severity grows with repeated violations; sign-in abuse starts high.
fn severity(rule: &Rule, d: &Decision) -> Severity {
    match d.violations {
        0 | 1 if rule.name == "login" => Severity::High,
        0 | 1 => Severity::Medium,
        2 | 3 => Severity::High,
        _ => Severity::Critical,
    }
}

fn set_fields(res: &mut Response, rule: &Rule, d: &Decision) {
    if let Ok(v) = HeaderValue::from_str(&ratelimit::policy_header(rule)) {
        res.headers_mut().insert(POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ratelimit::ratelimit_header(rule, d)) {
        res.headers_mut().insert(RATELIMIT.clone(), v);
    }
}

/// Middleware: count the request against its rule and refuse it over the
/// limit.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(rule) = state
        .limiter
        .settings()
        .rule_for(req.method().as_str(), &path)
        .cloned()
    else {
        return next.run(req).await;
    };
    let meta = req.extensions().get::<RequestMeta>().cloned();
    let Some(meta) = meta else {
        return next.run(req).await;
    };
    let claimed = (rule.key == KeyKind::User)
        .then(|| claimed(&state, &req))
        .flatten();
    let key = key_for(&state, &rule, claimed, &meta).await;
    let check = state.limiter.check(&rule, &key).await;

    if check.degraded_now {
        state
            .security
            .record(
                SecurityEvent::new(EventType::Degraded, Severity::High, &meta)
                    .with("component", "rate_limit")
                    .with(
                        "reason",
                        "Redis unreachable; limiting per instance until it returns",
                    ),
            )
            .await;
    }
    if check.recovered_now {
        tracing::info!("rate limiting is shared through Redis again");
    }

    let d = check.decision;
    if !d.allowed {
        if d.new_violation {
            state
                .security
                .record(
                    SecurityEvent::new(EventType::RateLimitExceeded, severity(&rule, &d), &meta)
                        .with("limit", rule.limit)
                        .with("window_secs", rule.window_secs)
                        .with("rule", rule.name.clone())
                        .with("violations", d.violations)
                        .with("block_secs", d.block_secs),
                )
                .await;
        }
        let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
        res.extensions_mut().insert(ProblemBody(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "Too many requests; try again in {} seconds.",
                d.retry_after_secs.max(1)
            ),
        )));
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(d.retry_after_secs.max(1)),
        );
        set_fields(&mut res, &rule, &d);
        return res;
    }

    let mut res = next.run(req).await;
    set_fields(&mut res, &rule, &d);
    res
}
