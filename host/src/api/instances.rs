//! Instances: create, read (ETag, long-poll), list, act, history.

use super::dto::{DiagnosticsDto, HistoryDto, InstanceDto, InstancePage, PostedEventDto};
use super::extract::{Body, Path, Query};
use super::idempotency::{self, Begun, Endpoint};
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::{Caller, IdempotencyKey, InstanceFilter, InstanceId, Revision, StoredResponse};
use crate::service::{ActRequest, InstanceView, Posted, StartRequest};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/definitions/{name}/instances", post(create))
        .route("/v1/instances", get(list))
        .route("/v1/instances/{id}", get(show))
        .route("/v1/instances/{id}/actions/{action}", post(act))
        .route("/v1/instances/{id}/history", get(history))
        .route("/v1/instances/{id}/events", post(post_event).get(events))
        .route("/v1/instances/{id}/diagnostics", get(diagnostics))
}

/// The strong ETag of a revision.
pub fn etag(revision: Revision) -> String {
    format!("\"{}\"", revision.0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    input: Option<Box<RawValue>>,
    callback_url: Option<String>,
    version: Option<u32>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request =
        body.json::<CreateBody>()?.ok_or_else(|| Problem::bad_request("a JSON body is required"))?;
    if let Some(url) = &request.callback_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(Problem::bad_request("callback_url must be an http or https URL"));
    }
    let scope = idempotency::create_scope(&name);
    let claim =
        match idempotency::begin(&state, &headers, &caller, scope, &body.0, Endpoint::Transition).await {
            Begun::Done(response) => return Ok(response),
            Begun::Run(claim) => claim,
        };
    let render = |view: &InstanceView| instance_response(StatusCode::CREATED, view);
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let start = StartRequest {
        definition: name,
        version: request.version,
        input: request.input.map_or_else(|| "null".to_owned(), |input| input.get().to_owned()),
        callback_url: request.callback_url,
        actor: caller.name,
    };
    let outcome = state.service.start(start, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActBody {
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let payload = body.json::<ActBody>()?.and_then(|body| body.payload);
    let if_match = if_match(&headers)?;
    let scope = idempotency::action_scope(id, &action);
    // The same body under another If-Match is another request.
    let request =
        [headers.get(header::IF_MATCH).map_or(&b""[..], HeaderValue::as_bytes), b"\n", &body.0].concat();
    let claim =
        match idempotency::begin(&state, &headers, &caller, scope, &request, Endpoint::Transition).await {
            Begun::Done(response) => return Ok(response),
            Begun::Run(claim) => claim,
        };
    let render = |view: &InstanceView| instance_response(StatusCode::OK, view);
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let request = ActRequest {
        id,
        action,
        payload: payload.map_or_else(|| "null".to_owned(), |payload| payload.get().to_owned()),
        if_match,
        caller,
    };
    let outcome = state.service.act(request, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

/// `GET` with `If-None-Match` (304 when unchanged) and `Prefer: wait=N`, which holds
/// the request up to N seconds (or until the server starts to stop) for a change: away
/// from the ETag given, or from the revision current when the request arrived.
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let mut view = state.service.instance(id).await?;
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|value| value.to_str().ok());
    let wait = prefer_wait(&headers).map(|wait| wait.min(state.settings.max_wait));
    if let Some(wait) = wait {
        let unchanged = if_none_match.is_none_or(|tags| etag_matches(tags, view.instance.revision));
        if unchanged {
            // The wait ends early when the server starts to stop: answered now, the
            // client is not cut off at the end of the shutdown grace.
            let mut stopping = state.settings.stopping.clone();
            let give_up = async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopping.wait_for(|stopping| *stopping) => {}
                }
            };
            view = state.service.wait_for_change(id, view.instance.revision, give_up).await?;
        }
    }
    let mut response = if if_none_match.is_some_and(|tags| etag_matches(tags, view.instance.revision)) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(tag) = HeaderValue::from_str(&etag(view.instance.revision)) {
            response.headers_mut().insert(header::ETAG, tag);
        }
        response
    } else {
        idempotency::into_response(instance_response(StatusCode::OK, &view))
    };
    if let Some(wait) = wait
        && let Ok(applied) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        response.headers_mut().insert("preference-applied", applied);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    definition: Option<String>,
    version: Option<u32>,
    state: Option<String>,
    status: Option<String>,
    parent: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(State(state): State<AppState>, Query(params): Query<ListParams>) -> Result<Response, Problem> {
    let status = params
        .status
        .map(|status| status.parse())
        .transpose()
        .map_err(|_| Problem::bad_request("status must be running, completed, failed or cancelled"))?;
    let before = params
        .cursor
        .map(|cursor| cursor.parse::<InstanceId>())
        .transpose()
        .map_err(|_| Problem::bad_request("cursor is not one this server handed out"))?;
    let parent = params
        .parent
        .map(|parent| parent.parse::<InstanceId>())
        .transpose()
        .map_err(|_| Problem::bad_request("parent must be an instance id"))?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let filter = InstanceFilter {
        definition: params.definition,
        version: params.version,
        state: params.state,
        status,
        parent,
        before,
        limit,
    };
    let views = state.service.instances(&filter).await?;
    let next_cursor =
        views.last().filter(|_| views.len() == limit as usize).map(|view| view.instance.id.to_string());
    let page = InstancePage { items: views.iter().map(InstanceDto::new).collect(), next_cursor };
    Ok(axum::Json(page).into_response())
}

