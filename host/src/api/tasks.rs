//! `/v1/tasks`: participants' late reports on tasks they answered with 202.

use super::extract::{Body, Path};
use super::idempotency::{self, Begun, Endpoint};
use super::problem::Problem;
use super::{AppState, stored_json};
use crate::model::Caller;
use crate::service::{Delivered, Reported, TaskReport};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/tasks/{task_id}/result", post(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum ReportStatus {
    Succeeded,
    Failed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    status: ReportStatus,
    #[serde(default)]
    output: serde_json::Value,
    #[serde(default)]
    error: serde_json::Value,
}

/// The first report is the task's result: 200 with what became of it. The same report
/// again is 200 `duplicate`, another one 409, an unknown task 404.
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
            Reported::Duplicate => "duplicate",
            Reported::Taken(Delivered::Applied | Delivered::Closed) => "applied",
            Reported::Taken(Delivered::Refused(_)) => "refused",
            Reported::Taken(Delivered::Kept(_)) => "accepted",
        };
        stored_json(StatusCode::OK, &serde_json::json!({ "task_id": task_id, "status": status }), Vec::new())
    });
    Ok(idempotency::finish(claim, outcome).await)
}
