//! Compiled modules are known by their content: a version deleted and deployed again
//! with other bytes runs the new bytes on every host. A host compiles a module once
//! however many calls need it first, keeps in memory what fits its budgets, and never
//! loads an artifact whose bytes are not the ones it wrote.

use crate::support::wat::{Answer, ENTRIES, module_declaring, trapping};
use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_guest::abi::{self, Manifest, TerminalStatus};

both_backends!(
    a_version_deployed_again_with_other_bytes_runs_them_on_every_host,
    concurrent_first_uses_compile_once,
    compiled_modules_in_memory_stay_within_their_budget,
    recent_instances_stay_within_their_budget,
    a_replaced_artifact_is_refused_and_compiled_again,
    compiling_is_bounded_in_time_and_in_number,
);

/// `variant` version 1: `init` keeps `{"variant": variant}`, and `action` ends it
/// with `{"variant": variant, "acted": true}`.
fn variant(variant: &str, action: &str) -> Vec<u8> {
    let manifest = Manifest::builder("variant", 1)
        .state("IDLE", "")
        .terminal("DONE", TerminalStatus::Completed, "")
        .initial("IDLE")
        .action(action, &["IDLE"], &["DONE"], "")
        .build();
    let entries = ENTRIES.map(|entry| match entry {
        abi::exports::INIT => (entry, Answer::accepted("IDLE", json!({ "variant": variant }))),
        abi::exports::ON_ACTION => {
            (entry, Answer::accepted("DONE", json!({ "variant": variant, "acted": true })))
        }
        _ => (entry, Answer::Traps),
    });
    module_declaring(&manifest, &entries)
}

async fn a_version_deployed_again_with_other_bytes_runs_them_on_every_host(backend: Backend) {
    let first_host = TestServer::start(backend).await;
    let second_host = first_host.another_host().await;
    let deployed = first_host.deploy(variant("first", "finish")).await.expect(201).json();
    let first = first_host.create("variant", json!({})).await;
    let first_id = first["id"].as_str().expect("an id");
    let finished = second_host.act(first_id, "finish", Value::Null).await.expect(200).json();
    assert_eq!(
        finished["data"],
        json!({ "variant": "first", "acted": true }),
        "the second host holds it now"
    );

    let version = "/v1/definitions/variant/versions/1";
    first_host.request(Method::POST, &format!("{version}/retire"), &[], None).await.expect(200);
    first_host.request(Method::DELETE, version, &[], None).await.expect(204);
    let redeployed = first_host.deploy(variant("second", "close")).await.expect(201).json();
    assert_eq!((&redeployed["name"], &redeployed["version"]), (&deployed["name"], &deployed["version"]));
    assert_ne!(redeployed["sha256"], deployed["sha256"]);

    let second = first_host.create("variant", json!({})).await;
    assert_eq!(second["data"], json!({ "variant": "second" }));
    let second_id = second["id"].as_str().expect("an id");
    let seen = second_host.get(&format!("/v1/instances/{second_id}")).await.expect(200).json();
    assert_eq!(seen["allowed_actions"], json!(["close"]), "the new manifest: {seen}");
    let closed = second_host.act(second_id, "close", Value::Null).await.expect(200).json();
    assert_eq!(closed["data"], json!({ "variant": "second", "acted": true }), "the new bytes ran");
}

/// Instances acted on at once on a host that has not compiled their module yet.
const FIRST_USES: usize = 6;

async fn concurrent_first_uses_compile_once(backend: Backend) {
    let first_host = TestServer::start(backend).await;
    first_host.deploy(module("hostile-guest")).await.expect(201);
    let mut ids = Vec::new();
    for _ in 0..FIRST_USES {
        ids.push(first_host.create("hostile", json!({})).await["id"].as_str().expect("an id").to_owned());
    }
    // Its own module cache folder and memory: it compiles the module at first use.
    let second_host = first_host.another_host().await;
    let echoes = ids.iter().map(|id| second_host.act(id, "echo", json!("at once")));
    for echoed in futures::future::join_all(echoes).await {
        assert_eq!(echoed.expect(200).json()["data"]["echo"], "at once");
    }
    assert_eq!(second_host.metric("switchyard_module_compiles_total").await, 1.0);
}