async fn history(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let history = state.service.history(id).await?;
    let items: Vec<_> = history.iter().map(HistoryDto::new).collect();
    Ok(axum::Json(serde_json::json!({ "instance_id": id.to_string(), "items": items })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    event_id: String,
    #[serde(rename = "type")]
    name: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

/// Records an event once per `event_id` and applies it: 200 with `status` `applied`
/// (and the instance), `refused` (with the definition's code and reason) or
/// `duplicate`; 202 `accepted` when it is applied later (the definition failed on it,
/// or an earlier event waits). A sender that retries always gets a 2xx.
async fn post_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let request = body.json::<EventBody>()?.ok_or_else(|| Problem::bad_request("a JSON body is required"))?;
    let payload = request.payload.map_or_else(|| "null".to_owned(), |payload| payload.get().to_owned());
    let event_id = request.event_id.clone();
    let posted = state.service.post_event(id, request.event_id, request.name, payload, &caller).await?;
    let body = match &posted {
        Posted::Applied(view) => {
            serde_json::json!({ "event_id": event_id, "status": "applied", "instance": InstanceDto::new(view) })
        }
        Posted::Refused { code, reason } => {
            serde_json::json!({ "event_id": event_id, "status": "refused", "code": code, "reason": reason })
        }
        Posted::Duplicate(kept) => serde_json::json!({
            "event_id": event_id,
            "status": "duplicate",
            "received": PostedEventDto::new(kept),
        }),
        Posted::Accepted(kept) => {
            let event = PostedEventDto::new(kept);
            return Ok((
                StatusCode::ACCEPTED,
                axum::Json(
                    serde_json::json!({ "event_id": event_id, "status": "accepted", "received": event }),
                ),
            )
                .into_response());
        }
    };
    Ok(axum::Json(body).into_response())
}

async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let events = state.service.posted_events(id).await?;
    let items: Vec<_> = events.iter().map(PostedEventDto::new).collect();
    Ok(axum::Json(serde_json::json!({ "instance_id": id.to_string(), "items": items })).into_response())
}

/// Why an instance stands where it does: its effects (open and closed, with attempts,
/// next attempt and last error), timers, children, events, and its recent calls.
async fn diagnostics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let diagnostics = state.service.diagnostics(&caller, id).await?;
    // The keys of its actions and admin operations, and of its creation.
    let prefixes = [idempotency::action_scope(id, ""), idempotency::admin_scope(id, "")];
    let created = diagnostics.created_with_key.as_ref().map(|(creator, key)| IdempotencyKey {
        scope: idempotency::by(idempotency::create_scope(&diagnostics.instance.instance.definition), creator),
        key: key.clone(),
    });
    let records = state.service.idempotency_records_under(&prefixes, created.as_ref()).await?;
    Ok(axum::Json(DiagnosticsDto::new(&diagnostics, &records)).into_response())
}

pub(super) fn instance_response(status: StatusCode, view: &InstanceView) -> StoredResponse {
    let instance = &view.instance;
    let mut headers = vec![("etag".to_owned(), etag(instance.revision))];
    if status == StatusCode::CREATED {
        headers.push(("location".into(), format!("/v1/instances/{}", instance.id)));
    }
    stored_json(status, &InstanceDto::new(view), headers)
}

/// A malformed id names no instance: 404, like any unknown id.
pub(super) fn parse_id(id: &str) -> Result<InstanceId, Problem> {
    id.parse().map_err(|_| Problem::not_found(format!("no instance {id}")))
}

/// `If-Match`: `*` or one ETag this server issued. Anything else can never match.
fn if_match(headers: &HeaderMap) -> Result<Option<Revision>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|value| value.strip_suffix('"'))
        .and_then(|revision| revision.parse().ok())
        .map(|revision| Some(Revision(revision)))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                format!("If-Match {value:?} is not an ETag of this instance"),
            )
        })
}

/// Whether an `If-None-Match` list names `revision` (weak or strong) or is `*`.
fn etag_matches(tags: &str, revision: Revision) -> bool {
    let current = etag(revision);
    tags.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
}

/// `Prefer: wait=N` (RFC 7240), possibly among other preferences.
pub(super) fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .find_map(|preference| preference.trim().strip_prefix("wait=")?.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
