//! A guest call that breaks a limit or the ABI fails that one call: 500
//! `definition-failed` naming the fault, with the instance and its history as they
//! were. A module whose manifest is bad is refused at deploy, and more guest calls
//! than pool slots wait for one instead of failing.

use crate::support::wat::{
    Answer, ENTRIES, module_declaring, trapping, wat_module, wat_module_trapping_alloc,
};
use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard_guest::abi::{self, ActionDecl, Manifest, StateDecl};

both_backends!(
    faults_fail_only_their_call,
    a_call_past_its_deadline_fails_as_such,
    bad_manifests_are_refused_at_deploy,
    huge_manifests_are_refused_at_deploy,
    a_trap_in_any_export_fails_only_its_call,
    deeply_nested_data_is_kept_as_it_is,
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
        ("flood", "the outcome asks for 5000 effects; at most 1024 are allowed"),
        ("undeclared", "undeclared state \"NOWHERE\""),
        ("stray", "does not allow"),
        // Text columns cannot hold NUL on PostgreSQL: a bad answer on every backend.
        ("nul-message", "the outcome's message contains a NUL character"),
        ("nul-refusal", "the outcome's reason contains a NUL character"),
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
    assert_other_instances_work(&server).await;
}

/// A new `hostile` instance takes an action: the faults before hurt only their calls.
async fn assert_other_instances_work(server: &TestServer) {
    let other = hostile_instance(server).await;
    let echoed = server.act(&other, "echo", json!("fine")).await.expect(200).json();
    assert_eq!((&echoed["revision"], &echoed["data"]["echo"]), (&json!(2), &json!("fine")));
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
    server.deploy(module_declaring(&well_formed("well-formed"), &trapping(&ENTRIES))).await.expect(201);
    // An ABI-1 module has no `switchyard_on_override`; one of ABI 2 must.
    let abi1 = Manifest { abi: 1, ..well_formed("abi-one") };
    let without_override = [ENTRIES[0], ENTRIES[1], ENTRIES[2], ENTRIES[4]];
    server.deploy(module_declaring(&abi1, &trapping(&without_override))).await.expect(201);
    let refused =
        server.deploy(module_declaring(&well_formed("no-override"), &trapping(&without_override))).await;
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
        let refused = server.deploy(module_declaring(&manifest, &trapping(&ENTRIES))).await;
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

/// `well_formed(name)` with `more` states besides.
fn with_states(name: &str, more: usize) -> Manifest {
    let mut manifest = well_formed(name);
    manifest.states.extend((0..more).map(|idx| StateDecl {
        name: format!("S{idx}"),
        description: String::new(),
        terminal: None,
    }));
    manifest
}

async fn huge_manifests_are_refused_at_deploy(backend: Backend) {
    let server = hostile_server(backend, "").await;
    let mut many_actions = well_formed("many-actions");
    let poke = many_actions.actions[0].clone();
    many_actions
        .actions
        .extend((0..abi::MAX_ACTIONS).map(|idx| ActionDecl { name: format!("a{idx}"), ..poke.clone() }));
    let mut many_edges = well_formed("many-edges");
    many_edges.actions[0].from = vec!["IDLE".into(); abi::MAX_EDGES];
    let mut wordy = well_formed("wordy");
    wordy.states[0].description = "w".repeat(abi::MAX_DESCRIPTION_LEN + 1);
    for (manifest, reason) in [
        (with_states("many-states", abi::MAX_STATES), "declares 257 states; at most 256 are allowed"),
        (many_actions, "declares 257 actions; at most 256 are allowed"),
        (many_edges, "declares 4097 edges; at most 4096 are allowed"),
        (wordy, "the description of \"IDLE\" is 1025 bytes; at most 1024 are allowed"),
        // Refused by its size, before it is decoded.
        (with_states("huge", 100_000), "bytes encoded; at most 262144 are allowed"),
    ] {
        let refused = server.deploy(module_declaring(&manifest, &trapping(&ENTRIES))).await;
        let problem = assert_problem(&refused, 422, "invalid-module");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{}: {detail}", manifest.name);
        assert_problem(&server.get(&format!("/v1/definitions/{}", manifest.name)).await, 404, "not-found");
    }
    let trapping_manifest = wat_module(&Answer::Traps, &trapping(&ENTRIES));
    let problem = assert_problem(&server.deploy(trapping_manifest).await, 422, "invalid-module");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("reading the manifest failed: the guest trapped"), "{detail}");
    assert_other_instances_work(&server).await;
}

