//! `/v1/tasks`: participants' late reports on tasks they answered with 202.

use super::dto::{ReportedStatus, TaskReportedDto};
use super::extract::{Body, Path};
use super::idempotency::{self, Begun, Endpoint};
use super::openapi::KeyHeader;
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::Caller;
use crate::service::{Delivered, Reported, TaskReport};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum ReportStatus {
    Succeeded,
    Failed,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    status: ReportStatus,
    /// The task's output, when it succeeded.
    #[serde(default)]
    output: serde_json::Value,
    /// Why it failed, when it failed.
    #[serde(default)]
    error: serde_json::Value,
}

/// Reports a task's result
///
/// A participant's late report of a task it answered with 202. The first report is
/// the task's result: 200 with what became of it. The same report again is 200
/// `duplicate`, another one 409, an unknown task 404.
#[utoipa::path(post, path = "/v1/tasks/{task_id}/result", tag = "tasks",
    params(("task_id" = String, Path), KeyHeader), request_body = ReportBody,
    responses(
        (status = 200, description = "What became of the report", body = TaskReportedDto),
        (status = 400, response = Problem), (status = 404, response = Problem),
        (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 422, response = Problem),
    ))]
async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request =
        body.json::<ReportBody>()?.ok_or_else(|| Problem::bad_request("a JSON body is required"))?;
    let report = match request.status {
        ReportStatus::Succeeded => TaskReport::Succeeded(request.output),
        ReportStatus::Failed => TaskReport::Failed(request.error),
    };
    let scope = format!("POST /v1/tasks/{task_id}/result");
    let claim = match idempotency::begin(&state, &headers, &caller, scope, &body.0, Endpoint::Operation).await
    {
        Begun::Done(response) => return Ok(response),
        Begun::Run(claim) => claim,
    };
    let outcome = state.service.report_task(&task_id, report).await.map(|reported| {
        let status = match reported {
            Reported::Duplicate => ReportedStatus::Duplicate,
            Reported::Taken(Delivered::Applied | Delivered::Closed) => ReportedStatus::Applied,
            Reported::Taken(Delivered::Refused(_)) => ReportedStatus::Refused,
            Reported::Taken(Delivered::Kept(_)) => ReportedStatus::Accepted,
        };
        stored_json(StatusCode::OK, &TaskReportedDto { task_id: &task_id, status }, Vec::new())
    });
    Ok(idempotency::finish(claim, outcome).await)
}
