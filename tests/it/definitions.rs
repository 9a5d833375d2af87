//! Deploying modules and reading what is deployed.

use crate::support::{Backend, TestServer, assert_problem, module};

both_backends!(
    deploy_is_idempotent_by_bytes,
    conflicting_bytes_for_a_deployed_version_are_refused,
    invalid_modules_are_refused_with_the_reason,
    definitions_describe_versions_and_their_graph,
    unknown_definitions_are_not_found,
    modules_folder_is_deployed_at_start_up,
    compiled_modules_are_kept_across_restarts,
    a_module_of_abi_1_still_runs,
);

async fn deploy_is_idempotent_by_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = server.deploy(module("document-processing")).await.expect(201);
    let body = first.json();
    assert_eq!(body["name"], "document-processing");
    assert_eq!(body["version"], 1);
    assert_eq!(body["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(first.header("location"), Some("/v1/definitions/document-processing/versions/1"));

    let again = server.deploy(module("document-processing")).await.expect(200);
    assert_eq!(again.body, first.body, "the same bytes again answer with the same body");
}

async fn conflicting_bytes_for_a_deployed_version_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    // The same module with a custom section appended: other bytes, same name and version.
    let mut other = module("document-processing");
    other.extend_from_slice(&[0, 6, 5, b'n', b'o', b't', b'e', b'!']);
    let refused = server.deploy(other).await;
    let problem = assert_problem(&refused, 409, "version-conflict");
    let deployed = server.get("/v1/definitions/document-processing/versions/1").await.expect(200).json();
    assert_eq!(problem["deployed_sha256"], deployed["sha256"], "names the bytes deployed: {problem}");
    assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("version 1")), "{problem}");
}