const CACHE_BYTES: &str = "switchyard_module_cache_bytes";
const ARTIFACT_LOADS: &str = "switchyard_module_artifact_loads_total";

/// Starts an instance of `definition`; its id.
async fn instance_of(server: &TestServer, definition: &str) -> String {
    let input = json!({ "document_url": "s3://documents/a.pdf" });
    server.create(definition, input).await["id"].as_str().expect("an id").to_owned()
}

async fn compiled_modules_in_memory_stay_within_their_budget(backend: Backend) {
    let mut server = TestServer::start_with_config(backend, "").await;
    server.deploy(module("hostile-guest")).await.expect(201);
    server.deploy(module("document-processing")).await.expect(201);
    // What each counts when loaded from its artifact, as after a restart.
    server.restart().await;
    let hostile = instance_of(&server, "hostile").await;
    let hostile_bytes = server.metric(CACHE_BYTES).await;
    instance_of(&server, "document-processing").await;
    let both_bytes = server.metric(CACHE_BYTES).await;
    let documents_bytes = both_bytes - hostile_bytes;
    assert!(hostile_bytes > 0.0 && documents_bytes > 0.0, "{hostile_bytes} and {documents_bytes}");

    // Room for either, not both.
    let budget = hostile_bytes.max(documents_bytes);
    server.rewrite_config(&format!("[guest]\nmodule_cache_bytes = {budget}\n"));
    server.restart().await;
    server.act(&hostile, "echo", json!(1)).await.expect(200);
    assert_eq!(server.metric(CACHE_BYTES).await, hostile_bytes);
    instance_of(&server, "document-processing").await;
    assert_eq!(server.metric(CACHE_BYTES).await, documents_bytes, "the hostile module made room");
    server.act(&hostile, "echo", json!(2)).await.expect(200);
    assert_eq!(server.metric(CACHE_BYTES).await, hostile_bytes);
    assert_eq!(server.metric(ARTIFACT_LOADS).await, 3.0, "the hostile module was loaded again");
    assert_eq!(server.metric("switchyard_module_compiles_total").await, 0.0);
}

const RECENT_BYTES: &str = "switchyard_recent_instances_bytes";
const RECENT_BUDGET: f64 = 1_000_000.0;

async fn recent_instances_stay_within_their_budget(backend: Backend) {
    let config = format!("[guest]\nrecent_instances_bytes = {RECENT_BUDGET}\n");
    let server = TestServer::start_with_config(backend, &config).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let large = "x".repeat(300_000);
    for _ in 0..5 {
        let id = instance_of(&server, "hostile").await;
        server.act(&id, "echo", json!(large)).await.expect(200);
        let kept = server.metric(RECENT_BYTES).await;
        assert!(kept > 300_000.0 && kept <= RECENT_BUDGET, "{kept} bytes kept");
    }
}

