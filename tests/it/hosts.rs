//! Two server processes on one database, as several hosts run: each keeps its own
//! copy of the instances it touched, and neither may act on a stale one.

use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(
    a_host_acts_on_an_instance_another_host_moved_on,
    an_action_computed_from_a_stale_copy_is_not_applied,
    a_change_that_loses_the_race_is_recomputed_on_the_stored_state,
    concurrent_actions_on_two_hosts_race_and_all_apply,
    if_match_losing_the_race_to_another_host_is_refused,
    a_key_used_on_one_host_replays_on_another,
    a_long_poll_answers_a_change_made_on_another_host_when_its_wait_ends,
);

const RECOMPUTED: &str = "switchyard_transitions_recomputed_total";

/// A host with document-processing deployed, and a second host on its database.
async fn two_hosts(backend: Backend) -> (TestServer, TestServer) {
    let first = TestServer::start(backend).await;
    first.deploy(module("document-processing")).await.expect(201);
    let second = first.another_host().await;
    (first, second)
}

async fn created_on(host: &TestServer) -> String {
    let created = host.create("document-processing", json!({ "document_url": "s3://hosts" })).await;
    created["id"].as_str().expect("id").to_owned()
}

async fn a_host_acts_on_an_instance_another_host_moved_on(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    b.act(&id, "format", Value::Null).await.expect(200);
    // `a` last saw VALIDATING, where `publish` is not allowed; the store says FORMATTING.
    let published = a.act(&id, "publish", Value::Null).await.expect(200).json();
    assert_eq!(published["state"], "PUBLISHED");
    assert_eq!(published["revision"], 4);
}

async fn an_action_computed_from_a_stale_copy_is_not_applied(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    b.act(&id, "format", Value::Null).await.expect(200);
    // `a` last saw VALIDATING, where `format` is allowed; the store has moved on.
    let refused = a.act(&id, "format", Value::Null).await;
    let problem = assert_problem(&refused, 409, "action-not-allowed");
    assert_eq!(problem["current_state"], "FORMATTING");
    assert_eq!(problem["allowed_actions"], json!(["publish", "fail", "cancel"]));
    let history = a.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let formats = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|entry| entry["trigger"]["name"] == "format")
        .count();
    assert_eq!(formats, 1, "format was applied once");
    let current = b.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 3);
}

