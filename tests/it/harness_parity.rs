//! The native test harness (`switchyard_guest::testing::Machine`) behaves as the host
//! does: one table of cases runs through `Machine` in this process and through the real
//! server over HTTP, and after every step both hold the same instance and refused the
//! same calls in the same way. The machine is given the server's instance id and clock,
//! so data that records `now_ms` or the seed must match exactly too.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use document_processing::DocumentProcessing;
use document_processing_v2::DocumentProcessingV2;
use parity_guest::Parity;
use reqwest::Method;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use switchyard_guest::testing::{DEFAULT_INSTANCE_ID, Instance, Machine, Refusal};
use switchyard_guest::{Definition, TerminalStatus};

both_backends!(the_harness_agrees_with_the_host_on_every_step);

/// What a case starts an instance of: `document-processing` v1, or the parity guest,
/// whose data records the context (instance id, clock, seed) of every accepted call.
#[derive(Debug, Clone, Copy)]
enum Start {
    DocumentProcessing,
    Parity,
}

/// How a step must end, on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    /// 409 `action-not-allowed`.
    NotAllowed,
    /// 404 `unknown-action`.
    Unknown,
    /// 422 `rejected` with this code.
    Rejected(&'static str),
    /// 409 `no-migration-path`.
    NoPath,
}

#[derive(Debug)]
enum Step {
    Act(&'static str, Value, Expect),
    /// An admin's migration to this version.
    Migrate(u32, Expect),
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    start: Start,
    input: Value,
    created: Expect,
    steps: Vec<Step>,
}

fn cases() -> Vec<Case> {
    use Expect::{Accepted, NoPath, NotAllowed, Rejected, Unknown};
    use Step::{Act, Migrate};
    let null = Value::Null;
    vec![
        Case {
            name: "document-processing v1, refused calls between accepted ones, then migrated once finished",
            start: Start::DocumentProcessing,
            input: json!({ "document_url": "  s3://parity/a.pdf " }),
            created: Accepted,
            steps: vec![
                Act("format", null.clone(), NotAllowed),
                Act("approve", json!({ "reviewer": "ada" }), Unknown),
                Act("validate", null.clone(), Accepted),
                Act("fail", null.clone(), Rejected("reason_required")),
                Act("fail", json!({ "reason": 7 }), Rejected("invalid_payload")),
                Act("fail", json!({ "reason": " bad scan " }), Accepted),
                Act("format", null.clone(), NotAllowed),
                Act("retry", null.clone(), Accepted),
                Act("format", null.clone(), Accepted),
                Act("cancel", json!("not an object"), Rejected("invalid_payload")),
                Act("publish", null.clone(), Accepted),
                Act("cancel", null.clone(), NotAllowed),
                Migrate(2, Accepted),
                Act("approve", json!({ "reviewer": "ada" }), NotAllowed),
            ],
        },
        Case {
            name: "document-processing v1 migrated to v2 mid-way",
            start: Start::DocumentProcessing,
            input: json!({ "document_url": "s3://parity/b.pdf" }),
            created: Accepted,
            steps: vec![
                Act("validate", null.clone(), Accepted),
                Act("fail", json!({ "reason": "timeout" }), Accepted),
                Migrate(2, Rejected("failed_on_v1")),
                Act("retry", null.clone(), Accepted),
                Migrate(1, NoPath),
                Migrate(2, Accepted),
                Migrate(2, NoPath),
                Migrate(1, NoPath),
                Act("publish", null.clone(), Unknown),
                Act("format", null.clone(), Accepted),
                Act("approve", json!({ "reviewer": "ada" }), NotAllowed),
                Act("submit", null.clone(), Accepted),
                Act("approve", json!({}), Rejected("reviewer_required")),
                Act("reject", json!({ "reason": "typo" }), Accepted),
                Act("submit", null.clone(), Accepted),
                Act("approve", json!({ "reviewer": "ada" }), Accepted),
            ],
        },
        Case {
            name: "document-processing v1, refused at creation",
            start: Start::DocumentProcessing,
            input: json!({ "document_url": " " }),
            created: Rejected("invalid_input"),
            steps: Vec::new(),
        },
        Case {
            name: "parity guest: a refusal between accepted calls does not shift the seed",
            start: Start::Parity,
            input: json!({ "any": ["input", 1] }),
            created: Accepted,
            steps: vec![
                Act("record", json!({ "n": 1 }), Accepted),
                // The rejection names the seed of the refused call: the next revision's.
                Act("refuse", null.clone(), Rejected("refused")),
                Act("refuse", json!({ "again": true }), Rejected("refused")),
                Act("forget", null.clone(), Unknown),
                Act("record", json!({ "n": 2 }), Accepted),
                Migrate(1, NoPath),
                Act("close", null.clone(), Accepted),
                Act("record", null.clone(), NotAllowed),
            ],
        },
    ]
}

async fn the_harness_agrees_with_the_host_on_every_step(backend: Backend) {
    let server = TestServer::start(backend).await;
    for name in ["document-processing", "document-processing-v2", "parity-guest"] {
        server.deploy(module(name)).await.expect(201);
    }
    for case in cases() {
        run(&server, &case).await;
    }
}

async fn run(server: &TestServer, case: &Case) {
    let (definition, version) = match case.start {
        Start::DocumentProcessing => ("document-processing", 1),
        Start::Parity => ("parity", 1),
    };
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "input": case.input, "version": version });
    let created = server.post(&format!("/v1/definitions/{definition}/instances"), &key, &body).await;
    let on_server = Outcome::of_response(&created, case.created);
    let Outcome::Accepted = on_server else {
        let refused = start(case.start, DEFAULT_INSTANCE_ID, 0, &case.input).map(drop);
        assert_eq!(Outcome::of_native(refused), on_server, "{}: creating", case.name);
        return;
    };
    let instance = created.json();
    let id = instance["id"].as_str().expect("an id").to_owned();
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID").into_bytes();
    let mut native = start(case.start, uuid, ms(&instance["created_at"]), &case.input)
        .unwrap_or_else(|refusal| panic!("{}: the harness refused to create: {refusal:?}", case.name));
    assert_eq!(native.view(), View::server(&created), "{}: created", case.name);

    for (idx, step) in case.steps.iter().enumerate() {
        let what = format!("{}: step {idx}, {step:?}", case.name);
        let response = match step {
            Step::Act(action, payload, _) => server.act(&id, action, payload.clone()).await,
            Step::Migrate(to_version, _) => {
                let body = json!({ "to_version": to_version, "reason": "parity" }).to_string();
                let path = format!("/v1/admin/instances/{id}/migrate");
                server.request(Method::POST, &path, &[], Some(body.into_bytes())).await
            }
        };
        let on_server = Outcome::of_response(&response, step.expect());
        let current = server.get(&format!("/v1/instances/{id}")).await.expect(200);
        // The host's clock for this step, if it applied it; a refused one recorded nothing.
        let now_ms = ms(&current.json()["updated_at"]);
        native.set_now_ms(now_ms);
        let natively = match step {
            Step::Act(action, payload, _) => native.act(action, payload.clone()),
            Step::Migrate(to_version, _) => {
                migrate(case.start, *to_version, &native.instance(), now_ms).map(|machine| native = machine)
            }
        };
        assert_eq!(Outcome::of_native(natively), on_server, "{what}");
        assert_eq!(native.view(), View::server(&current), "{what}");
    }
}

