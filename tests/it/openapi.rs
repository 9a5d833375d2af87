//! `GET /openapi.json`: the served OpenAPI 3.1 document stays true to the server. It
//! lists every SPEC §4 route; every operation it documents is served, answers only
//! statuses (and content types) it documents, and needs an API key exactly where it
//! says so.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

both_backends!(
    the_document_is_openapi_3_1_and_lists_every_spec_route,
    every_documented_operation_is_served_as_documented,
    the_document_says_which_operations_need_a_key,
);

/// SPEC §4's routes, by method and path.
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/definitions"),
    ("get", "/v1/definitions"),
    ("get", "/v1/definitions/{name}"),
    ("get", "/v1/definitions/{name}/versions/{version}"),
    ("put", "/v1/definitions/{name}/default-version"),
    ("post", "/v1/definitions/{name}/versions/{version}/retire"),
    ("delete", "/v1/definitions/{name}/versions/{version}"),
    ("post", "/v1/definitions/{name}/instances"),
    ("get", "/v1/instances/{id}"),
    ("get", "/v1/instances"),
    ("post", "/v1/instances/{id}/actions/{action}"),
    ("post", "/v1/instances/{id}/events"),
    ("get", "/v1/instances/{id}/events"),
    ("post", "/v1/tasks/{task_id}/result"),
    ("get", "/v1/feed"),
    ("get", "/v1/instances/{id}/history"),
    ("get", "/v1/instances/{id}/diagnostics"),
    ("post", "/v1/admin/instances/{id}/cancel"),
    ("post", "/v1/admin/instances/{id}/force-complete"),
    ("post", "/v1/admin/instances/{id}/migrate"),
    ("post", "/v1/admin/migrations"),
    ("get", "/v1/admin/migrations/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

const ADMIN_KEY: &str = "admin-key-0123456789";

/// A server with one admin key, document-processing deployed and one instance of it.
async fn server(backend: Backend) -> (TestServer, Value) {
    let sha256 = hex::encode(sha2::Sha256::digest(ADMIN_KEY.as_bytes()));
    let config = format!("[[auth.keys]]\nname = \"ada\"\nrole = \"admin\"\nsha256 = \"{sha256}\"\n");
    let server = TestServer::start_with_config(backend, &config).await;
    let authorization = format!("Bearer {ADMIN_KEY}");
    let headers = [("content-type", "application/wasm"), ("authorization", authorization.as_str())];
    let wasm = module("document-processing");
    server.request(Method::POST, "/v1/definitions", &headers, Some(wasm)).await.expect(201);
    let body = json!({ "input": { "document_url": "s3://docs/openapi.pdf" } });
    let instance = send(&server, Method::POST, "/v1/definitions/document-processing/instances", Some(body))
        .await
        .expect(201)
        .json();
    (server, instance)
}

/// Sends a request as the admin, with a fresh `Idempotency-Key`.
async fn send(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Response {
    let key = uuid::Uuid::new_v4().to_string();
    let authorization = format!("Bearer {ADMIN_KEY}");
    let headers = [
        ("idempotency-key", key.as_str()),
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
    ];
    let body = body.map(|body| serde_json::to_vec(&body).expect("json"));
    server.request(method, path, &headers, body).await
}

/// The served document, fetched without an API key.
async fn document(server: &TestServer) -> Value {
    let response = server.get("/openapi.json").await.expect(200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

/// Every (method, path, operation) of the document.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let paths = document["paths"].as_object().expect("paths");
    let methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            item.iter()
                .filter(|(method, _)| methods.contains(&method.as_str()))
                .map(move |(method, operation)| (method.clone(), path.clone(), operation.clone()))
        })
        .collect()
}

async fn the_document_is_openapi_3_1_and_lists_every_spec_route(backend: Backend) {
    let (server, _) = server(backend).await;
    let document = document(&server).await;
    let version = document["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "not OpenAPI 3.1: {version}");
    let documented: Vec<(String, String)> =
        operations(&document).into_iter().map(|(method, path, _)| (method, path)).collect();
    for (method, path) in SPEC_ROUTES {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not documented; documented: {documented:?}"
        );
    }
    // Every reference resolves, and problems are problem+json.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/").skip(1).filter_map(|rest| rest.split('"').next()) {
        assert!(document.pointer(&format!("/{reference}")).is_some(), "dangling $ref #/{reference}");
    }
    let problem = &document["components"]["responses"]["Problem"]["content"]["application/problem+json"];
    assert!(problem["schema"]["$ref"].is_string(), "{problem}");

    // Not a route: the fallback's problem, and no document for another method.
    assert_problem(&server.get("/openapi.yaml").await, 404, "not-found");
    let post = server.request(Method::POST, "/openapi.json", &[], None).await;
    assert_problem(&post, 405, "method-not-allowed");
}

