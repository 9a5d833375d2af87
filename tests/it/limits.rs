//! Server limits (docs/security.md): the request timeout, the caps on requests and
//! long-polls served at once, and settings refused at start.

use crate::guest_limits::{ENDLESS_FUEL, hostile_instance};
use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_backends!(
    a_live_stream_holds_its_slot_until_it_ends,
    a_request_over_the_cap_is_refused_until_a_slot_frees,
    a_long_poll_over_its_cap_is_refused_while_other_requests_go_on,
    a_request_that_runs_too_long_is_answered_with_a_timeout,
    a_long_poll_may_wait_longer_than_the_request_timeout,
    a_setting_that_cannot_work_stops_the_server_with_its_name,
);

const WAITING: &str = "switchyard_long_polls_waiting";
const IN_FLIGHT: &str = "switchyard_requests_in_flight";

/// A request whose body is still coming: it holds its slot until finished.
struct Unfinished(TcpStream);

impl Unfinished {
    /// Sends the head of a `POST` to `path` announcing a 100-byte JSON body, and one byte.
    async fn start(server: &TestServer, path: &str) -> Unfinished {
        let address = server.base_url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nConnection: close\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.expect("send");
        Unfinished(stream)
    }

    /// Sends the rest of the body (not JSON), then reads the response.
    async fn finish(mut self) -> Response {
        self.0.write_all(&[b' '; 99]).await.expect("send");
        self.response().await
    }

    /// Reads the response, up to the server closing the connection.
    async fn response(mut self) -> Response {
        let mut bytes = Vec::new();
        self.0.read_to_end(&mut bytes).await.expect("read");
        let split = bytes.windows(4).position(|window| window == b"\r\n\r\n").expect("a complete head");
        let head = String::from_utf8(bytes[..split].to_vec()).expect("utf-8");
        let mut lines = head.lines();
        let status = lines.next().and_then(|line| line.split(' ').nth(1)).expect("a status line");
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header");
            headers.insert(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
                HeaderValue::from_str(value.trim()).expect("a header value"),
            );
        }
        Response {
            status: status.parse::<u16>().ok().and_then(|code| code.try_into().ok()).expect("a status"),
            headers,
            body: bytes[split + 4..].to_vec(),
        }
    }
}

/// Restarts `server` with a request timeout of 1 s, and `more` config: a deploy (a
/// compile) may take longer than that, so it is done before.
async fn quick_to_time_out(server: &mut TestServer, more: &str) {
    server.rewrite_config(&format!("request_timeout_secs = 1\n{more}"));
    server.restart().await;
}

#[track_caller]
fn assert_overloaded(response: &Response) {
    assert_problem(response, 503, "overloaded");
    assert_eq!(response.header("retry-after"), Some("1"));
}

async fn a_request_over_the_cap_is_refused_until_a_slot_frees(backend: Backend) {
    let server = TestServer::start_with_config(backend, "max_concurrent_requests = 1\n").await;
    let held = Unfinished::start(&server, "/v1/admin/migrations").await;
    server.wait_for_metric(IN_FLIGHT, |in_flight| in_flight == 1.0).await;
    let refused = server.get("/v1/definitions").await;
    assert_overloaded(&refused);
    // Probes and scrapes are outside the cap.
    server.get("/healthz").await.expect(200);
    server.get("/readyz").await.expect(200);
    server.get("/metrics").await.expect(200);

    assert_problem(&held.finish().await, 400, "bad-request");
    server.get("/v1/definitions").await.expect(200);
}

async fn a_long_poll_over_its_cap_is_refused_while_other_requests_go_on(backend: Backend) {
    let server = TestServer::start_with_config(backend, "max_long_polls = 1\n").await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://capped" })).await;
    let path = format!("/v1/instances/{}", created["id"].as_str().expect("id"));
    let headers = [("if-none-match", "\"1\""), ("prefer", "wait=20")];
    let parked = server.request(Method::GET, &path, &headers, None);
    let crowded = async {
        server.wait_for_metric(WAITING, |waiting| waiting == 1.0).await;
        let started = Instant::now();
        assert_overloaded(&server.request(Method::GET, &path, &headers, None).await);
        assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not parked");
        // Requests that do not wait are not long-polls.
        server.get(&path).await.expect(200);
        server.act(created["id"].as_str().expect("id"), "validate", Value::Null).await.expect(200);
    };
    let (parked, ()) = tokio::join!(parked, crowded);
    assert_eq!(parked.expect(200).header("etag"), Some("\"2\""));
    // The slot is free again.
    let again =
        server.request(Method::GET, &path, &[("if-none-match", "\"1\""), ("prefer", "wait=20")], None);
    assert_eq!(again.await.expect(200).header("etag"), Some("\"2\""));
}

