//! `data-pipeline`: five stages, each a job that the runner accepts with `202` and
//! reports on later; a failed stage stops the run in `FAILED` with its error and logs,
//! and `retry-stage` reruns from there (or from an earlier stage) without rerunning
//! the stages before it.

use super::{server, stub};
use crate::support::{Backend, TestServer, assert_problem};
use serde_json::{Value, json};
use switchyard_stub::{Fault, Stub};

both_backends!(
    a_run_goes_through_five_stages_each_reported_later,
    a_failed_stage_stops_the_run_and_retry_stage_reruns_from_it,
    retry_stage_may_go_back_to_an_earlier_stage_but_not_a_later_one,
    a_report_sent_twice_is_applied_once,
);

const STAGES: [&str; 5] = ["extracting", "cleansing", "transforming", "loading", "reporting"];

async fn run(server: &TestServer) -> String {
    let created =
        server.create("data-pipeline", json!({ "run_id": "R-1", "source": "s3://raw/day-1" })).await;
    assert_eq!(created["state"], "EXTRACTING");
    created["id"].as_str().expect("id").to_owned()
}

/// How often the runner ran each stage, in stage order.
fn runs(stub: &Stub) -> Vec<usize> {
    let ledger = stub.ledger();
    STAGES.iter().map(|stage| ledger.done(&format!("pipeline.{stage}")).len()).collect()
}

/// `(stage, status, runs)` of each stage in the instance's data.
fn stages(instance: &Value) -> Vec<(String, String, i64)> {
    instance["data"]["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|stage| {
            let text = |field: &str| stage[field].as_str().unwrap_or_default().to_owned();
            (text("stage"), text("status"), stage["runs"].as_i64().unwrap_or_default())
        })
        .collect()
}

fn stage(name: &str, status: &str, runs: i64) -> (String, String, i64) {
    (name.into(), status.into(), runs)
}

async fn a_run_goes_through_five_stages_each_reported_later(backend: Backend) {
    let stub = stub().await;
    let server = server(backend, &stub, &["data-pipeline"], "").await;
    let id = run(&server).await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("COMPLETED"), Some("completed")));
    assert_eq!(runs(&stub), [1, 1, 1, 1, 1]);
    assert_eq!(stages(&done), STAGES.map(|name| stage(name, "succeeded", 1)));
    for entry in done["data"]["stages"].as_array().expect("stages") {
        let name = entry["stage"].as_str().expect("stage");
        assert_eq!(
            entry["logs"],
            json!([format!("{name}: started"), format!("{name}: finished")]),
            "{entry}"
        );
    }
    let ledger = stub.ledger();
    for name in STAGES {
        let work = ledger.done(&format!("pipeline.{name}"));
        assert_eq!(
            (work[0].input["run_id"].as_str(), work[0].input["stage"].as_str()),
            (Some("R-1"), Some(name))
        );
        assert_eq!(work[0].input["source"], "s3://raw/day-1");
    }
    // The runner notes a report once the host has answered it.
    let ledger = stub.wait_for("five reports answered", |ledger| ledger.reports.len() == 5).await;
    assert!(ledger.reports.iter().all(|(_, status)| *status == 200), "{:?}", ledger.reports);
}

async fn a_failed_stage_stops_the_run_and_retry_stage_reruns_from_it(backend: Backend) {
    let stub = stub().await;
    stub.fault("pipeline.loading", Fault::FailReport);
    let server = server(backend, &stub, &["data-pipeline"], "").await;
    let id = run(&server).await;
    let failed = server.wait_until(&id, |run| run["state"] == "FAILED").await;
    assert_eq!(failed["status"], "running", "FAILED can be retried: not terminal");
    assert_eq!(failed["data"]["failed_stage"], "loading");
    assert!(failed["message"].as_str().is_some_and(|message| message.contains("LOADING")), "{failed}");
    let loading = &failed["data"]["stages"][3];
    assert_eq!(loading["status"], "failed");
    assert_eq!(loading["logs"], json!(["loading: started", "loading: error"]));
    assert_eq!(failed["allowed_actions"], json!(["retry-stage"]));

    stub.clear_fault("pipeline.loading");
    server.act(&id, "retry-stage", Value::Null).await.expect(200);
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(runs(&stub), [1, 1, 1, 2, 1], "only loading ran again, and what followed it");
    assert_eq!(
        stages(&done),
        [
            stage("extracting", "succeeded", 1),
            stage("cleansing", "succeeded", 1),
            stage("transforming", "succeeded", 1),
            stage("loading", "succeeded", 2),
            stage("reporting", "succeeded", 1),
        ]
    );
}

async fn retry_stage_may_go_back_to_an_earlier_stage_but_not_a_later_one(backend: Backend) {
    let stub = stub().await;
    stub.fault("pipeline.transforming", Fault::FailReport);
    let server = server(backend, &stub, &["data-pipeline"], "").await;
    let id = run(&server).await;
    server.wait_until(&id, |run| run["state"] == "FAILED").await;
    for (payload, code) in
        [(json!({ "stage": "loading" }), "stage_not_reached"), (json!({ "stage": "nope" }), "unknown_stage")]
    {
        let refused = server.act(&id, "retry-stage", payload).await;
        assert_eq!(assert_problem(&refused, 422, "rejected")["code"], code);
    }
    stub.clear_fault("pipeline.transforming");
    server.act(&id, "retry-stage", json!({ "stage": "CLEANSING" })).await.expect(200);
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(runs(&stub), [1, 2, 2, 1, 1], "extracting is not run again");
}

async fn a_report_sent_twice_is_applied_once(backend: Backend) {
    let stub = stub().await;
    stub.fault("pipeline.extracting", Fault::ReportTwice);
    let server = server(backend, &stub, &["data-pipeline"], "").await;
    let id = run(&server).await;
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    let ledger = stub.wait_for("both reports answered", |ledger| ledger.reports.len() == 6).await;
    let statuses: Vec<u16> = ledger.reports.iter().map(|(_, status)| *status).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 6, "the second is a 200 duplicate");
    let extracting: Vec<_> = server
        .steps(&id)
        .await
        .into_iter()
        .filter(|(kind, name, to)| kind == "effect" && name == "task.succeeded" && to == "CLEANSING")
        .collect();
    assert_eq!(extracting.len(), 1, "applied once");
    assert_eq!(runs(&stub), [1, 1, 1, 1, 1]);
}
