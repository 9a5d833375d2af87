//! A participant stub: one HTTP server that answers every task of the example
//! definitions as a real participant would — deduplicating by `task_id`, answering job
//! runs with `202` and reporting later — keeps a ledger of the work it did, and injects
//! the faults it is told to.
//!
//! The black-box tests start it on loopback and assert on its ledger (charges per
//! payment, refunds and releases per order, runs per pipeline stage); `switchyard-stub`
//! runs it for a person watching the examples locally.
//!
//! A task is served at `/{task name}` (`POST /flights.reserve`); [`Stub::bindings`] is
//! the `[tasks]` config that binds every task to it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every task of the example definitions.
pub const TASKS: &[&str] = &[
    "flights.reserve",
    "hotels.reserve",
    "flights.cancel",
    "payments.capture",
    "payments.refund",
    "inventory.reserve",
    "inventory.release",
    "shipping.schedule",
    "gateway.alpha.charge",
    "gateway.alpha.status",
    "gateway.beta.charge",
    "gateway.beta.status",
    "pipeline.extracting",
    "pipeline.cleansing",
    "pipeline.transforming",
    "pipeline.loading",
    "pipeline.reporting",
];

/// What the stub does instead of answering a task normally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Answers `status` without doing the work (a final 4xx, or a retryable 5xx);
    /// `times` requests long, or for good.
    Refuse { status: u16, times: Option<u32> },
    /// Does not do the work and answers only after `ms` (past the attempt timeout).
    Hang { ms: u64 },
    /// Does the work, then answers only after `ms`: the host's attempt times out
    /// although the work is done (a gateway that charged but did not say so).
    ActThenHang { ms: u64 },
    /// A gateway answers `{"result": "declined"}`; `payments.capture` answers `402`.
    Decline,
    /// A job runner accepts (`202`), then reports the stage failed.
    FailReport,
    /// A job runner accepts, then reports success twice.
    ReportTwice,
    /// A gateway's status query answers `pending` `times` times before the truth.
    Pending { times: u32 },
}

/// One piece of work the stub did (once per `task_id`).
#[derive(Debug, Clone, Serialize)]
pub struct Work {
    pub task: String,
    pub task_id: String,
    pub instance_id: String,
    pub input: Value,
}

/// What the stub has seen and done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    /// Every request, as (task, task_id, instance_id), in the order received: attempts
    /// included.
    pub requests: Vec<(String, String, String)>,
    /// The work done, in order: a task_id seen again is answered from memory, not done again.
    pub work: Vec<Work>,
    /// Charges made, per gateway: vendor_key → charge_id.
    pub charges: HashMap<String, HashMap<String, String>>,
    /// Late reports sent to the host, and the status it answered.
    pub reports: Vec<(String, u16)>,
}

impl Ledger {
    /// The work done for `task`.
    pub fn done(&self, task: &str) -> Vec<&Work> {
        self.work.iter().filter(|work| work.task == task).collect()
    }

    /// Requests received for `task`, attempts included.
    pub fn requests_for(&self, task: &str) -> usize {
        self.requests.iter().filter(|(name, _, _)| name == task).count()
    }

    /// Requests received for `task` from `instance`, attempts included.
    pub fn requests_from(&self, task: &str, instance: &str) -> usize {
        self.requests.iter().filter(|(name, _, from)| name == task && from == instance).count()
    }

    /// Charges made for `vendor_key`, across every gateway.
    pub fn charges_for(&self, vendor_key: &str) -> usize {
        self.charges.values().filter(|charges| charges.contains_key(vendor_key)).count()
    }
}

#[derive(Debug, Default)]
struct Shared {
    ledger: Mutex<Ledger>,
    /// Woken whenever the ledger changes.
    changed: tokio::sync::Notify,
    faults: Mutex<HashMap<String, Fault>>,
    /// Answers given, by task_id: the same task again gets the same answer.
    answers: Mutex<HashMap<String, (u16, Value)>>,
    /// Declines given, per gateway: vendor keys (what a status query reports).
    declined: Mutex<HashMap<String, Vec<String>>>,
    report_delay: Duration,
    client: reqwest::Client,
}

