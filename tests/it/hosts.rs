//! Two server processes on one database, as several hosts run: each keeps its own
//! copy of the instances it touched, and neither may act on a stale one.

use crate::support::{Backend, TestServer, assert_problem, module};
use serde_json::{Value, json};

both_backends!(
    a_host_acts_on_an_instance_another_host_moved_on,
    an_action_computed_from_a_stale_copy_is_not_applied,
    a_key_used_on_one_host_replays_on_another,
);

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