impl Step {
    fn expect(&self) -> Expect {
        match self {
            Step::Act(_, _, expect) | Step::Migrate(_, expect) => *expect,
        }
    }
}

/// A `Machine` of any definition, so that a migration can replace one by another.
trait Native {
    fn act(&mut self, action: &str, payload: Value) -> Result<(), Refusal>;
    fn set_now_ms(&mut self, now_ms: i64);
    fn instance(&self) -> Instance;
    fn view(&self) -> View;
}

impl<D: Definition> Native for Machine<D> {
    fn act(&mut self, action: &str, payload: Value) -> Result<(), Refusal> {
        Machine::act(self, action, payload)
    }

    fn set_now_ms(&mut self, now_ms: i64) {
        Machine::set_now_ms(self, now_ms);
    }

    fn instance(&self) -> Instance {
        Machine::instance(self)
    }

    fn view(&self) -> View {
        let status = match self.status() {
            None => "running",
            Some(TerminalStatus::Completed) => "completed",
            Some(TerminalStatus::Failed) => "failed",
            Some(TerminalStatus::Cancelled) => "cancelled",
        };
        View {
            id: self.instance_id().into(),
            definition_version: u64::from(self.instance().definition_version),
            revision: self.revision(),
            state: self.state().into(),
            status: status.into(),
            data: self.data_json().into(),
            message: self.message().map(Into::into),
            allowed_actions: self.allowed_actions(),
        }
    }
}

fn boxed<D: Definition + 'static>(machine: Result<Machine<D>, Refusal>) -> Result<Box<dyn Native>, Refusal> {
    machine.map(|machine| Box::new(machine) as Box<dyn Native>)
}

