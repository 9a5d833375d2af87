//! Creating, driving, reading and listing instances.

use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(
    a_document_goes_from_upload_to_published,
    history_records_every_transition_in_order,
    failed_stages_are_retried_and_cancel_ends_the_instance,
    illegal_and_unknown_actions_are_refused,
    bad_input_is_refused_and_loses_nothing,
    etags_and_if_match_guard_reads_and_writes,
    a_long_poll_is_woken_by_another_client,
    a_long_poll_times_out_unchanged,
    instances_are_listed_with_filters_and_pages,
    a_restart_keeps_everything,
    concurrent_actions_on_one_host_queue_and_all_apply,
    a_failing_guest_call_runs_once,
);

async fn document_server(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server
}

fn doc() -> Value {
    json!({ "document_url": "s3://docs/report.pdf" })
}

fn id_of(instance: &Value) -> String {
    instance["id"].as_str().expect("instance id").to_owned()
}

async fn a_document_goes_from_upload_to_published(backend: Backend) {
    let server = document_server(backend).await;
    let created = server
        .post("/v1/definitions/document-processing/instances", "doc-1", &json!({ "input": doc() }))
        .await;
    let created = created.expect(201);
    let instance = created.json();
    let id = id_of(&instance);
    assert_eq!(created.header("location"), Some(format!("/v1/instances/{id}").as_str()));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(instance["state"], "UPLOADED");
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["definition_version"], 1);
    assert_eq!(instance["revision"], 1);
    assert_eq!(instance["data"]["document_url"], "s3://docs/report.pdf");
    assert_eq!(instance["allowed_actions"], json!(["validate", "cancel"]));

    for (action, state) in [("validate", "VALIDATING"), ("format", "FORMATTING"), ("publish", "PUBLISHED")] {
        let moved = server.act(&id, action, Value::Null).await.expect(200).json();
        assert_eq!(moved["state"], state, "after {action}");
    }
    let published = server.get(&format!("/v1/instances/{id}")).await.expect(200);
    assert_eq!(published.header("etag"), Some("\"4\""));
    let published = published.json();
    assert_eq!(published["status"], "completed");
    assert_eq!(published["revision"], 4);
    assert_eq!(published["allowed_actions"], json!([]));
    assert_eq!(published["data"]["steps"].as_array().map(Vec::len), Some(3));
}

async fn history_records_every_transition_in_order(backend: Backend) {
    let server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    server.act(&id, "validate", Value::Null).await.expect(200);
    server.act(&id, "fail", json!({ "reason": "corrupt PDF" })).await.expect(200);
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let items = history["items"].as_array().expect("items");
    let steps: Vec<(i64, Option<&str>, &str, &str, &str)> = items
        .iter()
        .map(|entry| {
            (
                entry["seq"].as_i64().unwrap_or_default(),
                entry["from_state"].as_str(),
                entry["to_state"].as_str().unwrap_or_default(),
                entry["trigger"]["kind"].as_str().unwrap_or_default(),
                entry["trigger"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, None, "UPLOADED", "start", "init"),
            (2, Some("UPLOADED"), "VALIDATING", "action", "validate"),
            (3, Some("VALIDATING"), "FAILED", "action", "fail"),
        ]
    );
    let sha256 =
        server.get("/v1/definitions/document-processing/versions/1").await.expect(200).json()["sha256"]
            .clone();
    for entry in items {
        assert_eq!(entry["definition_version"], 1);
        assert_eq!(entry["module_sha256"], sha256);
        assert!(entry["fuel_used"].as_u64().is_some_and(|fuel| fuel > 0), "{entry}");
        assert!(entry["trigger"]["id"].is_string(), "the idempotency key is recorded: {entry}");
    }
    assert_eq!(items[0]["trigger"]["payload"], doc());
    assert_eq!(items[2]["trigger"]["payload"], json!({ "reason": "corrupt PDF" }));
}

async fn failed_stages_are_retried_and_cancel_ends_the_instance(backend: Backend) {
    let server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    server.act(&id, "validate", Value::Null).await.expect(200);
    server.act(&id, "format", Value::Null).await.expect(200);
    let failed = server.act(&id, "fail", json!({ "reason": "fonts missing" })).await.expect(200).json();
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(failed["status"], "running", "FAILED is not terminal");
    let retried = server.act(&id, "retry", Value::Null).await.expect(200).json();
    assert_eq!(retried["state"], "FORMATTING", "retry returns to the stage that failed");
    assert_eq!(retried["data"]["retries"], 1);

    let rejected = server.act(&id, "fail", json!({})).await;
    let problem = assert_problem(&rejected, 422, "rejected");
    assert!(problem["code"].is_string(), "{problem}");

    let cancelled = server.act(&id, "cancel", json!({ "reason": "withdrawn" })).await.expect(200).json();
    assert_eq!(cancelled["state"], "CANCELLED");
    assert_eq!(cancelled["status"], "cancelled");
    let after = server.act(&id, "format", Value::Null).await;
    let problem = assert_problem(&after, 409, "action-not-allowed");
    assert_eq!(problem["current_state"], "CANCELLED");
    assert_eq!(problem["allowed_actions"], json!([]));
}

async fn illegal_and_unknown_actions_are_refused(backend: Backend) {
    let server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    let illegal = server.act(&id, "publish", Value::Null).await;
    let problem = assert_problem(&illegal, 409, "action-not-allowed");
    assert_eq!(problem["current_state"], "UPLOADED");
    assert_eq!(problem["allowed_actions"], json!(["validate", "cancel"]));

    assert_problem(&server.act(&id, "teleport", Value::Null).await, 404, "unknown-action");
    let missing = uuid::Uuid::new_v4();
    assert_problem(&server.act(&missing.to_string(), "validate", Value::Null).await, 404, "not-found");
    assert_problem(&server.get(&format!("/v1/instances/{missing}")).await, 404, "not-found");
    assert_problem(&server.get("/v1/instances/not-a-uuid").await, 404, "not-found");
    assert_problem(&server.get(&format!("/v1/instances/{missing}/history")).await, 404, "not-found");
    assert_problem(&server.get("/v1/no-such-endpoint").await, 404, "not-found");

    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 1, "refusals change nothing");
}

