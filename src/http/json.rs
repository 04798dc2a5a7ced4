//! `ApiJson` and `ApiQuery`: the JSON body and query-string extractors.
//! Rejections become problem+json that names the field (415 for non-JSON
//! bodies, 413 when too large, 400 otherwise).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, FieldError};

/// A JSON request body or response.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => {
            let text = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            ApiError::Validation(vec![FieldError {
                field: field_of(&text),
                code: "invalid".into(),
                detail: clean(&text),
            }])
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest("The request body is not valid JSON.".into())
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("The request body could not be read.".into())
            }
        }
        _ => ApiError::BadRequest("The request body could not be read.".into()),
    }
}

/// A query string parsed into `T`.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text());
                Err(ApiError::Validation(vec![FieldError {
                    field: field_of(&text),
                    code: "invalid".into(),
                    detail: clean(&text),
                }]))
            }
            Err(_) => Err(ApiError::BadRequest(
                "The query string is not valid.".into(),
            )),
        }
    }
}

/// Parse an optional integer query parameter, naming `field` on failure.
pub fn int_param(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|v| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| ApiError::field(field, "invalid", "Must be an integer."))
    })
    .transpose()
}

/// Best effort: pull the field name out of a serde message such as
/// "missing field `email`" or "email: invalid type: ...".
fn field_of(text: &str) -> String {
    if let Some((path, _)) = text.split_once(": ") {
        if !path.is_empty() && !path.contains(' ') {
            return path.to_string();
        }
    }
    if let Some(start) = text.find('`') {
        if let Some(len) = text[start + 1..].find('`') {
            return text[start + 1..start + 1 + len].to_string();
        }
    }
    "body".into()
}

/// Drop serde's position suffix and cap the length.
fn clean(text: &str) -> String {
    let t = text.split(" at line ").next().unwrap_or(text);
    t.chars().take(300).collect()
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found() {
        assert_eq!(
            field_of("missing field `email` at line 1 column 2"),
            "email"
        );
        assert_eq!(field_of("role: unknown variant `boss`"), "role");
        assert_eq!(field_of("something else"), "body");
    }
}
