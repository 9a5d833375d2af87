//! Participants: real HTTP servers on loopback that answer tasks as a test scripts
//! them, and keep every request they receive, for the test to assert on.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a participant answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and JSON body.
    Json(u16, Value),
    /// 200 with `{"reservation_id": "R-<task_id>"}`.
    Reserve,
    /// Nothing, for this long (past any attempt timeout), then 200.
    Hang(Duration),
    /// Nothing for this long, then 200 with this JSON body.
    Slow(Duration, Value),
}

/// One request as the participant received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub body: Value,
    /// As received, for checking signatures.
    pub headers: HeaderMap,
    pub raw: Vec<u8>,
}

impl Received {
    pub fn task_id(&self) -> &str {
        self.body["task_id"].as_str().unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Path → the replies still to give; the last one repeats.
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    received: Mutex<Vec<Received>>,
}

/// A participant server; stops when dropped.
#[derive(Debug)]
pub struct Participant {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Participant {
    pub async fn start() -> Participant {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base_url = format!("http://{}", listener.local_addr().expect("bound"));
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Participant { base_url, shared, server }
    }

    /// Answers requests to `path` with `replies` in turn, then with the last again.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        lock(&self.shared.scripts).insert(path.into(), replies.into());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Every request to `path` so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        lock(&self.shared.received).iter().filter(|request| request.path == path).cloned().collect()
    }

    /// Waits, at most 30 s, until `path` has had `count` requests; returns them.
    pub async fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        for _ in 0..3000 {
            let received = self.received(path);
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} had {} requests within 30 s, not {count}", self.received(path).len());
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(String::from);
    let request = Received {
        path: path.clone(),
        idempotency_key: header("idempotency-key"),
        correlation_id: header("x-correlation-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers: headers.clone(),
        raw: body.to_vec(),
    };
    let task_id = request.task_id().to_owned();
    lock(&shared.received).push(request);
    let reply = {
        let mut scripts = lock(&shared.scripts);
        let script = scripts.get_mut(&path);
        match script {
            Some(replies) if replies.len() > 1 => replies.pop_front(),
            Some(replies) => replies.front().cloned(),
            None => None,
        }
    };
    match reply {
        None => (StatusCode::NOT_FOUND, "no script for this path").into_response(),
        Some(Reply::Json(status, body)) => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT), axum::Json(body))
                .into_response()
        }
        Some(Reply::Reserve) => {
            axum::Json(json!({ "reservation_id": format!("R-{task_id}") })).into_response()
        }
        Some(Reply::Hang(duration)) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
        Some(Reply::Slow(duration, body)) => {
            tokio::time::sleep(duration).await;
            axum::Json(body).into_response()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
