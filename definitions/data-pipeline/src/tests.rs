use super::*;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

const SOURCE: &str = "s3://raw/2026-05-09";

fn start() -> Machine<DataPipeline> {
    Machine::start(json!({ "run_id": "R-7", "source": SOURCE })).expect("a run starts")
}

/// The one task the last transition asked for.
#[derive(Debug)]
struct Asked {
    key: String,
    name: String,
    input: Value,
    report_timeout_ms: Option<u64>,
}

fn asked(machine: &Machine<DataPipeline>) -> Asked {
    match machine.effects() {
        [Effect::Task(task)] => Asked {
            key: task.key.clone(),
            name: task.name.clone(),
            input: serde_json::from_str(&task.input).expect("task input is JSON"),
            report_timeout_ms: task.report_timeout_ms,
        },
        other => panic!("expected one task, got {other:?}"),
    }
}

/// What the job runner of `stage` reports on success.
fn report(stage: Stage) -> Value {
    json!({ "logs": [format!("{} done", stage.name())], "rows": stage.number() * 100 })
}

/// `report(stage)` without its logs: what the stage's record and the next stage keep.
fn output(stage: Stage) -> Value {
    json!({ "rows": stage.number() * 100 })
}

/// Reports success for the task the last transition asked for; returns its key.
fn succeed(machine: &mut Machine<DataPipeline>, stage: Stage) -> String {
    let task = asked(machine);
    assert_eq!(task.name, stage.task(), "{task:?}");
    machine.task_succeeded(&task.key, report(stage)).expect("the result is taken");
    task.key
}

/// A run in `stage`'s state, every stage before it succeeded once.
fn run_to(stage: Stage) -> Machine<DataPipeline> {
    let mut machine = start();
    for earlier in Stage::ALL.into_iter().filter(|earlier| *earlier < stage) {
        succeed(&mut machine, earlier);
    }
    assert_eq!(machine.state(), stage.state());
    machine
}

/// The job of the current stage reports `{"status": "failed", "error": error}`.
fn fail_report(machine: &mut Machine<DataPipeline>, error: Value) -> Result<(), Refusal> {
    let key = asked(machine).key;
    let error =
        TaskError { kind: FailureKind::Http, status: None, body: Some(error.to_string()), attempts: 1 };
    machine.deliver(Received::TaskFailed { key, error })
}

/// A run that failed at `stage` with a report carrying logs and a reason.
fn failed_at(stage: Stage) -> Machine<DataPipeline> {
    let mut machine = run_to(stage);
    let logs = json!(["loaded 10 rows", "constraint violated on row 11"]);
    let error = json!({ "logs": logs, "reason": "constraint violated" });
    fail_report(&mut machine, error).expect("the failure is taken");
    assert_eq!(machine.state(), FAILED);
    machine
}

fn runs(machine: &Machine<DataPipeline>) -> Vec<u32> {
    machine.data().stages.iter().map(|record| record.runs).collect()
}

fn statuses(machine: &Machine<DataPipeline>) -> Vec<StageStatus> {
    machine.data().stages.iter().map(|record| record.status).collect()
}

fn record(machine: &Machine<DataPipeline>, stage: Stage) -> StageRecord {
    machine.data().stages.into_iter().find(|record| record.stage == stage).expect("every stage has a record")
}

/// Drives the run to its end, succeeding each stage; returns the keys of the tasks run.
fn finish(machine: &mut Machine<DataPipeline>) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(stage) = Stage::of_state(machine.state()) {
        keys.push(succeed(machine, stage));
    }
    keys
}

fn rejected(result: Result<(), Refusal>, code: &str) -> Rejection {
    match result {
        Err(Refusal::Rejected(rejection)) if rejection.code == code => rejection,
        other => panic!("expected a rejection {code}, got {other:?}"),
    }
}

/// Calls `on_event` directly, as the host would if it delivered `event` in the current
/// state: for events the harness refuses before they reach the definition.
fn on_event_directly(
    machine: &Machine<DataPipeline>,
    event: Received,
) -> Result<Transition<Data>, Rejection> {
    let ctx = Context {
        instance_id: machine.instance_id().into(),
        definition_version: 1,
        now_ms: machine.now_ms(),
        seed: 0,
    };
    DataPipeline::on_event(&ctx, EventCall { state: machine.state().into(), data: machine.data(), event })
}

