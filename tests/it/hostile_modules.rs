//! Guests that loop, allocate without bound, trap or break their manifest fail that
//! one call cleanly: the instance is unchanged and everything else carries on.

use crate::support::{Backend, TestServer, assert_problem, module};
use serde_json::{Value, json};

both_backends!(misbehaving_guests_fail_one_call_and_nothing_else);

async fn misbehaving_guests_fail_one_call_and_nothing_else(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    server.deploy(module("document-processing")).await.expect(201);
    let hostile = server.create("hostile", json!({})).await;
    let hostile_id = hostile["id"].as_str().unwrap_or_default();
    let document = server.create("document-processing", json!({ "document_url": "s3://fine" })).await;
    let document_id = document["id"].as_str().unwrap_or_default();

    for (action, reason) in [
        ("spin", "ran out of fuel"),
        ("hog", "memory limit"),
        ("trap", "trapped"),
        ("undeclared", "undeclared state"),
        ("stray", "does not allow"),
    ] {
        let failed = server.act(hostile_id, action, Value::Null).await;
        let problem = assert_problem(&failed, 500, "definition-failed");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{action}: {detail}");
        assert!(problem["type"].as_str().is_some_and(|kind| kind.ends_with("definition-failed")));

        let unchanged = server.get(&format!("/v1/instances/{hostile_id}")).await.expect(200).json();
        assert_eq!(unchanged["revision"], 1, "{action} left the instance as it was");
        assert_eq!(unchanged["state"], "IDLE");
        // Everything else carries on.
        server.get("/healthz").await.expect(200);
    }
    let echoed = server.act(hostile_id, "echo", json!({ "still": "alive" })).await.expect(200).json();
    assert_eq!(echoed["revision"], 2);
    server.act(document_id, "validate", Value::Null).await.expect(200);
    let history = server.get(&format!("/v1/instances/{hostile_id}/history")).await.expect(200).json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2), "failed calls write no history");
}