async fn bad_input_is_refused_and_loses_nothing(backend: Backend) {
    let server = document_server(backend).await;
    let path = "/v1/definitions/document-processing/instances";
    for (key, input) in [("no-url", json!({})), ("empty-url", json!({ "document_url": "  " }))] {
        let problem =
            assert_problem(&server.post(path, key, &json!({ "input": input })).await, 422, "rejected");
        assert_eq!(problem["code"], "invalid_input", "{problem}");
    }
    let headers = [("idempotency-key", "malformed"), ("content-type", "application/json")];
    let malformed = server.request(Method::POST, path, &headers, Some(b"{\"input\": ".to_vec())).await;
    assert_problem(&malformed, 400, "bad-request");
    let no_key = server.request(Method::POST, path, &[], Some(br#"{"input": {}}"#.to_vec())).await;
    assert_problem(&no_key, 400, "idempotency-key-missing");
    let huge = format!(r#"{{"input": {{"document_url": "{}"}}}}"#, "x".repeat((1 << 20) + 4096));
    let too_large = server.request(Method::POST, path, &headers, Some(huge.into_bytes())).await;
    assert_problem(&too_large, 413, "body-too-large");
    let wrong_method = server.request(Method::DELETE, "/v1/instances", &[], None).await;
    assert_problem(&wrong_method, 405, "method-not-allowed");

    let listed = server.get("/v1/instances").await.expect(200).json();
    assert_eq!(listed["items"], json!([]), "no instance was created");
}

async fn etags_and_if_match_guard_reads_and_writes(backend: Backend) {
    let server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    let path = format!("/v1/instances/{id}");
    let unchanged = server.request(Method::GET, &path, &[("if-none-match", "\"1\"")], None).await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some("\"1\""));
    assert!(unchanged.body.is_empty());

    let action = format!("{path}/actions/validate");
    let body = Some(b"{}".to_vec());
    let stale = server.request(
        Method::POST,
        &action,
        &[("idempotency-key", "a"), ("if-match", "\"7\"")],
        body.clone(),
    );
    let stale = assert_problem(&stale.await, 412, "precondition-failed");
    assert_eq!(stale["current_etag"], "\"1\"");
    let fresh =
        server.request(Method::POST, &action, &[("idempotency-key", "b"), ("if-match", "\"1\"")], body);
    assert_eq!(fresh.await.expect(200).json()["revision"], 2);

    let changed = server.request(Method::GET, &path, &[("if-none-match", "\"1\"")], None).await.expect(200);
    assert_eq!(changed.header("etag"), Some("\"2\""));
}

const WAITING: &str = "switchyard_long_polls_waiting";

async fn a_long_poll_is_woken_by_another_client(backend: Backend) {
    let server = document_server(backend).await;
    // With the ETag it has, and without: then it waits for a change from the revision
    // current when it arrived.
    let with_etag: &[(&str, &str)] = &[("if-none-match", "\"1\""), ("prefer", "wait=20")];
    for headers in [with_etag, &[("prefer", "wait=20")]] {
        woken_by_an_action(&server, headers).await;
    }
}

async fn woken_by_an_action(server: &TestServer, headers: &[(&str, &str)]) {
    let id = id_of(&server.create("document-processing", doc()).await);
    let path = format!("/v1/instances/{id}");
    let started = Instant::now();
    let poll = async {
        let polled = server.request(Method::GET, &path, headers, None).await;
        (polled, Instant::now())
    };
    // The action goes out only once the long-poll is parked, so only a wake-up answers it.
    let act = async {
        server.wait_for_metric(WAITING, |waiting| waiting == 1.0).await;
        let sent = Instant::now();
        server.act(&id, "validate", Value::Null).await.expect(200);
        sent
    };
    let ((polled, answered), sent) = tokio::join!(poll, act);
    let polled = polled.expect(200);
    assert!(answered > sent, "answered after the action was sent");
    assert_eq!(polled.header("preference-applied"), Some("wait=20"));
    assert_eq!(polled.header("etag"), Some("\"2\""));
    assert_eq!(polled.json()["state"], "VALIDATING");
    assert!(started.elapsed() < Duration::from_secs(15), "woken by the change, not by the timeout");
    assert_eq!(server.metric(WAITING).await, 0.0, "no long-poll is left waiting");
}

async fn a_long_poll_times_out_unchanged(backend: Backend) {
    let server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    let started = Instant::now();
    let headers = [("if-none-match", "\"1\""), ("prefer", "wait=1")];
    let polled = server.request(Method::GET, &format!("/v1/instances/{id}"), &headers, None).await;
    assert_eq!(polled.status, 304);
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
}

async fn instances_are_listed_with_filters_and_pages(backend: Backend) {
    let server = document_server(backend).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&server.create("document-processing", doc()).await));
    }
    server.act(&ids[0], "validate", Value::Null).await.expect(200);

    let validating = server.get("/v1/instances?state=VALIDATING").await.expect(200).json();
    assert_eq!(validating["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(validating["items"][0]["id"], ids[0].as_str());
    let running = server.get("/v1/instances?definition=document-processing&version=1&status=running").await;
    assert_eq!(running.expect(200).json()["items"].as_array().map(Vec::len), Some(5));
    assert_eq!(server.get("/v1/instances?status=completed").await.expect(200).json()["items"], json!([]));
    assert_problem(&server.get("/v1/instances?status=sleepy").await, 400, "bad-request");
    assert_problem(&server.get("/v1/instances?cursor=nonsense").await, 400, "bad-request");

    let mut seen = Vec::new();
    let mut path = "/v1/instances?limit=2".to_owned();
    for _ in 0..5 {
        let page = server.get(&path).await.expect(200).json();
        seen.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/instances?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "pages cover every instance once, newest first");
}

async fn a_restart_keeps_everything(backend: Backend) {
    let mut server = document_server(backend).await;
    let id = id_of(&server.create("document-processing", doc()).await);
    let validated =
        server.post(&format!("/v1/instances/{id}/actions/validate"), "v-1", &json!({})).await.expect(200);

    server.restart().await;

    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["state"], "VALIDATING");
    assert_eq!(instance["revision"], 2);
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2));
    let replayed =
        server.post(&format!("/v1/instances/{id}/actions/validate"), "v-1", &json!({})).await.expect(200);
    assert_eq!(replayed.body, validated.body, "idempotency records survive the restart");
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    server.act(&id, "format", Value::Null).await.expect(200);
}

