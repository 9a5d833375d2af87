//! `data-pipeline`, version 1: a batch run that goes through five stages in order,
//! `EXTRACTING`, `CLEANSING`, `TRANSFORMING`, `LOADING` and `REPORTING`, then
//! `COMPLETED`. Each stage is one job on a job runner. A stage that fails stops the run
//! in `FAILED`, which is not terminal: the action `retry-stage` reruns the failed stage
//! (or an earlier one) and every stage after it, never the stages before it.
//!
//! ```text
//!   init ──▶ EXTRACTING ──▶ CLEANSING ──▶ TRANSFORMING ──▶ LOADING ──▶ REPORTING ──▶ COMPLETED
//!                 │              │               │             │            │         (completed)
//!                 └──────────────┴───────┬───────┴─────────────┴────────────┘
//!                              task.failed│            ▲
//!                                         ▼            │ retry-stage {stage?}
//!                                       FAILED ────────┘ (to the failed stage or an earlier one)
//!
//!   any non-terminal state ──admin cancel──▶ CANCELLED (cancelled)
//!   REPORTING, or FAILED at reporting ──admin force-complete──▶ COMPLETED
//! ```
//!
//! # Input
//!
//! `{"run_id": "...", "source": ...}`. `run_id` is a non-empty string (surrounding
//! whitespace removed). `source` says where the run reads from and is passed to every
//! job as it is: a non-empty string (a URI, a path, a table name; trimmed) or a non-empty
//! JSON object or array (e.g. `{"bucket": "raw", "prefix": "2026-05-09/"}`). `null`, a
//! blank string, `{}`, `[]`, numbers and booleans are refused with `invalid_input`.
//! Other members of the input are ignored.
//!
//! # Tasks
//!
//! Each stage is the task `pipeline.<stage>`: `pipeline.extracting`,
//! `pipeline.cleansing`, `pipeline.transforming`, `pipeline.loading` and
//! `pipeline.reporting`. Their names are the contract a deployment binds to a job
//! runner. The input of every one is
//!
//! ```json
//! {"run_id": "R-7", "source": "s3://raw/2026-05-09", "stage": "transforming", "run": 1,
//!  "previous": {"stage": "cleansing", "output": {"rows": 1200, "table": "tmp_clean"}}}
//! ```
//!
//! - `stage` is the stage's lower-case name;
//! - `run` counts the runs of this stage in this instance, from 1: a `retry-stage` that
//!   reruns the stage starts run 2, and so on. A job runner can use it to keep the
//!   artefacts of two runs apart (the host's `task_id` differs between runs as well);
//! - `previous` is `null` for `extracting`; otherwise the previous stage and the
//!   `output` it reported (without its `logs`), so a stage finds what the one before it
//!   produced (a staging table, a file) without a side channel.
//!
//! The runner answers `202` and reports later (the host deals with that). Success is
//! `{"status": "succeeded", "output": {"logs": ..., ...}}`: `logs` (any JSON, typically
//! an array of lines) is kept as the stage's logs and the rest of `output` as the
//! stage's output. An output that is not an object is kept as the output, with no logs.
//! Failure is `{"status": "failed", "error": ...}`: the host reports it as a `task.failed`
//! whose `body` is the `error` as JSON text. When the body is a JSON object with `logs`,
//! they become the stage's logs and the rest is the error's `body`; a body that is not
//! JSON is kept as a string. The human summary of an error takes the body's `reason`,
//! `message`, `error` or `detail` (the first that is a non-blank string), or the body if
//! it is a string.
//!
//! Every task asks for a report timeout of one hour ([`REPORT_TIMEOUT_MS`]): a job that
//! has not reported by then fails the stage with kind `timeout`. Under the host's rules
//! (docs/effects.md §6.1) the definition's value wins over the `[effects]` default, and a
//! binding has no report timeout, so changing it takes a new version. Retries of the
//! attempts (getting the `202`) and the attempt timeout are left to the deployment.
//!
//! # Effect keys
//!
//! `<stage>-<run>`, e.g. `extracting-1`, `loading-2`. Only one task is open at a time,
//! and each run of a stage has its own key, so a result that names an earlier run of the
//! stage is never taken for the current one: it is refused with `unexpected_event`.
//!
//! # Data
//!
//! ```json
//! {"run_id": "R-7", "source": "s3://raw/2026-05-09",
//!  "stages": [
//!    {"stage": "extracting", "status": "succeeded", "runs": 1, "logs": ["read 1200 rows"],
//!     "output": {"rows": 1200}, "error": null, "started_at_ms": 1700000000000,
//!     "finished_at_ms": 1700000001000},
//!    {"stage": "cleansing", "status": "failed", "runs": 1, "logs": ["bad row 17"],
//!     "output": null, "error": {"kind": "http", "status": null, "attempts": 1,
//!     "body": {"reason": "schema mismatch"}, "summary": "the job reported a failure: schema mismatch"},
//!     "started_at_ms": ..., "finished_at_ms": ...},
//!    {"stage": "transforming", "status": "pending", "runs": 0, ...}, ...],
//!  "failed_stage": "cleansing", "error": {...the same error...}, "retries": []}
//! ```
//!
//! - `stages` has one record per stage, always all five, in pipeline order (an array, so
//!   the order survives any JSON store). `status` is `pending` (not run in the current
//!   pass), `running`, `succeeded`, `failed`, `cancelled` (running when an admin
//!   cancelled) or `skipped` (running when an admin force-completed). `runs` counts the
//!   stage's runs. `logs`, `output`, `error` and the times are those of the latest run.
//! - `failed_stage` and `error` describe the failure that put the run in `FAILED`. A
//!   `retry-stage` clears them; an admin's cancel or force-complete keeps them, so the
//!   final data still says what failed.
//! - `retries` lists every `retry-stage`, oldest first: the stage it went back to, the
//!   stage that had failed, that failure's error and logs (the stage's record is reset
//!   for its new run, so this is where the failed run's logs stay) and when.
//!
//! # The action `retry-stage`
//!
//! Legal in `FAILED` only. Payload `null`, `{}` or `{"stage": "..."}` (`null` or left
//! out: the failed stage). The stage is named case-insensitively, `"loading"` or
//! `"LOADING"`; it may be the failed stage or any stage before it. The stages from the
//! named one on are reset to `pending` (their `runs` kept), the named one starts its next
//! run, and the pipeline goes on from there; the stages before it are not run again, and
//! their records stay as they are. Refusals:
//! - `unknown_stage`: the name is not one of the five stages;
//! - `stage_not_reached`: the named stage comes after the failed one, so it never ran
//!   in this pass (its input would not exist);
//! - `invalid_payload`: the payload is not an object, `stage` is not a string, or the
//!   payload has another member (so that a misspelt `stage` does not silently mean the
//!   failed stage).
//!
//! # Admin overrides
//!
//! - **Cancel**, from any non-terminal state, goes to `CANCELLED`. A running stage is
//!   marked `cancelled`; the host cancels its open task, so a late report is not taken.
//! - **Force-complete** goes to `COMPLETED`, but only once `LOADING` succeeded: in
//!   `REPORTING` (the report is `skipped`; a force-complete closes no effect, so the
//!   report job runs on and its result finds the run finished) or in `FAILED` after the
//!   report failed (the report stays `failed`). The data is loaded then, and only the
//!   report is missing, which an operator may accept. Anywhere else it is refused with
//!   `not_loaded`: a run whose data was never loaded cannot be called complete; cancel it
//!   or retry a stage.
//!
//! # Messages
//!
//! `Transforming (stage 3 of 5)` (`…, run 2)` for a rerun), `Failed at LOADING: …`,
//! `Completed: all 5 stages succeeded`, `cancelled by an admin: …` and `completed by an
//! admin: …`.

