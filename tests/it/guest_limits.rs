//! A guest call that breaks a limit or the ABI fails that one call: 500
//! `definition-failed` naming the fault, with the instance and its history as they
//! were. A module whose manifest is bad is refused at deploy, and more guest calls
//! than pool slots wait for one instead of failing.

use crate::support::{Backend, TestServer, assert_problem, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard_guest::abi::{self, Manifest};

both_backends!(
    faults_fail_only_their_call,
    a_call_past_its_deadline_fails_as_such,
    bad_manifests_are_refused_at_deploy,
    more_calls_than_slots_wait_for_one,
);

/// Fuel for hours of spinning (a guest burns ~10¹⁰ units a second), so that only the
/// wall-clock deadline stops it.
pub const ENDLESS_FUEL: &str = "fuel_per_call = 1_000_000_000_000_000";

/// A server configured with `guest` (lines of its `[guest]` table), `hostile` deployed.
pub async fn hostile_server(backend: Backend, guest: &str) -> TestServer {
    let server = TestServer::start_with_config(backend, &format!("[guest]\n{guest}\n")).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    server
}

/// The id of a new `hostile` instance.
pub async fn hostile_instance(server: &TestServer) -> String {
    let created = server.create("hostile", json!({})).await;
    created["id"].as_str().expect("an id").to_owned()
}

/// The instance and its history as a client reads them.
async fn snapshot(server: &TestServer, id: &str) -> (Value, Value) {
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    (instance, history)
}

/// Runs `action` on `id`, checks that it failed as the definition's fault with a
/// detail naming `fault` and that the instance and its history are unchanged, and
/// returns the detail.
async fn assert_fails_cleanly(server: &TestServer, id: &str, action: &str, fault: &str) -> String {
    let before = snapshot(server, id).await;
    let failed = server.act(id, action, Value::Null).await;
    let problem = assert_problem(&failed, 500, "definition-failed");
    let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(fault), "{action}: {detail}");
    assert_eq!(snapshot(server, id).await, before, "{action} left the instance and its history as they were");
    detail
}

async fn faults_fail_only_their_call(backend: Backend) {
    let server = hostile_server(backend, "").await;
    let id = hostile_instance(&server).await;
    for (action, fault) in [
        ("spin", "ran out of fuel (50000000 units)"),
        ("hog", "exceeded its memory limit"),
        ("recurse", "call stack exhausted"),
        ("trap", "wasm `unreachable` instruction executed"),
        ("oob", "the response lies outside guest memory"),
        ("huge", "the limit is 4194304"),
        ("garbage", "switchyard_on_action response does not decode"),
        ("not-json", "the new data is not JSON"),
        ("undeclared", "undeclared state \"NOWHERE\""),
        ("stray", "does not allow"),
    ] {
        assert_fails_cleanly(&server, &id, action, fault).await;
    }

    // A refusal is the definition's answer, not its failure.
    let before = snapshot(&server, &id).await;
    let refused = server.act(&id, "refuse", Value::Null).await;
    assert_eq!(assert_problem(&refused, 422, "rejected")["code"], "refused_on_purpose");
    assert_eq!(snapshot(&server, &id).await, before, "a refusal changes nothing either");

    let echoed = server.act(&id, "echo", json!({ "still": "alive" })).await.expect(200).json();
    assert_eq!((&echoed["revision"], &echoed["data"]["echo"]), (&json!(2), &json!({ "still": "alive" })));
}

async fn a_call_past_its_deadline_fails_as_such(backend: Backend) {
    let server = hostile_server(backend, &format!("{ENDLESS_FUEL}\ndeadline_ms = 300")).await;
    let id = hostile_instance(&server).await;
    let started = Instant::now();
    let detail =
        assert_fails_cleanly(&server, &id, "spin", "exceeded its wall-clock deadline of 300ms").await;
    assert!(!detail.contains("fuel"), "{detail}");
    assert!(started.elapsed() >= Duration::from_millis(300), "the spin ran until its deadline");
}

/// Where the WAT modules below keep their manifest.
const MANIFEST_AT: u32 = 16;

/// The entry points of ABI 2 (ABI 1 has all but `switchyard_on_override`).
const ENTRIES: [&str; 5] = [
    abi::exports::INIT,
    abi::exports::ON_ACTION,
    abi::exports::ON_EVENT,
    abi::exports::ON_OVERRIDE,
    abi::exports::MIGRATE,
];

