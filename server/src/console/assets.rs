//! The console's static files, compiled into the binary: its stylesheet and script, and the
//! vendored htmx (`assets/vendor/htmx`, with its licence and version). Nothing is loaded from
//! outside the server.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet's URL (versioned by the crate version, so it can be cached for long).
pub const CSS_URL: &str = concat!("/assets/console-", env!("CARGO_PKG_VERSION"), ".css");
/// The console script's URL.
pub const JS_URL: &str = concat!("/assets/console-", env!("CARGO_PKG_VERSION"), ".js");
/// htmx's URL.
pub const HTMX_URL: &str = "/assets/htmx-2.0.11.min.js";

const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");
const HTMX: &str = include_str!("../../assets/vendor/htmx/htmx.min.js");

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/assets/{file}");
    let (body, kind) = if path == CSS_URL {
        (CSS, "text/css; charset=utf-8")
    } else if path == JS_URL {
        (JS, "text/javascript; charset=utf-8")
    } else if path == HTMX_URL {
        (HTMX, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