use serde_json::{Map, Value, json};
use switchyard_guest::prelude::*;

const EXTRACTING: &str = "EXTRACTING";
const CLEANSING: &str = "CLEANSING";
const TRANSFORMING: &str = "TRANSFORMING";
const LOADING: &str = "LOADING";
const REPORTING: &str = "REPORTING";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// The action that reruns a failed stage (or an earlier one) and the stages after it.
const RETRY_STAGE: &str = "retry-stage";

/// How long a job runner that answered `202` has to report: one hour.
pub const REPORT_TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// The longest error summary kept from a participant's body, in characters.
const MAX_DETAIL_CHARS: usize = 200;

/// The definition.
#[derive(Debug)]
pub struct DataPipeline;

/// What a client starts a run with: `{"run_id": "...", "source": ...}`.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub run_id: String,
    /// Where the run reads from; passed to every job as it is.
    pub source: Value,
}

/// A stage of the pipeline, in pipeline order. Serialized as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Extracting,
    Cleansing,
    Transforming,
    Loading,
    Reporting,
}

impl Stage {
    /// Every stage, in the order they run.
    pub const ALL: [Stage; 5] =
        [Stage::Extracting, Stage::Cleansing, Stage::Transforming, Stage::Loading, Stage::Reporting];

    /// The stage whose state this is.
    fn of_state(state: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.state() == state)
    }

    /// The stage named `name`, in any case, as `retry-stage` takes it.
    fn parse(name: &str) -> Option<Stage> {
        let name = name.trim();
        Stage::ALL.into_iter().find(|stage| stage.name().eq_ignore_ascii_case(name))
    }

    /// The state the instance is in while the stage runs.
    pub fn state(self) -> &'static str {
        match self {
            Stage::Extracting => EXTRACTING,
            Stage::Cleansing => CLEANSING,
            Stage::Transforming => TRANSFORMING,
            Stage::Loading => LOADING,
            Stage::Reporting => REPORTING,
        }
    }

    /// The lower-case name: in data, in task inputs and in effect keys.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Extracting => "extracting",
            Stage::Cleansing => "cleansing",
            Stage::Transforming => "transforming",
            Stage::Loading => "loading",
            Stage::Reporting => "reporting",
        }
    }

    /// The task a deployment binds to the job runner.
    pub fn task(self) -> &'static str {
        match self {
            Stage::Extracting => "pipeline.extracting",
            Stage::Cleansing => "pipeline.cleansing",
            Stage::Transforming => "pipeline.transforming",
            Stage::Loading => "pipeline.loading",
            Stage::Reporting => "pipeline.reporting",
        }
    }

    /// The effect key of the stage's `run`th run, e.g. `loading-2`.
    pub fn key(self, run: u32) -> String {
        format!("{}-{run}", self.name())
    }

    /// 1 for the first stage, 5 for the last.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    fn label(self) -> &'static str {
        match self {
            Stage::Extracting => "Extracting",
            Stage::Cleansing => "Cleansing",
            Stage::Transforming => "Transforming",
            Stage::Loading => "Loading",
            Stage::Reporting => "Reporting",
        }
    }

    fn previous(self) -> Option<Stage> {
        Stage::ALL.get(self.number().checked_sub(2)?).copied()
    }

    fn next(self) -> Option<Stage> {
        Stage::ALL.get(self.number()).copied()
    }
}