/// Requests every documented operation with valid path values (the instance, its
/// definition and version, one of its actions): each is served (not the fallback's
/// 404, not 405) and answers a status the document lists for it, with a documented
/// content type.
async fn every_documented_operation_is_served_as_documented(backend: Backend) {
    let (server, instance) = server(backend).await;
    let document = document(&server).await;
    let id = instance["id"].as_str().expect("id");
    let action = instance["allowed_actions"][0].as_str().expect("an allowed action");
    let mut operations = operations(&document);
    // Changes to the definition last, so that the instance's routes see it as it was.
    operations
        .sort_by_key(|(method, path, _)| (path.starts_with("/v1/definitions/{name}/"), method == "delete"));
    for (method, template, operation) in operations {
        if template == "/v1/feed" {
            continue;
        }
        let path = template
            .replace("{name}", "document-processing")
            .replace("{version}", "1")
            .replace("{id}", id)
            .replace("{action}", action)
            .replace("{task_id}", "no-such-task");
        let what = format!("{method} {path}");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let response = if operation["requestBody"]["content"]["application/wasm"].is_object() {
            let authorization = format!("Bearer {ADMIN_KEY}");
            let headers = [("content-type", "application/wasm"), ("authorization", authorization.as_str())];
            server.request(method, &path, &headers, Some(module("document-processing"))).await
        } else {
            let body = operation["requestBody"].is_object().then(|| json!({}));
            send(&server, method, &path, body).await
        };
        assert_documented(&operation, &response, &what);
    }
    // The feed's JSON page (its stream never ends).
    let feed = send(&server, Method::GET, "/v1/feed", None).await;
    let operation = &document["paths"]["/v1/feed"]["get"];
    assert_documented(operation, &feed, "GET /v1/feed");
}

#[track_caller]
fn assert_documented(operation: &Value, response: &Response, what: &str) {
    let status = response.status.as_u16();
    let body = String::from_utf8_lossy(&response.body);
    assert_ne!(status, 405, "{what} is not served: {body}");
    if status == 404 {
        let problem = response.json();
        assert_eq!(problem["type"], "urn:switchyard:problem:not-found", "{what}: {problem}");
        assert_ne!(problem["detail"], "no such endpoint", "{what} is not served");
    }
    let documented = &operation["responses"][status.to_string()];
    assert!(documented.is_object(), "{what} answered an undocumented {status}: {body}");
    let content_type = response.header("content-type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default();
    let problem = documented["$ref"] == "#/components/responses/Problem";
    let listed = problem && media_type == "application/problem+json"
        || documented["content"]
            .as_object()
            .is_some_and(|content| content.keys().any(|listed| listed.split(';').next() == Some(media_type)))
        || documented.get("content").is_none() && response.body.is_empty();
    assert!(listed, "{what} answered {status} as {content_type:?}, not as documented: {documented}");
}

/// Operations the document marks with the bearer scheme answer 401 without a key;
/// the others do not.
async fn the_document_says_which_operations_need_a_key(backend: Backend) {
    let (server, instance) = server(backend).await;
    let document = document(&server).await;
    let id = instance["id"].as_str().expect("id");
    let mut open = Vec::new();
    for (method, template, operation) in operations(&document) {
        let path =
            template.replace("{name}", "document-processing").replace("{version}", "1").replace("{id}", id);
        let path = path.replace("{action}", "a").replace("{task_id}", "t");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let response = server.request(method.clone(), &path, &[], None).await;
        let needs_key = operation["security"][0].get("bearer").is_some();
        if needs_key {
            assert_problem(&response, 401, "unauthorized");
            assert!(operation["responses"]["401"].is_object(), "{method} {template}: 401 undocumented");
        } else {
            assert_ne!(response.status.as_u16(), 401, "{method} {template} needs a key, undocumented");
            open.push(format!("{method} {template}"));
        }
    }
    open.sort();
    // `/metrics` is open by default (`auth.open_metrics`).
    assert_eq!(open, ["GET /healthz", "GET /metrics", "GET /openapi.json", "GET /readyz"]);
}
