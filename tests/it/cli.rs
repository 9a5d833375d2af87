//! The command-line client: the real `switchyard` binary run against a real server,
//! its tables, its JSON (the API's bodies), its exit codes and its API keys.

use crate::support::{Backend, TestServer, binary, module, module_path};
use serde_json::{Value, json};
use sha2::Digest;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

both_backends!(
    a_document_is_driven_from_the_command_line,
    versions_are_pinned_retired_and_deleted_from_the_command_line,
    errors_exit_with_their_class_and_show_the_problem,
    api_keys_come_from_the_flag_or_the_environment,
    get_wait_returns_when_the_instance_changes,
    a_bulk_migration_runs_to_its_report,
    the_feed_is_followed_live,
);

/// How a run of the client ended and what it printed.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn success(self) -> Ran {
        self.exits(0)
    }

    #[track_caller]
    fn exits(self, code: i32) -> Ran {
        assert_eq!(self.code, Some(code), "unexpected exit code; {self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }

    /// Whether a line of stdout has exactly these words (a table row, a field).
    fn has_line(&self, words: &[&str]) -> bool {
        self.stdout.lines().any(|line| line.split_whitespace().eq(words.iter().copied()))
    }
}

/// `switchyard ARGS` against the server at `url`, with nothing taken from this
/// process's environment.
fn client(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .args(["--server", url])
        .env_remove("SWITCHYARD_SERVER")
        .env_remove("SWITCHYARD_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn finish(command: &mut Command) -> Ran {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the client ends within 60 s")
        .expect("the client runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run(server: &TestServer, args: &[&str]) -> Ran {
    finish(&mut client(&server.base_url, args)).await
}

fn id_of(instance: &Value) -> String {
    instance["id"].as_str().expect("an instance id").to_owned()
}

fn document_module() -> String {
    module_path("document-processing").display().to_string()
}

async fn a_document_is_driven_from_the_command_line(backend: Backend) {
    let server = TestServer::start(backend).await;
    let deployed = run(&server, &["deploy", &document_module()]).await.success();
    assert!(deployed.has_line(&["initial", "state", "UPLOADED"]), "{deployed:#?}");
    assert!(deployed.stdout.contains("ACTION"), "the manifest's actions are listed: {deployed:#?}");
    let again = run(&server, &["deploy", &document_module(), "--output", "json"]).await.success().json();
    assert_eq!((again["name"].as_str(), again["version"].as_u64()), (Some("document-processing"), Some(1)));

    let definitions = run(&server, &["definitions"]).await.success();
    let row = definitions.stdout.lines().find(|line| line.starts_with("document-processing"));
    let row: Vec<&str> = row.expect("a row for the definition").split_whitespace().collect();
    assert_eq!(&row[..3], ["document-processing", "1", "default"], "{definitions:#?}");
    let manifest =
        run(&server, &["definitions", "document-processing", "--version", "1", "-o", "json"]).await.success();
    assert_eq!(manifest.json()["initial_state"], "UPLOADED");

    let input = r#"{"document_url": "s3://docs/a.pdf"}"#;
    let start =
        ["start", "document-processing", "--input", input, "--idempotency-key", "upload-1", "-o", "json"];
    let started = run(&server, &start).await.success().json();
    assert_eq!((started["state"].as_str(), started["revision"].as_u64()), (Some("UPLOADED"), Some(1)));
    let id = id_of(&started);
    let replayed = run(&server, &start).await.success();
    assert_eq!(id_of(&replayed.json()), id, "the same key starts nothing new");
    assert!(replayed.stderr.contains("replayed"), "{replayed:#?}");

    let shown = run(&server, &["get", &id]).await.success();
    assert!(shown.has_line(&["state", "UPLOADED"]) && shown.has_line(&["etag", "\"1\""]), "{shown:#?}");
    let validated = run(&server, &["act", &id, "validate"]).await.success();
    assert!(validated.has_line(&["state", "VALIDATING"]), "{validated:#?}");
    let failed = run(&server, &["act", &id, "fail", "--payload", r#"{"reason": "bad scan"}"#, "-o", "json"])
        .await
        .success()
        .json();
    assert_eq!((failed["state"].as_str(), failed["revision"].as_u64()), (Some("FAILED"), Some(3)));

    let posted = run(&server, &["send-event", &id, "--type", "ping", "--event-id", "evt-1", "-o", "json"])
        .await
        .success()
        .json();
    let events = run(&server, &["events", &id, "-o", "json"]).await.success().json();
    assert_eq!(events["items"][0]["event_id"], "evt-1");
    assert_eq!(events["items"][0]["status"], posted["status"]);
    assert!(run(&server, &["events", &id]).await.success().stdout.contains("evt-1"));

    let history = run(&server, &["history", &id]).await.success();
    for (seq, from, to, trigger) in [
        ("1", "-", "UPLOADED", ["start", "init"]),
        ("2", "UPLOADED", "VALIDATING", ["action", "validate"]),
        ("3", "VALIDATING", "FAILED", ["action", "fail"]),
    ] {
        let found = history.stdout.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.len() > 5 && words[..5] == [seq, from, to, trigger[0], trigger[1]]
        });
        assert!(found, "history has {seq} {from} -> {to} by {trigger:?}: {history:#?}");
    }
    let history = run(&server, &["history", &id, "-o", "json"]).await.success().json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(3));

    let listed = run(&server, &["list", "--definition", "document-processing", "--status", "running"]).await;
    let listed = listed.success();
    assert!(
        listed.stdout.lines().any(|line| line.starts_with(&id) && line.contains("FAILED")),
        "{listed:#?}"
    );
    let page = run(&server, &["list", "--status", "cancelled", "-o", "json"]).await.success().json();
    assert_eq!(page["items"], json!([]));

    let diagnostics = run(&server, &["diagnostics", &id, "-o", "json"]).await.success().json();
    assert_eq!(diagnostics["instance"]["id"], id.as_str());
    assert!(run(&server, &["diagnostics", &id]).await.success().stdout.contains("EFFECT"));
    let feed = run(&server, &["feed", "--limit", "2"]).await.success();
    assert!(feed.stdout.contains("action validate") && feed.stdout.contains("next cursor: "), "{feed:#?}");

    let cancelled =
        run(&server, &["cancel", &id, "--reason", "withdrawn", "-o", "json"]).await.success().json();
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["state"].as_str()),
        (Some("cancelled"), Some("CANCELLED"))
    );
    let entry =
        server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json()["items"][3].clone();
    assert_eq!(
        (entry["trigger"]["kind"].as_str(), entry["trigger"]["name"].as_str()),
        (Some("admin"), Some("cancel"))
    );
}