#[test]
fn manifest_declares_the_pipeline() {
    let manifest = DataPipeline::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!((manifest.name.as_str(), manifest.version), ("data-pipeline", 1));
    assert_eq!(manifest.initial_state, EXTRACTING);
    let states: Vec<_> = manifest.states.iter().map(|state| (state.name.as_str(), state.terminal)).collect();
    assert_eq!(
        states,
        [
            (EXTRACTING, None),
            (CLEANSING, None),
            (TRANSFORMING, None),
            (LOADING, None),
            (REPORTING, None),
            (COMPLETED, Some(TerminalStatus::Completed)),
            (FAILED, None),
            (CANCELLED, Some(TerminalStatus::Cancelled)),
        ]
    );
    assert!(manifest.states.iter().all(|state| !state.description.is_empty()));
    let [action] = manifest.actions.as_slice() else { panic!("one action: {:?}", manifest.actions) };
    assert_eq!((action.name.as_str(), action.admin_only), (RETRY_STAGE, false));
    assert_eq!(action.from, [FAILED]);
    assert_eq!(action.to, [EXTRACTING, CLEANSING, TRANSFORMING, LOADING, REPORTING]);
}

#[test]
fn the_happy_path_runs_the_five_stages_in_order() {
    let mut run = start();
    for stage in Stage::ALL {
        assert_eq!(run.state(), stage.state());
        assert_eq!(run.status(), None);
        let message = format!("{} (stage {} of 5)", stage.label(), stage.number());
        assert_eq!(run.message(), Some(message.as_str()));
        let previous = match stage.previous() {
            None => Value::Null,
            Some(previous) => json!({ "stage": previous.name(), "output": output(previous) }),
        };
        let task = asked(&run);
        assert_eq!(task.key, format!("{}-1", stage.name()));
        assert_eq!(task.name, format!("pipeline.{}", stage.name()));
        assert_eq!(
            task.input,
            json!({
                "run_id": "R-7", "source": SOURCE, "stage": stage.name(), "run": 1, "previous": previous,
            })
        );
        assert_eq!(task.report_timeout_ms, Some(60 * 60 * 1000));
        assert_eq!(record(&run, stage).status, StageStatus::Running);
        assert_eq!(run.open_effects().len(), 1, "one job at a time");
        succeed(&mut run, stage);
    }
    assert_eq!(run.state(), COMPLETED);
    assert_eq!(run.status(), Some(TerminalStatus::Completed));
    assert_eq!(run.message(), Some("Completed: all 5 stages succeeded"));
    assert!(run.effects().is_empty() && run.open_effects().is_empty());
    let data = run.data();
    assert_eq!((data.failed_stage, &data.error, data.retries.len()), (None, &None, 0));
    for (record, stage) in data.stages.iter().zip(Stage::ALL) {
        assert_eq!((record.stage, record.status, record.runs), (stage, StageStatus::Succeeded, 1));
        assert_eq!(record.logs, json!([format!("{} done", stage.name())]));
        assert_eq!(record.output, output(stage));
        assert_eq!(record.error, None);
        assert!(record.started_at_ms.is_some() && record.finished_at_ms.is_some(), "{record:?}");
    }
}

