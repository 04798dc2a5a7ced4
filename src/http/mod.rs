//! The HTTP API: the router, its middleware stack, and one module per
//! resource.

pub mod assets;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod headers;
pub mod ids;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod organization;
pub mod principal;
pub mod problem;
pub mod ratelimit;
pub mod redirect;
pub mod request;
pub mod security;
pub mod system;
pub mod users;
pub mod ws;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

/// Largest request body accepted by default.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Every route of the server, with the middleware stack.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/session", post(auth::create_session))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout-all", post(auth::logout_all))
        .route("/auth/me", get(auth::me))
        .route("/auth/forgot-password", post(auth::forgot_password))
        .route("/auth/reset-password", post(auth::reset_password))
        .route("/auth/change-password", post(auth::change_password))
        .route("/auth/totp/enrol", post(auth::totp_enrol))
        .route("/auth/totp/verify", post(auth::totp_verify))
        .route("/auth/totp/disable", post(auth::totp_disable))
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{id}",
            get(users::get_user).patch(users::update_user),
        )
        .route("/calls", get(calls::list_calls))
        .route("/calls/{id}", get(calls::get_call))
        .route("/organization", get(organization::get_organization))
        .route(
            "/organization/security",
            axum::routing::put(organization::set_security_policy),
        )
        .route("/audit", get(audit::list_audit))
        .route("/security/events", get(security::list_events))
        .route("/security/events/stream", get(security::stream_events))
        .route("/ws/ticket", post(ws::create_ticket))
        .route("/ws", get(ws::connect))
        .route("/openapi.json", get(system::openapi));

    let routes = Router::new()
        .route("/", get(system::index))
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/.well-known/jwks.json", get(system::jwks))
        .route("/assets/{file}", get(assets::asset))
        .route("/favicon.ico", get(assets::favicon))
        .nest("/api", api);
    with_layers(routes, state)
}

/// `routes` behind the server's whole middleware stack (security headers,
/// request context, problem documents, timeout, intrusion detection, rate
/// limits, header and body limits, panic catcher), with the problem+json
/// 404 as fallback. Public so tests can put routes of their own (one that
/// panics, say) behind exactly the same stack.
pub fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(problem::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(middleware::from_fn(limits::header_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::rate_limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), ids::inspect))
        // Outside the body-reading layers, so a client trickling its body
        // is cut off too.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(state.settings.http.request_timeout_secs),
        ))
        .layer(middleware::from_fn(problem::finish))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request::context,
        ))
        .layer(middleware::from_fn(headers::security_headers))
        .with_state(state)
}
