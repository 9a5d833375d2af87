//! HTTP contract details (docs/http-api.md) no other module covers: correlation ids,
//! replays on the lifecycle and admin endpoints, `If-Match` in an action's
//! fingerprint, `HEAD` and `405`, the limits of `Prefer: wait`, and list cursors.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

both_backends!(
    a_sane_correlation_id_is_echoed,
    a_missing_or_invalid_correlation_id_is_replaced_by_a_fresh_one,
    a_replayed_problem_keeps_the_original_correlation_id,
    a_replayed_pin_does_not_pin_again,
    replayed_retire_and_delete_answer_as_the_first_time,
    a_replayed_migration_of_one_instance_is_not_applied_again,
    a_replayed_bulk_migration_starts_no_second_one,
    if_match_is_part_of_an_actions_fingerprint,
    an_action_without_a_key_is_refused_for_it_before_its_if_match,
    head_answers_like_get_without_a_body,
    a_wrong_method_is_refused_with_the_allowed_ones,
    a_long_poll_is_capped_by_max_wait,
    a_long_poll_that_need_not_wait_answers_at_once,
    list_pages_omit_next_cursor_only_when_not_full,
    a_repeated_deploy_answers_with_the_same_location,
);

const DEFINITION: &str = "/v1/definitions/document-processing";
/// A well-formed instance id that names no instance.
const UNKNOWN_ID: &str = "01890000-0000-7000-8000-000000000000";

async fn document_server(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server
}

async fn create(server: &TestServer) -> String {
    let instance = server.create("document-processing", json!({ "document_url": "s3://docs/a.pdf" })).await;
    instance["id"].as_str().expect("instance id").to_owned()
}

/// Sends `body` (if any) with an `Idempotency-Key` and any `extra` headers.
async fn keyed(
    server: &TestServer,
    method: Method,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    let headers: Vec<_> = [("idempotency-key", key)].into_iter().chain(extra.iter().copied()).collect();
    server.request(method, path, &headers, body.map(|body| body.to_string().into_bytes())).await
}

/// Asserts that `again` is `first` replayed: the same status, headers and bytes, marked
/// as a replay.
#[track_caller]
fn assert_replayed(first: &Response, again: &Response) {
    assert_eq!(again.status, first.status, "body: {}", String::from_utf8_lossy(&again.body));
    assert_eq!(again.body, first.body, "replayed byte for byte");
    for name in ["content-type", "etag", "location", "switchyard-dry-run"] {
        assert_eq!(again.header(name), first.header(name), "{name}");
    }
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

async fn a_sane_correlation_id_is_echoed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let longest = "x".repeat(128);
    for sent in ["req-7f3a:b/c.d_e~!", longest.as_str()] {
        let headers = [("x-correlation-id", sent)];
        let healthy = server.request(Method::GET, "/healthz", &headers, None).await.expect(200);
        assert_eq!(healthy.header("x-correlation-id"), Some(sent));
        let missing =
            server.request(Method::GET, &format!("/v1/instances/{UNKNOWN_ID}"), &headers, None).await;
        assert_problem(&missing, 404, "not-found");
        assert_eq!(missing.header("x-correlation-id"), Some(sent), "and in the problem body");
    }
}

async fn a_missing_or_invalid_correlation_id_is_replaced_by_a_fresh_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let too_long = "x".repeat(129);
    let mut seen = HashSet::new();
    for sent in [None, Some(""), Some(too_long.as_str()), Some("two words")] {
        let headers: Vec<_> = sent.map(|sent| ("x-correlation-id", sent)).into_iter().collect();
        for path in ["/healthz".to_owned(), format!("/v1/instances/{UNKNOWN_ID}")] {
            let response = server.request(Method::GET, &path, &headers, None).await;
            if response.status == 404 {
                assert_problem(&response, 404, "not-found");
            }
            let id = response.header("x-correlation-id").expect("every response has X-Correlation-Id");
            let uuid =
                uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("{sent:?} gave {id:?}, not a UUID"));
            assert_eq!(uuid.get_version_num(), 4, "{id}");
            assert!(seen.insert(id.to_owned()), "{id} was handed out twice");
        }
    }
}

async fn a_replayed_problem_keeps_the_original_correlation_id(backend: Backend) {
    let server = document_server(backend).await;
    let id = create(&server).await;
    let publish = format!("/v1/instances/{id}/actions/publish");
    let send = async |correlation: &str| {
        let headers = [("x-correlation-id", correlation)];
        keyed(&server, Method::POST, &publish, "too-early", &headers, Some(&json!({}))).await
    };
    let refused = send("first-try").await;
    assert_problem(&refused, 409, "action-not-allowed");
    let retried = send("second-try").await;
    assert_replayed(&refused, &retried);
    assert_eq!(retried.header("x-correlation-id"), Some("second-try"), "the header is the new request's");
    assert_eq!(retried.json()["correlation_id"], "first-try", "the body is the stored one");
}