#[test]
fn the_data_document_has_the_documented_shape() {
    let run = failed_at(Stage::Cleansing);
    let document: Value = serde_json::from_str(run.data_json()).expect("data is JSON");
    let error = json!({
        "kind": "http",
        "status": null,
        "attempts": 1,
        "body": { "reason": "constraint violated" },
        "summary": "the job reported a failure: constraint violated",
    });
    assert_eq!(document["run_id"], "R-7");
    assert_eq!(document["source"], SOURCE);
    assert_eq!(document["failed_stage"], "cleansing");
    assert_eq!(document["error"], error);
    assert_eq!(document["retries"], json!([]));
    let names: Vec<_> =
        document["stages"].as_array().expect("stages").iter().map(|s| s["stage"].clone()).collect();
    assert_eq!(
        names,
        [
            json!("extracting"),
            json!("cleansing"),
            json!("transforming"),
            json!("loading"),
            json!("reporting")
        ]
    );
    assert_eq!(
        document["stages"][1],
        json!({
            "stage": "cleansing",
            "status": "failed",
            "runs": 1,
            "logs": ["loaded 10 rows", "constraint violated on row 11"],
            "output": null,
            "error": error,
            "started_at_ms": testing::DEFAULT_NOW_MS + 1_000,
            "finished_at_ms": testing::DEFAULT_NOW_MS + 2_000,
        })
    );
    assert_eq!(document["stages"][0]["status"], "succeeded");
    assert_eq!(
        document["stages"][2],
        json!({
            "stage": "transforming", "status": "pending", "runs": 0, "logs": null, "output": null,
            "error": null, "started_at_ms": null, "finished_at_ms": null,
        })
    );
}

#[test]
fn a_failed_stage_stops_the_run_in_failed_with_its_error_and_logs() {
    let run = failed_at(Stage::Loading);
    assert_eq!(run.status(), None, "FAILED is not terminal");
    assert_eq!(run.allowed_actions(), [RETRY_STAGE]);
    assert_eq!(run.message(), Some("Failed at LOADING: the job reported a failure: constraint violated"));
    assert!(run.effects().is_empty() && run.open_effects().is_empty());
    let data = run.data();
    assert_eq!(data.failed_stage, Some(Stage::Loading));
    let error = data.error.clone().expect("the error is kept");
    assert_eq!((error.kind, error.status, error.attempts), (FailureKind::Http, None, 1));
    assert_eq!(error.body, json!({ "reason": "constraint violated" }), "the logs are taken out of the body");
    let loading = record(&run, Stage::Loading);
    assert_eq!(loading.status, StageStatus::Failed);
    assert_eq!(loading.logs, json!(["loaded 10 rows", "constraint violated on row 11"]));
    assert_eq!(loading.error, Some(error));
    assert_eq!(
        statuses(&run),
        [
            StageStatus::Succeeded,
            StageStatus::Succeeded,
            StageStatus::Succeeded,
            StageStatus::Failed,
            StageStatus::Pending
        ]
    );
    assert_eq!(runs(&run), [1, 1, 1, 1, 0]);
}