fn start(start: Start, id: [u8; 16], now_ms: i64, input: &Value) -> Result<Box<dyn Native>, Refusal> {
    match start {
        Start::DocumentProcessing => {
            boxed(Machine::<DocumentProcessing>::start_with(id, now_ms, input.clone()))
        }
        Start::Parity => boxed(Machine::<Parity>::start_with(id, now_ms, input.clone())),
    }
}

fn migrate(start: Start, to_version: u32, from: &Instance, now_ms: i64) -> Result<Box<dyn Native>, Refusal> {
    match (start, to_version) {
        (Start::DocumentProcessing, 1) => boxed(Machine::<DocumentProcessing>::migrate(from, now_ms)),
        (Start::DocumentProcessing, 2) => boxed(Machine::<DocumentProcessingV2>::migrate(from, now_ms)),
        (Start::Parity, 1) => boxed(Machine::<Parity>::migrate(from, now_ms)),
        other => panic!("no version {other:?} to migrate to"),
    }
}

/// What is compared after every step.
#[derive(Debug, PartialEq, Eq)]
struct View {
    id: String,
    definition_version: u64,
    revision: i64,
    state: String,
    status: String,
    /// The JSON text, byte for byte.
    data: String,
    message: Option<String>,
    allowed_actions: Vec<String>,
}

impl View {
    fn server(response: &Response) -> View {
        let instance = response.json();
        let text =
            |field: &str| instance[field].as_str().unwrap_or_else(|| panic!("{field}: {instance}")).into();
        let raw: HashMap<String, Box<RawValue>> = serde_json::from_slice(&response.body).expect("an object");
        View {
            id: text("id"),
            definition_version: instance["definition_version"].as_u64().expect("a version"),
            revision: instance["revision"].as_i64().expect("a revision"),
            state: text("state"),
            status: text("status"),
            data: raw["data"].get().into(),
            message: instance["message"].as_str().map(Into::into),
            allowed_actions: serde_json::from_value(instance["allowed_actions"].clone()).expect("names"),
        }
    }
}

/// How a call ended, in terms both sides share.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    NotAllowed { current_state: String, allowed_actions: Vec<String> },
    Unknown,
    Rejected { code: String, reason: String },
    NoPath,
}

impl Outcome {
    /// The server's answer, which must be the `expected` one.
    #[track_caller]
    fn of_response(response: &Response, expected: Expect) -> Outcome {
        let problem = |status, kind| assert_problem(response, status, kind);
        match expected {
            Expect::Accepted => {
                let status = response.status.as_u16();
                assert!(matches!(status, 200 | 201), "{status}: {}", String::from_utf8_lossy(&response.body));
                Outcome::Accepted
            }
            Expect::NotAllowed => {
                let problem = problem(409, "action-not-allowed");
                Outcome::NotAllowed {
                    current_state: problem["current_state"].as_str().expect("current_state").into(),
                    allowed_actions: serde_json::from_value(problem["allowed_actions"].clone())
                        .expect("allowed_actions"),
                }
            }
            Expect::Unknown => {
                problem(404, "unknown-action");
                Outcome::Unknown
            }
            Expect::Rejected(code) => {
                let problem = problem(422, "rejected");
                assert_eq!(problem["code"], code, "{problem}");
                Outcome::Rejected {
                    code: code.into(),
                    reason: problem["detail"].as_str().expect("detail").into(),
                }
            }
            Expect::NoPath => {
                problem(409, "no-migration-path");
                Outcome::NoPath
            }
        }
    }

    fn of_native(result: Result<(), Refusal>) -> Outcome {
        match result {
            Ok(()) => Outcome::Accepted,
            Err(Refusal::NotAllowed { current_state, allowed_actions }) => {
                Outcome::NotAllowed { current_state, allowed_actions }
            }
            Err(Refusal::UnknownAction(_)) => Outcome::Unknown,
            Err(Refusal::Rejected(rejection)) => {
                Outcome::Rejected { code: rejection.code, reason: rejection.reason }
            }
            Err(Refusal::NoMigrationPath { .. }) => Outcome::NoPath,
            Err(other) => panic!("the harness refused in a way the table never expects: {other:?}"),
        }
    }
}

/// An RFC 3339 timestamp as ms since the Unix epoch: the host's `now_ms` for the call.
fn ms(timestamp: &Value) -> i64 {
    let text = timestamp.as_str().expect("a timestamp");
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("{text}: {err}"));
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("in range")
}
