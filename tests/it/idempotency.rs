//! `Idempotency-Key`: replays, reuse with another body, concurrency, scoping.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(
    a_retried_create_returns_the_same_instance,
    a_key_reused_with_another_body_is_refused,
    concurrent_requests_with_one_key_run_once,
    a_retried_action_is_applied_once,
    refusals_are_replayed_as_they_were,
    keys_are_scoped_to_the_endpoint_and_target,
    deploys_accept_a_key,
    an_expired_key_counts_as_new,
    expired_records_are_swept,
    diagnostics_list_the_responses_kept_for_an_instance,
    operations_under_one_key_on_two_hosts_take_effect_once,
);

const CREATE: &str = "/v1/definitions/document-processing/instances";

async fn document_server(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server
}

fn create_body(url: &str) -> Value {
    json!({ "input": { "document_url": url } })
}

async fn instance_count(server: &TestServer) -> usize {
    let listed = server.get("/v1/instances?limit=500").await.expect(200).json();
    listed["items"].as_array().map_or(0, Vec::len)
}

async fn a_retried_create_returns_the_same_instance(backend: Backend) {
    let server = document_server(backend).await;
    let first = server.post(CREATE, "create-1", &create_body("s3://a")).await.expect(201);
    let again = server.post(CREATE, "create-1", &create_body("s3://a")).await.expect(201);
    assert_eq!(again.body, first.body, "the stored response is replayed byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(instance_count(&server).await, 1);
    let id = first.json()["id"].as_str().map(str::to_owned).unwrap_or_default();
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(1));
}

async fn a_key_reused_with_another_body_is_refused(backend: Backend) {
    let server = document_server(backend).await;
    server.post(CREATE, "create-2", &create_body("s3://a")).await.expect(201);
    let reused = server.post(CREATE, "create-2", &create_body("s3://b")).await;
    assert_problem(&reused, 422, "idempotency-key-reused");
    assert_eq!(instance_count(&server).await, 1);
}

async fn concurrent_requests_with_one_key_run_once(backend: Backend) {
    let server = document_server(backend).await;
    let body = create_body("s3://same");
    let requests = (0..50).map(|_| server.post(CREATE, "stampede", &body));
    let responses = futures::future::join_all(requests).await;
    let mut created = Vec::new();
    for response in &responses {
        match response.status.as_u16() {
            201 => created.push(response.json()["id"].clone()),
            409 => {
                assert_problem(response, 409, "idempotency-key-in-use");
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&response.body)),
        }
    }
    assert!(!created.is_empty(), "at least the first request succeeds");
    assert!(created.iter().all(|id| *id == created[0]), "every success names the same instance");
    assert_eq!(instance_count(&server).await, 1, "one transition, however many requests");
}

async fn a_retried_action_is_applied_once(backend: Backend) {
    let server = document_server(backend).await;
    let instance = server.post(CREATE, "create-3", &create_body("s3://a")).await.expect(201).json();
    let id = instance["id"].as_str().unwrap_or_default();
    let path = format!("/v1/instances/{id}/actions/validate");
    let first = server.post(&path, "validate-1", &json!({})).await.expect(200);
    let again = server.post(&path, "validate-1", &json!({})).await.expect(200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let current = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 2, "applied once");
}

