//! Extractors whose rejections are problems, so malformed requests get the same
//! error format as everything else.
//!
//! None of them takes text holding U+0000 (NUL): PostgreSQL stores no NUL in text, so
//! such a name or reason could only fail later, as a server error, on one backend.

use super::problem::Problem;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The raw request body.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(Body).map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Body too large",
                    rejection.body_text(),
                )
            }
            other => Problem::bad_request(other.body_text()),
        })
    }
}

impl Body {
    /// Parses the body as JSON; an empty body is `None`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<Option<T>, Problem> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let parsed = serde_json::from_slice(&self.0)
            .map_err(|err| Problem::bad_request(format!("the body is not the expected JSON: {err}")))?;
        if has_nul_character(&self.0) {
            return Err(Problem::bad_request("the body's JSON holds a \\u0000 (NUL) character"));
        }
        Ok(Some(parsed))
    }
}

/// Whether JSON text (valid JSON: a NUL can only be escaped) has a string holding `\u0000`.
fn has_nul_character(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut bytes = json.iter().enumerate();
    while let Some((at, byte)) = bytes.next() {
        match (in_string, byte) {
            (_, b'"') => in_string = !in_string,
            (true, b'\\') => {
                if json.get(at + 1..at + 6) == Some(&b"u0000"[..]) {
                    return true;
                }
                // The escaped character, which may be a quote.
                bytes.next();
            }
            _ => {}
        }
    }
    false
}

/// Refuses a path or query whose percent-decoded text would hold a NUL (`%00`).
fn refuse_nul(encoded: &str, what: &str) -> Result<(), Problem> {
    if encoded.contains("%00") {
        return Err(Problem::bad_request(format!("the {what} holds a %00 (NUL) character")));
    }
    Ok(())
}

/// Path parameters.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.path(), "path")?;
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| Problem::bad_request(rejection.body_text()))
    }
}

/// Query parameters.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.query().unwrap_or_default(), "query")?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| Problem::bad_request(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests;
