//! `kill -9` of a server under load: no acknowledged transition is lost, none is
//! applied twice, and clients that retry with their keys finish what they started.

use crate::support::{Backend, TestServer, module};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

both_backends!(a_kill_under_load_loses_nothing_acknowledged_and_doubles_nothing);

const ACTIONS: [&str; 3] = ["validate", "format", "publish"];
const INSTANCES: usize = 12;

/// What a client saw of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Acknowledged,
    /// Sent, and the connection died before an answer came.
    Lost,
    /// Never reached a server.
    Refused,
}

async fn a_kill_under_load_loses_nothing_acknowledged_and_doubles_nothing(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let mut ids = Vec::new();
    for n in 0..INSTANCES {
        let created =
            server.create("document-processing", json!({ "document_url": format!("s3://{n}") })).await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(drive(server.base_url.clone(), id.clone(), acknowledged.clone())))
        .collect();
    // Kill once the load is under way, with every client sending.
    while acknowledged.load(Ordering::Relaxed) < INSTANCES {
        tokio::task::yield_now().await;
    }
    server.stop().await;
    let mut seen = Vec::new();
    for client in clients {
        seen.push(client.await.expect("a client task"));
    }
    assert!(
        seen.iter().flatten().any(|(_, what)| *what == Seen::Lost),
        "some request was in flight at the kill: {seen:?}"
    );
    server.restart().await;

    for (id, seen) in ids.iter().zip(&seen) {
        let history = history_actions(&server, id).await;
        let acked = seen.iter().filter(|(_, what)| *what == Seen::Acknowledged).count();
        assert!(history.len() >= acked, "{id}: acknowledged {acked}, kept {history:?}");
        assert_eq!(history, ACTIONS[..history.len()], "{id}: in order, each once");
        // Every key again: what was acknowledged replays, the rest runs now.
        for (step, action) in ACTIONS.iter().enumerate() {
            let retried =
                server.post(&action_path(id, action), &key(id, action), &json!({})).await.expect(200);
            if seen.get(step).is_some_and(|(_, what)| *what == Seen::Acknowledged) {
                assert_eq!(retried.header("idempotent-replayed"), Some("true"), "{id} {action}");
            }
        }
        assert_eq!(history_actions(&server, id).await, ACTIONS, "{id}: each action exactly once");
        let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
        assert_eq!((instance["state"].as_str(), instance["revision"].as_i64()), (Some("PUBLISHED"), Some(4)));
    }
}

/// Runs the actions in order until one is not acknowledged.
async fn drive(base_url: String, id: String, acknowledged: Arc<AtomicUsize>) -> Vec<(&'static str, Seen)> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for action in ACTIONS {
        let sent = client
            .post(format!("{base_url}{}", action_path(&id, action)))
            .header("idempotency-key", key(&id, action))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await;
        let what = match sent {
            Ok(response) if response.status() == 200 => match response.bytes().await {
                Ok(_) => Seen::Acknowledged,
                Err(_) => Seen::Lost,
            },
            Ok(_) => Seen::Lost,
            Err(err) if err.is_connect() => Seen::Refused,
            Err(_) => Seen::Lost,
        };
        seen.push((action, what));
        if what != Seen::Acknowledged {
            break;
        }
        acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    seen
}

fn action_path(id: &str, action: &str) -> String {
    format!("/v1/instances/{id}/actions/{action}")
}

fn key(id: &str, action: &str) -> String {
    format!("{id}-{action}")
}

async fn history_actions(server: &TestServer, id: &str) -> Vec<String> {
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let items = history["items"].as_array().cloned().unwrap_or_default();
    let seqs: Vec<i64> = items.iter().filter_map(|entry| entry["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=items.len() as i64).collect::<Vec<_>>(), "{id}: no gap in the history");
    items.iter().skip(1).filter_map(|entry| entry["trigger"]["name"].as_str().map(String::from)).collect()
}