async fn a_replayed_pin_does_not_pin_again(backend: Backend) {
    let server = document_server(backend).await;
    server.deploy(module("document-processing-v2")).await.expect(201);
    let path = format!("{DEFINITION}/default-version");
    let pin = async |key: &str, version: u32| {
        keyed(&server, Method::PUT, &path, key, &[], Some(&json!({ "version": version }))).await
    };
    let first = pin("pin-1", 1).await.expect(200);
    assert_eq!(first.json()["pinned_version"], 1);
    pin("pin-2", 2).await.expect(200);
    assert_replayed(&first, &pin("pin-1", 1).await);
    assert_eq!(server.get(DEFINITION).await.expect(200).json()["pinned_version"], 2, "not pinned back to 1");
}

async fn replayed_retire_and_delete_answer_as_the_first_time(backend: Backend) {
    let server = document_server(backend).await;
    let retire_path = format!("{DEFINITION}/versions/1/retire");
    let version_path = format!("{DEFINITION}/versions/1");
    let retire = || keyed(&server, Method::POST, &retire_path, "retire-1", &[], None);
    let delete = || keyed(&server, Method::DELETE, &version_path, "delete-1", &[], None);
    let retired = retire().await.expect(200);
    let deleted = delete().await.expect(204);
    // Run again, both would now find no version 1.
    assert_replayed(&retired, &retire().await);
    assert_replayed(&deleted, &delete().await);
    assert_problem(&server.request(Method::DELETE, &version_path, &[], None).await, 404, "not-found");
    assert_problem(&server.get(&version_path).await, 404, "not-found");
}

async fn a_replayed_migration_of_one_instance_is_not_applied_again(backend: Backend) {
    let server = document_server(backend).await;
    let id = create(&server).await;
    server.deploy(module("document-processing-v2")).await.expect(201);
    let path = format!("/v1/admin/instances/{id}/migrate");
    let dry = json!({ "to_version": 2, "reason": "preview", "dry_run": true });
    let dry_run = || keyed(&server, Method::POST, &path, "dry-1", &[], Some(&dry));
    let previewed = dry_run().await.expect(200);
    assert_eq!(previewed.header("switchyard-dry-run"), Some("true"));
    assert_eq!(previewed.header("etag"), None, "a dry run writes no revision");
    // Once the instance moved on, a fresh dry run would show VALIDATING.
    server.act(&id, "validate", Value::Null).await.expect(200);
    let replayed = dry_run().await;
    assert_replayed(&previewed, &replayed);
    assert_eq!(replayed.json()["state"], "UPLOADED");

    let real = json!({ "to_version": 2, "reason": "upgrade" });
    let migrate = || keyed(&server, Method::POST, &path, "migrate-1", &[], Some(&real));
    let migrated = migrate().await.expect(200);
    assert_eq!(migrated.header("etag"), Some("\"3\""));
    assert_eq!(migrated.json()["definition_version"], 2);
    assert_replayed(&migrated, &migrate().await);
    let current = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 3, "migrated once");
}

async fn a_replayed_bulk_migration_starts_no_second_one(backend: Backend) {
    let server = document_server(backend).await;
    let ids = [create(&server).await, create(&server).await];
    server.deploy(module("document-processing-v2")).await.expect(201);
    let body =
        json!({ "definition": "document-processing", "from_version": 1, "to_version": 2, "reason": "v2" });
    let start = || keyed(&server, Method::POST, "/v1/admin/migrations", "bulk-1", &[], Some(&body));
    let started = start().await.expect(202);
    let migration = started.json();
    let location = format!("/v1/admin/migrations/{}", migration["id"].as_str().expect("migration id"));
    assert_eq!(started.header("location"), Some(location.as_str()));
    assert_eq!(migration["total"], 2);
    assert_replayed(&started, &start().await);

    // Each instance's long-poll returns once the migration committed it.
    for id in &ids {
        let headers = [("if-none-match", "\"1\""), ("prefer", "wait=30")];
        let moved = server.request(Method::GET, &format!("/v1/instances/{id}"), &headers, None).await;
        assert_eq!(moved.expect(200).json()["definition_version"], 2);
    }
    let progress = server.get(&location).await.expect(200).json();
    assert_eq!(
        (progress["migrated"].as_i64(), progress["failed"].as_i64()),
        (Some(2), Some(0)),
        "{progress}"
    );
}

