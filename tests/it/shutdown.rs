//! Stopping the server as an operator does.

use crate::support::{Backend, TestServer, module};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

both_backends!(
    a_terminated_server_exits_cleanly_and_keeps_what_it_committed,
    a_terminated_server_first_answers_the_requests_in_flight,
);

async fn a_terminated_server_exits_cleanly_and_keeps_what_it_committed(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://kept" })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    server.act(&id, "validate", json!(null)).await.expect(200);

    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    if let Some(path) = server.database_url.strip_prefix("sqlite://") {
        // Commits ran in WAL mode with every commit synced, as the server says it did...
        let log = server.log();
        let opened = log.lines().find(|line| line.contains("sqlite store opened")).expect("logged");
        assert!(
            opened.contains("journal_mode=\"wal\"") && opened.contains("synchronous=\"full\""),
            "{opened}"
        );
        // ...and the file itself is in WAL mode (header bytes 18 and 19 are 2).
        let header = std::fs::read(path).expect("database file");
        assert_eq!(header.get(18..20), Some(&[2, 2][..]), "the database file is not in WAL mode");
        // Every connection closed, the last one folding the write-ahead log back in.
        let wal = format!("{path}-wal");
        assert!(!std::path::Path::new(&wal).exists(), "{wal} is left behind");
    }

    server.restart().await;
    let kept = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(kept["state"], "VALIDATING");
}

async fn a_terminated_server_first_answers_the_requests_in_flight(backend: Backend) {
    // A grace longer than the test may take: a long-poll left to run out its wait would
    // be cut off at the end of it, unanswered.
    let mut server = TestServer::start_with_config(backend, "shutdown_grace_secs = 60\n").await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://draining" })).await;
    let path = format!("/v1/instances/{}", created["id"].as_str().expect("id"));
    let client = reqwest::Client::new();
    let poll = |etag: Option<&str>| {
        let mut request = client.request(Method::GET, format!("{}{path}", server.base_url));
        request = request.header("prefer", "wait=60");
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        let send = request.send();
        tokio::spawn(async move {
            let response = send.await.expect("answered before the server stopped");
            let etag = response.headers().get("etag").and_then(|etag| etag.to_str().ok()).map(str::to_owned);
            (response.status().as_u16(), etag, Instant::now())
        })
    };
    let (conditional, plain) = (poll(Some("\"1\"")), poll(None));
    server.wait_for_metric("switchyard_long_polls_waiting", |waiting| waiting == 2.0).await;
    let terminated_at = Instant::now();
    let status = server.terminate().await;
    // Parked long-polls are answered with the instance as it is, once the server stops.
    for (parked, expected) in [(conditional, 304), (plain, 200)] {
        let (answer, etag, answered_at) = parked.await.expect("the poll's task");
        assert_eq!((answer, etag.as_deref()), (expected, Some("\"1\"")));
        assert!(answered_at > terminated_at, "it was still in flight at SIGTERM");
    }
    assert!(terminated_at.elapsed() < Duration::from_secs(10), "at once, not at the end of its wait");
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
}
