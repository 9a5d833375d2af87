//! The server outlives its database connections. PostgreSQL only: a SQLite file has
//! no sessions to end from outside.

use crate::support::{Backend, TestServer, module};
use futures::future::join_all;
use serde_json::{Value, json};

/// Instances driven at once, so that the pools hold several connections each.
const INSTANCES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_after_postgres_ended_every_session() {
    let server = &TestServer::start(Backend::Postgres).await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = join_all((0..INSTANCES).map(|n| {
        server.create("document-processing", json!({ "document_url": format!("s3://before-{n}") }))
    }))
    .await;
    let ids: Vec<String> =
        created.iter().map(|instance| instance["id"].as_str().expect("id").to_owned()).collect();
    join_all(
        ids.iter().map(|id| async move { server.get(&format!("/v1/instances/{id}")).await.expect(200) }),
    )
    .await;

    let ended = server.end_database_sessions().await;
    assert!(ended >= 2, "the server had {ended} sessions open");

    // At once, on connections that were in use a moment ago: every kind of database
    // use, several at once: hot reads, pooled reads, commits.
    join_all(ids.iter().map(|id| async move {
        server.get(&format!("/v1/instances/{id}")).await.expect(200);
        server.get(&format!("/v1/instances/{id}/history")).await.expect(200);
        server.act(id, "validate", Value::Null).await.expect(200);
        server.create("document-processing", json!({ "document_url": "s3://after" })).await;
    }))
    .await;
    server.get("/v1/definitions/document-processing").await.expect(200);
}