/// A module with the memory, the allocator, `switchyard_manifest` answering
/// `manifest` encoded, and `entries`, which trap.
fn module_declaring(manifest: &Manifest, entries: &[&str]) -> Vec<u8> {
    let bytes = postcard::to_allocvec(manifest).expect("a manifest encodes");
    let escaped: String = bytes.iter().map(|byte| format!("\\{byte:02x}")).collect();
    let packed = abi::pack(MANIFEST_AT, u32::try_from(bytes.len()).expect("a small manifest"));
    let entry = |name: &str| format!(r#"(func (export "{name}") (param i32 i32) (result i64) unreachable)"#);
    let entries: String = entries.iter().copied().map(entry).collect();
    wat::parse_str(format!(
        r#"(module
            (memory (export "{memory}") 1)
            (data (i32.const {MANIFEST_AT}) "{escaped}")
            (func (export "{alloc}") (param i32) (result i32) i32.const 4096)
            (func (export "{manifest}") (result i64) i64.const {packed})
            {entries})"#,
        memory = abi::exports::MEMORY,
        alloc = abi::exports::ALLOC,
        manifest = abi::exports::MANIFEST,
    ))
    .expect("the test WAT parses")
}

/// A manifest the host accepts.
fn well_formed(name: &str) -> Manifest {
    Manifest::builder(name, 1)
        .state("IDLE", "")
        .initial("IDLE")
        .action("poke", &["IDLE"], &["IDLE"], "")
        .build()
}

async fn bad_manifests_are_refused_at_deploy(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The control: the same module with a good manifest deploys.
    server.deploy(module_declaring(&well_formed("well-formed"), &ENTRIES)).await.expect(201);
    // An ABI-1 module has no `switchyard_on_override`; one of ABI 2 must.
    let abi1 = Manifest { abi: 1, ..well_formed("abi-one") };
    let without_override = [ENTRIES[0], ENTRIES[1], ENTRIES[2], ENTRIES[4]];
    server.deploy(module_declaring(&abi1, &without_override)).await.expect(201);
    let refused = server.deploy(module_declaring(&well_formed("no-override"), &without_override)).await;
    let problem = assert_problem(&refused, 422, "invalid-module");
    assert!(
        problem["detail"].as_str().is_some_and(|detail| detail.contains(abi::exports::ON_OVERRIDE)),
        "{problem}"
    );

    let undeclared_initial =
        Manifest { initial_state: "NOWHERE".into(), ..well_formed("undeclared-initial") };
    let version_zero = Manifest { version: 0, ..well_formed("version-zero") };
    let other_abi = Manifest { abi: 99, ..well_formed("other-abi") };
    for (manifest, reason) in [
        (undeclared_initial, "initial state \"NOWHERE\" is not declared"),
        (version_zero, "version must be a positive integer"),
        (other_abi, "ABI version 99"),
    ] {
        let refused = server.deploy(module_declaring(&manifest, &ENTRIES)).await;
        let problem = assert_problem(&refused, 422, "invalid-module");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{}: {detail}", manifest.name);
        let lookup = server.get(&format!("/v1/definitions/{}", manifest.name)).await;
        assert_problem(&lookup, 404, "not-found");
    }
}

/// Pool slots of the server below, and the calls made at once: four times as many.
const SLOTS: usize = 2;
const CALLS: usize = 4 * SLOTS;

/// Turns of `busy` per call: ~3·10⁹ fuel, some 300 ms, so that every call is still
/// running long after the last is sent, and well within the deadline.
const TURNS: u64 = 200_000_000;

async fn more_calls_than_slots_wait_for_one(backend: Backend) {
    let guest = format!("concurrent_calls = {SLOTS}\n{ENDLESS_FUEL}\ndeadline_ms = 30000");
    let server = hostile_server(backend, &guest).await;
    let mut ids = Vec::new();
    for _ in 0..CALLS {
        ids.push(hostile_instance(&server).await);
    }
    let payload = json!({ "turns": TURNS });
    let calls = ids.iter().map(|id| async {
        let sent = Instant::now();
        let answer = server.act(id, "busy", payload.clone()).await;
        (sent, answer, Instant::now())
    });
    let calls = futures::future::join_all(calls).await;
    for (_, answer, _) in &calls {
        let busy = answer.json();
        assert_eq!(answer.status.as_u16(), 200, "every call gets a slot in turn: {busy}");
        assert_eq!((&busy["revision"], &busy["data"]["echo"]), (&json!(2), &payload));
    }
    // All were in flight together, for longer than a call takes to reach the server.
    let last_sent = calls.iter().map(|(sent, ..)| *sent).max().expect("calls");
    let first_answered = calls.iter().map(|(.., answered)| *answered).min().expect("calls");
    assert!(
        first_answered.saturating_duration_since(last_sent) >= Duration::from_millis(100),
        "the calls overlapped: the first answer came {:?} after the last was sent",
        first_answered.saturating_duration_since(last_sent)
    );
}
