//! Makes every error response problem+json with the request id as
//! `instance`, including responses made by the framework (404, 405, 413,
//! 415, extractor rejections) and panics.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Problem, ProblemBody, PROBLEM_JSON};
use crate::http::request::RequestMeta;

/// Middleware: rewrite error responses as problem documents.
pub async fn finish(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestMeta>()
        .map(|m| m.request_id.clone());
    let res = next.run(req).await;
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let mut problem = match parts.extensions.remove::<ProblemBody>() {
        Some(ProblemBody(p)) => p,
        None => Problem::for_status(status),
    };
    drop(body);
    problem.instance = request_id;
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Fallback for unknown routes.
pub async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// Turn a caught panic into an opaque 500.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    let mut res = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    res.extensions_mut().insert(ProblemBody(Problem::for_status(
        StatusCode::INTERNAL_SERVER_ERROR,
    )));
    res
}
