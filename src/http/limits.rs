//! Request limits that the body extractors do not cover: the size of the
//! header block (431 above 16 KiB).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Problem, ProblemBody};

/// Largest accepted header block, request line included.
pub const HEADER_BLOCK_LIMIT: usize = 16 * 1024;

/// Size of the request line and header block as sent on the wire.
pub fn header_block_size(req: &Request) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.as_bytes().len() + 4)
        .sum::<usize>()
        + line
}

/// Middleware: refuse requests whose header block is too large.
pub async fn header_limit(req: Request, next: Next) -> Response {
    if header_block_size(&req) > HEADER_BLOCK_LIMIT {
        let mut res = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
        res.extensions_mut().insert(ProblemBody(Problem::for_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        )));
        return res;
    }
    next.run(req).await
}
