//! Stopping the server as an operator does.

use crate::support::{Backend, TestServer, module};
use serde_json::json;

both_backends!(a_terminated_server_exits_cleanly_and_keeps_what_it_committed);

async fn a_terminated_server_exits_cleanly_and_keeps_what_it_committed(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://kept" })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    server.act(&id, "validate", json!(null)).await.expect(200);

    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    if let Some(path) = server.database_url.strip_prefix("sqlite://") {
        // Every connection closed, the last one folding the write-ahead log back in.
        let wal = format!("{path}-wal");
        assert!(!std::path::Path::new(&wal).exists(), "{wal} is left behind");
    }

    server.restart().await;
    let kept = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(kept["state"], "VALIDATING");
}
