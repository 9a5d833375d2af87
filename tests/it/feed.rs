//! The transition feed (`GET /v1/feed`, SPEC §3): every committed transition once, in
//! commit order, for a consumer that pages with its cursor or streams with SSE — also
//! while two hosts commit at once.

use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

both_backends!(
    every_transition_is_listed_once_in_commit_order_while_two_hosts_commit,
    a_stream_resumes_after_its_last_event_id,
    a_cursor_the_server_did_not_hand_out_is_refused,
);

/// Clients per host, each taking one document through its four transitions.
const CLIENTS: usize = 8;
const STEPS: [&str; 3] = ["validate", "format", "publish"];

/// One feed event as a consumer keeps it: (cursor, event id, instance, seq).
type Seen = (i64, String, String, i64);

fn seen(event: &Value) -> Seen {
    let cursor = event["data"]["cursor"].as_str().and_then(|cursor| cursor.parse().ok()).expect("cursor");
    let id = event["id"].as_str().expect("id").to_owned();
    let instance = event["subject"].as_str().expect("subject").to_owned();
    (cursor, id, instance, event["data"]["seq"].as_i64().expect("seq"))
}

/// Pages the feed from the start until `stop` says so and it has caught up: the
/// events seen, in order.
async fn page_until(host: &TestServer, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Seen> {
    let mut cursor = "0".to_owned();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let done = *stop.borrow();
        let page = host.get(&format!("/v1/feed?after={cursor}&limit=7")).await.expect(200).json();
        let items = page["items"].as_array().expect("items");
        events.extend(items.iter().map(seen));
        cursor = page["next_cursor"].as_str().expect("next_cursor").to_owned();
        if items.is_empty() {
            if done {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    panic!("the feed consumer did not finish within 120 s");
}

/// Reads the SSE stream from `last_event_id` (or the start) until it has `count` events.
async fn stream(host: &TestServer, last_event_id: Option<&str>, count: usize) -> Vec<(String, Value)> {
    let mut stream = Stream::open(host, last_event_id).await;
    let mut events = Vec::new();
    while events.len() < count {
        events.push(stream.next().await);
    }
    events
}

/// A live feed stream (`Accept: text/event-stream`) being read.
pub struct Stream {
    response: reqwest::Response,
    /// What was received and not parsed yet.
    text: String,
}

impl Stream {
    /// Opens the stream from `last_event_id` (or the start).
    pub async fn open(host: &TestServer, last_event_id: Option<&str>) -> Stream {
        let mut request = reqwest::Client::new()
            .request(Method::GET, format!("{}/v1/feed", host.base_url))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream { response, text: String::new() }
    }

    /// The next event: its id and data (waiting at most 120 s).
    pub async fn next(&mut self) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim_start().to_owned())
                };
                // Keep-alive comments carry no data.
                if let Some(data) = field("data:") {
                    assert_eq!(field("event:").as_deref(), Some("switchyard.transition"));
                    return (field("id:").expect("an id"), serde_json::from_str(&data).expect("JSON data"));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("the stream delivers within 120 s")
                .expect("the stream is readable")
                .expect("the stream stays open");
            self.text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

async fn every_transition_is_listed_once_in_commit_order_while_two_hosts_commit(backend: Backend) {
    let a = TestServer::start(backend).await;
    a.deploy(module("document-processing")).await.expect(201);
    let b = a.another_host().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let expected = 2 * CLIENTS * (1 + STEPS.len());
    let (paged, streamed, ids) = tokio::join!(page_until(&a, stopped), stream(&b, None, expected), async {
        let clients = (0..2 * CLIENTS).map(|client| {
            let host = if client % 2 == 0 { &a } else { &b };
            async move {
                let id =
                    host.create("document-processing", json!({ "document_url": "s3://feed" })).await["id"]
                        .as_str()
                        .expect("id")
                        .to_owned();
                for step in STEPS {
                    host.act(&id, step, Value::Null).await.expect(200);
                }
                id
            }
        });
        let ids = futures::future::join_all(clients).await;
        let _ = stop.send(true);
        ids
    });

    // Exactly the transitions the histories hold, each once.
    assert_eq!(paged.len(), expected, "the paging consumer saw every transition");
    let unique: HashSet<&String> = paged.iter().map(|(_, id, _, _)| id).collect();
    assert_eq!(unique.len(), expected, "no transition twice");
    let mut by_instance: HashMap<&str, Vec<i64>> = HashMap::new();
    for (_, _, instance, seq) in &paged {
        by_instance.entry(instance).or_default().push(*seq);
    }
    for id in &ids {
        let history = a.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
        let seqs: Vec<i64> = history["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|entry| entry["seq"].as_i64().expect("seq"))
            .collect();
        assert_eq!(by_instance.get(id.as_str()), Some(&seqs), "instance {id}: its history, in order");
    }
    // Commit order is one order: cursors rise, and the stream (from the other host)
    // saw the very same sequence as the pages.
    assert!(paged.windows(2).all(|pair| pair[0].0 < pair[1].0), "cursors rise");
    let streamed: Vec<Seen> = streamed
        .iter()
        .map(|(id, event)| {
            let event = seen(event);
            assert_eq!(id, &event.0.to_string(), "the SSE id is the cursor");
            event
        })
        .collect();
    assert_eq!(streamed, paged, "stream and pages agree");
}

async fn a_stream_resumes_after_its_last_event_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let id = server.create("document-processing", json!({ "document_url": "s3://feed" })).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server.act(&id, "validate", Value::Null).await.expect(200);
    let first = stream(&server, None, 2).await;
    let cursor = first[0].0.clone();
    // What the first event left to read: the second, then one committed while streaming.
    let (resumed, ()) = tokio::join!(stream(&server, Some(&cursor), 2), async {
        server.act(&id, "format", Value::Null).await.expect(200);
    });
    let seqs: Vec<(i64, &str)> = resumed
        .iter()
        .map(|(_, event)| {
            (event["data"]["seq"].as_i64().expect("seq"), event["data"]["to_state"].as_str().expect("to"))
        })
        .collect();
    assert_eq!(seqs, [(2, "VALIDATING"), (3, "FORMATTING")]);
    let event = &resumed[1].1;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "switchyard.transition");
    assert_eq!(event["source"], format!("/v1/instances/{id}"));
    assert_eq!(event["subject"], id);
    assert_eq!(event["id"], format!("{id}/3"));
    assert_eq!(event["data"]["definition"], "document-processing");
    assert_eq!(event["data"]["from_state"], "VALIDATING");
    assert_eq!(event["data"]["status"], "running");
    assert_eq!(event["data"]["trigger"]["kind"], "action");
    assert_eq!(event["data"]["trigger"]["name"], "format");
    // Pages say the same from the same cursor.
    let page = server.get(&format!("/v1/feed?after={cursor}")).await.expect(200).json();
    let paged: Vec<&Value> = page["items"].as_array().expect("items").iter().collect();
    assert_eq!(paged, resumed.iter().map(|(_, event)| event).collect::<Vec<_>>());
    assert_eq!(page["next_cursor"], resumed[1].0);
}

async fn a_cursor_the_server_did_not_hand_out_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    for cursor in ["abc", "-1", "1.5"] {
        let refused = server.get(&format!("/v1/feed?after={cursor}")).await;
        let problem = assert_problem(&refused, 400, "bad-request");
        assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("cursor")), "{problem}");
    }
    let empty = server.get("/v1/feed").await.expect(200).json();
    assert_eq!(empty, json!({ "items": [], "next_cursor": "0" }));
}

