//! The one error type of the HTTP API and its RFC 9457 problem+json form.
//!
//! Client errors carry a stable machine `code`, a human `detail` and, for
//! validation failures, the field at fault. Server errors are opaque to the
//! client: the cause chain goes to the log, never into a body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field-level validation failure.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    /// Name of the request field, as spelled in the request body or query.
    pub field: String,
    /// Stable machine-readable reason, e.g. `too_short`.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
}

/// An RFC 9457 problem document as sent to clients.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// The request id of the request that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code.
    pub code: String,
    /// Field-level failures for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem with the given status, code and detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:kraliki:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            code: code.to_string(),
            errors: Vec::new(),
        }
    }

    /// The generic problem for a status produced outside our handlers
    /// (router fallbacks, framework rejections).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status.as_u16() {
            400 => ("bad_request", "The request could not be understood."),
            401 => ("unauthorized", "Authentication is required."),
            403 => ("forbidden", "This action is not allowed."),
            404 => ("not_found", "No such resource."),
            405 => (
                "method_not_allowed",
                "This method is not allowed on this resource.",
            ),
            408 => ("request_timeout", "The request took too long."),
            413 => ("payload_too_large", "The request body is too large."),
            415 => (
                "unsupported_media_type",
                "The request body must be JSON (Content-Type: application/json).",
            ),
            422 => ("unprocessable", "The request body is not valid."),
            429 => ("rate_limited", "Too many requests."),
            431 => ("headers_too_large", "The request headers are too large."),
            s if s >= 500 => ("internal", "An internal error occurred."),
            _ => ("error", "The request failed."),
        };
        Problem::new(status, code, detail)
    }
}

/// Marker put in response extensions so the finishing middleware knows the
/// body is already a problem and only needs the request id.
#[derive(Debug, Clone)]
pub struct ProblemBody(pub Problem);

/// Errors returned by handlers and extractors.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with one or more fields at fault.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 400 without a specific field.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401; the detail is deliberately generic.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str, String),
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(&'static str, String),
    /// 404, identical for "missing" and "not yours".
    #[error("not found")]
    NotFound,
    /// 409.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 429 with the number of seconds to wait.
    #[error("too many requests")]
    TooManyRequests {
        /// Machine code.
        code: &'static str,
        /// Human detail.
        detail: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503: a dependency is unavailable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500; the cause is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A validation error on one field.
    pub fn field(field: &str, code: &str, detail: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError {
            field: field.to_string(),
            code: code.to_string(),
            detail: detail.into(),
        }])
    }

    /// Convert into the problem document sent to the client.
    pub fn to_problem(&self) -> Problem {
        match self {
            ApiError::Validation(errors) => {
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut p = Problem::new(StatusCode::BAD_REQUEST, "validation_failed", detail);
                p.errors = errors.clone();
                p
            }
            ApiError::BadRequest(d) => Problem::new(StatusCode::BAD_REQUEST, "bad_request", d),
            ApiError::Unauthorized(code, d) => Problem::new(StatusCode::UNAUTHORIZED, code, d),
            ApiError::Forbidden(code, d) => Problem::new(StatusCode::FORBIDDEN, code, d),
            ApiError::NotFound => Problem::for_status(StatusCode::NOT_FOUND),
            ApiError::Conflict(d) => Problem::new(StatusCode::CONFLICT, "conflict", d),
            ApiError::PayloadTooLarge => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::UnsupportedMediaType => {
                Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            ApiError::TooManyRequests { code, detail, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
            }
            ApiError::Unavailable(d) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", d)
            }
            ApiError::Internal(_) => Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// Render a problem as a response (without the request id, which the
/// finishing middleware adds).
pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res.extensions_mut().insert(ProblemBody(problem));
    res
}

/// Whether a database error means the database cannot be reached (down,
/// restarting, unreachable, or every connection busy) rather than that the
/// query was wrong: such requests get 503 and may be retried.
pub fn database_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes 08 (connection exception) and 57P (the server is
        // shutting down or starting), and too many connections.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    }
}

/// Seconds a client is told to wait before retrying a 503.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unreachable = match &self {
            ApiError::Internal(err) => err
                .chain()
                .filter_map(|e| e.downcast_ref::<sqlx::Error>())
                .any(database_unreachable),
            _ => false,
        };
        if let ApiError::Internal(err) = &self {
            if unreachable {
                tracing::warn!(error = format!("{err:#}"), "database unreachable");
            } else {
                tracing::error!(error = format!("{err:#}"), "request failed");
            }
        }
        let this = if unreachable {
            ApiError::Unavailable(
                "The database is not reachable at the moment; try again shortly.".into(),
            )
        } else {
            self
        };
        let retry_after = match &this {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_SECS),
            _ => None,
        };
        let mut res = problem_response(this.to_problem());
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res
    }
}

/// Database errors become internal errors, except unique violations (409).
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return ApiError::Conflict("A record with these values already exists.".into());
            }
        }
        ApiError::Internal(anyhow::Error::new(err).context("database query"))
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after() {
        assert!(database_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(database_unreachable(&sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
        )));
        assert!(!database_unreachable(&sqlx::Error::RowNotFound));
        let err =
            ApiError::Internal(anyhow::Error::new(sqlx::Error::PoolTimedOut).context("query"));
        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        let other = ApiError::Internal(anyhow::anyhow!("a bug")).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }
}