async fn a_request_that_runs_too_long_is_answered_with_a_timeout(backend: Backend) {
    let mut server = TestServer::start_with_config(backend, "").await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let id = hostile_instance(&server).await;
    quick_to_time_out(&mut server, &format!("[guest]\n{ENDLESS_FUEL}\ndeadline_ms = 60000\n")).await;
    let started = Instant::now();
    let spun = server.act(&id, "spin", Value::Null).await;
    let waited = started.elapsed();
    let problem = assert_problem(&spun, 503, "timeout");
    assert_eq!(problem["detail"], "the request was not answered within 1 s; retry");
    assert!(waited >= Duration::from_millis(900), "it ran until the timeout: {waited:?}");
    assert!(waited < Duration::from_secs(20), "not until the guest's deadline: {waited:?}");
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 1, "nothing was committed");

    // A request whose body never comes is cut off too.
    let held = Unfinished::start(&server, "/v1/admin/migrations").await;
    assert_problem(&held.response().await, 503, "timeout");
}

async fn a_long_poll_may_wait_longer_than_the_request_timeout(backend: Backend) {
    let mut server = TestServer::start_with_config(backend, "").await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://patient" })).await;
    quick_to_time_out(&mut server, "").await;
    let path = format!("/v1/instances/{}", created["id"].as_str().expect("id"));
    let started = Instant::now();
    let headers = [("if-none-match", "\"1\""), ("prefer", "wait=2")];
    let polled = server.request(Method::GET, &path, &headers, None).await;
    assert_eq!((polled.status.as_u16(), polled.header("etag")), (304, Some("\"1\"")));
    assert!(started.elapsed() >= Duration::from_millis(1900), "it waited the 2 s asked for");
}

async fn a_setting_that_cannot_work_stops_the_server_with_its_name(backend: Backend) {
    for (toml, message) in [
        ("max_long_polls = 0\n", "max_long_polls must be at least 1"),
        ("request_timeout_secs = 0\n", "request_timeout_secs must be at least 1"),
        ("max_wait_secs = 9223372036854775807\n", "max_wait_secs must be at most 3153600000"),
        // Beyond TOML's integers: refused where it is written.
        ("max_wait_secs = 18446744073709551615\n", "line 1, column 17"),
        ("[guest]\nmemory_mib = 1099511627776\n", "guest.memory_mib must be at most 4096"),
        ("[guest]\nconcurrent_calls = 0\n", "guest.concurrent_calls must be at least 1"),
        ("[guest]\nconcurrent_calls = 4294967295\n", "the [guest] limits do not fit this machine"),
    ] {
        let (status, output) = TestServer::refused_config(backend, toml).await;
        assert!(!status.success(), "{toml:?} was taken");
        assert!(output.contains(message), "{toml:?}: {output}");
        assert!(!output.contains("panicked"), "{toml:?}: {output}");
    }
}

/// A live feed stream outlives its request: it holds a slot among the long-polls for
/// as long as it streams, and frees it once the client goes.
async fn a_live_stream_holds_its_slot_until_it_ends(backend: Backend) {
    let server = TestServer::start_with_config(backend, "max_long_polls = 1\n").await;
    let open = || {
        reqwest::Client::new()
            .get(format!("{}/v1/feed", server.base_url))
            .header("accept", "text/event-stream")
            .send()
    };
    let first = open().await.expect("the stream opens");
    assert_eq!(first.status(), 200);
    let stream = [("accept", "text/event-stream")];
    assert_overloaded(&server.request(Method::GET, "/v1/feed", &stream, None).await);
    let long_poll = [("prefer", "wait=5")];
    let path = format!("/v1/instances/{}", uuid::Uuid::new_v4());
    assert_overloaded(&server.request(Method::GET, &path, &long_poll, None).await);
    // Pages of the feed are no streams.
    server.get("/v1/feed?after=0").await.expect(200);
    drop(first);
    for _ in 0..600 {
        let again = open().await.expect("the server answers");
        if again.status() == 200 {
            return;
        }
        assert_eq!(again.status(), 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the slot was not freed within 30 s of the client going; log:\n{}", server.log());
}
