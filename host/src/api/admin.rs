//! `/v1/admin`: migrating instances between versions, one or in bulk.

use super::dto::{InstanceDto, MigrationDto};
use super::extract::{Body, Path};
use super::idempotency::{self, Begun, Endpoint};
use super::instances::{instance_response, parse_id};
use super::openapi::KeyHeader;
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::{Caller, Migration};
use crate::service::{BulkMigration, InstanceView, MigrateInstance, Override};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchyard_guest::abi::OverrideKind;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(migrate_instance))
        .routes(routes!(cancel))
        .routes(routes!(force_complete))
        .routes(routes!(start_migration))
        .routes(routes!(show_migration))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    to_version: u32,
    /// Why: recorded in history; not blank.
    #[schema(pattern = "\\S")]
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

/// Migrates an instance
///
/// Moves one instance to another version. A dry run answers with the would-be
/// instance and writes nothing.
#[utoipa::path(post, path = "/v1/admin/instances/{id}/migrate", tag = "admin",
    params(("id" = String, Path), KeyHeader), request_body = MigrateBody,
    responses(
        (status = 200, description = "The instance after the migration (or as it would be)",
            body = InstanceDto, headers(
                ("ETag" = String, description = "The instance's revision"),
                ("Switchyard-Dry-Run" = String, description = "`true` for a dry run"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn migrate_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let request =
        body.json::<MigrateBody>()?.ok_or_else(|| Problem::bad_request("a JSON body is required"))?;
    let reason = required_reason(request.reason)?;
    let scope = idempotency::admin_scope(id, "migrate");
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &body.0, Endpoint::Operation).await
    {
        Begun::Done(response) => return Ok(response),
        Begun::Run(claim) => claim,
    };
    let migrate = MigrateInstance { id, to_version: request.to_version, reason, caller };
    if request.dry_run {
        let outcome = state.service.migrate_instance_dry_run(&migrate).await;
        let outcome = outcome.map(|view| {
            let mut response = stored_json(StatusCode::OK, &InstanceDto::new(&view), Vec::new());
            response.headers.push(("switchyard-dry-run".into(), "true".into()));
            response
        });
        return Ok(idempotency::finish(claim, outcome).await);
    }
    let render = |view: &InstanceView| instance_response(StatusCode::OK, view);
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.migrate_instance(&migrate, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    definition: String,
    from_version: u32,
    to_version: u32,
    /// Only instances in these states; when given, at least one.
    #[schema(min_items = 1)]
    states: Option<Vec<String>>,
    #[serde(default)]
    dry_run: bool,
    /// Why: recorded in history; not blank.
    #[schema(pattern = "\\S")]
    reason: String,
}

/// Starts a bulk migration
///
/// 202 and the operation, to poll at its `Location`.
#[utoipa::path(post, path = "/v1/admin/migrations", tag = "admin", params(KeyHeader), request_body = BulkBody,
    responses(
        (status = 202, description = "Started", body = MigrationDto,
            headers(("Location" = String, description = "The operation's URL"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn start_migration(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request = body.json::<BulkBody>()?.ok_or_else(|| Problem::bad_request("a JSON body is required"))?;
    let reason = required_reason(request.reason)?;
    if request.states.as_ref().is_some_and(Vec::is_empty) {
        return Err(Problem::bad_request("states, when given, must name at least one state"));
    }
    let claim = match idempotency::begin(
        &state,
        &headers,
        &caller,
        "POST /v1/admin/migrations".into(),
        &body.0,
        Endpoint::Operation,
    )
    .await
    {
        Begun::Done(response) => return Ok(response),
        Begun::Run(claim) => claim,
    };
    let bulk = BulkMigration {
        definition: request.definition,
        from_version: request.from_version,
        to_version: request.to_version,
        states: request.states,
        dry_run: request.dry_run,
        reason,
        caller,
    };
    let render = |migration: &Migration| {
        let location = format!("/v1/admin/migrations/{}", migration.id);
        stored_json(
            StatusCode::ACCEPTED,
            &MigrationDto::new(migration, &[]),
            vec![("location".into(), location)],
        )
    };
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let outcome = state.service.start_migration(bulk, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

/// Shows a bulk migration: its progress and failures
#[utoipa::path(get, path = "/v1/admin/migrations/{id}", tag = "admin", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The operation", body = MigrationDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
    ))]
async fn show_migration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = id.parse().map_err(|_| Problem::not_found(format!("no migration {id}")))?;
    let (migration, failures) = state.service.migration(&caller, id).await?;
    Ok(axum::Json(MigrationDto::new(&migration, &failures)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    /// Why: recorded in history; not blank.
    #[schema(pattern = "\\S")]
    reason: String,
}

/// Cancels an instance
///
/// An audited override; the definition may refuse it (422).
#[utoipa::path(post, path = "/v1/admin/instances/{id}/cancel", tag = "admin",
    params(("id" = String, Path), KeyHeader), request_body = OverrideBody,
    responses(
        (status = 200, description = "The instance after the override", body = InstanceDto,
            headers(("ETag" = String, description = "The instance's revision"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn cancel(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    admin_override(state, caller, id, headers, body, OverrideKind::Cancel).await
}

/// Force-completes an instance
///
/// An audited override; the definition may refuse it (422).
#[utoipa::path(post, path = "/v1/admin/instances/{id}/force-complete", tag = "admin",
    params(("id" = String, Path), KeyHeader), request_body = OverrideBody,
    responses(
        (status = 200, description = "The instance after the override", body = InstanceDto,
            headers(("ETag" = String, description = "The instance's revision"))),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn force_complete(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    admin_override(state, caller, id, headers, body, OverrideKind::ForceComplete).await
}

/// Cancels or force-completes an instance through its definition, which may refuse
/// (422 with its code and reason). History records the override, actor and reason.
async fn admin_override(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
    kind: OverrideKind,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let request = body
        .json::<OverrideBody>()?
        .ok_or_else(|| Problem::bad_request("a JSON body {\"reason\": \"...\"} is required"))?;
    let reason = required_reason(request.reason)?;
    let verb = match kind {
        OverrideKind::Cancel => "cancel",
        OverrideKind::ForceComplete => "force-complete",
    };
    let scope = idempotency::admin_scope(id, verb);
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &body.0, Endpoint::Operation).await
    {
        Begun::Done(response) => return Ok(response),
        Begun::Run(claim) => claim,
    };
    let render = |view: &InstanceView| instance_response(StatusCode::OK, view);
    let idempotent = claim.as_ref().map(|claim| claim.idempotent(&render));
    let request = Override { id, kind, reason, caller };
    let outcome = state.service.admin_override(&request, idempotent.as_ref()).await;
    Ok(idempotency::finish_change(claim, outcome, &render).await)
}

/// Admin overrides are audited: they need a reason.
fn required_reason(reason: String) -> Result<String, Problem> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Problem::bad_request("a non-empty reason is required"));
    }
    Ok(reason.to_owned())
}