/// Where a stage stands in the current pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Not run in the current pass (never, or reset by a `retry-stage`).
    Pending,
    Running,
    Succeeded,
    Failed,
    /// It was running when an admin cancelled the run.
    Cancelled,
    /// It was running when an admin force-completed the run.
    Skipped,
}

/// The instance's data document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub run_id: String,
    pub source: Value,
    /// One record per stage, in pipeline order.
    pub stages: Vec<StageRecord>,
    /// The stage whose failure put the run in `FAILED`; cleared by `retry-stage`.
    pub failed_stage: Option<Stage>,
    /// That failure; cleared by `retry-stage`.
    pub error: Option<StageError>,
    /// Every accepted `retry-stage`, oldest first.
    pub retries: Vec<Retry>,
}

/// One stage: its status in the current pass and what its latest run reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: Stage,
    pub status: StageStatus,
    /// How many runs of the stage were started.
    pub runs: u32,
    /// The latest run's logs: `output.logs` of a success, or `logs` of a failure's body.
    pub logs: Value,
    /// The latest successful run's output, without its `logs`.
    pub output: Value,
    /// Why the latest run failed.
    pub error: Option<StageError>,
    /// When the latest run was started and when its result came (the host's clock).
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// Why a run of a stage failed: the host's `TaskError`, its body read as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageError {
    pub kind: FailureKind,
    /// The job runner's HTTP status, for `http` and `exhausted`.
    pub status: Option<u16>,
    pub attempts: u32,
    /// The body as JSON without its `logs`, or as a string when it is not JSON; `null`
    /// when there was none.
    pub body: Value,
    /// For people: what happened, with the body's reason if it gave one.
    pub summary: String,
}

/// One accepted `retry-stage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// The stage the run went back to.
    pub stage: Stage,
    /// The stage that had failed.
    pub failed_stage: Stage,
    /// The failure, and the failed run's logs, as they were before the retry.
    pub error: Option<StageError>,
    pub logs: Value,
    /// When the retry was accepted (the host's clock).
    pub at_ms: i64,
}