async fn versions_are_pinned_retired_and_deleted_from_the_command_line(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.deploy(module("document-processing-v2")).await.expect(201);
    let pinned = run(&server, &["pin", "document-processing", "1", "-o", "json"]).await.success().json();
    assert_eq!((pinned["default_version"].as_u64(), pinned["pinned_version"].as_u64()), (Some(1), Some(1)));
    let shown = run(&server, &["definitions", "document-processing"]).await.success();
    assert!(shown.stdout.lines().any(|line| line.split_whitespace().take(3).eq([
        "document-processing",
        "1",
        "pinned"
    ])));
    run(&server, &["retire", "document-processing", "1"]).await.exits(4);
    let unpinned = run(&server, &["pin", "document-processing", "--unpin"]).await.success();
    assert!(unpinned.stdout.lines().any(|line| line.split_whitespace().take(3).eq([
        "document-processing",
        "2",
        "default"
    ])));

    let retired = run(&server, &["retire", "document-processing", "1", "-o", "json"]).await.success().json();
    assert!(retired["retired_at"].is_string(), "{retired}");
    let deleted = run(&server, &["delete", "document-processing", "1"]).await.success();
    assert!(deleted.stdout.contains("deleted document-processing version 1"), "{deleted:#?}");
    let gone = run(&server, &["definitions", "document-processing", "--version", "1"]).await.exits(3);
    assert!(gone.stderr.contains("urn:switchyard:problem:not-found"), "{gone:#?}");
}