async fn invalid_modules_are_refused_with_the_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", b"this is not wasm".to_vec(), "not a valid WebAssembly module"),
        (
            "an import",
            wat(r#"(module (import "env" "now" (func (result i64))) (memory (export "memory") 1))"#),
            "imports env::now",
        ),
        ("no exports", wat(r#"(module (memory (export "memory") 1))"#), "does not export the function"),
        (
            "a mistyped export",
            wat(r#"(module (memory (export "memory") 1)
                 (func (export "switchyard_alloc") (param i64) (result i64) i64.const 0))"#),
            "switchyard_alloc has the signature",
        ),
    ];
    for (what, wasm, reason) in cases {
        let response = server.deploy(wasm).await;
        let problem = assert_problem(&response, 422, "invalid-module");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{what}: {detail}");
    }
    let listed = server.get("/v1/definitions").await.expect(200).json();
    assert_eq!(listed["items"], serde_json::json!([]), "nothing invalid was stored");
}

async fn definitions_describe_versions_and_their_graph(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.create("document-processing", serde_json::json!({ "document_url": "s3://docs/a.pdf" })).await;

    let listed = server.get("/v1/definitions").await.expect(200).json();
    assert_eq!(listed["items"][0]["name"], "document-processing");

    let definition = server.get("/v1/definitions/document-processing").await.expect(200).json();
    assert_eq!(definition["default_version"], 1);
    assert_eq!(definition["versions"][0]["version"], 1);
    assert_eq!(definition["versions"][0]["instances"]["running"], 1);
    assert_eq!(definition["versions"][0]["instances"]["completed"], 0);

    let version = server.get("/v1/definitions/document-processing/versions/1").await.expect(200).json();
    assert_eq!(version["initial_state"], "UPLOADED");
    let states: Vec<&str> =
        version["states"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(states, ["UPLOADED", "VALIDATING", "FORMATTING", "PUBLISHED", "FAILED", "CANCELLED"]);
    let published = version["states"].as_array().into_iter().flatten().find(|s| s["name"] == "PUBLISHED");
    assert_eq!(published.map(|s| &s["status"]), Some(&serde_json::json!("completed")));
    let cancel = version["actions"].as_array().into_iter().flatten().find(|a| a["name"] == "cancel");
    assert_eq!(cancel.map(|a| &a["admin_only"]), Some(&serde_json::json!(true)));
    let edges = version["transitions"].as_array().expect("transitions");
    assert!(
        edges.contains(&serde_json::json!({ "from": "FORMATTING", "action": "publish", "to": "PUBLISHED" }))
    );
}

async fn unknown_definitions_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_problem(&server.get("/v1/definitions/nothing-here").await, 404, "not-found");
    assert_problem(&server.get("/v1/definitions/nothing-here/versions/1").await, 404, "not-found");
    let create =
        server.post("/v1/definitions/nothing-here/instances", "k", &serde_json::json!({ "input": {} })).await;
    assert_problem(&create, 404, "not-found");
    assert_problem(&server.get("/v1/definitions/x/versions/not-a-number").await, 400, "bad-request");
}

async fn modules_folder_is_deployed_at_start_up(backend: Backend) {
    let folder = crate::support::target_dir().join("modules");
    let folder = std::env::var("SWITCHYARD_EXAMPLE_MODULES").unwrap_or_else(|_| folder.display().to_string());
    let server = TestServer::start_with(backend, &["--modules", &folder]).await;
    let definition = server.get("/v1/definitions/document-processing").await.expect(200).json();
    assert_eq!(definition["versions"][0]["version"], 1);
}

async fn compiled_modules_are_kept_across_restarts(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let deployed = server.deploy(module("document-processing")).await.expect(201).json();
    let sha256 = deployed["sha256"].as_str().unwrap_or_default().to_owned();
    let artifacts = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(server.module_cache())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect()
    };
    let kept = artifacts();
    assert_eq!(kept.len(), 1, "one artifact per deployed module: {kept:?}");
    let artifact = kept[0].clone();
    assert!(
        artifact.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&sha256)),
        "{artifact:?}"
    );

    // A damaged artifact is not trusted: the module is compiled again and the artifact replaced.
    std::fs::write(&artifact, b"not an artifact").expect("damage the artifact");
    server.restart().await;
    let instance =
        server.create("document-processing", serde_json::json!({ "document_url": "s3://x" })).await;
    assert_eq!(instance["state"], "UPLOADED");
    let replaced = std::fs::read(&artifact).expect("artifact");
    assert_ne!(replaced, b"not an artifact");

    assert_eq!(server.log().matches("recompiling").count(), 1, "{}", server.log());

    // An intact artifact is loaded instead of compiling.
    server.restart().await;
    server.create("document-processing", serde_json::json!({ "document_url": "s3://y" })).await;
    assert_eq!(server.log().matches("recompiling").count(), 1, "the kept artifact loaded: {}", server.log());
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test WAT parses")
}

/// `document-processing` v1 as the ABI-1 SDK built it (tests/fixtures): a host that
/// speaks ABI 2 still deploys it and runs its instances to the end.
async fn a_module_of_abi_1_still_runs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/document-processing-abi1.wasm");
    let deployed =
        server.deploy(std::fs::read(&fixture).expect("the ABI-1 fixture")).await.expect(201).json();
    assert_eq!((deployed["abi"].as_u64(), deployed["version"].as_u64()), (Some(1), Some(1)));
    let created =
        server.create("document-processing", serde_json::json!({ "document_url": "s3://old" })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    for action in ["validate", "format", "publish"] {
        server.act(&id, action, serde_json::Value::Null).await.expect(200);
    }
    let published = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(
        (published["state"].as_str(), published["status"].as_str()),
        (Some("PUBLISHED"), Some("completed"))
    );
    let refused = server.act(&id, "validate", serde_json::Value::Null).await;
    assert_problem(&refused, 409, "action-not-allowed");
    // It has no `on_override`: the host applies the default, its cancelled state.
    let other = server.create("document-processing", serde_json::json!({ "document_url": "s3://old" })).await;
    let path = format!("/v1/admin/instances/{}/cancel", other["id"].as_str().expect("id"));
    let body = serde_json::json!({ "reason": "retired" }).to_string().into_bytes();
    let cancelled = server.request(reqwest::Method::POST, &path, &[], Some(body)).await.expect(200).json();
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["status"].as_str()),
        (Some("CANCELLED"), Some("cancelled"))
    );
}
