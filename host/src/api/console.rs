//! The web console at `/console/`: a page and its scripts, built into the binary, that
//! use the public API with the caller's key (ARCHITECTURE.md says why no build step).
//!
//! Every path under `/console/` that is not an asset answers the page, so that a deep
//! link (`/console/instances/{id}`) works on reload: the page's script routes by path.
//! The assets need no key; everything they show comes from API calls that do.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The console's files, by name under `/console/`, with their content types.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../console/app.js")),
    ("graph.js", "text/javascript; charset=utf-8", include_str!("../../../console/graph.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../console/style.css")),
];

/// Only the console's own files run, nothing is framed, and the API is the only place
/// it talks to.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*path}",
            get(|axum::extract::Path(path): axum::extract::Path<String>| async move { asset(&path) }),
        )
}

/// The asset named `path`, or the page for any other path (a route of the page's own).
fn asset(path: &str) -> Response {
    let (_, content_type, body) =
        ASSETS.iter().find(|(name, _, _)| *name == path).copied().unwrap_or(ASSETS[0]);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The page may change with the binary: a browser asks again each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