async fn refusals_are_replayed_as_they_were(backend: Backend) {
    let server = document_server(backend).await;
    let instance = server.post(CREATE, "create-4", &create_body("s3://a")).await.expect(201).json();
    let id = instance["id"].as_str().unwrap_or_default();
    let publish = format!("/v1/instances/{id}/actions/publish");
    let refused = server.post(&publish, "publish-early", &json!({})).await;
    let problem = assert_problem(&refused, 409, "action-not-allowed");
    assert_eq!(problem["current_state"], "UPLOADED");
    assert_eq!(problem["allowed_actions"], json!(["validate", "cancel"]));
    // Move the instance on; the same key still gets the response it got the first time.
    for action in ["validate", "format"] {
        server.act(id, action, Value::Null).await.expect(200);
    }
    let replayed = server.post(&publish, "publish-early", &json!({})).await;
    assert_eq!(replayed.status, 409);
    assert_eq!(replayed.body, refused.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    server.post(&publish, "publish-now", &json!({})).await.expect(200);
}

async fn keys_are_scoped_to_the_endpoint_and_target(backend: Backend) {
    let server = document_server(backend).await;
    let one = server.post(CREATE, "shared", &create_body("s3://a")).await.expect(201).json();
    let two = server.post(CREATE, "other", &create_body("s3://b")).await.expect(201).json();
    for instance in [&one, &two] {
        let id = instance["id"].as_str().unwrap_or_default();
        let validated =
            server.post(&format!("/v1/instances/{id}/actions/validate"), "shared", &json!({})).await;
        let validated = validated.expect(200);
        assert_eq!(validated.header("idempotent-replayed"), None, "a key is per endpoint and instance");
        assert_eq!(validated.json()["id"], instance["id"]);
    }
}

async fn deploys_accept_a_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let headers = [("idempotency-key", "deploy-1"), ("content-type", "application/wasm")];
    let deploy = || {
        server.request(
            reqwest::Method::POST,
            "/v1/definitions",
            &headers,
            Some(module("document-processing")),
        )
    };
    let first = deploy().await.expect(201);
    let again = deploy().await.expect(201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

async fn an_expired_key_counts_as_new(backend: Backend) {
    let server = short_retention(backend).await;
    let first = server.post(CREATE, "kept-briefly", &create_body("s3://a")).await.expect(201);
    let id = first.json()["id"].as_str().expect("id").to_owned();
    let validate = format!("/v1/instances/{id}/actions/validate");
    server.post(&validate, "validate-briefly", &json!({})).await.expect(200);
    // Past retention, and long before the sweeper comes by: the keys are free again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let again = server.post(CREATE, "kept-briefly", &create_body("s3://a")).await.expect(201);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_ne!(again.json()["id"], first.json()["id"], "a new instance");
    let refused = server.post(&validate, "validate-briefly", &json!({})).await;
    assert_eq!(refused.header("idempotent-replayed"), None);
    assert_eq!(
        assert_problem(&refused, 409, "action-not-allowed")["current_state"],
        "VALIDATING",
        "run afresh, not replayed"
    );
    assert_eq!(instance_count(&server).await, 2);
}

/// A server that keeps idempotency records for one second, with its config file.
async fn short_retention(backend: Backend) -> TestServer {
    let server = TestServer::start_with_config(backend, "idempotency_retention_secs = 1\n").await;
    server.deploy(module("document-processing")).await.expect(201);
    server
}

async fn expired_records_are_swept(backend: Backend) {
    let mut server = short_retention(backend).await;
    let id = server.post(CREATE, "swept", &create_body("s3://a")).await.expect(201).json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server
        .post(&format!("/v1/instances/{id}/actions/validate"), "swept-validate", &json!({}))
        .await
        .expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The sweeper runs at start, then every ten minutes.
    server.restart().await;
    let swept = || server.log().contains("expired idempotency records deleted deleted=2");
    for _ in 0..50 {
        if swept() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the create's and the action's records were not swept:\n{}", server.log());
}

async fn diagnostics_list_the_responses_kept_for_an_instance(backend: Backend) {
    let server = document_server(backend).await;
    let created = server.post(CREATE, "create-diag", &create_body("s3://diag")).await.expect(201).json();
    let id = created["id"].as_str().expect("id");
    let action = format!("/v1/instances/{id}/actions/validate");
    server.post(&action, "validate-diag", &json!({})).await.expect(200);
    // A refusal is kept too; another instance's keys are not this one's.
    server.post(&action, "validate-again", &json!({})).await.expect(409);
    server.post(CREATE, "create-other", &create_body("s3://other")).await.expect(201);
    let diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
    let kept: Vec<(&str, &str, u64)> = diagnostics["idempotency_records"]
        .as_array()
        .expect("idempotency_records")
        .iter()
        .filter_map(|record| {
            Some((record["scope"].as_str()?, record["key"].as_str()?, record["status"].as_u64()?))
        })
        .collect();
    // Scoped to the caller too: everyone is `anonymous` on a server without keys.
    let (create, action) = (format!("POST {CREATE} by anonymous"), format!("POST {action} by anonymous"));
    // Records of one millisecond come in any order.
    let mut kept = kept;
    kept.sort();
    assert_eq!(
        kept,
        [
            (create.as_str(), "create-diag", 201),
            (action.as_str(), "validate-again", 409),
            (action.as_str(), "validate-diag", 200),
        ]
    );
}

/// Deploys, bulk migrations and deletions keep their key in their own transaction: the
/// same request sent to two hosts at once takes effect once, and both answer alike.
async fn operations_under_one_key_on_two_hosts_take_effect_once(backend: Backend) {
    let first = document_server(backend).await;
    let second = first.another_host().await;
    let hosts = [&first, &second];

    let v2 = module("document-processing-v2");
    let (a, b) = to_both(hosts, Method::POST, "/v1/definitions", "deploy-v2", v2).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (201, 201), "{}", String::from_utf8_lossy(&b.body));
    assert_eq!(a.body, b.body, "one deploy, its response given twice");

    let bulk = json!({
        "definition": "document-processing", "from_version": 1, "to_version": 2, "dry_run": true, "reason": "once"
    });
    for round in 0..5 {
        let body = serde_json::to_vec(&bulk).expect("json");
        let (a, b) =
            to_both(hosts, Method::POST, "/v1/admin/migrations", &format!("bulk-{round}"), body).await;
        let (a, b) = (a.expect(202).json(), b.expect(202).json());
        assert_eq!(a["id"], b["id"], "one migration per key");
    }
    let count = "UPDATE migrations SET reason = reason WHERE definition = $1";
    assert_eq!(first.execute_sql(count, "document-processing").await, 5, "five keys, five migrations");

    let retire = "/v1/definitions/document-processing/versions/1/retire";
    first.request(Method::POST, retire, &[], None).await.expect(200);
    let delete = "/v1/definitions/document-processing/versions/1";
    let (a, b) = to_both(hosts, Method::DELETE, delete, "delete-v1", Vec::new()).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (204, 204), "{}", String::from_utf8_lossy(&b.body));
    let replays =
        [&a, &b].iter().filter(|answer| answer.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replays, 1, "one deletion, replayed to the other");
}

/// Sends one request to both hosts at once, under `key`.
async fn to_both(
    hosts: [&TestServer; 2],
    method: Method,
    path: &str,
    key: &str,
    body: Vec<u8>,
) -> (Response, Response) {
    let headers = [("idempotency-key", key), ("content-type", "application/json")];
    tokio::join!(
        hosts[0].request(method.clone(), path, &headers, Some(body.clone())),
        hosts[1].request(method, path, &headers, Some(body)),
    )
}
