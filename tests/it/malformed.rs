//! Malformed requests to every endpoint: bad JSON, deep nesting, huge numbers, wrong
//! types, oversized and empty bodies, and bad path and query values. Each is answered
//! with a 4xx problem that carries the correlation id, never with a 5xx.

use crate::support::{Backend, Response, TestServer, module};
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(
    every_body_route_answers_malformed_bodies_with_a_client_error,
    every_route_answers_malformed_paths_and_queries_with_a_client_error,
    json_a_definition_takes_but_cannot_use_is_no_server_error,
);

/// The JSON body limit of the server under test: oversized bodies stay small.
const MAX_BODY_BYTES: usize = 64 << 10;
/// Deeper than any JSON parser's recursion limit.
const DEEP: usize = 10_000;
/// A well-formed instance id that names no instance.
const UNKNOWN_ID: &str = "01890000-0000-7000-8000-000000000000";

/// What a JSON field of a route holds, which decides the wrong values it is sent.
#[derive(Clone, Copy)]
enum Field {
    /// A whole number (`u32` here).
    Number,
    Text,
    Bool,
    /// Free JSON, passed on to the definition as it is.
    Json,
}

/// A route that takes a JSON body, and the fields of that body.
type Route = (Method, String, &'static [(&'static str, Field)]);

