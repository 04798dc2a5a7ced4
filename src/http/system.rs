//! Unauthenticated operational routes: liveness, readiness, the public
//! keys, the OpenAPI document and the start page.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::state::AppState;
use crate::store;

/// Health answer.
#[derive(Serialize, ToSchema)]
pub struct HealthOut {
    /// `ok`.
    pub status: &'static str,
}

/// The process is alive. Public.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = HealthOut)))]
pub async fn health() -> ApiJson<HealthOut> {
    ApiJson(HealthOut { status: "ok" })
}

/// The database answers, and so does Redis when it is configured. A 503
/// names the dependency that is down, never its address. Public.
#[utoipa::path(get, path = "/ready", tag = "system",
    responses((status = 200, body = HealthOut), (status = 503, body = Problem)))]
pub async fn ready(State(state): State<AppState>) -> Result<ApiJson<HealthOut>, ApiError> {
    let (db, redis) = tokio::join!(state.db.ping(), state.limiter.ping_redis());
    let db_down = db
        .map_err(|e| tracing::warn!(error = format!("{e:#}"), "readiness: database down"))
        .is_err();
    let redis_down = match redis {
        Some(Err(e)) => {
            tracing::warn!(error = %e, "readiness: Redis down");
            true
        }
        Some(Ok(())) | None => false,
    };
    let detail = match (db_down, redis_down) {
        (false, false) => return Ok(ApiJson(HealthOut { status: "ok" })),
        (true, false) => "The database is not reachable.",
        (false, true) => "Redis is not reachable.",
        (true, true) => "The database and Redis are not reachable.",
    };
    Err(ApiError::Unavailable(detail.into()))
}

/// The public keys that verify access tokens (RFC 7517). Public.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system",
    responses((status = 200, description = "JSON Web Key Set", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.keys.get().tokens.jwks(store::now_ms() / 1000);
    let mut res = axum::Json(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// The OpenAPI 3.1 document of every route. Public.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi() -> Response {
    axum::Json(crate::http::openapi::document()).into_response()
}

/// The start page (the console arrives later), styled by
/// `/assets/kraliki.css`: no inline styles or scripts. Public.
#[utoipa::path(get, path = "/", tag = "system",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn index() -> Response {
    (
        StatusCode::OK,
        Html(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Voice by Kraliki</title>\
             <link rel=\"stylesheet\" href=\"/assets/kraliki.css\">\
             <link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\">\
             </head><body><h1>Voice by Kraliki</h1>\
             <p>The call-center API is running. The API is described at \
             <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p></body></html>",
        ),
    )
        .into_response()
}
