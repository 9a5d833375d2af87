//! `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header).
//!
//! A key is scoped to the endpoint and target (the method and concrete path) and to the
//! caller, so two callers never see each other's responses. The first
//! request under a key runs; its response (success, or a final client error) is kept
//! and replayed byte for byte to later requests with the same body. A request with
//! the same key and another body gets 422; one that arrives while the first is still
//! running gets 409. Every change (a transition, a deploy, a pin, a retirement, a
//! deletion, a bulk migration) stores the record in its own transaction, so a key is
//! never recorded without its effect, nor the other way round, across crashes and
//! hosts: a second host that ran the same request finds the key taken as it commits,
//! its transaction undone, and replays the first one's response. What writes nothing
//! (a refusal, a dry run, a no-op) keeps its response in a write of its own.
//!
//! A transition is not looked up before it runs ([`Endpoint::Transition`]): its commit
//! finds the key taken and writes nothing, and the kept response is replayed then. A
//! first request, the common case, thus costs no extra read. Other requests look the
//! key up first, which spares a replay the work (a deploy compiles).

use super::AppState;
use super::problem::Problem;
use crate::model::{Caller, IdempotencyKey, InstanceId, StoredResponse};
use crate::service::{self, Idempotent};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_KEY_LEN: usize = 255;

/// Keys whose first request is running in this process.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<IdempotencyKey>>>);

/// Holds a key in [`InFlight`] until dropped.
#[derive(Debug)]
struct InFlightGuard {
    in_flight: InFlight,
    key: IdempotencyKey,
}

impl InFlight {
    fn claim(&self, key: &IdempotencyKey) -> Option<InFlightGuard> {
        let fresh = lock(&self.0).insert(key.clone());
        fresh.then(|| InFlightGuard { in_flight: self.clone(), key: key.clone() })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.in_flight.0).remove(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What an endpoint does, which decides how it treats keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Starts an instance or runs an action: a key is required, and looked up only
    /// once the transition's commit finds it taken.
    Transition,
    /// Anything else: a key is optional, and looked up before the request runs.
    Operation,
}

/// What a mutating request does after [`begin`].
#[derive(Debug)]
pub enum Begun {
    /// Answer with this (a replay, or a refusal of the key).
    Done(Response),
    /// Run the request under this claim.
    Run(Option<Claim>),
}

/// The right to run the first request under a key.
#[derive(Debug)]
pub struct Claim {
    key: IdempotencyKey,
    fingerprint: String,
    state: AppState,
    _guard: InFlightGuard,
}

/// The scope of a create's key (method and concrete path).
pub fn create_scope(definition: &str) -> String {
    format!("POST /v1/definitions/{definition}/instances")
}

/// The scope of an action's key; with an empty `action`, the prefix of all of them.
pub fn action_scope(id: InstanceId, action: &str) -> String {
    format!("POST /v1/instances/{id}/actions/{action}")
}

/// The scope of an admin operation's key (`migrate`, `cancel`, `force-complete`); with
/// an empty `operation`, the prefix of all of them.
pub fn admin_scope(id: InstanceId, operation: &str) -> String {
    format!("POST /v1/admin/instances/{id}/{operation}")
}

/// Refuses a busy key, replays a kept response (for an [`Endpoint::Operation`]), refuses a
/// key reused for another request, or claims the key for this request. `request` is
/// what must match for a replay: the body, and any header that changes the outcome.
pub async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    scope: String,
    request: &[u8],
    endpoint: Endpoint,
) -> Begun {
    let key = match headers.get(&HEADER).map(HeaderValue::to_str) {
        None if endpoint == Endpoint::Operation => return Begun::Run(None),
        None => {
            let problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key required",
                "this endpoint requires an Idempotency-Key header",
            );
            return Begun::Done(problem.into_response());
        }
        Some(Ok(key))
            if !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            key
        }
        Some(_) => {
            let detail = format!("the Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters");
            return Begun::Done(Problem::bad_request(detail).into_response());
        }
    };
    let key = IdempotencyKey { scope: by(scope, &caller.name), key: key.to_owned() };
    let fingerprint = hex::encode(sha2::Sha256::digest(request));
    let Some(guard) = state.in_flight.claim(&key) else {
        return Begun::Done(in_progress().into_response());
    };
    if endpoint == Endpoint::Operation
        && let Some(response) = replay(state, &key, &fingerprint).await
    {
        return Begun::Done(response);
    }
    Begun::Run(Some(Claim { key, fingerprint, state: state.clone(), _guard: guard }))
}