impl Data {
    fn record(&self, stage: Stage) -> Result<&StageRecord, Rejection> {
        self.stages.iter().find(|record| record.stage == stage).ok_or_else(|| missing(stage))
    }

    fn record_mut(&mut self, stage: Stage) -> Result<&mut StageRecord, Rejection> {
        self.stages.iter_mut().find(|record| record.stage == stage).ok_or_else(|| missing(stage))
    }
}

impl StageRecord {
    fn pending(stage: Stage) -> Self {
        StageRecord {
            stage,
            status: StageStatus::Pending,
            runs: 0,
            logs: Value::Null,
            output: Value::Null,
            error: None,
            started_at_ms: None,
            finished_at_ms: None,
        }
    }

    /// Back to `pending` for a new pass; the count of runs stays.
    fn reset(&mut self) {
        *self = StageRecord { runs: self.runs, ..StageRecord::pending(self.stage) };
    }
}

impl Definition for DataPipeline {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        let stages = Stage::ALL.map(Stage::state);
        Manifest::builder("data-pipeline", 1)
            .state(EXTRACTING, "Stage 1 of 5: extracting the data from the source.")
            .state(CLEANSING, "Stage 2 of 5: cleansing the extracted data.")
            .state(TRANSFORMING, "Stage 3 of 5: transforming the cleansed data.")
            .state(LOADING, "Stage 4 of 5: loading the transformed data.")
            .state(REPORTING, "Stage 5 of 5: reporting on the run.")
            .terminal(COMPLETED, TerminalStatus::Completed, "Every stage succeeded.")
            .state(
                FAILED,
                "A stage failed; retry-stage reruns it, or an earlier stage, and the stages after it.",
            )
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the run.")
            .initial(EXTRACTING)
            .action(
                RETRY_STAGE,
                &[FAILED],
                &stages,
                "Rerun the failed stage and the stages after it; payload {\"stage\": \"...\"} \
                 (optional) goes back to an earlier stage instead.",
            )
            .build()
    }

    fn init(ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let run_id = input.run_id.trim();
        if run_id.is_empty() {
            return Err(Rejection::new("invalid_input", "run_id must not be empty"));
        }
        let source = source(input.source)?;
        let data = Data {
            run_id: run_id.into(),
            source,
            stages: Stage::ALL.map(StageRecord::pending).into(),
            failed_stage: None,
            error: None,
            retries: Vec::new(),
        };
        start(ctx, data, Stage::Extracting)
    }

    fn on_action(ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let ActionCall { state, data, action, payload } = call;
        match (action.as_str(), state.as_str()) {
            (RETRY_STAGE, FAILED) => retry(ctx, data, &payload),
            _ => Err(Rejection::new("not_allowed", format!("{action} is not allowed in state {state}"))),
        }
    }

    fn on_event(ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        let Some(stage) = Stage::of_state(&state) else {
            return Err(unexpected(&state, &event));
        };
        let current = data.record(stage)?.runs;
        let expected = stage.key(current);
        let key = match &event {
            Received::TaskSucceeded { key, .. } | Received::TaskFailed { key, .. } => key,
            _ => return Err(unexpected(&state, &event)),
        };
        if *key != expected {
            let earlier = key
                .strip_prefix(stage.name())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|run| run.parse::<u32>().ok())
                .is_some_and(|run| run < current);
            let reason = if earlier {
                format!("{state} waits for {expected}: {} is about an earlier run", event.describe())
            } else {
                format!("{state} waits for {expected}, not {}", event.describe())
            };
            return Err(Rejection::new("unexpected_event", reason));
        }
        match event {
            Received::TaskSucceeded { output, .. } => {
                let (logs, output) = split_logs(output);
                let record = data.record_mut(stage)?;
                record.status = StageStatus::Succeeded;
                record.logs = logs;
                record.output = output;
                record.finished_at_ms = Some(ctx.now_ms);
                match stage.next() {
                    Some(next) => start(ctx, data, next),
                    None => {
                        let message = format!("Completed: all {} stages succeeded", Stage::ALL.len());
                        Ok(Transition::to(COMPLETED, data).with_message(message))
                    }
                }
            }
            Received::TaskFailed { error, .. } => {
                let (logs, body) = match error.body.as_deref() {
                    None => (Value::Null, Value::Null),
                    Some(text) => match serde_json::from_str::<Value>(text) {
                        Ok(json) => split_logs(json),
                        Err(_) => (Value::Null, Value::String(text.into())),
                    },
                };
                let summary = summarize(stage, &error, &body);
                let message = format!("Failed at {}: {summary}", stage.state());
                let failure = StageError {
                    kind: error.kind,
                    status: error.status,
                    attempts: error.attempts,
                    body,
                    summary,
                };
                let record = data.record_mut(stage)?;
                record.status = StageStatus::Failed;
                record.logs = logs;
                record.output = Value::Null;
                record.error = Some(failure.clone());
                record.finished_at_ms = Some(ctx.now_ms);
                data.failed_stage = Some(stage);
                data.error = Some(failure);
                Ok(Transition::to(FAILED, data).with_message(message))
            }
            _ => Err(unexpected(&state, &event)),
        }
    }

    fn on_override(ctx: &Context, call: OverrideCall<Data>) -> Result<Transition<Data>, Rejection> {
        let OverrideCall { state, mut data, kind, reason } = call;
        let running = Stage::of_state(&state);
        if running.is_none() && state != FAILED {
            // The host never overrides a finished instance.
            return Err(Rejection::new("finished", format!("the run is finished in {state}")));
        }
        match kind {
            OverrideKind::Cancel => {
                if let Some(stage) = running {
                    let record = data.record_mut(stage)?;
                    record.status = StageStatus::Cancelled;
                    record.finished_at_ms = Some(ctx.now_ms);
                }
                Ok(Transition::to(CANCELLED, data).with_message(format!("cancelled by an admin: {reason}")))
            }
            OverrideKind::ForceComplete => {
                if data.record(Stage::Loading)?.status != StageStatus::Succeeded {
                    return Err(Rejection::new(
                        "not_loaded",
                        format!(
                            "a run can be force-completed only once LOADING succeeded (in REPORTING, or \
                             FAILED at REPORTING), not in {state}; cancel it or retry a stage instead"
                        ),
                    ));
                }
                let report = data.record_mut(Stage::Reporting)?;
                if report.status == StageStatus::Running {
                    report.status = StageStatus::Skipped;
                    report.finished_at_ms = Some(ctx.now_ms);
                }
                Ok(Transition::to(COMPLETED, data).with_message(format!("completed by an admin: {reason}")))
            }
        }
    }
}