#[test]
fn failure_kinds_are_recorded() {
    let cases = [
        (
            TaskError { kind: FailureKind::Timeout, status: None, body: None, attempts: 1 },
            Value::Null,
            "the job timed out: no answer or report in time, after 1 attempt",
        ),
        (
            TaskError {
                kind: FailureKind::Exhausted,
                status: Some(503),
                body: Some("Service Unavailable".into()),
                attempts: 5,
            },
            json!("Service Unavailable"),
            "the job runner kept failing (last HTTP 503), after 5 attempts: Service Unavailable",
        ),
        (
            TaskError {
                kind: FailureKind::Unreachable,
                status: None,
                body: Some("connection refused".into()),
                attempts: 5,
            },
            json!("connection refused"),
            "the job runner was unreachable, after 5 attempts: connection refused",
        ),
        (
            TaskError { kind: FailureKind::Unbound, status: None, body: None, attempts: 0 },
            Value::Null,
            "no job runner is bound to pipeline.transforming",
        ),
        (
            TaskError {
                kind: FailureKind::Http,
                status: Some(422),
                body: Some(r#"{"message":"unknown source format","logs":"parse error"}"#.into()),
                attempts: 1,
            },
            json!({ "message": "unknown source format" }),
            "the job runner refused the job (HTTP 422): unknown source format",
        ),
        (
            TaskError {
                kind: FailureKind::Http,
                status: None,
                body: Some("\"disk full\"".into()),
                attempts: 1,
            },
            json!("disk full"),
            "the job reported a failure: disk full",
        ),
    ];
    for (error, body, summary) in cases {
        let mut run = run_to(Stage::Transforming);
        let key = asked(&run).key;
        run.deliver(Received::TaskFailed { key, error: error.clone() }).expect("the failure is taken");
        assert_eq!(run.state(), FAILED, "{error:?}");
        let message = format!("Failed at TRANSFORMING: {summary}");
        assert_eq!(run.message(), Some(message.as_str()));
        let data = run.data();
        let recorded = data.error.clone().expect("the error is kept");
        assert_eq!(
            recorded,
            StageError {
                kind: error.kind,
                status: error.status,
                attempts: error.attempts,
                body,
                summary: summary.into()
            }
        );
        assert_eq!(data.failed_stage, Some(Stage::Transforming));
        let transforming = record(&run, Stage::Transforming);
        assert_eq!(transforming.error, Some(recorded));
        let logs = if error.status == Some(422) { json!("parse error") } else { Value::Null };
        assert_eq!(transforming.logs, logs);
    }
}

#[test]
fn a_long_reason_is_cut_in_the_summary() {
    let mut run = start();
    fail_report(&mut run, json!({ "reason": "x".repeat(500) })).expect("taken");
    let summary = run.data().error.expect("error").summary;
    assert_eq!(summary, format!("the job reported a failure: {}…", "x".repeat(MAX_DETAIL_CHARS)));
}

#[test]
fn retry_stage_by_default_reruns_the_failed_stage_and_goes_on() {
    for payload in [Value::Null, json!({}), json!({ "stage": null })] {
        let mut run = failed_at(Stage::Loading);
        let before: Vec<_> = run.data().stages[..3].to_vec();
        run.act(RETRY_STAGE, payload.clone()).expect("retry-stage is taken");
        assert_eq!(run.state(), LOADING, "{payload}");
        assert_eq!(run.message(), Some("Loading (stage 4 of 5, run 2)"));
        let task = asked(&run);
        assert_eq!((task.key.as_str(), task.name.as_str()), ("loading-2", "pipeline.loading"));
        assert_eq!(
            task.input,
            json!({
                "run_id": "R-7", "source": SOURCE, "stage": "loading", "run": 2,
                "previous": { "stage": "transforming", "output": output(Stage::Transforming) },
            })
        );
        let data = run.data();
        assert_eq!((data.failed_stage, &data.error), (None, &None));
        let [retry] = data.retries.as_slice() else { panic!("one retry: {:?}", data.retries) };
        assert_eq!((retry.stage, retry.failed_stage), (Stage::Loading, Stage::Loading));
        assert_eq!(retry.logs, json!(["loaded 10 rows", "constraint violated on row 11"]));
        assert!(retry.error.as_ref().is_some_and(|error| error.summary.contains("constraint violated")));
        let loading = record(&run, Stage::Loading);
        assert_eq!(
            (loading.status, loading.runs, &loading.logs, &loading.error),
            (StageStatus::Running, 2, &Value::Null, &None)
        );

        assert_eq!(finish(&mut run), ["loading-2", "reporting-1"], "only loading and reporting ran again");
        assert_eq!(run.state(), COMPLETED);
        assert_eq!(runs(&run), [1, 1, 1, 2, 1], "the stages before loading were not rerun");
        assert_eq!(run.data().stages[..3], before[..], "their records stay as they were");
        assert!(statuses(&run).iter().all(|status| *status == StageStatus::Succeeded));
    }
}

#[test]
fn retry_stage_may_go_back_to_an_earlier_stage() {
    for name in ["cleansing", "CLEANSING", " Cleansing "] {
        let mut run = failed_at(Stage::Loading);
        let extracting = record(&run, Stage::Extracting);
        run.act(RETRY_STAGE, json!({ "stage": name })).expect("retry-stage is taken");
        assert_eq!(run.state(), CLEANSING, "{name:?}");
        assert_eq!(run.message(), Some("Cleansing (stage 2 of 5, run 2)"));
        let task = asked(&run);
        assert_eq!(
            task.input,
            json!({
                "run_id": "R-7", "source": SOURCE, "stage": "cleansing", "run": 2,
                "previous": { "stage": "extracting", "output": output(Stage::Extracting) },
            })
        );
        assert_eq!(
            statuses(&run),
            [
                StageStatus::Succeeded,
                StageStatus::Running,
                StageStatus::Pending,
                StageStatus::Pending,
                StageStatus::Pending
            ],
            "the stages from cleansing on start a new pass"
        );
        assert_eq!(runs(&run), [1, 2, 1, 1, 0], "runs are counted over the whole run");
        let loading = record(&run, Stage::Loading);
        assert_eq!((&loading.logs, &loading.error, &loading.output), (&Value::Null, &None, &Value::Null));
        let retry = &run.data().retries[0];
        assert_eq!((retry.stage, retry.failed_stage), (Stage::Cleansing, Stage::Loading));

        assert_eq!(finish(&mut run), ["cleansing-2", "transforming-2", "loading-2", "reporting-1"]);
        assert_eq!(run.state(), COMPLETED);
        assert_eq!(runs(&run), [1, 2, 2, 2, 1]);
        assert_eq!(record(&run, Stage::Extracting), extracting, "extracting was not rerun");
    }
}

#[test]
fn retry_stage_reruns_the_first_stage_and_counts_every_retry() {
    let mut run = start();
    run.task_failed("extracting-1", FailureKind::Timeout).expect("taken");
    run.act(RETRY_STAGE, json!({ "stage": "EXTRACTING" })).expect("retry");
    assert_eq!(asked(&run).key, "extracting-2");
    assert_eq!(asked(&run).input["previous"], Value::Null);
    run.task_failed("extracting-2", FailureKind::Exhausted).expect("taken");
    run.act(RETRY_STAGE, Value::Null).expect("retry");
    assert_eq!(asked(&run).key, "extracting-3");
    assert_eq!(run.message(), Some("Extracting (stage 1 of 5, run 3)"));
    let retries = run.data().retries;
    let kinds: Vec<_> = retries.iter().map(|retry| retry.error.as_ref().map(|error| error.kind)).collect();
    assert_eq!(kinds, [Some(FailureKind::Timeout), Some(FailureKind::Exhausted)]);
    assert!(retries.windows(2).all(|pair| pair[0].at_ms < pair[1].at_ms));
    assert_eq!(finish(&mut run).len(), 5);
    assert_eq!(runs(&run), [3, 1, 1, 1, 1]);
}

#[test]
fn retry_stage_refuses_a_stage_after_the_failed_one() {
    for name in ["reporting", "REPORTING"] {
        let mut run = failed_at(Stage::Loading);
        let data = run.data();
        let rejection = rejected(run.act(RETRY_STAGE, json!({ "stage": name })), "stage_not_reached");
        assert!(
            rejection.reason.contains("REPORTING") && rejection.reason.contains("LOADING"),
            "{rejection:?}"
        );
        assert_eq!((run.state(), run.data()), (FAILED, data), "nothing changed");
    }
    let mut run = failed_at(Stage::Extracting);
    rejected(run.act(RETRY_STAGE, json!({ "stage": "cleansing" })), "stage_not_reached");
}

#[test]
fn retry_stage_refuses_an_unknown_stage_and_a_bad_payload() {
    let mut run = failed_at(Stage::Transforming);
    let data = run.data();
    for name in ["publishing", "", "pipeline.loading", "FAILED", "COMPLETED"] {
        let rejection = rejected(run.act(RETRY_STAGE, json!({ "stage": name })), "unknown_stage");
        assert!(rejection.reason.contains("extracting, cleansing"), "{rejection:?}");
    }
    for payload in
        [json!("loading"), json!({ "stage": 4 }), json!({ "stgae": "loading" }), json!([1]), json!(true)]
    {
        rejected(run.act(RETRY_STAGE, payload), "invalid_payload");
    }
    assert_eq!((run.state(), run.data()), (FAILED, data), "nothing changed");
}

#[test]
fn retry_stage_is_legal_only_in_failed() {
    let mut run = run_to(Stage::Cleansing);
    let not_allowed =
        Err(Refusal::NotAllowed { current_state: CLEANSING.into(), allowed_actions: Vec::new() });
    assert_eq!(run.act(RETRY_STAGE, Value::Null), not_allowed);
    assert_eq!(run.act("restart", Value::Null), Err(Refusal::UnknownAction("restart".into())));
    finish(&mut run);
    let not_allowed =
        Err(Refusal::NotAllowed { current_state: COMPLETED.into(), allowed_actions: Vec::new() });
    assert_eq!(run.act(RETRY_STAGE, json!({ "stage": "loading" })), not_allowed);
}

#[test]
fn a_late_result_of_an_earlier_run_is_refused() {
    let mut run = run_to(Stage::Cleansing);
    run.task_failed("cleansing-1", FailureKind::Timeout).expect("taken");
    run.act(RETRY_STAGE, Value::Null).expect("retry");
    assert_eq!(asked(&run).key, "cleansing-2");
    let data = run.data();

    // The host closed cleansing-1 with its timeout: a late report finds nothing open.
    let late = run.task_succeeded("cleansing-1", report(Stage::Cleansing));
    assert_eq!(late, Err(Refusal::NoOpenEffect("cleansing-1".into())));
    // And the definition itself does not take it for the current run.
    for event in [
        Received::TaskSucceeded { key: "cleansing-1".into(), output: report(Stage::Cleansing) },
        Received::TaskFailed {
            key: "cleansing-1".into(),
            error: TaskError { kind: FailureKind::Http, status: None, body: None, attempts: 1 },
        },
    ] {
        let rejection = on_event_directly(&run, event).expect_err("refused");
        assert_eq!(rejection.code, "unexpected_event");
        assert!(
            rejection.reason.contains("cleansing-2") && rejection.reason.contains("earlier run"),
            "{rejection:?}"
        );
    }
    for key in ["extracting-1", "loading-1", "cleansing-3"] {
        let event = Received::TaskSucceeded { key: key.into(), output: Value::Null };
        let rejection = on_event_directly(&run, event).expect_err("refused");
        assert_eq!(rejection.code, "unexpected_event");
        assert!(!rejection.reason.contains("earlier run"), "{key} is no earlier run: {rejection:?}");
    }
    assert_eq!((run.state(), run.data()), (CLEANSING, data), "nothing changed");
    assert_eq!(finish(&mut run), ["cleansing-2", "transforming-1", "loading-1", "reporting-1"]);
}

#[test]
fn events_that_do_not_fit_are_refused() {
    let mut run = start();
    let external = Received::External { name: "pipeline.poke".into(), id: "e1".into(), payload: json!({}) };
    rejected(run.deliver(external.clone()), "unexpected_event");
    assert_eq!(run.timer_fired("extracting-1"), Err(Refusal::NoOpenEffect("extracting-1".into())));
    assert_eq!(
        run.task_succeeded("cleansing-1", Value::Null),
        Err(Refusal::NoOpenEffect("cleansing-1".into()))
    );
    assert_eq!(run.state(), EXTRACTING);

    let mut run = failed_at(Stage::Extracting);
    rejected(run.deliver(external), "unexpected_event");
    let result = Received::TaskSucceeded { key: "extracting-1".into(), output: Value::Null };
    assert_eq!(
        on_event_directly(&run, result).map_err(|r| r.code).map(|_| ()),
        Err("unexpected_event".into())
    );
}

#[test]
fn an_output_without_logs_is_kept_as_it_is() {
    let mut run = start();
    run.task_succeeded("extracting-1", Value::Null).expect("an empty answer is taken");
    let extracting = record(&run, Stage::Extracting);
    assert_eq!(
        (extracting.status, &extracting.logs, &extracting.output),
        (StageStatus::Succeeded, &Value::Null, &Value::Null)
    );
    assert_eq!(asked(&run).input["previous"], json!({ "stage": "extracting", "output": null }));
    run.task_succeeded("cleansing-1", json!("ok")).expect("a string answer is taken");
    assert_eq!(record(&run, Stage::Cleansing).output, json!("ok"));
}

#[test]
fn an_admin_may_cancel_a_running_or_failed_run() {
    let mut run = run_to(Stage::Transforming);
    run.admin_override(OverrideKind::Cancel, "wrong source").expect("cancelled");
    assert_eq!((run.state(), run.status()), (CANCELLED, Some(TerminalStatus::Cancelled)));
    assert_eq!(run.message(), Some("cancelled by an admin: wrong source"));
    assert_eq!(record(&run, Stage::Transforming).status, StageStatus::Cancelled);
    assert_eq!(record(&run, Stage::Cleansing).status, StageStatus::Succeeded);
    assert_eq!(run.task_succeeded("transforming-1", report(Stage::Transforming)), Err(Refusal::Finished));

    let mut run = failed_at(Stage::Loading);
    run.admin_override(OverrideKind::Cancel, "giving up").expect("cancelled");
    assert_eq!(run.status(), Some(TerminalStatus::Cancelled));
    let data = run.data();
    assert_eq!(data.failed_stage, Some(Stage::Loading), "the final data says what failed");
    assert!(data.error.is_some());
    assert_eq!(record(&run, Stage::Loading).status, StageStatus::Failed);
}

#[test]
fn force_complete_is_taken_only_once_the_data_is_loaded() {
    let mut run = run_to(Stage::Reporting);
    run.admin_override(OverrideKind::ForceComplete, "report not needed").expect("completed");
    assert_eq!((run.state(), run.status()), (COMPLETED, Some(TerminalStatus::Completed)));
    assert_eq!(run.message(), Some("completed by an admin: report not needed"));
    assert_eq!(record(&run, Stage::Reporting).status, StageStatus::Skipped);

    let mut run = failed_at(Stage::Reporting);
    run.admin_override(OverrideKind::ForceComplete, "report sent by hand").expect("completed");
    assert_eq!(run.status(), Some(TerminalStatus::Completed));
    assert_eq!(record(&run, Stage::Reporting).status, StageStatus::Failed, "the report did fail");
    assert_eq!(run.data().failed_stage, Some(Stage::Reporting));

    for mut run in [start(), run_to(Stage::Loading), failed_at(Stage::Loading), failed_at(Stage::Extracting)]
    {
        let (state, data) = (run.state().to_owned(), run.data());
        let rejection = rejected(run.admin_override(OverrideKind::ForceComplete, "done"), "not_loaded");
        assert!(rejection.reason.contains(&state), "{rejection:?}");
        assert_eq!((run.state(), run.data()), (state.as_str(), data), "nothing changed");
    }

    // After a retry from an earlier stage the data is not loaded any more.
    let mut run = failed_at(Stage::Reporting);
    run.act(RETRY_STAGE, json!({ "stage": "loading" })).expect("retry");
    rejected(run.admin_override(OverrideKind::ForceComplete, "done"), "not_loaded");
}

#[test]
fn the_source_may_be_a_string_or_a_json_document() {
    let run = Machine::<DataPipeline>::start(json!({ "run_id": " R-8 ", "source": "  /data/in.csv " }))
        .expect("starts");
    assert_eq!(asked(&run).input["source"], "/data/in.csv");
    assert_eq!(run.data().run_id, "R-8");
    let source = json!({ "bucket": "raw", "prefix": "2026-05-09/", "formats": ["csv"] });
    let run =
        Machine::<DataPipeline>::start(json!({ "run_id": "R-9", "source": source.clone(), "note": "extra" }))
            .expect("starts");
    assert_eq!(asked(&run).input["source"], source);
    let run = Machine::<DataPipeline>::start(json!({ "run_id": "R-10", "source": ["a.csv", "b.csv"] }))
        .expect("starts");
    assert_eq!(asked(&run).input["source"], json!(["a.csv", "b.csv"]));
}

#[test]
fn bad_input_is_refused() {
    for input in [
        json!({ "run_id": "", "source": SOURCE }),
        json!({ "run_id": "  ", "source": SOURCE }),
        json!({ "run_id": 7, "source": SOURCE }),
        json!({ "source": SOURCE }),
        json!({ "run_id": "R-7" }),
        json!({ "run_id": "R-7", "source": null }),
        json!({ "run_id": "R-7", "source": " " }),
        json!({ "run_id": "R-7", "source": {} }),
        json!({ "run_id": "R-7", "source": [] }),
        json!({ "run_id": "R-7", "source": 42 }),
        json!({ "run_id": "R-7", "source": true }),
        json!("R-7"),
        Value::Null,
    ] {
        let refused = Machine::<DataPipeline>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}
