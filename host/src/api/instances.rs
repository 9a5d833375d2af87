//! Instances: create, read (ETag, long-poll), list, act, history.

use super::dto::{
    DiagnosticsDto, EventOutcomeDto, HistoryDto, HistoryPage, InstanceDto, InstancePage, PostedEventDto,
    PostedEventList,
};
use super::extract::{Body, Path, Query};
use super::idempotency::{self, Begun, Endpoint};
use super::openapi::{IfMatchHeader, LongPollHeaders, RequiredKeyHeader};
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::{Caller, IdempotencyKey, InstanceFilter, InstanceId, Revision, StoredResponse};
use crate::service::{ActRequest, InstanceView, Posted, StartRequest};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list_instances))
        .routes(routes!(show_instance))
        .routes(routes!(act))
        .routes(routes!(history))
        .routes(routes!(post_event, events))
        .routes(routes!(diagnostics))
}

/// The strong ETag of a revision.
pub fn etag(revision: Revision) -> String {
    format!("\"{}\"", revision.0)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The definition's input, as it expects it.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    input: Option<Box<RawValue>>,
    /// Where the instance's terminal state is sent (http or https).
    #[schema(pattern = "^https?://")]
    callback_url: Option<String>,
    /// The version to start on; by default the one new instances get.
    version: Option<u32>,
}

/// Starts an instance
#[utoipa::path(post, path = "/v1/definitions/{name}/instances", tag = "instances",
    params(("name" = String, Path), RequiredKeyHeader), request_body = CreateBody,
    responses(
        (status = 201, description = "Started", body = InstanceDto, headers(
            ("Location" = String, description = "The instance's URL"),
            ("ETag" = String, description = "The instance's revision"),
            ("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActBody {
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    payload: Option<Box<RawValue>>,
}

/// Runs an action
///
/// An admin-only action needs the admin role.
#[utoipa::path(post, path = "/v1/instances/{id}/actions/{action}", tag = "instances",
    params(("id" = String, Path), ("action" = String, Path), RequiredKeyHeader, IfMatchHeader),
    request_body(content = Option<ActBody>, description = "Optional: the action's payload"),
    responses(
        (status = 200, description = "The instance after the transition", body = InstanceDto, headers(
            ("ETag" = String, description = "The instance's revision"),
            ("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 412, response = Problem),
        (status = 413, response = Problem), (status = 422, response = Problem),
    ))]
async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    // No body, or `null`: no payload.
    let payload = body.json::<Option<ActBody>>()?.flatten().and_then(|body| body.payload);
    let scope = idempotency::action_scope(id, &action);
    // The same body under another If-Match is another request.
    let request =
        [headers.get(header::IF_MATCH).map_or(&b""[..], HeaderValue::as_bytes), b"\n", &body.0].concat();
    let claim =
        match idempotency::begin(&state, &headers, &caller, scope, &request, Endpoint::Transition).await {
            Begun::Done(response) => return Ok(response),
            Begun::Run(claim) => claim,
        };
    // After the key's checks: a request without a valid key is refused for that first.
    let if_match = if_match(&headers)?;
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

/// Shows an instance
///
/// `GET` with `If-None-Match` (304 when unchanged) and `Prefer: wait=N`, which holds
/// the request up to N seconds (or until the server starts to stop) for a change: away
/// from the ETag given, or from the revision current when the request arrived.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path), LongPollHeaders),
    responses(
        (status = 200, description = "The instance", body = InstanceDto, headers(
            ("ETag" = String, description = "The instance's revision"),
            ("Preference-Applied" = String, description = "`wait=N` when the request long-polled"))),
        (status = 304, description = "Unchanged from the `If-None-Match` ETag"),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn show_instance(
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    definition: Option<String>,
    version: Option<u32>,
    state: Option<String>,
    #[param(pattern = "^(running|completed|failed|cancelled)$")]
    status: Option<String>,
    /// An instance id: its children.
    #[param(format = Uuid)]
    parent: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
}

/// Lists instances, newest first
#[utoipa::path(get, path = "/v1/instances", tag = "instances", params(ListParams),
    responses(
        (status = 200, description = "A page of instances", body = InstancePage),
        (status = 400, response = Problem),
    ))]
async fn list_instances(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
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

/// Shows an instance's history
#[utoipa::path(get, path = "/v1/instances/{id}/history", tag = "instances", params(("id" = String, Path)),
    responses(
        (status = 200, description = "Every transition, oldest first", body = HistoryPage),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn history(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let history = state.service.history(id).await?;
    let items = history.iter().map(HistoryDto::new).collect();
    Ok(axum::Json(HistoryPage { instance_id: id.to_string(), items }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EventBody {
    /// The sender's id of the event: a repeat with the same id is a duplicate.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    event_id: String,
    /// The event's type; not one of the host's own (`task.succeeded`, ...).
    #[serde(rename = "type")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    payload: Option<Box<RawValue>>,
}

/// Posts an event
///
/// Records an event once per `event_id` and applies it: 200 with `status` `applied`
/// (and the instance), `refused` (with the definition's code and reason) or
/// `duplicate`; 202 `accepted` when it is applied later (the definition failed on it,
/// or an earlier event waits). A sender that retries always gets a 2xx.
#[utoipa::path(post, path = "/v1/instances/{id}/events", tag = "instances", params(("id" = String, Path)),
    request_body = EventBody,
    responses(
        (status = 200, description = "Applied, refused or a duplicate", body = EventOutcomeDto),
        (status = 202, description = "Accepted, to be applied later", body = EventOutcomeDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
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
    let status = if matches!(posted, Posted::Accepted(_)) { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, axum::Json(EventOutcomeDto::new(&event_id, &posted))).into_response())
}

/// Lists the events posted to an instance
#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "instances", params(("id" = String, Path)),
    responses(
        (status = 200, description = "Every event received, with what became of it", body = PostedEventList),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let events = state.service.posted_events(id).await?;
    let items = events.iter().map(PostedEventDto::new).collect();
    Ok(axum::Json(PostedEventList { instance_id: id.to_string(), items }).into_response())
}

/// Shows an instance's diagnostics
///
/// Why an instance stands where it does: its effects (open and closed, with attempts,
/// next attempt and last error), timers, children, events, and its recent calls.
#[utoipa::path(get, path = "/v1/instances/{id}/diagnostics", tag = "instances", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The instance's diagnostics", body = DiagnosticsDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
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