mod postgres_only {
    use super::*;
    use sqlx::Connection;

    /// A commit held up mid-transaction on one host while the other host commits on:
    /// the held-up transition must still reach a consumer that read past the others.
    /// (Numbering transitions when their transaction starts would hand the held-up one
    /// a position the consumer's cursor has already passed.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_held_up_mid_transaction_is_not_skipped() {
        let a = TestServer::start(Backend::Postgres).await;
        a.deploy(module("document-processing")).await.expect(201);
        let b = a.another_host().await;
        let held = a.create("document-processing", json!({ "document_url": "s3://held" })).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (server, database) = a.postgres_database().expect("a PostgreSQL database");
        let mut blocker =
            sqlx::PgConnection::connect(&format!("{server}/{database}")).await.expect("connect");
        let mut watcher =
            sqlx::PgConnection::connect(&format!("{server}/{database}")).await.expect("connect");
        let mut lock = blocker.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE")
            .bind(&held)
            .execute(&mut *lock)
            .await
            .expect("lock the instance row");

        let acting = tokio::spawn({
            let base_url = a.base_url.clone();
            let held = held.clone();
            async move {
                reqwest::Client::new()
                    .post(format!("{base_url}/v1/instances/{held}/actions/validate"))
                    .header("idempotency-key", "held-validate")
                    .json(&json!({ "payload": null }))
                    .send()
                    .await
                    .expect("the action is answered")
                    .status()
            }
        });
        // The action's commit is inside its transaction, waiting on the row lock.
        let mut waiting = 0;
        for _ in 0..1000 {
            waiting = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(database)
            .fetch_one(&mut watcher)
            .await
            .expect("pg_stat_activity");
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(waiting, 1, "the held-up commit waits on the lock");

        // Meanwhile the other host commits, and a consumer reads all there is.
        for _ in 0..3 {
            b.create("document-processing", json!({ "document_url": "s3://meanwhile" })).await;
        }
        let mut cursor = "0".to_owned();
        let mut seen = Vec::new();
        loop {
            let page = b.get(&format!("/v1/feed?after={cursor}")).await.expect(200).json();
            let items = page["items"].as_array().expect("items").clone();
            cursor = page["next_cursor"].as_str().expect("next_cursor").to_owned();
            if items.is_empty() {
                break;
            }
            seen.extend(items);
        }
        assert_eq!(seen.len(), 4, "the first create and the other host's three");
        assert!(!acting.is_finished(), "the action is still held up");

        lock.commit().await.expect("release the row");
        assert_eq!(acting.await.expect("the action's task"), 200);
        let page = b.get(&format!("/v1/feed?after={cursor}")).await.expect(200).json();
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "the held-up transition comes after the cursor: {page}");
        assert_eq!(
            (items[0]["subject"].as_str(), items[0]["data"]["seq"].as_i64()),
            (Some(held.as_str()), Some(2))
        );
    }
}
