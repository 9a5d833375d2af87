//! The HTTP API (SPEC §4): routes, extractors, DTOs and problem+json errors.
//!
//! Invariant: only this module knows HTTP and the JSON shapes clients see; it talks to
//! [`crate::service`] and never to the store or the runtime.

mod admin;
mod auth;
mod correlation;
mod definitions;
mod dto;
mod extract;
mod feed;
mod idempotency;
mod instances;
mod limits;
mod problem;
mod tasks;

pub use auth::Keys;
pub use problem::Problem;

use crate::model::StoredResponse;
use crate::service::Service;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Longest `Prefer: wait` honoured.
    pub max_wait: Duration,
    /// How long a request may take, besides the wait a long-poll asked for.
    pub request_timeout: Duration,
    /// Requests on `/v1/` served at once, long-polls not counted.
    pub max_concurrent_requests: u32,
    /// Long-polls held at once.
    pub max_long_polls: u32,
    /// How often a caught-up feed stream looks for other hosts' commits.
    pub feed_poll: Duration,
    /// Becomes true when the server begins to shut down: streams and long-polls end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The API keys; with none, the server is open.
    pub keys: Keys,
}

#[derive(Debug, Clone)]
pub struct AppState {
    service: Arc<Service>,
    in_flight: idempotency::InFlight,
    settings: Arc<Settings>,
    limits: Arc<limits::Limits>,
}

pub fn router(service: Arc<Service>, settings: Settings) -> Router {
    let limits = limits::Limits::new(&settings);
    let state = AppState {
        service,
        in_flight: Default::default(),
        settings: Arc::new(settings.clone()),
        limits: limits.clone(),
    };
    Router::new()
        .merge(definitions::router(settings.max_module_bytes))
        .merge(instances::router())
        .merge(admin::router())
        .merge(tasks::router())
        .merge(feed::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // After routing, so that the route's pattern decides the role it needs.
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(settings.keys), auth::middleware))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        // Server limits: a timeout, and caps on requests and long-polls served at once.
        // Inside the routes, so that they know a long-poll by its matched path.
        .layer(axum::middleware::from_fn_with_state(limits, limits::middleware))
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(correlation::middleware))
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ready().await {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(err) => {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "Not ready",
                "the database does not answer",
            );
            problem.cause = Some(format!("{err:?}"));
            problem.into_response()
        }
    }
}

/// Prometheus' text format (version 0.0.4).
async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.service.metrics();
    let mut text = String::new();
    for (name, kind, help, value) in [
        (
            "switchyard_long_polls_waiting",
            "gauge",
            "Long-polls parked until their instance changes.",
            snapshot.long_polls_waiting,
        ),
        (
            "switchyard_transitions_recomputed_total",
            "counter",
            "Transitions computed again because the instance changed meanwhile.",
            snapshot.transitions_recomputed,
        ),
        (
            "switchyard_guest_calls_total",
            "counter",
            "Calls into definition modules, failed ones included.",
            snapshot.guest_calls,
        ),
        (
            "switchyard_requests_in_flight",
            "gauge",
            "Requests on /v1/ being served, long-polls not counted.",
            state.limits.requests_in_flight(),
        ),
        (
            "switchyard_module_compiles_total",
            "counter",
            "Modules compiled: at deploy, and at first use without a kept artifact.",
            snapshot.module_compiles,
        ),
        (
            "switchyard_module_artifact_loads_total",
            "counter",
            "Modules loaded from their kept artifact.",
            snapshot.artifact_loads,
        ),
        (
            "switchyard_module_artifacts_refused_total",
            "counter",
            "Artifacts not loaded: their sha256 is not the one recorded when they were written.",
            snapshot.artifacts_refused,
        ),
        (
            "switchyard_module_cache_bytes",
            "gauge",
            "What the compiled modules in memory are counted at.",
            snapshot.module_cache_bytes,
        ),
        (
            "switchyard_recent_instances_bytes",
            "gauge",
            "What the copies of recently committed instances are counted at.",
            snapshot.recent_instances_bytes,
        ),
        ("switchyard_commits_total", "counter", "Transitions committed.", snapshot.commits),
        (
            "switchyard_commit_batches_total",
            "counter",
            "Transactions that committed them (group commit).",
            snapshot.commit_batches,
        ),
        (
            "switchyard_commit_batch_largest",
            "gauge",
            "The most transitions committed in one transaction so far.",
            snapshot.largest_commit_batch,
        ),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    let name = "switchyard_task_dispatch_seconds";
    text.push_str(&format!(
        "# HELP {name} From the commit that asked for a task to its first attempt, for tasks \
         handed over in memory.\n# TYPE {name} histogram\n"
    ));
    let mut cumulative = 0;
    for (count, bound) in
        snapshot.dispatch.iter().zip(crate::service::DISPATCH_BUCKETS_US.map(Some).into_iter().chain([None]))
    {
        cumulative += count;
        let le = bound.map_or_else(|| "+Inf".to_owned(), |micros| format!("{}", micros as f64 / 1e6));
        text.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
    }
    text.push_str(&format!(
        "{name}_sum {}\n{name}_count {cumulative}\n",
        snapshot.dispatch_sum_us as f64 / 1e6
    ));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method",
    )
}

/// The instance as `GET /v1/instances/{id}` shows it: a terminal callback's body.
pub fn instance_body(view: &crate::service::InstanceView) -> Vec<u8> {
    serde_json::to_vec(&dto::InstanceDto::new(view)).unwrap_or_default()
}

/// A JSON response in the form kept under idempotency keys.
fn stored_json(status: StatusCode, body: &impl Serialize, headers: Vec<(String, String)>) -> StoredResponse {
    let mut all_headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    all_headers.extend(headers);
    StoredResponse {
        status: status.as_u16(),
        headers: all_headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}