/// A definition `trapper` at `version` whose `init` answers with `init` and whose
/// other entry points trap.
fn trapper(version: u32, init: Answer) -> (Manifest, Vec<(&'static str, Answer)>) {
    let manifest = Manifest::builder("trapper", version)
        .state("IDLE", "")
        .terminal("CANCELLED", abi::TerminalStatus::Cancelled, "")
        .initial("IDLE")
        .action("poke", &["IDLE"], &["IDLE"], "")
        .build();
    let mut entries = trapping(&ENTRIES);
    entries[0].1 = init;
    (manifest, entries)
}

async fn a_trap_in_any_export_fails_only_its_call(backend: Backend) {
    let server = hostile_server(backend, "").await;
    let (manifest, entries) = trapper(1, Answer::accepted("IDLE", json!({})));
    server.deploy(module_declaring(&manifest, &entries)).await.expect(201);
    let id = server.create("trapper", json!({})).await["id"].as_str().expect("an id").to_owned();
    let before = snapshot(&server, &id).await;
    let trapped = |response: &crate::support::Response| {
        let problem = assert_problem(response, 500, "definition-failed");
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        assert!(detail.contains("wasm `unreachable` instruction executed"), "{detail}");
    };

    trapped(&server.act(&id, "poke", Value::Null).await);
    let event = json!({ "event_id": "e-1", "type": "ping", "payload": {} }).to_string();
    let posted = server
        .request(Method::POST, &format!("/v1/instances/{id}/events"), &[], Some(event.into_bytes()))
        .await
        .expect(202)
        .json();
    let last_error = posted["received"]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("unreachable"), "kept for later, as any event it fails on: {posted}");
    let reason = json!({ "reason": "stuck" }).to_string().into_bytes();
    let path = format!("/v1/admin/instances/{id}/cancel");
    trapped(&server.request(Method::POST, &path, &[], Some(reason)).await);

    let (manifest, entries) = trapper(2, Answer::Traps);
    let manifest = Manifest { migrates_from: vec![1], ..manifest };
    server.deploy(module_declaring(&manifest, &entries)).await.expect(201);
    let started =
        server.post("/v1/definitions/trapper/instances", "v2", &json!({ "input": {}, "version": 2 })).await;
    trapped(&started);
    let migrate = json!({ "to_version": 2, "reason": "upgrade" }).to_string().into_bytes();
    trapped(
        &server.request(Method::POST, &format!("/v1/admin/instances/{id}/migrate"), &[], Some(migrate)).await,
    );
    assert_eq!(snapshot(&server, &id).await, before, "the instance and its history are as they were");
    let instances = server.get("/v1/instances?definition=trapper").await.expect(200).json();
    assert_eq!(instances["items"].as_array().map(Vec::len), Some(1), "no instance started on version 2");

    let (manifest, entries) = trapper(1, Answer::accepted("IDLE", json!({})));
    let manifest = Manifest { name: "trapper-alloc".into(), ..manifest };
    server.deploy(wat_module_trapping_alloc(&Answer::encoded(&manifest), &entries)).await.expect(201);
    let started = server.post("/v1/definitions/trapper-alloc/instances", "k", &json!({ "input": {} })).await;
    trapped(&started);
    assert_other_instances_work(&server).await;
}

/// The host checks and renders a definition's data without recursing into it, so data
/// nested deeper than any recursive parser follows cannot overflow the host's stack.
async fn deeply_nested_data_is_kept_as_it_is(backend: Backend) {
    let server = hostile_server(backend, "").await;
    let id = hostile_instance(&server).await;
    let nested = server.act(&id, "nest", Value::Null).await.expect(200);
    let depth = 100_000;
    let data = ["[".repeat(depth), "]".repeat(depth)].concat();
    let body = String::from_utf8(nested.body).expect("utf-8");
    assert!(body.contains(&format!("\"data\":{data}")), "the data as the definition answered it");
    let read = server.get(&format!("/v1/instances/{id}")).await.expect(200);
    assert!(String::from_utf8_lossy(&read.body).contains(&data));
    assert_other_instances_work(&server).await;
}
