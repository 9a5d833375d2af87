//! The HTTP API (SPEC §4): routes, extractors, DTOs and problem+json errors.
//!
//! Invariant: only this module knows HTTP and the JSON shapes clients see; it talks to
//! [`crate::service`] and never to the store or the runtime.

mod admin;
mod auth;
mod console;
mod correlation;
mod definitions;
mod dto;
mod extract;
mod feed;
mod idempotency;
mod instances;
mod limits;
mod openapi;
mod problem;
mod tasks;

pub use auth::Keys;
pub use problem::Problem;

use crate::model::StoredResponse;
use crate::service::Service;
use crate::telemetry;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dto::HealthDto;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// What `GET /openapi.json` serves: the document, as JSON.
    openapi: axum::body::Bytes,
}

pub fn router(service: Arc<Service>, settings: Settings) -> Router {
    let limits = limits::Limits::new(&settings);
    // Each route is added with its description: the document covers every route.
    let (routes, document) = OpenApiRouter::with_openapi(openapi::base())
        .merge(definitions::router(settings.max_module_bytes))
        .merge(instances::router())
        .merge(admin::router())
        .merge(tasks::router())
        .merge(feed::router())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi::serve))
        .split_for_parts();
    let state = AppState {
        service,
        in_flight: Default::default(),
        settings: Arc::new(settings.clone()),
        limits: limits.clone(),
        openapi: openapi::finish(document, &settings.keys),
    };
    routes
        // After routing, so that the route's pattern decides the role it needs.
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(settings.keys), auth::middleware))
        // Not API operations: no key, not in the document.
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        // Server limits: a timeout, and caps on requests and long-polls served at once.
        // Inside the routes, so that they know a long-poll by its matched path.
        .layer(axum::middleware::from_fn_with_state(limits, limits::middleware))
        .with_state(state)
        .layer(axum::middleware::from_fn(correlation::middleware))
}

/// Alive
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = HealthDto)))]
async fn healthz() -> Response {
    axum::Json(HealthDto { status: "ok" }).into_response()
}

/// Ready when the database answers
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`ready`", body = HealthDto), (status = 503, response = Problem)))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ready().await {
        Ok(()) => axum::Json(HealthDto { status: "ready" }).into_response(),
        Err(err) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            "the database does not answer",
        )
        .caused_by(format!("{err:?}"))
        .into_response(),
    }
}

/// Metrics
///
/// Prometheus' text format (version 0.0.4). The gauges read rather than counted are
/// sampled now; should the database not answer, they keep their last values.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!(telemetry::REQUESTS_IN_FLIGHT).set(state.limits.requests_in_flight() as f64);
    if let Err(err) = state.service.sample_gauges().await {
        tracing::warn!(%err, "cannot read the outbox for /metrics");
    }
    let recorder = telemetry::metrics();
    recorder.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], recorder.render()).into_response()
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