/// Checks and normalizes the input's `source`.
fn source(source: Value) -> Result<Value, Rejection> {
    let invalid = |reason: &str| Err(Rejection::new("invalid_input", reason));
    match source {
        Value::String(text) if text.trim().is_empty() => invalid("source must not be blank"),
        Value::String(text) => Ok(Value::String(text.trim().into())),
        Value::Object(fields) if fields.is_empty() => invalid("source must not be an empty object"),
        Value::Array(items) if items.is_empty() => invalid("source must not be an empty array"),
        source @ (Value::Object(_) | Value::Array(_)) => Ok(source),
        _ => invalid("source must be a non-empty string, object or array"),
    }
}

/// Starts the next run of `stage`: its task, its record `running`, the state and message.
fn start(ctx: &Context, mut data: Data, stage: Stage) -> Result<Transition<Data>, Rejection> {
    let previous = match stage.previous() {
        None => Value::Null,
        Some(previous) => json!({ "stage": previous, "output": data.record(previous)?.output }),
    };
    let record = data.record_mut(stage)?;
    record.reset();
    record.status = StageStatus::Running;
    record.runs = record.runs.saturating_add(1);
    record.started_at_ms = Some(ctx.now_ms);
    let run = record.runs;
    let input = json!({
        "run_id": data.run_id,
        "source": data.source,
        "stage": stage.name(),
        "run": run,
        "previous": previous,
    });
    let options = TaskOptions { report_timeout_ms: Some(REPORT_TIMEOUT_MS), ..TaskOptions::default() };
    let (label, number, of) = (stage.label(), stage.number(), Stage::ALL.len());
    let message = match run {
        1 => format!("{label} (stage {number} of {of})"),
        run => format!("{label} (stage {number} of {of}, run {run})"),
    };
    Ok(Transition::to(stage.state(), data)
        .task_with(&stage.key(run), stage.task(), input, options)
        .with_message(message))
}

