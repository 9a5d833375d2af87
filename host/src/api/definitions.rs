//! `/v1/definitions`: deploying modules and describing them.

use super::dto::{DefinitionDto, DefinitionList, VersionDto};
use super::extract::{Body, Path};
use super::idempotency::{self, Begun, Endpoint};
use super::openapi::{KeyHeader, WasmModule};
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::{Caller, DefinitionVersion, StoredResponse};
use crate::service::{DefinitionSummary, Deployed};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub fn router(max_module_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deploy).layer(DefaultBodyLimit::max(max_module_bytes)))
        .routes(routes!(list_definitions))
        .routes(routes!(show_definition))
        .routes(routes!(pin))
        .routes(routes!(show_version, delete_version))
        .routes(routes!(retire))
}

/// Deploys a module
///
/// The body is the module's bytes. 201 for a new version, 200 for the same bytes again.
#[utoipa::path(post, path = "/v1/definitions", tag = "definitions", params(KeyHeader),
    request_body(content = WasmModule, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Deployed", body = VersionDto,
            headers(("Location" = String, description = "The version's URL"))),
        (status = 200, description = "These bytes were deployed before", body = VersionDto,
            headers(("Location" = String, description = "The version's URL"))),
        (status = 400, response = Problem), (status = 409, response = Problem),
        (status = 413, response = Problem), (status = 422, response = Problem),
    ))]
async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(wasm): Body,
) -> Response {
    let scope = "POST /v1/definitions".to_owned();
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &wasm, Endpoint::Operation).await {
        Begun::Done(response) => return response,
        Begun::Run(claim) => claim,
    };
    let render = |deployed: &Deployed| {
        let status = if deployed.created { StatusCode::CREATED } else { StatusCode::OK };
        let version = &deployed.version;
        let location = format!("/v1/definitions/{}/versions/{}", version.name, version.version);
        stored_json(status, &VersionDto::new(version), vec![("location".into(), location)])
    };
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.deploy(&caller, wasm.to_vec(), idempotent.as_ref()).await;
    idempotency::finish_change(claim, outcome, &render).await
}

/// Lists the definitions
#[utoipa::path(get, path = "/v1/definitions", tag = "definitions",
    responses((status = 200, description = "Every definition", body = DefinitionList)))]
async fn list_definitions(State(state): State<AppState>) -> Result<Response, Problem> {
    let definitions = state.service.definitions().await?;
    let items = definitions.iter().map(DefinitionDto::new).collect();
    Ok(axum::Json(DefinitionList { items }).into_response())
}

/// Shows a definition and its versions
#[utoipa::path(get, path = "/v1/definitions/{name}", tag = "definitions", params(("name" = String, Path)),
    responses(
        (status = 200, description = "The definition", body = DefinitionDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn show_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let definition = state.service.definition(&name).await?;
    Ok(axum::Json(DefinitionDto::new(&definition)).into_response())
}

/// Shows a version: its manifest and transition graph
#[utoipa::path(get, path = "/v1/definitions/{name}/versions/{version}", tag = "definitions",
    params(("name" = String, Path), ("version" = u32, Path)),
    responses(
        (status = 200, description = "The version", body = VersionDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn show_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Response, Problem> {
    let version = state.service.definition_version(&name, version).await?;
    Ok(axum::Json(VersionDto::new(&version)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PinBody {
    /// `null` returns to the default: the highest non-retired version.
    version: Option<u32>,
}

/// Pins the version new instances get
#[utoipa::path(put, path = "/v1/definitions/{name}/default-version", tag = "definitions",
    params(("name" = String, Path), KeyHeader), request_body = PinBody,
    responses(
        (status = 200, description = "Pinned", body = DefinitionDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn pin(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request = body
        .json::<PinBody>()?
        .ok_or_else(|| Problem::bad_request("a JSON body {\"version\": N} is required"))?;
    let scope = format!("PUT /v1/definitions/{name}/default-version");
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &body.0, Endpoint::Operation).await
    {
        Begun::Done(response) => return Ok(response),
        Begun::Run(claim) => claim,
    };
    let render =
        |summary: &DefinitionSummary| stored_json(StatusCode::OK, &DefinitionDto::new(summary), Vec::new());
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.pin_version(&caller, &name, request.version, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

/// Retires a version
///
/// No new instances on the version; running ones carry on.
#[utoipa::path(post, path = "/v1/definitions/{name}/versions/{version}/retire", tag = "definitions",
    params(("name" = String, Path), ("version" = u32, Path), KeyHeader),
    responses(
        (status = 200, description = "Retired", body = VersionDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 422, response = Problem),
    ))]
async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    let scope = format!("POST /v1/definitions/{name}/versions/{version}/retire");
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &[], Endpoint::Operation).await {
        Begun::Done(response) => return response,
        Begun::Run(claim) => claim,
    };
    let render =
        |retired: &DefinitionVersion| stored_json(StatusCode::OK, &VersionDto::new(retired), Vec::new());
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.retire_version(&caller, &name, version, idempotent.as_ref()).await;
    idempotency::finish_change(claim, outcome, &render).await
}

/// Deletes a retired version without running instances
#[utoipa::path(delete, path = "/v1/definitions/{name}/versions/{version}", tag = "definitions",
    params(("name" = String, Path), ("version" = u32, Path), KeyHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 422, response = Problem),
    ))]
async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    let scope = format!("DELETE /v1/definitions/{name}/versions/{version}");
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &[], Endpoint::Operation).await {
        Begun::Done(response) => return response,
        Begun::Run(claim) => claim,
    };
    let render = |(): &()| StoredResponse {
        status: StatusCode::NO_CONTENT.as_u16(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.delete_version(&caller, &name, version, idempotent.as_ref()).await;
    idempotency::finish_change(claim, outcome, &render).await
}
