//! What every request gets: an `X-Correlation-Id` (echoed when the client sends a
//! sane one, made up otherwise) on its response and in every problem body; a span
//! naming it and the instance the request is about, so every log line of the request
//! carries both; one log line at its end; and its count and latency in the metrics.

use super::problem::ProblemCause;
use crate::telemetry;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
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

/// Runs after routing (a layer of the router), so the matched route is known.
pub async fn middleware(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty() && value.len() <= 128 && value.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let method = request.method().clone();
    // The pattern, not the path: a label per instance would grow without bound.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "request",
        correlation_id = %id,
        instance_id = instance_in(request.uri().path()),
    );
    let mut response = CORRELATION_ID
        .scope(id.clone(), tracing::Instrument::instrument(next.run(request), span.clone()))
        .await;
    let status = response.status();
    let _entered = span.enter();
    if let Some(created) = response.headers().get(header::LOCATION).and_then(|value| value.to_str().ok())
        && let Some(instance) = instance_in(created)
    {
        span.record("instance_id", instance);
    }
    if let Some(ProblemCause(cause)) = response.extensions_mut().remove::<ProblemCause>() {
        tracing::error!(status = status.as_u16(), %cause, "request failed");
    }
    let took = started.elapsed();
    tracing::info!(%method, %route, status = status.as_u16(), ms = took.as_secs_f64() * 1e3, "request");
    let method = method.to_string();
    metrics::histogram!(telemetry::HTTP_REQUEST_SECONDS, "method" => method.clone(), "route" => route.clone())
        .record(took);
    let status = status.as_u16().to_string();
    metrics::counter!(telemetry::HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The instance id in a path of `/v1/instances/{id}...` or `/v1/admin/instances/{id}...`.
fn instance_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/instances/").or_else(|| path.strip_prefix("/v1/admin/instances/"))?;
    rest.split('/').next().filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::instance_in;

    #[test]
    fn the_instance_is_found_in_instance_paths_only() {
        let id = "0193a1b2-0000-7000-8000-000000000001";
        assert_eq!(instance_in(&format!("/v1/instances/{id}")), Some(id));
        assert_eq!(instance_in(&format!("/v1/instances/{id}/actions/approve")), Some(id));
        assert_eq!(instance_in(&format!("/v1/admin/instances/{id}/cancel")), Some(id));
        assert_eq!(instance_in("/v1/instances"), None);
        assert_eq!(instance_in("/v1/instances/"), None);
        assert_eq!(instance_in("/v1/definitions/x/instances"), None);
    }
}