/// `retry-stage` in `FAILED`.
fn retry(ctx: &Context, mut data: Data, payload: &Value) -> Result<Transition<Data>, Rejection> {
    let failed = data
        .failed_stage
        .ok_or_else(|| Rejection::new("invalid_data", "the run is FAILED but records no failed stage"))?;
    let stage = match named_stage(payload)? {
        None => failed,
        Some(name) => {
            let stage = Stage::parse(&name).ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|stage| stage.name()).collect();
                Rejection::new(
                    "unknown_stage",
                    format!("{name:?} is not a stage; the stages are {}", names.join(", ")),
                )
            })?;
            if stage > failed {
                return Err(Rejection::new(
                    "stage_not_reached",
                    format!(
                        "{} comes after {}, the stage that failed: retry {} or an earlier stage",
                        stage.state(),
                        failed.state(),
                        failed.state()
                    ),
                ));
            }
            stage
        }
    };
    let logs = data.record(failed)?.logs.clone();
    data.retries.push(Retry {
        stage,
        failed_stage: failed,
        error: data.error.take(),
        logs,
        at_ms: ctx.now_ms,
    });
    data.failed_stage = None;
    for record in data.stages.iter_mut().filter(|record| record.stage > stage) {
        record.reset();
    }
    start(ctx, data, stage)
}

/// The `stage` of a `retry-stage` payload: `None` for `null`, `{}` or `{"stage": null}`.
fn named_stage(payload: &Value) -> Result<Option<String>, Rejection> {
    let invalid = |reason: &str| Err(Rejection::new("invalid_payload", reason));
    let fields = match payload {
        Value::Null => return Ok(None),
        Value::Object(fields) => fields,
        _ => return invalid("the payload must be an object like {\"stage\": \"loading\"}, or left out"),
    };
    if let Some(other) = fields.keys().find(|name| *name != "stage") {
        return Err(Rejection::new(
            "invalid_payload",
            format!("unknown member {other:?}: the payload is {{\"stage\": \"...\"}}"),
        ));
    }
    match fields.get("stage") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(_) => invalid("stage must be a string such as \"loading\""),
    }
}

/// Splits a report into its `logs` and the rest: an object loses its `logs` member;
/// anything else has no logs.
fn split_logs(report: Value) -> (Value, Value) {
    match report {
        Value::Object(mut fields) => {
            let logs = fields.remove("logs").unwrap_or(Value::Null);
            (logs, Value::Object(fields))
        }
        other => (Value::Null, other),
    }
}

/// What happened to a run, for people.
fn summarize(stage: Stage, error: &TaskError, body: &Value) -> String {
    let attempts = match error.attempts {
        1 => "after 1 attempt".to_string(),
        n => format!("after {n} attempts"),
    };
    let what = match (error.kind, error.status) {
        (FailureKind::Http, Some(status)) => format!("the job runner refused the job (HTTP {status})"),
        (FailureKind::Http, None) => "the job reported a failure".into(),
        (FailureKind::Timeout, _) => format!("the job timed out: no answer or report in time, {attempts}"),
        (FailureKind::Unreachable, _) => format!("the job runner was unreachable, {attempts}"),
        (FailureKind::Exhausted, Some(status)) => {
            format!("the job runner kept failing (last HTTP {status}), {attempts}")
        }
        (FailureKind::Exhausted, None) => format!("the job runner kept failing, {attempts}"),
        (FailureKind::Unbound, _) => format!("no job runner is bound to {}", stage.task()),
    };
    match detail(body) {
        Some(detail) => format!("{what}: {detail}"),
        None => what,
    }
}

/// The reason a failure's body gives, if any, cut to [`MAX_DETAIL_CHARS`].
fn detail(body: &Value) -> Option<String> {
    let text = match body {
        Value::String(text) => text.as_str(),
        Value::Object(fields) => reason_of(fields)?,
        _ => return None,
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut detail: String = text.chars().take(MAX_DETAIL_CHARS).collect();
    if text.chars().nth(MAX_DETAIL_CHARS).is_some() {
        detail.push('…');
    }
    Some(detail)
}

fn reason_of(fields: &Map<String, Value>) -> Option<&str> {
    ["reason", "message", "error", "detail"]
        .into_iter()
        .filter_map(|name| fields.get(name)?.as_str())
        .find(|text| !text.trim().is_empty())
}

fn unexpected(state: &str, event: &Received) -> Rejection {
    Rejection::new("unexpected_event", format!("{state} does not expect {}", event.describe()))
}

fn missing(stage: Stage) -> Rejection {
    Rejection::new("invalid_data", format!("the data has no record of stage {}", stage.name()))
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(DataPipeline);
