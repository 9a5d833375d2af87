//! A guest that burns CPU holds back only its own calls: while more spins than there
//! are cores run out a long deadline, other instances' transitions complete promptly,
//! and the spins answer only after those have. What each kind of misbehaviour answers
//! is checked in `guest_limits`.

use crate::guest_limits::{ENDLESS_FUEL, hostile_instance, hostile_server};
use crate::support::{Backend, TestServer, assert_problem, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(spinning_guests_hold_back_only_their_own_calls);

/// Spins at once: more than the cores of the machine the suite runs on (2).
const SPINS: usize = 4;
/// Only the deadline stops a spin, so each runs at least this long.
const DEADLINE_MS: u64 = 3000;
/// Documents taken from upload to published while the spins run.
const DOCUMENTS: usize = 3;
/// The bound on each of their requests: generous, and a fraction of the deadline.
const PROMPT: Duration = Duration::from_secs(1);

async fn spinning_guests_hold_back_only_their_own_calls(backend: Backend) {
    let server = hostile_server(backend, &format!("{ENDLESS_FUEL}\ndeadline_ms = {DEADLINE_MS}")).await;
    server.deploy(module("document-processing")).await.expect(201);
    let mut spinners = Vec::new();
    for _ in 0..SPINS {
        spinners.push(hostile_instance(&server).await);
    }

    let spins = futures::future::join_all(spinners.iter().map(|id| async {
        let answer = server.act(id, "spin", Value::Null).await;
        (answer, Instant::now())
    }));
    let documents = async {
        for document in 0..DOCUMENTS {
            process_document(&server, document).await;
        }
        Instant::now()
    };
    let (spins, documents_done) = tokio::join!(spins, documents);

    for (answer, answered) in &spins {
        let problem = assert_problem(answer, 500, "definition-failed");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("wall-clock deadline"), "{detail}");
        assert!(
            *answered > documents_done,
            "a spin answered {:?} before the documents were done",
            documents_done.saturating_duration_since(*answered)
        );
    }
}

/// Takes a new document from upload to published, each request within [`PROMPT`].
async fn process_document(server: &TestServer, document: usize) {
    let input = json!({ "document_url": format!("s3://documents/{document}") });
    let created = promptly("create", server.create("document-processing", input)).await;
    let id = created["id"].as_str().expect("an id");
    for (action, state) in [("validate", "VALIDATING"), ("format", "FORMATTING"), ("publish", "PUBLISHED")] {
        let done = promptly(action, server.act(id, action, Value::Null)).await.expect(200).json();
        assert_eq!(done["state"], state);
    }
}

async fn promptly<T>(what: &str, request: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = request.await;
    let took = started.elapsed();
    assert!(took < PROMPT, "{what} took {took:?} while guests spun");
    answer
}
