//! Server limits on `/v1/`: a timeout per request, and caps on the requests and the
//! long-polls served at once.
//!
//! A request over a cap is refused at once (`503 overloaded` with `Retry-After`) rather
//! than queued, so an overloaded server still answers quickly and clients back off.
//! Long-polls have a cap of their own: parked, they cost a connection and a task but no
//! work, and must not crowd out the requests that do work. Live feed streams share it,
//! each holding its slot for as long as it streams ([`Limits::stream_slot`]): a stream
//! outlives the request this middleware bounds. `/healthz`, `/readyz` and
//! `/metrics` are outside both, so probes and scrapes still see an overloaded server.

use super::instances::prefer_wait;
use super::problem::Problem;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The one route that honours `Prefer: wait`.
const LONG_POLL_ROUTE: &str = "/v1/instances/{id}";

#[derive(Debug)]
pub(super) struct Limits {
    max_concurrent_requests: u32,
    /// Slots of requests that are not long-polls.
    requests: Semaphore,
    /// Slots of long-polls and live streams.
    long_polls: Arc<Semaphore>,
    request_timeout: Duration,
    /// Longest `Prefer: wait` honoured: a long-poll's timeout is this much longer.
    max_wait: Duration,
}

impl Limits {
    pub(super) fn new(settings: &super::Settings) -> Arc<Limits> {
        Arc::new(Limits {
            max_concurrent_requests: settings.max_concurrent_requests,
            requests: Semaphore::new(settings.max_concurrent_requests as usize),
            long_polls: Arc::new(Semaphore::new(settings.max_long_polls as usize)),
            request_timeout: settings.request_timeout,
            max_wait: settings.max_wait,
        })
    }

    /// Requests holding a slot now, long-polls not counted.
    pub(super) fn requests_in_flight(&self) -> u64 {
        let free = u32::try_from(self.requests.available_permits()).unwrap_or(u32::MAX);
        u64::from(self.max_concurrent_requests.saturating_sub(free))
    }

    /// A slot for a live stream, held until the stream ends; `None` when none is free
    /// (answer [`overloaded`]).
    pub(super) fn stream_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.long_polls.clone().try_acquire_owned().ok()
    }
}

/// `503 overloaded`, to retry after a moment (every 503 says how long).
pub(super) fn overloaded(what: &str) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Overloaded",
        format!("the server serves as many {what} as it may at once; retry shortly"),
    )
    .into_response()
}

pub(super) async fn middleware(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let wait = long_poll_wait(&request, limits.max_wait);
    let slots = if wait.is_zero() { &limits.requests } else { &limits.long_polls };
    let Ok(_slot) = slots.try_acquire() else {
        return overloaded(if wait.is_zero() { "requests" } else { "long-polls and streams" });
    };
    let timeout = limits.request_timeout + wait;
    tokio::time::timeout(timeout, next.run(request)).await.unwrap_or_else(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            format!("the request was not answered within {} s; retry", timeout.as_secs()),
        )
        .into_response()
    })
}

/// How long the request may wait for a change as a long-poll: zero unless it is one.
fn long_poll_wait(request: &Request, max_wait: Duration) -> Duration {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    match prefer_wait(request.headers()) {
        Some(wait) if reads && route == Some(LONG_POLL_ROUTE) => wait.min(max_wait),
        _ => Duration::ZERO,
    }
}
