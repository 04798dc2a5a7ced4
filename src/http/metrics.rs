//! `GET /metrics`: Prometheus metrics of this instance.
//!
//! The counts cover every organization of the deployment, so on the main
//! listener only admins of the operator organization (setting
//! `operator_organization`) may read them. A Prometheus server scrapes the
//! separate listener `metrics.listen` instead, which serves nothing else
//! and is meant for an internal network only.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};

use crate::error::ApiError;
use crate::http::principal::Auth;
use crate::http::{headers, limits, problem};
use crate::security::permissions::Permission;
use crate::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn exposition(state: &AppState) -> Response {
    let mut res = state.metrics.render().into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Request counts and latencies per route, and security events per type,
/// in the Prometheus text format. Needs an admin of the operator
/// organization.
#[utoipa::path(get, path = "/metrics", tag = "system",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, body = crate::error::Problem),
        (status = 403, description = "not an admin of the operator organization", body = crate::error::Problem),
    ))]
pub async fn metrics(State(state): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    p.require(&state, Permission::ViewMetrics).await?;
    let operator = &state.settings.operator_organization;
    if operator.is_empty() || *operator != p.org.0 {
        return Err(p
            .deny(
                &state,
                Permission::ViewMetrics,
                "Metrics cover the whole deployment: only admins of the operator \
                 organization may read them here.",
            )
            .await);
    }
    Ok(exposition(&state))
}

async fn unauthenticated_metrics(State(state): State<AppState>) -> Response {
    exposition(&state)
}

/// The router of the `metrics.listen` listener: `GET /metrics` without
/// authentication, a problem+json 404 for anything else, and the same
/// header limit and security headers as the application.
pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(unauthenticated_metrics))
        .fallback(problem::not_found)
        .layer(middleware::from_fn(problem::finish))
        .layer(middleware::from_fn(limits::header_limit))
        .layer(middleware::from_fn(headers::security_headers))
        .with_state(state)
}
