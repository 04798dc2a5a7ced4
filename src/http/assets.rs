//! Static files of the start page (`/assets/{file}`, `/favicon.ico`),
//! compiled into the binary from the repository's `assets/` folder.
//!
//! Only the files listed here exist; any other name is a 404 problem, so no
//! request can reach the file system. Responses may be cached for an hour
//! by anyone; the security-headers layer turns that into `no-store` when
//! the request carried credentials.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Problem};

/// One embedded file.
struct Asset {
    /// Name under `/assets/`.
    name: &'static str,
    /// `Content-Type` it is served with.
    content_type: &'static str,
    /// Contents.
    bytes: &'static [u8],
}

const STYLESHEET: Asset = Asset {
    name: "kraliki.css",
    content_type: "text/css; charset=utf-8",
    bytes: include_bytes!("../../assets/kraliki.css"),
};

const FAVICON: Asset = Asset {
    name: "favicon.svg",
    content_type: "image/svg+xml",
    bytes: include_bytes!("../../assets/favicon.svg"),
};

/// Every file served under `/assets/`.
const ASSETS: &[Asset] = &[STYLESHEET, FAVICON];

/// `Cache-Control` of asset responses to requests without credentials.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=3600";

fn serve(asset: &Asset) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(ASSET_CACHE_CONTROL),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

/// A static file of the start page: `kraliki.css` or `favicon.svg`.
/// Public.
#[utoipa::path(get, path = "/assets/{file}", tag = "system",
    params(("file" = String, Path, description = "File name: `kraliki.css` or `favicon.svg`")),
    responses(
        (status = 200, description = "The file",
            content((String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, body = Problem)))]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == file)
        .map(serve)
        .ok_or(ApiError::NotFound)
}

/// The site icon (the SVG of `/assets/favicon.svg`), for browsers that ask
/// for `/favicon.ico` without reading the page. Public.
#[utoipa::path(get, path = "/favicon.ico", tag = "system",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml")))]
pub async fn favicon() -> Response {
    serve(&FAVICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_files_are_not_empty() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }
}