async fn if_match_is_part_of_an_actions_fingerprint(backend: Backend) {
    let server = document_server(backend).await;
    let id = create(&server).await;
    let instance = format!("/v1/instances/{id}");
    let validate = format!("{instance}/actions/validate");
    let send = async |path: &str, key: &str, if_match: Option<&str>| {
        let headers: Vec<_> = if_match.map(|tag| ("if-match", tag)).into_iter().collect();
        keyed(&server, Method::POST, path, key, &headers, Some(&json!({}))).await
    };
    let state = async || {
        let current = server.get(&instance).await.expect(200).json();
        (current["state"].as_str().map(str::to_owned), current["revision"].as_u64())
    };

    // One If-Match, then another or none: the stale tag's 412 is kept, and the
    // requests that would now succeed are refused and change nothing.
    let stale = send(&validate, "v", Some("\"9\"")).await;
    assert_problem(&stale, 412, "precondition-failed");
    assert_problem(&send(&validate, "v", Some("\"1\"")).await, 422, "idempotency-key-reused");
    assert_problem(&send(&validate, "v", None).await, 422, "idempotency-key-reused");
    assert_eq!(state().await, (Some("UPLOADED".to_owned()), Some(1)));
    assert_replayed(&stale, &send(&validate, "v", Some("\"9\"")).await);

    // None, then one: the early refusal is kept; the same body under the right tag is
    // another request and runs nothing.
    let publish = format!("{instance}/actions/publish");
    assert_problem(&send(&publish, "p", None).await, 409, "action-not-allowed");
    for action in ["validate", "format"] {
        server.act(&id, action, Value::Null).await.expect(200);
    }
    assert_problem(&send(&publish, "p", Some("\"3\"")).await, 422, "idempotency-key-reused");
    assert_eq!(state().await, (Some("FORMATTING".to_owned()), Some(3)));
}

async fn head_answers_like_get_without_a_body(backend: Backend) {
    let server = document_server(backend).await;
    let instance = format!("/v1/instances/{}", create(&server).await);
    for (path, etag) in [(instance.as_str(), Some("\"1\"")), ("/v1/definitions", None), ("/healthz", None)] {
        let get = server.get(path).await.expect(200);
        let head = server.request(Method::HEAD, path, &[], None).await.expect(200);
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(get.header("etag"), etag, "{path}");
        for name in ["etag", "content-type", "content-length"] {
            assert_eq!(head.header(name), get.header(name), "{path}: {name}");
        }
    }
    let unchanged = server.request(Method::HEAD, &instance, &[("if-none-match", "\"1\"")], None).await;
    assert_eq!((unchanged.status.as_u16(), unchanged.header("etag")), (304, Some("\"1\"")));
    let missing = server.request(Method::HEAD, &format!("/v1/instances/{UNKNOWN_ID}"), &[], None).await;
    assert_eq!((missing.status.as_u16(), missing.body.len()), (404, 0));
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
}