async fn a_change_that_loses_the_race_is_recomputed_on_the_stored_state(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    b.act(&id, "validate", Value::Null).await.expect(200);
    // `a` still holds UPLOADED at revision 1, where `cancel` is legal too: its first
    // attempt is computed on that copy and loses the commit to `b`'s revision 2.
    let cancelled = a.act(&id, "cancel", Value::Null).await.expect(200).json();
    assert_eq!((cancelled["state"].as_str(), cancelled["revision"].as_i64()), (Some("CANCELLED"), Some(3)));
    let steps: Vec<(&str, &str)> = cancelled["data"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| (step["action"].as_str().unwrap_or_default(), step["from"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(steps, [("validate", "UPLOADED"), ("cancel", "VALIDATING")], "computed again on revision 2");
    assert_eq!(a.metric(RECOMPUTED).await, 1.0);
}

async fn concurrent_actions_on_two_hosts_race_and_all_apply(backend: Backend) {
    let first = TestServer::start(backend).await;
    first.deploy(module("hostile-guest")).await.expect(201);
    let second = first.another_host().await;
    let created = first.create("hostile", json!({})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // `echo` stays in IDLE, so every one is legal whichever host commits first.
    let echoes = (0..24).map(|n| {
        let host = if n % 2 == 0 { &first } else { &second };
        host.act(&id, "echo", json!({ "n": n }))
    });
    for response in futures::future::join_all(echoes).await {
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    }
    let history = first.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let items = history["items"].as_array().expect("items");
    let seqs: Vec<i64> = items.iter().filter_map(|entry| entry["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    let mut echoed: Vec<i64> =
        items.iter().skip(1).filter_map(|entry| entry["trigger"]["payload"]["n"].as_i64()).collect();
    echoed.sort_unstable();
    assert_eq!(echoed, (0..24).collect::<Vec<_>>(), "each action exactly once");
    let recomputed = first.metric(RECOMPUTED).await + second.metric(RECOMPUTED).await;
    assert!(recomputed >= 1.0, "the hosts raced: {recomputed} changes were computed again");
}

async fn if_match_losing_the_race_to_another_host_is_refused(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    // `b` created the instance and holds it at revision 1.
    let id = created_on(&b).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    let path = format!("/v1/instances/{id}/actions/validate");
    let headers = [("idempotency-key", "race"), ("if-match", "\"1\"")];
    let refused = b.request(reqwest::Method::POST, &path, &headers, Some(b"{}".to_vec())).await;
    let problem = assert_problem(&refused, 412, "precondition-failed");
    assert_eq!(problem["current_etag"], "\"2\"", "the revision that won");
    let current = a.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 2, "the loser wrote nothing");
}

async fn a_key_used_on_one_host_replays_on_another(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let create = "/v1/definitions/document-processing/instances";
    let body = json!({ "input": { "document_url": "s3://replayed" } });
    let first = a.post(create, "create-on-a", &body).await.expect(201);
    let again = b.post(create, "create-on-a", &body).await.expect(201);
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let id = first.json()["id"].as_str().expect("id").to_owned();
    let validate = format!("/v1/instances/{id}/actions/validate");
    let first = a.post(&validate, "validate-on-a", &json!({})).await.expect(200);
    let again = b.post(&validate, "validate-on-a", &json!({})).await.expect(200);
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let current = b.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 2, "applied once");
    let listed = a.get("/v1/instances?limit=10").await.expect(200).json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "one instance created");
}

async fn a_long_poll_answers_a_change_made_on_another_host_when_its_wait_ends(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    let path = format!("/v1/instances/{id}");
    let started = Instant::now();
    let headers = [("if-none-match", "\"1\""), ("prefer", "wait=2")];
    let poll = a.request(Method::GET, &path, &headers, None);
    let change = async {
        a.wait_for_metric("switchyard_long_polls_waiting", |waiting| waiting == 1.0).await;
        b.act(&id, "validate", Value::Null).await.expect(200);
    };
    let (polled, ()) = tokio::join!(poll, change);
    // `b`'s commit woke nobody on `a`: the wait ran out, and `a` read the instance again.
    assert!(started.elapsed() >= Duration::from_millis(1900), "answered at the end of the wait");
    let polled = polled.expect(200);
    assert_eq!(polled.header("etag"), Some("\"2\""));
    assert_eq!(polled.json()["state"], "VALIDATING");
}

mod postgres_only {
    use super::*;

    /// Two hosts change the same few instances at once, in batches, each commit racing
    /// others on the other host: every action applies once, every client hears 200, and
    /// no two transactions wait on each other in a cycle (batches lock rows in id order;
    /// PostgreSQL would find a cycle a second later and fail one of them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hosts_racing_on_the_same_instances_apply_every_action_once_without_deadlock() {
        const INSTANCES: usize = 4;
        const CLIENTS: usize = 32;
        const ROUNDS: usize = 4;
        let first = TestServer::start(Backend::Postgres).await;
        first.deploy(module("hostile-guest")).await.expect(201);
        let second = first.another_host().await;
        let mut ids = Vec::new();
        for _ in 0..INSTANCES {
            ids.push(first.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned());
        }
        // Each client walks the instances in its own order, through its own host.
        let clients = (0..CLIENTS).map(|client| {
            let (host, ids) = (if client % 2 == 0 { &first } else { &second }, &ids);
            async move {
                for round in 0..ROUNDS {
                    let id = &ids[(client + round * (client % 3 + 1)) % INSTANCES];
                    let answer = host.act(id, "echo", json!({ "client": client, "round": round })).await;
                    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                }
            }
        });
        futures::future::join_all(clients).await;
        let mut echoes = 0;
        for id in &ids {
            let history = first.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
            echoes += history["items"].as_array().map_or(0, |items| items.len() - 1);
        }
        assert_eq!(echoes, CLIENTS * ROUNDS, "each action applied once");
        for host in [&first, &second] {
            assert!(!host.log().contains("40P01"), "a deadlock: {}", host.log());
        }
    }
}