/// A guest call that fails on this process's own copy of the instance is not run again
/// on the stored instance: the copy was current, so the verdict stands.
async fn a_failing_guest_call_runs_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let id = id_of(&server.create("hostile", json!({})).await);
    let calls = server.metric("switchyard_guest_calls_total").await;
    assert_problem(&server.act(&id, "trap", Value::Null).await, 500, "definition-failed");
    assert_eq!(server.metric("switchyard_guest_calls_total").await, calls + 1.0, "run once");
    server.act(&id, "echo", Value::Null).await.expect(200);
}

/// Within one process, changes to one instance queue for it: none is computed on a
/// revision another one is about to replace. (Across processes they race: see hosts.rs.)
async fn concurrent_actions_on_one_host_queue_and_all_apply(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let id = id_of(&server.create("hostile", json!({})).await);
    // `echo` stays in IDLE: every one of them is legal whatever commits first.
    let echoes = (0..24).map(|n| server.act(&id, "echo", json!({ "n": n })));
    let responses = futures::future::join_all(echoes).await;
    for response in &responses {
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    }
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 25);
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let seqs: Vec<i64> =
        history["items"].as_array().into_iter().flatten().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    let mut echoed: Vec<i64> = history["items"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .filter_map(|e| e["trigger"]["payload"]["n"].as_i64())
        .collect();
    echoed.sort_unstable();
    assert_eq!(echoed, (0..24).collect::<Vec<_>>(), "each action exactly once");
    assert_eq!(server.metric("switchyard_transitions_recomputed_total").await, 0.0, "they queued");
}