/// A running stub; stops when dropped.
#[derive(Debug)]
pub struct Stub {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Serves on `addr` (port 0: any free one); job runs report after `report_delay`.
    pub async fn start(addr: SocketAddr, report_delay: Duration) -> std::io::Result<Stub> {
        let shared = Arc::new(Shared { report_delay, ..Shared::default() });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/_ledger", get(ledger))
            .route("/_faults/{task}", put(set_fault).delete(clear_fault))
            .route("/{task}", post(task))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Stub { base_url, shared, server })
    }

    /// The `[tasks."…"]` tables that bind every example task to this stub.
    pub fn bindings(&self) -> String {
        TASKS.iter().map(|task| format!("[tasks.\"{task}\"]\nurl = \"{}/{task}\"\n", self.base_url)).collect()
    }

    /// From now on, `task` answers with `fault`.
    pub fn fault(&self, task: &str, fault: Fault) {
        lock(&self.shared.faults).insert(task.into(), fault);
    }

    pub fn clear_fault(&self, task: &str) {
        lock(&self.shared.faults).remove(task);
    }

    /// A copy of the ledger as it is now.
    pub fn ledger(&self) -> Ledger {
        lock(&self.shared.ledger).clone()
    }

    /// Waits, at most 30 s, until the ledger satisfies `holds`; returns it. Wakes on
    /// each change of the ledger.
    pub async fn wait_for(&self, what: &str, holds: impl Fn(&Ledger) -> bool) -> Ledger {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Registered before the ledger is read, so no change slips in between.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ledger = self.ledger();
            if holds(&ledger) {
                return ledger;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("the stub's ledger never showed {what} within 30 s: {ledger:?}");
            }
        }
    }

    /// Serves until the process is stopped.
    pub async fn serve_forever(mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn ledger(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(lock(&shared.ledger).clone()).into_response()
}

async fn set_fault(
    State(shared): State<Arc<Shared>>,
    Path(task): Path<String>,
    axum::Json(fault): axum::Json<Fault>,
) -> StatusCode {
    lock(&shared.faults).insert(task, fault);
    StatusCode::NO_CONTENT
}

async fn clear_fault(State(shared): State<Arc<Shared>>, Path(task): Path<String>) -> StatusCode {
    lock(&shared.faults).remove(&task);
    StatusCode::NO_CONTENT
}

/// What the host sends (SPEC §3).
#[derive(Debug, Deserialize)]
struct Request {
    task_id: String,
    instance_id: String,
    input: Value,
    report_url: String,
}

async fn task(
    State(shared): State<Arc<Shared>>,
    Path(task): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request: Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("not a task request: {err}")).into_response(),
    };
    if !TASKS.contains(&task.as_str()) {
        return (StatusCode::NOT_FOUND, format!("the stub does not serve {task}")).into_response();
    }
    record(&shared, |ledger| {
        ledger.requests.push((task.clone(), request.task_id.clone(), request.instance_id.clone()));
    });
    if let Some((status, body)) = lock(&shared.answers).get(&request.task_id).cloned() {
        return reply(status, body);
    }
    match take_fault(&shared, &task) {
        Some(Fault::Refuse { status, .. }) => {
            reply(status, json!({ "error": "refused by the stub's fault" }))
        }
        Some(Fault::Hang { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(503, json!({ "error": "the stub hung" }))
        }
        Some(Fault::ActThenHang { ms }) => {
            let (status, body) = act(&shared, &task, &request, None);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(status, body)
        }
        fault => {
            let (status, body) = act(&shared, &task, &request, fault.as_ref());
            reply(status, body)
        }
    }
}

/// The fault for this request; one with a count left is used up by it.
fn take_fault(shared: &Shared, task: &str) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
    let fault = faults.get_mut(task)?;
    let taken = fault.clone();
    let exhausted = match fault {
        Fault::Refuse { times: Some(times), .. } | Fault::Pending { times } => {
            *times = times.saturating_sub(1);
            *times == 0
        }
        _ => false,
    };
    if exhausted {
        faults.remove(task);
    }
    Some(taken)
}

/// Does the work of `task` (once: its answer is kept under the task_id).
fn act(shared: &Arc<Shared>, task: &str, request: &Request, fault: Option<&Fault>) -> (u16, Value) {
    let short: String = request.task_id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let field = |name: &str| request.input.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let declines = fault == Some(&Fault::Decline);
    let (status, body, worked) = match task {
        "flights.reserve" | "hotels.reserve" | "inventory.reserve" => {
            (200, json!({ "reservation_id": format!("R-{short}") }), true)
        }
        // Undoing refers to what this participant did: an id it never gave out is refused.
        "flights.cancel" | "inventory.release" | "payments.refund"
            if !issued(shared, task, &request.input) =>
        {
            (404, json!({ "error": "no such reservation or payment" }), false)
        }
        "flights.cancel" => (200, json!({ "cancelled": field("reservation_id") }), true),
        "inventory.release" => (200, json!({ "released": field("reservation_id") }), true),
        "payments.capture" if declines => (402, json!({ "error": "card declined" }), false),
        "payments.capture" => (200, json!({ "payment_id": format!("P-{short}") }), true),
        "payments.refund" => {
            (200, json!({ "refund_id": format!("F-{short}"), "payment_id": field("payment_id") }), true)
        }
        "shipping.schedule" => (200, json!({ "tracking_id": format!("T-{short}") }), true),
        _ if task.starts_with("gateway.") => {
            let (gateway, call) = gateway_call(task);
            let answer = if call == "charge" {
                charge(shared, gateway, &field("vendor_key"), declines, &short)
            } else {
                status_of(shared, gateway, &field("vendor_key"), matches!(fault, Some(Fault::Pending { .. })))
            };
            // A decline is no charge; a status query is work, if only a read.
            (200, answer, !declines)
        }
        _ => {
            // A job runner: accepted now, reported later.
            accept_job(shared, task, request, fault);
            (202, json!({ "accepted": true }), true)
        }
    };
    if worked {
        let work = Work {
            task: task.into(),
            task_id: request.task_id.clone(),
            instance_id: request.instance_id.clone(),
            input: request.input.clone(),
        };
        record(shared, |ledger| ledger.work.push(work));
    }
    if status < 400 {
        lock(&shared.answers).insert(request.task_id.clone(), (status, body.clone()));
    }
    (status, body)
}