async fn malformed_server(backend: Backend) -> (TestServer, String) {
    let server =
        TestServer::start_with_config(backend, &format!("max_body_bytes = {MAX_BODY_BYTES}\n")).await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = server.create("document-processing", json!({ "document_url": "s3://malformed" })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    (server, id)
}

/// Sends `body` with a fresh `Idempotency-Key`, asserts a 4xx problem+json whose
/// `correlation_id` is the response's, and returns the status.
async fn send(server: &TestServer, method: &Method, path: &str, body: Option<Vec<u8>>, what: &str) -> u16 {
    let key = uuid::Uuid::new_v4().to_string();
    let headers = [("idempotency-key", key.as_str()), ("content-type", "application/json")];
    let response = server.request(method.clone(), path, &headers, body).await;
    assert_client_problem(&response, &format!("{method} {path} with {what}"));
    response.status.as_u16()
}

#[track_caller]
fn assert_client_problem(response: &Response, what: &str) {
    let text = String::from_utf8_lossy(&response.body);
    assert!(response.status.is_client_error(), "{what}: {} {text}", response.status);
    assert_eq!(response.header("content-type"), Some("application/problem+json"), "{what}: {text}");
    let problem: Value = serde_json::from_slice(&response.body).unwrap_or_else(|_| panic!("{what}: {text}"));
    let correlation_id = response.header("x-correlation-id").expect("every response has X-Correlation-Id");
    assert_eq!(problem["correlation_id"], correlation_id, "{what}");
    assert_eq!(problem["status"], response.status.as_u16(), "{what}");
    assert!(
        problem["type"].as_str().is_some_and(|kind| kind.starts_with("urn:switchyard:problem:")),
        "{what}"
    );
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// Bodies no JSON endpoint takes, with what each is.
fn malformed_json() -> Vec<(String, Vec<u8>)> {
    let mut bodies: Vec<(String, Vec<u8>)> = [
        ("truncated JSON", &b"{\"input\": "[..]),
        ("not JSON", b"hello"),
        ("not UTF-8", b"{\"reason\": \"\xff\xfe\"}"),
        ("two documents", b"{} {}"),
        ("an array", b"[]"),
        ("a string", b"\"text\""),
        ("a huge number", b"1e400"),
        ("null", b"null"),
        ("an unknown field", b"{\"colour\": \"red\"}"),
    ]
    .into_iter()
    .map(|(what, body)| (what.to_owned(), body.to_vec()))
    .collect();
    bodies.push((format!("{DEEP} nested arrays"), nested(DEEP).into_bytes()));
    bodies.push(("an oversized body".into(), vec![b' '; MAX_BODY_BYTES + 1]));
    bodies
}

/// Values of the wrong type, or out of range, for a field holding `field`.
fn wrong_values(field: Field) -> Vec<String> {
    let deep = nested(DEEP);
    let mut values = vec![deep];
    values.extend(
        match field {
            Field::Number => &["1e400", "18446744073709551616", "-1", "1.5", "\"1\"", "[]", "true"][..],
            Field::Text => &["1e400", "18446744073709551616", "[]", "{}", "true", r#""a\u0000b""#],
            Field::Bool => &["1e400", "\"yes\"", "1"],
            Field::Json => &[],
        }
        .iter()
        .map(|value| value.to_string()),
    );
    values
}

async fn every_body_route_answers_malformed_bodies_with_a_client_error(backend: Backend) {
    let (server, id) = malformed_server(backend).await;
    use Field::*;
    let routes: Vec<Route> = vec![
        (Method::PUT, "/v1/definitions/document-processing/default-version".into(), &[("version", Number)]),
        (
            Method::POST,
            "/v1/definitions/document-processing/instances".into(),
            &[("input", Json), ("callback_url", Text), ("version", Number)],
        ),
        (Method::POST, format!("/v1/instances/{id}/actions/publish"), &[("payload", Json)]),
        (
            Method::POST,
            format!("/v1/instances/{id}/events"),
            &[("event_id", Text), ("type", Text), ("payload", Json)],
        ),
        (
            Method::POST,
            "/v1/tasks/no-such-task/result".into(),
            &[("status", Text), ("output", Json), ("error", Json)],
        ),
        (
            Method::POST,
            format!("/v1/admin/instances/{id}/migrate"),
            &[("to_version", Number), ("reason", Text), ("dry_run", Bool)],
        ),
        (Method::POST, format!("/v1/admin/instances/{id}/cancel"), &[("reason", Text)]),
        (Method::POST, format!("/v1/admin/instances/{id}/force-complete"), &[("reason", Text)]),
        (
            Method::POST,
            "/v1/admin/migrations".into(),
            &[
                ("definition", Text),
                ("from_version", Number),
                ("to_version", Number),
                ("states", Text),
                ("dry_run", Bool),
                ("reason", Text),
            ],
        ),
    ];
    for (method, path, fields) in &routes {
        for (what, body) in malformed_json() {
            send(&server, method, path, Some(body), &what).await;
        }
        for &(name, field) in *fields {
            for value in wrong_values(field) {
                let body = format!("{{\"{name}\": {value}}}");
                let what = format!("{name}: {}", &value[..value.len().min(40)]);
                send(&server, method, path, Some(body.into_bytes()), &what).await;
            }
        }
    }
    // Every route here but actions needs a body.
    for (method, path, _) in routes.iter().filter(|(_, path, _)| !path.contains("/actions/")) {
        send(&server, method, path, None, "no body").await;
    }

    // A module upload: anything but a module is refused, and so is too much of it.
    for (what, body) in malformed_json().into_iter().filter(|(what, _)| what != "an oversized body") {
        assert_eq!(send(&server, &Method::POST, "/v1/definitions", Some(body), &what).await, 422);
    }
    let oversized = vec![0; (8 << 20) + 1];
    assert_eq!(send(&server, &Method::POST, "/v1/definitions", Some(oversized), "8 MiB + 1").await, 413);

    // Nothing of it reached the instance.
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!((&instance["state"], &instance["revision"]), (&json!("UPLOADED"), &json!(1)));
}

async fn every_route_answers_malformed_paths_and_queries_with_a_client_error(backend: Backend) {
    let (server, id) = malformed_server(backend).await;
    let reason = Some(br#"{"reason": "because"}"#.to_vec());
    let mut requests: Vec<(Method, String, Option<Vec<u8>>)> = Vec::new();
    for name in ["%00", "%FF", "a%0Ab", &"x".repeat(300)] {
        requests.extend([
            (Method::GET, format!("/v1/definitions/{name}"), None),
            (Method::GET, format!("/v1/definitions/{name}/versions/1"), None),
            (
                Method::PUT,
                format!("/v1/definitions/{name}/default-version"),
                Some(br#"{"version": 1}"#.to_vec()),
            ),
            (Method::POST, format!("/v1/definitions/{name}/versions/1/retire"), None),
            (Method::DELETE, format!("/v1/definitions/{name}/versions/1"), None),
            (Method::POST, format!("/v1/definitions/{name}/instances"), Some(br#"{"input": {}}"#.to_vec())),
            (Method::POST, format!("/v1/tasks/{name}/result"), Some(br#"{"status": "succeeded"}"#.to_vec())),
            (Method::GET, format!("/v1/admin/migrations/{name}"), None),
            (Method::POST, format!("/v1/instances/{id}/actions/{name}"), None),
        ]);
    }
    // A filter naming nothing matches nothing, but a NUL is no filter.
    for query in ["definition", "state", "status", "parent", "cursor"] {
        requests.push((Method::GET, format!("/v1/instances?{query}=%00"), None));
    }
    for version in ["0", "-1", "1e400", "4294967296", "18446744073709551616", "one"] {
        requests.extend([
            (Method::GET, format!("/v1/definitions/document-processing/versions/{version}"), None),
            (Method::POST, format!("/v1/definitions/document-processing/versions/{version}/retire"), None),
            (Method::DELETE, format!("/v1/definitions/document-processing/versions/{version}"), None),
        ]);
    }
    for bad_id in ["%00", "not-an-id", "1e400", UNKNOWN_ID] {
        requests.extend([
            (Method::GET, format!("/v1/instances/{bad_id}"), None),
            (Method::GET, format!("/v1/instances/{bad_id}/history"), None),
            (Method::GET, format!("/v1/instances/{bad_id}/events"), None),
            (Method::GET, format!("/v1/instances/{bad_id}/diagnostics"), None),
            (Method::POST, format!("/v1/instances/{bad_id}/actions/validate"), None),
            (
                Method::POST,
                format!("/v1/instances/{bad_id}/events"),
                Some(br#"{"event_id": "e", "type": "t"}"#.to_vec()),
            ),
            (Method::POST, format!("/v1/admin/instances/{bad_id}/cancel"), reason.clone()),
            (Method::POST, format!("/v1/admin/instances/{bad_id}/force-complete"), reason.clone()),
            (
                Method::POST,
                format!("/v1/admin/instances/{bad_id}/migrate"),
                Some(br#"{"to_version": 2, "reason": "r"}"#.to_vec()),
            ),
        ]);
    }
    for number in ["1e400", "-1", "4294967296", "18446744073709551616", "x"] {
        requests.extend([
            (Method::GET, format!("/v1/instances?limit={number}"), None),
            (Method::GET, format!("/v1/instances?version={number}"), None),
            (Method::GET, format!("/v1/feed?limit={number}"), None),
        ]);
    }
    for cursor in ["1e400", "-1", "9223372036854775808", "x"] {
        requests.push((Method::GET, format!("/v1/feed?after={cursor}"), None));
    }
    requests.extend([
        (Method::GET, "/v1/instances?limit=1&limit=2".into(), None),
        (Method::GET, "/v1/feed?colour=red".into(), None),
        (Method::GET, "/v1/feed?after=%00".into(), None),
    ]);
    for (method, path, body) in requests {
        send(&server, &method, &path, body, "a bad path or query").await;
    }
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 1, "nothing changed");
}

/// JSON the host passes on as it is (input, payloads) may be more than a definition
/// can use: deep, with huge numbers or NUL characters. The definition refuses it or
/// takes it; either way the answer and every later read of the instance are no 5xx.
async fn json_a_definition_takes_but_cannot_use_is_no_server_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.deploy(module("hostile-guest")).await.expect(201);
    let deep = nested(120);
    let edges = ["1e400", "18446744073709551616", "-1e400", &deep, r#""\u0000""#, r#"{"a\u0000": 1}"#];
    let hostile = server.create("hostile", json!({})).await;
    let echo = format!("/v1/instances/{}/actions/echo", hostile["id"].as_str().expect("id"));
    for value in edges {
        for definition in ["document-processing", "hostile"] {
            let path = format!("/v1/definitions/{definition}/instances");
            let created = post(&server, &path, format!(r#"{{"input": {value}}}"#)).await;
            assert_no_server_error(&created, &format!("{definition}: {value}"));
        }
        // `echo` keeps the payload in the instance's data, which every read then shows.
        assert_no_server_error(&post(&server, &echo, format!(r#"{{"payload": {value}}}"#)).await, value);
        let id = hostile["id"].as_str().expect("id");
        for read in [format!("/v1/instances/{id}"), format!("/v1/instances/{id}/history"), "/v1/feed".into()]
        {
            assert_no_server_error(&server.get(&read).await, &read);
        }
    }
}

/// POSTs `body` as it is, with a fresh `Idempotency-Key`.
async fn post(server: &TestServer, path: &str, body: String) -> Response {
    let key = uuid::Uuid::new_v4().to_string();
    let headers = [("idempotency-key", key.as_str()), ("content-type", "application/json")];
    server.request(Method::POST, path, &headers, Some(body.into_bytes())).await
}

#[track_caller]
fn assert_no_server_error(response: &Response, what: &str) {
    let text = String::from_utf8_lossy(&response.body);
    assert!(!response.status.is_server_error(), "{what}: {} {text}", response.status);
    if response.status.is_client_error() {
        assert_client_problem(response, what);
    }
}