async fn errors_exit_with_their_class_and_show_the_problem(backend: Backend) {
    let server = TestServer::start(backend).await;
    let unknown = "0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e";
    let missing = run(&server, &["get", unknown]).await.exits(3);
    assert!(missing.stderr.contains("404 Not found"), "{missing:#?}");
    assert!(missing.stderr.contains("type: urn:switchyard:problem:not-found"), "{missing:#?}");
    assert!(missing.stderr.contains("correlation id: "), "{missing:#?}");
    assert!(missing.stdout.is_empty(), "tables print nothing on failure: {missing:#?}");
    let as_json = run(&server, &["get", unknown, "-o", "json"]).await.exits(3).json();
    assert_eq!(as_json["type"], "urn:switchyard:problem:not-found");

    server.deploy(module("document-processing")).await.expect(201);
    let id = id_of(&server.create("document-processing", json!({ "document_url": "s3://docs/a.pdf" })).await);
    let refused = run(&server, &["act", &id, "publish"]).await.exits(4);
    assert!(refused.stderr.contains("urn:switchyard:problem:action-not-allowed"), "{refused:#?}");
    assert!(refused.stderr.contains(r#"allowed_actions: ["validate","cancel"]"#), "{refused:#?}");
    let stale = run(&server, &["act", &id, "validate", "--if-match", "7"]).await.exits(4);
    assert!(stale.stderr.contains("urn:switchyard:problem:precondition-failed"), "{stale:#?}");
    run(&server, &["act", &id, "validate", "--if-match", "1"]).await.success();
    let rejected =
        run(&server, &["start", "document-processing", "--input", r#"{"document_url": " "}"#]).await;
    assert!(rejected.exits(3).stderr.contains("invalid_input"));

    // Usage: exit 2, and nothing sent.
    run(&server, &["start", "document-processing", "--input", "{not json"]).await.exits(2);
    run(&server, &["migrate", &id, "--bulk", "--to-version", "2", "--reason", "r"]).await.exits(2);
    let help = run(&server, &["get", "--help"]).await.success();
    assert!(help.stdout.contains("Examples:") && help.stdout.contains("Exit codes:"), "{help:#?}");

    // Nothing listens on the discard port.
    let nobody = finish(&mut client("http://127.0.0.1:9", &["list"])).await;
    assert!(nobody.exits(5).stderr.contains("cannot reach the server"));
}

/// The SHA-256 of each key, as the server's config lists them.
fn keys_config(keys: &[(&str, &str, &str)]) -> String {
    keys.iter()
        .map(|(name, role, key)| {
            let sha256 = hex::encode(sha2::Sha256::digest(key.as_bytes()));
            format!("[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n")
        })
        .collect()
}

async fn api_keys_come_from_the_flag_or_the_environment(backend: Backend) {
    let keys = [("carol", "client", "client-key-0123456789"), ("ada", "admin", "admin-key-0123456789")];
    let server = TestServer::start_with_config(backend, &keys_config(&keys)).await;
    let deploy = ["deploy", &document_module()];
    let anonymous = run(&server, &deploy).await.exits(3);
    assert!(anonymous.stderr.contains("urn:switchyard:problem:unauthorized"), "{anonymous:#?}");
    let as_client =
        run(&server, &[&deploy[..], &["--api-key", "client-key-0123456789"]].concat()).await.exits(3);
    assert!(as_client.stderr.contains("urn:switchyard:problem:forbidden"), "{as_client:#?}");
    finish(client(&server.base_url, &deploy).env("SWITCHYARD_API_KEY", "admin-key-0123456789"))
        .await
        .success();

    let input = r#"{"document_url": "s3://docs/a.pdf"}"#;
    let start = ["start", "document-processing", "--input", input, "-o", "json"];
    let started = finish(client(&server.base_url, &start).env("SWITCHYARD_API_KEY", "client-key-0123456789"))
        .await
        .success();
    let id = id_of(&started.json());
    let history = run(&server, &["history", &id, "--api-key", "client-key-0123456789", "-o", "json"]).await;
    assert_eq!(history.success().json()["items"][0]["actor"], "carol");
}

async fn get_wait_returns_when_the_instance_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let id = id_of(&server.create("document-processing", json!({ "document_url": "s3://docs/a.pdf" })).await);

    let unchanged = run(&server, &["get", &id, "--wait", "1", "-o", "json"]).await.success().json();
    assert_eq!(unchanged["revision"], 1, "nothing changed within the wait");

    let waiting = client(&server.base_url, &["get", &id, "--wait", "60", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    server.wait_for_metric("switchyard_long_polls_waiting", |parked| parked >= 1.0).await;
    server.act(&id, "validate", Value::Null).await.expect(200);
    let output = tokio::time::timeout(Duration::from_secs(30), waiting.wait_with_output())
        .await
        .expect("the wait ends when the instance changes, long before its 60 s")
        .expect("the client runs");
    assert!(output.status.success(), "{output:?}");
    let changed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!((changed["state"].as_str(), changed["revision"].as_u64()), (Some("VALIDATING"), Some(2)));
}

async fn a_bulk_migration_runs_to_its_report(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(
            &server.create("document-processing", json!({ "document_url": "s3://docs/a.pdf" })).await,
        ));
    }
    server.deploy(module("document-processing-v2")).await.expect(201);

    let one = ["migrate", &ids[0], "--to-version", "2", "--reason", "try it", "--dry-run"];
    let previewed = run(&server, &one).await.success();
    assert!(previewed.has_line(&["version", "2"]) && previewed.stderr.contains("dry run"), "{previewed:#?}");

    let bulk = [
        "migrate",
        "--bulk",
        "--definition",
        "document-processing",
        "--from-version",
        "1",
        "--to-version",
        "2",
        "--reason",
        "v2 rollout",
    ];
    let preview = run(&server, &[&bulk[..], &["--dry-run", "-o", "json"]].concat()).await.success().json();
    assert_eq!(
        (preview["status"].as_str(), preview["dry_run"].as_bool(), preview["migrated"].as_u64()),
        (Some("completed"), Some(true), Some(3)),
        "{preview}"
    );
    for id in &ids {
        assert_eq!(
            server.get(&format!("/v1/instances/{id}")).await.expect(200).json()["definition_version"],
            1
        );
    }

    let report = run(&server, &bulk).await.success();
    for words in [&["status", "completed"][..], &["total", "3"], &["migrated", "3"], &["failed", "0"]] {
        assert!(report.has_line(words), "{words:?}: {report:#?}");
    }
    for id in &ids {
        assert_eq!(
            server.get(&format!("/v1/instances/{id}")).await.expect(200).json()["definition_version"],
            2
        );
    }
    let migration_id =
        report.stdout.lines().find_map(|line| line.strip_prefix("id")).expect("an id line").trim();
    let shown = run(&server, &["migrations", migration_id, "-o", "json"]).await.success().json();
    assert_eq!((shown["status"].as_str(), shown["migrated"].as_u64()), (Some("completed"), Some(3)));
}

async fn the_feed_is_followed_live(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let mut following = client(&server.base_url, &["feed", "--follow", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    let mut lines = tokio::io::BufReader::new(following.stdout.take().expect("stdout")).lines();
    let id = id_of(&server.create("document-processing", json!({ "document_url": "s3://docs/a.pdf" })).await);
    server.act(&id, "validate", Value::Null).await.expect(200);
    let mut cursor = String::new();
    for (seq, to_state) in [(1, "UPLOADED"), (2, "VALIDATING")] {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("an event within 30 s")
            .expect("stdout reads")
            .expect("a line");
        let event: Value = serde_json::from_str(&line).expect("one CloudEvent per line");
        assert_eq!(event["subject"], id.as_str());
        assert_eq!(
            (event["data"]["seq"].as_u64(), event["data"]["to_state"].as_str()),
            (Some(seq), Some(to_state))
        );
        cursor = event["data"]["cursor"].as_str().expect("a cursor").to_owned();
    }

    // A stopping server ends the stream: the client says where to follow on from.
    server.terminate().await;
    let ended = tokio::time::timeout(Duration::from_secs(30), following.wait_with_output())
        .await
        .expect("the client ends with the stream")
        .expect("the client runs");
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains(&format!("switchyard feed --follow --after {cursor}")), "{stderr}");
}
