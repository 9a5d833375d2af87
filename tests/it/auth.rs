//! API keys and roles (SPEC §6): every endpoint against every kind of caller, the
//! caller's name in history and as the scope of its idempotency keys, admin-only
//! actions, and a server without keys that refuses to listen beyond loopback.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

both_backends!(
    every_endpoint_answers_each_role_as_the_spec_says,
    the_caller_is_the_actor_and_scopes_its_keys,
    admin_only_actions_need_an_admin,
    metrics_can_be_closed,
);

/// The callers of the test: name, role and key.
const CALLERS: [(&str, &str, &str); 4] = [
    ("carol", "client", "client-key-0123456789"),
    ("bob", "client", "another-client-key-0123"),
    ("dana", "deployer", "deployer-key-0123456789"),
    ("ada", "admin", "admin-key-0123456789"),
];

fn keys_config(extra: &str) -> String {
    let mut toml = String::from(extra);
    for (name, role, key) in CALLERS {
        let sha256 = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        toml.push_str(&format!(
            "\n[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n"
        ));
    }
    toml
}

fn key_of(name: &str) -> &'static str {
    CALLERS.iter().find(|caller| caller.0 == name).map(|caller| caller.2).expect("a caller of the test")
}

/// Sends a request as `caller` (a name from [`CALLERS`]), or with no key, or with
/// `Authorization` as given.
async fn send(
    server: &TestServer,
    caller: Caller,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let authorization = match caller {
        Caller::Named(name) => Some(format!("Bearer {}", key_of(name))),
        Caller::Header(header) => Some(header.to_owned()),
        Caller::Nobody => None,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let mut headers = vec![("idempotency-key", key.as_str()), ("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    let body = body.map(|body| serde_json::to_vec(body).expect("json"));
    server.request(method, path, &headers, body).await
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    Named(&'static str),
    Header(&'static str),
    Nobody,
}

async fn server_with_keys(backend: Backend, extra: &str) -> TestServer {
    TestServer::start_with_config(backend, &keys_config(extra)).await
}

/// Deploys document-processing as the deployer and starts one instance as `carol`.
async fn document(server: &TestServer) -> String {
    let wasm = module("document-processing");
    let headers = [("content-type", "application/wasm"), ("authorization", "Bearer deployer-key-0123456789")];
    server.request(Method::POST, "/v1/definitions", &headers, Some(wasm)).await.expect(201);
    let input = json!({ "input": { "document_url": "s3://docs/a.pdf" } });
    let created = send(
        server,
        Caller::Named("carol"),
        Method::POST,
        "/v1/definitions/document-processing/instances",
        Some(&input),
    )
    .await
    .expect(201);
    created.json()["id"].as_str().expect("id").to_owned()
}

async fn every_endpoint_answers_each_role_as_the_spec_says(backend: Backend) {
    let server = server_with_keys(backend, "").await;
    let id = document(&server).await;
    let reason = json!({ "reason": "the role matrix" });
    let wasm_path = "/v1/definitions";
    // (method, path, body, the lowest role that may call it; None: anyone).
    let endpoints: Vec<(Method, String, Option<Value>, Option<&str>)> = vec![
        (Method::GET, "/healthz".into(), None, None),
        (Method::GET, "/readyz".into(), None, None),
        (Method::GET, "/metrics".into(), None, None),
        (Method::GET, "/v1/definitions".into(), None, Some("client")),
        (Method::GET, "/v1/definitions/document-processing".into(), None, Some("client")),
        (Method::GET, "/v1/definitions/document-processing/versions/1".into(), None, Some("client")),
        (
            Method::POST,
            "/v1/definitions/document-processing/instances".into(),
            Some(json!({ "input": { "document_url": "s3://docs/b.pdf" } })),
            Some("client"),
        ),
        (Method::GET, "/v1/instances".into(), None, Some("client")),
        (Method::GET, format!("/v1/instances/{id}"), None, Some("client")),
        (Method::GET, format!("/v1/instances/{id}/history"), None, Some("client")),
        (Method::GET, format!("/v1/instances/{id}/events"), None, Some("client")),
        (
            Method::POST,
            format!("/v1/instances/{id}/events"),
            Some(json!({ "event_id": uuid::Uuid::new_v4().to_string(), "type": "ping" })),
            Some("client"),
        ),
        (Method::POST, format!("/v1/instances/{id}/actions/validate"), Some(json!({})), Some("client")),
        (
            Method::POST,
            "/v1/tasks/no-such-task/result".into(),
            Some(json!({ "status": "succeeded" })),
            Some("client"),
        ),
        (Method::GET, "/v1/feed?after=0".into(), None, Some("client")),
        (Method::POST, wasm_path.into(), Some(json!("not a module")), Some("deployer")),
        (Method::GET, format!("/v1/instances/{id}/diagnostics"), None, Some("admin")),
        (
            Method::PUT,
            "/v1/definitions/document-processing/default-version".into(),
            Some(json!({ "version": 1 })),
            Some("admin"),
        ),
        (Method::POST, "/v1/definitions/document-processing/versions/9/retire".into(), None, Some("admin")),
        (Method::DELETE, "/v1/definitions/document-processing/versions/9".into(), None, Some("admin")),
        (
            Method::POST,
            format!("/v1/admin/instances/{id}/migrate"),
            Some(json!({ "to_version": 9, "reason": "r", "dry_run": true })),
            Some("admin"),
        ),
        (
            Method::POST,
            "/v1/admin/migrations".into(),
            Some(
                json!({ "definition": "document-processing", "from_version": 1, "to_version": 9, "reason": "r" }),
            ),
            Some("admin"),
        ),
        (Method::GET, format!("/v1/admin/migrations/{}", uuid::Uuid::new_v4()), None, Some("admin")),
        (
            Method::POST,
            format!("/v1/admin/instances/{id}/force-complete"),
            Some(reason.clone()),
            Some("admin"),
        ),
        (Method::POST, format!("/v1/admin/instances/{id}/cancel"), Some(reason), Some("admin")),
    ];
    let rank = |role: &str| ["client", "deployer", "admin"].iter().position(|known| *known == role);
    for (method, path, body, required) in &endpoints {
        let Some(required) = required else {
            for caller in [Caller::Nobody, Caller::Header("Bearer not-a-key")] {
                let answer = send(&server, caller, method.clone(), path, body.as_ref()).await;
                assert!(answer.status.is_success(), "{method} {path} is open: {}", answer.status);
            }
            continue;
        };
        for caller in
            [Caller::Nobody, Caller::Header("Bearer not-a-key"), Caller::Header("Basic YWRhOmFkYQ==")]
        {
            let answer = send(&server, caller, method.clone(), path, body.as_ref()).await;
            let problem = assert_problem(&answer, 401, "unauthorized");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{method} {path}: {problem}");
        }
        for (name, role, _) in CALLERS {
            let answer = send(&server, Caller::Named(name), method.clone(), path, body.as_ref()).await;
            if rank(role) < rank(required) {
                let problem = assert_problem(&answer, 403, "forbidden");
                assert_eq!(
                    (problem["required_role"].as_str(), problem["role"].as_str()),
                    (Some(*required), Some(role))
                );
            } else {
                let status = answer.status.as_u16();
                assert!(
                    status != 401 && status != 403 && !answer.status.is_server_error(),
                    "{method} {path} as {role}: {status} {}",
                    String::from_utf8_lossy(&answer.body)
                );
            }
        }
    }
    // An unknown path is not found, whoever asks.
    assert_problem(
        &send(&server, Caller::Nobody, Method::GET, "/v1/nothing-here", None).await,
        404,
        "not-found",
    );
}

async fn the_caller_is_the_actor_and_scopes_its_keys(backend: Backend) {
    let server = server_with_keys(backend, "").await;
    document(&server).await;
    let path = "/v1/definitions/document-processing/instances";
    let body = serde_json::to_vec(&json!({ "input": { "document_url": "s3://docs/c.pdf" } })).expect("json");
    let create = |name: &'static str| {
        let authorization = format!("Bearer {}", key_of(name));
        let body = body.clone();
        let server = &server;
        async move {
            let headers = [
                ("idempotency-key", "shared-key"),
                ("content-type", "application/json"),
                ("authorization", authorization.as_str()),
            ];
            server.request(Method::POST, path, &headers, Some(body)).await
        }
    };
    let carols = create("carol").await.expect(201);
    let bobs = create("bob").await.expect(201);
    assert_eq!(bobs.header("idempotent-replayed"), None, "another caller's key is not a replay");
    let (carols_id, bobs_id) = (carols.json()["id"].clone(), bobs.json()["id"].clone());
    assert_ne!(carols_id, bobs_id, "one key, two callers: two instances");
    let again = create("carol").await.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], carols_id);

    let id = carols_id.as_str().expect("id");
    let validate = format!("/v1/instances/{id}/actions/validate");
    send(&server, Caller::Named("bob"), Method::POST, &validate, Some(&json!({}))).await.expect(200);
    let cancel = format!("/v1/admin/instances/{id}/cancel");
    send(&server, Caller::Named("ada"), Method::POST, &cancel, Some(&json!({ "reason": "audit" })))
        .await
        .expect(200);
    let history =
        send(&server, Caller::Named("carol"), Method::GET, &format!("/v1/instances/{id}/history"), None)
            .await
            .expect(200)
            .json();
    let actors: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|entry| entry["actor"].as_str())
        .collect();
    assert_eq!(actors, ["carol", "bob", "ada"]);
}

async fn admin_only_actions_need_an_admin(backend: Backend) {
    let server = server_with_keys(backend, "").await;
    let id = document(&server).await;
    let cancel = format!("/v1/instances/{id}/actions/cancel");
    for name in ["carol", "dana"] {
        let answer = send(&server, Caller::Named(name), Method::POST, &cancel, Some(&json!({}))).await;
        let problem = assert_problem(&answer, 403, "forbidden");
        assert_eq!(problem["required_role"], "admin");
    }
    let instance = send(&server, Caller::Named("carol"), Method::GET, &format!("/v1/instances/{id}"), None)
        .await
        .expect(200)
        .json();
    assert_eq!((instance["state"].as_str(), instance["revision"].as_i64()), (Some("UPLOADED"), Some(1)));
    let cancelled =
        send(&server, Caller::Named("ada"), Method::POST, &cancel, Some(&json!({}))).await.expect(200);
    assert_eq!(cancelled.json()["status"], "cancelled");
}

async fn metrics_can_be_closed(backend: Backend) {
    let server = server_with_keys(backend, "[auth]\nopen_metrics = false\n").await;
    assert_problem(&send(&server, Caller::Nobody, Method::GET, "/metrics", None).await, 401, "unauthorized");
    send(&server, Caller::Named("carol"), Method::GET, "/metrics", None).await.expect(200);
    send(&server, Caller::Nobody, Method::GET, "/healthz", None).await.expect(200);
}

/// Without keys, a server listens on loopback only, unless told it may be open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_refuses_an_address_beyond_loopback() {
    let log = TestServer::start_refused(Backend::Sqlite, &["--listen", "0.0.0.0:0"]).await;
    assert!(log.contains("no API keys are configured") && log.contains("--insecure-open"), "{log}");
    let server = TestServer::start_on(Backend::Sqlite, "0.0.0.0", &["--insecure-open"]).await;
    server.get("/v1/definitions").await.expect(200);
}

/// Keys that cannot work are a configuration error, named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_at_start() {
    let digest = hex::encode(sha2::Sha256::digest(b"k"));
    for (keys, complaint) in [
        (format!("[[auth.keys]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"{digest}\""), "is none of client"),
        ("[[auth.keys]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"abc\"".to_owned(), "64 hex digits"),
        (
            format!(
                "[[auth.keys]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n\
                 [[auth.keys]]\nname = \"y\"\nrole = \"client\"\nsha256 = \"{digest}\""
            ),
            "listed twice",
        ),
        (format!("[[auth.keys]]\nname = \"anonymous\"\nrole = \"admin\"\nsha256 = \"{digest}\""), "reserved"),
    ] {
        let scratch =
            std::env::temp_dir().join(format!("switchyard-keys-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&scratch, keys).expect("config file");
        let config = scratch.display().to_string();
        let log = TestServer::start_refused(Backend::Sqlite, &["--config", &config]).await;
        let _ = std::fs::remove_file(&scratch);
        assert!(log.contains(complaint), "expected {complaint:?} in:\n{log}");
    }
}