async fn a_wrong_method_is_refused_with_the_allowed_ones(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Routes match on the path's shape: nothing needs to exist.
    let cases = [
        (Method::DELETE, "/v1/instances".to_owned(), &["GET", "HEAD"][..]),
        (Method::PUT, format!("/v1/instances/{UNKNOWN_ID}"), &["GET", "HEAD"]),
        (Method::GET, format!("/v1/instances/{UNKNOWN_ID}/actions/validate"), &["POST"]),
        (Method::DELETE, "/v1/definitions".to_owned(), &["GET", "HEAD", "POST"]),
        (Method::POST, format!("{DEFINITION}/versions/1"), &["DELETE", "GET", "HEAD"]),
        (Method::PATCH, "/healthz".to_owned(), &["GET", "HEAD"]),
    ];
    for (method, path, allowed) in cases {
        let refused = server.request(method.clone(), &path, &[], None).await;
        assert_problem(&refused, 405, "method-not-allowed");
        let allow = refused.header("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        methods.sort_unstable();
        assert_eq!(methods, allowed, "{method} {path}");
    }
}

async fn a_long_poll_is_capped_by_max_wait(backend: Backend) {
    let server = TestServer::start_with_config(backend, "max_wait_secs = 1\n").await;
    server.deploy(module("document-processing")).await.expect(201);
    let id = create(&server).await;
    let started = Instant::now();
    let headers = [("if-none-match", "\"1\""), ("prefer", "wait=30")];
    let polled = server.request(Method::GET, &format!("/v1/instances/{id}"), &headers, None).await;
    let waited = started.elapsed();
    assert_eq!((polled.status.as_u16(), polled.header("etag")), (304, Some("\"1\"")));
    assert_eq!(polled.header("preference-applied"), Some("wait=1"));
    assert!(waited >= Duration::from_millis(900), "it waited the capped second, not less: {waited:?}");
    assert!(waited < Duration::from_secs(10), "it did not wait the 30 s asked for: {waited:?}");
}

async fn a_long_poll_that_need_not_wait_answers_at_once(backend: Backend) {
    let server = document_server(backend).await;
    let id = create(&server).await;
    let path = format!("/v1/instances/{id}");
    let poll = async |if_none_match: Option<&str>| {
        let mut headers = vec![("prefer", "wait=30")];
        headers.extend(if_none_match.map(|tag| ("if-none-match", tag)));
        let started = Instant::now();
        let polled = server.request(Method::GET, &path, &headers, None).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{if_none_match:?}: {:?}", started.elapsed());
        assert_eq!(polled.header("preference-applied"), Some("wait=30"), "even without waiting");
        polled
    };
    server.act(&id, "validate", Value::Null).await.expect(200);
    let changed = poll(Some("\"1\"")).await.expect(200);
    assert_eq!(changed.header("etag"), Some("\"2\""), "already changed from the tag given");

    // A finished instance will not change: it is answered at once, by the usual rules.
    let cancelled = server.act(&id, "cancel", json!({ "reason": "withdrawn" })).await.expect(200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    let unchanged = poll(Some("\"3\"")).await;
    assert_eq!((unchanged.status.as_u16(), unchanged.header("etag")), (304, Some("\"3\"")));
    assert!(unchanged.body.is_empty());
    assert_eq!(poll(None).await.expect(200).json()["status"], "cancelled");
}

async fn list_pages_omit_next_cursor_only_when_not_full(backend: Backend) {
    let server = document_server(backend).await;
    let mut newest_first = Vec::new();
    for _ in 0..4 {
        newest_first.insert(0, create(&server).await);
    }
    let page = async |query: String| {
        let listed = server.get(&format!("/v1/instances?{query}")).await.expect(200);
        assert_eq!(listed.header("etag"), None, "lists have no ETag");
        let listed = listed.json();
        let ids: Vec<String> = listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["id"].as_str().map(str::to_owned))
            .collect();
        let cursor = listed.as_object().expect("a page object").get("next_cursor").cloned();
        assert_ne!(cursor, Some(Value::Null), "an absent cursor is omitted, not null");
        (ids, cursor.and_then(|cursor| cursor.as_str().map(str::to_owned)))
    };

    // Four is two full pages: the second keeps a cursor, the empty third has none.
    let cursor = |id: &String| Some(id.clone());
    assert_eq!(page("limit=2".into()).await, (newest_first[..2].to_vec(), cursor(&newest_first[1])));
    let second = page(format!("limit=2&cursor={}", newest_first[1])).await;
    assert_eq!(second, (newest_first[2..].to_vec(), cursor(&newest_first[3])));
    assert_eq!(page(format!("limit=2&cursor={}", newest_first[3])).await, (Vec::new(), None));
    // Three a page: the second, not full, is the last one.
    assert_eq!(page("limit=3".into()).await, (newest_first[..3].to_vec(), cursor(&newest_first[2])));
    assert_eq!(page(format!("limit=3&cursor={}", newest_first[2])).await, (newest_first[3..].to_vec(), None));
    // A limit under 1 is clamped to 1.
    assert_eq!(page("limit=0".into()).await, (newest_first[..1].to_vec(), cursor(&newest_first[0])));
    assert_problem(&server.get("/v1/instances?colour=red").await, 400, "bad-request");
}

async fn a_repeated_deploy_answers_with_the_same_location(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = server.deploy(module("document-processing")).await.expect(201);
    let again = server.deploy(module("document-processing")).await.expect(200);
    assert_eq!(first.header("location"), Some("/v1/definitions/document-processing/versions/1"));
    assert_eq!(again.header("location"), first.header("location"));
}

/// SPEC §4: an action without `Idempotency-Key` is a 400, whatever its `If-Match`.
async fn an_action_without_a_key_is_refused_for_it_before_its_if_match(backend: Backend) {
    let server = document_server(backend).await;
    let id = create(&server).await;
    let path = format!("/v1/instances/{id}/actions/validate");
    let response = server.request(Method::POST, &path, &[("if-match", "not-an-etag")], None).await;
    assert_problem(&response, 400, "idempotency-key-missing");
}