/// Whether the id that `task` undoes (`reservation_id`, or `payment_id` for a refund)
/// is one this stub gave out.
fn issued(shared: &Shared, task: &str, input: &Value) -> bool {
    let field = if task == "payments.refund" { "payment_id" } else { "reservation_id" };
    let Some(id) = input.get(field).and_then(Value::as_str) else { return false };
    lock(&shared.answers).values().any(|(_, answer)| answer.get(field).and_then(Value::as_str) == Some(id))
}

fn gateway_call(task: &str) -> (&str, &str) {
    let mut parts = task.split('.').skip(1);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// A charge, deduplicated by vendor_key as a real gateway does.
fn charge(shared: &Shared, gateway: &str, vendor_key: &str, declines: bool, short: &str) -> Value {
    if declines {
        lock(&shared.declined).entry(gateway.into()).or_default().push(vendor_key.into());
        return json!({ "result": "declined" });
    }
    let charge_id = record(shared, |ledger| {
        let charges = ledger.charges.entry(gateway.into()).or_default();
        charges.entry(vendor_key.into()).or_insert_with(|| format!("ch-{gateway}-{short}")).clone()
    });
    json!({ "result": "charged", "charge_id": charge_id })
}

fn status_of(shared: &Shared, gateway: &str, vendor_key: &str, pending: bool) -> Value {
    if pending {
        return json!({ "result": "pending" });
    }
    let charged =
        lock(&shared.ledger).charges.get(gateway).and_then(|charges| charges.get(vendor_key)).cloned();
    if let Some(charge_id) = charged {
        return json!({ "result": "charged", "charge_id": charge_id });
    }
    let declined =
        lock(&shared.declined).get(gateway).is_some_and(|keys| keys.iter().any(|key| key == vendor_key));
    json!({ "result": if declined { "declined" } else { "not_found" } })
}

/// Reports the job's end to the host after the report delay (twice for
/// [`Fault::ReportTwice`]).
fn accept_job(shared: &Arc<Shared>, task: &str, request: &Request, fault: Option<&Fault>) {
    let stage = task.trim_start_matches("pipeline.").to_owned();
    let logs = vec![format!("{stage}: started"), format!("{stage}: finished")];
    let report = if fault == Some(&Fault::FailReport) {
        json!({ "status": "failed", "error": { "reason": format!("{stage} failed in the stub"), "logs": [format!("{stage}: started"), format!("{stage}: error")] } })
    } else {
        json!({ "status": "succeeded", "output": { "logs": logs, "rows": 100 } })
    };
    let times = if fault == Some(&Fault::ReportTwice) { 2 } else { 1 };
    let (shared, url) = (shared.clone(), request.report_url.clone());
    tokio::spawn(async move {
        tokio::time::sleep(shared.report_delay).await;
        for _ in 0..times {
            let status = deliver(&shared.client, &url, &report).await;
            record(&shared, |ledger| ledger.reports.push((url.clone(), status)));
        }
    });
}

/// Posts a report, trying a few times while the host cannot be reached; the status it
/// answered (0: never reached).
async fn deliver(client: &reqwest::Client, url: &str, report: &Value) -> u16 {
    for attempt in 0..5u64 {
        match client.post(url).json(report).send().await {
            Ok(response) if !response.status().is_server_error() => return response.status().as_u16(),
            _ => tokio::time::sleep(Duration::from_millis(50 << attempt)).await,
        }
    }
    0
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body))
        .into_response()
}

/// Changes the ledger and wakes whoever waits on it.
fn record<T>(shared: &Shared, change: impl FnOnce(&mut Ledger) -> T) -> T {
    let changed = change(&mut lock(&shared.ledger));
    shared.changed.notify_waiters();
    changed
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