/// A scope narrowed to one caller's keys.
pub fn by(scope: String, caller: &str) -> String {
    format!("{scope} by {caller}")
}

impl Claim {
    /// For a change, which stores the record in its own transaction.
    pub fn idempotent<'a, T>(&self, render: &'a (dyn Fn(&T) -> StoredResponse + Sync)) -> Idempotent<'a, T> {
        Idempotent { key: self.key.clone(), fingerprint: self.fingerprint.clone(), render }
    }
}

/// Answers a change, whose success the service already stored under the key.
pub async fn finish_change<T>(
    claim: Option<Claim>,
    outcome: Result<T, service::Error>,
    render: &(dyn Fn(&T) -> StoredResponse + Sync),
) -> Response {
    match outcome {
        Ok(view) => into_response(render(&view)),
        Err(err) => finish_failure(claim, err).await,
    }
}

/// Answers a request that changes nothing (or nothing twice), keeping its response
/// under the key.
pub async fn finish(claim: Option<Claim>, outcome: Result<StoredResponse, service::Error>) -> Response {
    match (outcome, claim) {
        (Ok(response), Some(claim)) => remember(claim, response).await,
        (Ok(response), None) => into_response(response),
        (Err(err), claim) => finish_failure(claim, err).await,
    }
}

async fn finish_failure(claim: Option<Claim>, err: service::Error) -> Response {
    let (claim, problem) = match (claim, err) {
        // A replay, or a request on another host that committed under the same key first.
        (Some(claim), service::Error::KeyTaken) => {
            return replay(&claim.state, &claim.key, &claim.fingerprint)
                .await
                .unwrap_or_else(|| in_progress().into_response());
        }
        (Some(claim), err) => (claim, Problem::from(err)),
        (None, err) => return Problem::from(err).into_response(),
    };
    // A replayed transition usually fails before its commit (its action no longer
    // applies): the kept response comes before the refusal.
    if let Some(response) = replay(&claim.state, &claim.key, &claim.fingerprint).await {
        return response;
    }
    if !problem.is_final() {
        return problem.into_response();
    }
    let stored = StoredResponse {
        status: problem.status.as_u16(),
        headers: vec![("content-type".into(), super::problem::CONTENT_TYPE.into())],
        body: problem.body(),
    };
    remember(claim, stored).await
}

async fn remember(claim: Claim, response: StoredResponse) -> Response {
    let Claim { key, fingerprint, state, _guard } = claim;
    match state.service.remember(key.clone(), fingerprint.clone(), response.clone()).await {
        Ok(()) => into_response(response),
        Err(service::Error::KeyTaken) => {
            replay(&state, &key, &fingerprint).await.unwrap_or_else(|| in_progress().into_response())
        }
        Err(err) => Problem::from(err).into_response(),
    }
}

/// The kept response under `key`, or the refusal of a reused key; `None` if nothing
/// is kept.
async fn replay(state: &AppState, key: &IdempotencyKey, fingerprint: &str) -> Option<Response> {
    let record = match state.service.idempotency_record(key).await {
        Ok(record) => record?,
        Err(err) => return Some(Problem::from(err).into_response()),
    };
    if record.fingerprint != fingerprint {
        let problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request body",
        );
        return Some(problem.into_response());
    }
    let mut response = into_response(record.response);
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    metrics::counter!(crate::telemetry::IDEMPOTENCY_REPLAYS).increment(1);
    Some(response)
}

fn in_progress() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency-key-in-use",
        "Idempotency key in use",
        "a request with this Idempotency-Key is still being processed; retry later",
    )
}

pub fn into_response(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response =
        if stored.body.is_empty() { status.into_response() } else { (status, stored.body).into_response() };
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
