//! `X-Correlation-Id`: echoed when the client sends a sane one, made up otherwise, on
//! every response and in every problem body.

use super::problem::ProblemCause;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The current request's correlation id (empty outside a request).
pub fn current() -> String {
    CORRELATION_ID.try_with(Clone::clone).unwrap_or_default()
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty() && value.len() <= 128 && value.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!("request", correlation_id = %id);
    let mut response =
        CORRELATION_ID.scope(id.clone(), tracing::Instrument::instrument(next.run(request), span)).await;
    if let Some(ProblemCause(cause)) = response.extensions_mut().remove::<ProblemCause>() {
        tracing::error!(correlation_id = %id, status = response.status().as_u16(), %cause, "request failed");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