async fn a_replaced_artifact_is_refused_and_compiled_again(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let hostile = server.deploy(module("hostile-guest")).await.expect(201).json();
    let documents = server.deploy(module("document-processing")).await.expect(201).json();
    let artifact_of = |deployed: &Value| -> std::path::PathBuf {
        let sha256 = deployed["sha256"].as_str().expect("a sha256");
        let artifacts = std::fs::read_dir(server.module_cache()).expect("the module cache folder");
        let mut matching = artifacts
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(sha256)));
        matching.next().expect("an artifact per deployed module")
    };
    let (hostile_artifact, documents_artifact) = (artifact_of(&hostile), artifact_of(&documents));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.module_cache()).expect("folder").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only the server's user may read or write native code");
    }

    server.stop().await;
    // Another module's artifact, which wasmtime would load without complaint.
    let foreign = std::fs::read(&documents_artifact).expect("artifact");
    std::fs::write(&hostile_artifact, &foreign).expect("replace the artifact");
    // What a crash mid-write leaves.
    let partial = hostile_artifact.with_extension("partial-0123abcd");
    std::fs::write(&partial, b"half an artifact").expect("partial");
    server.start_again().await;
    assert!(!partial.exists(), "partial files are removed at start-up");

    let id = instance_of(&server, "hostile").await;
    let echoed = server.act(&id, "echo", json!("the real one")).await.expect(200).json();
    assert_eq!(echoed["data"]["echo"], "the real one");
    assert_eq!(server.metric("switchyard_module_artifacts_refused_total").await, 1.0);
    assert_eq!(server.metric("switchyard_module_compiles_total").await, 1.0);
    assert_eq!(server.log().matches("refusing the artifact").count(), 1, "{}", server.log());
    assert_ne!(std::fs::read(&hostile_artifact).expect("artifact"), foreign, "written again");
}

/// Statements in the one function of [`slow_to_compile`], 7 bytes each: the module
/// stays under the 8 MiB a module may have.
const STATEMENTS: usize = 1_000_000;

/// A valid module (with no exports, so a deploy that compiled it would still refuse it)
/// whose one function takes Cranelift seconds to compile: `STATEMENTS` times
/// `local.set c (i32.add (local.get a) (local.get b))` over 64 locals. Written as
/// bytes: the WAT text would take the test longer to parse than the host to compile.
fn slow_to_compile() -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb128(content.len(), out);
        out.extend_from_slice(content);
    }
    const LOCALS: usize = 64;
    // One entry of 64 i32 locals, the statements, then `i32.const 0` and `end`.
    let mut body = vec![1, LOCALS as u8, 0x7f];
    for idx in 0..STATEMENTS {
        let (a, b, c) = ((idx * 7 + 3) % LOCALS, (idx * 13 + 5) % LOCALS, idx % LOCALS);
        body.extend_from_slice(&[0x20, a as u8, 0x20, b as u8, 0x6a, 0x21, c as u8]);
    }
    body.extend_from_slice(&[0x41, 0, 0x0b]);
    let mut code = vec![1];
    leb128(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 1, 0x7f], &mut module); // one type: () -> i32
    section(3, &[1, 0], &mut module); // one function of that type
    section(10, &code, &mut module);
    module
}

/// A deploy whose compile takes too long is refused, though the compile runs on; and
/// it keeps the only compile slot until it ends, so the next deploy waits for it.
async fn compiling_is_bounded_in_time_and_in_number(backend: Backend) {
    let config = "[guest]\ncompile_timeout_ms = 1000\nconcurrent_compiles = 1\n";
    let server = TestServer::start_with_config(backend, config).await;
    let refused = server.deploy(slow_to_compile()).await;
    let problem = assert_problem(&refused, 422, "invalid-module");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("compiling the module took longer than 1s, the limit"), "{detail}");
    assert_eq!(server.log().matches("compile finished").count(), 0, "the compile runs on");

    let manifest = Manifest::builder("quick", 1)
        .state("IDLE", "")
        .initial("IDLE")
        .action("poke", &["IDLE"], &["IDLE"], "")
        .build();
    let quick = module_declaring(&manifest, &trapping(&ENTRIES));
    let quick_bytes = format!("bytes={}", quick.len());
    server.deploy(quick).await.expect(201);
    // Lines are written in the order they are logged: the quick compile ended second.
    let log = server.wait_for_log(|log| log.matches("compile finished").count() >= 2).await;
    let finished: Vec<&str> = log.lines().filter(|line| line.contains("compile finished")).collect();
    assert!(
        finished.len() == 2 && finished[1].contains(&quick_bytes),
        "the quick compile waited for the slow one to end: {log}"
    );
}
