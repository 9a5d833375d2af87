//! The version lifecycle: old instances finish under old rules, new ones get the new
//! version; pinning, migrating (one and in bulk), retiring and deleting.

use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

both_backends!(
    old_instances_keep_old_rules_while_new_ones_get_the_new_version,
    the_version_for_new_instances_can_be_pinned_or_chosen,
    a_running_instance_migrates_on_purpose,
    retired_versions_take_no_new_instances_and_delete_only_when_idle,
    a_bulk_migration_survives_a_restart_and_races_with_clients,
    a_finished_instance_stays_finished_when_migrated,
);

const DEFINITION: &str = "/v1/definitions/document-processing";

fn doc(url: &str) -> Value {
    json!({ "document_url": url })
}

fn id_of(instance: &Value) -> String {
    instance["id"].as_str().expect("instance id").to_owned()
}

async fn create_on(server: &TestServer, version: Option<u32>) -> Value {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "input": doc("s3://docs/a.pdf"), "version": version });
    server.post(&format!("{DEFINITION}/instances"), &key, &body).await.expect(201).json()
}

async fn instance(server: &TestServer, id: &str) -> Value {
    server.get(&format!("/v1/instances/{id}")).await.expect(200).json()
}

async fn history(server: &TestServer, id: &str) -> Vec<Value> {
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    history["items"].as_array().cloned().unwrap_or_default()
}

async fn migrate(server: &TestServer, id: &str, body: Value) -> crate::support::Response {
    server
        .request(
            Method::POST,
            &format!("/v1/admin/instances/{id}/migrate"),
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
}

async fn old_instances_keep_old_rules_while_new_ones_get_the_new_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let old = id_of(&create_on(&server, None).await);
    server.deploy(module("document-processing-v2")).await.expect(201);
    let new = create_on(&server, None).await;
    assert_eq!(new["definition_version"], 2, "new instances get the highest version");
    let new = id_of(&new);

    for id in [&old, &new] {
        server.act(id, "validate", Value::Null).await.expect(200);
        server.act(id, "format", Value::Null).await.expect(200);
    }
    // v1 publishes straight away; v2 has no `publish` and reviews first.
    let published = server.act(&old, "publish", Value::Null).await.expect(200).json();
    assert_eq!(
        (published["state"].as_str(), published["definition_version"].as_u64()),
        (Some("PUBLISHED"), Some(1))
    );
    assert_problem(&server.act(&new, "publish", Value::Null).await, 404, "unknown-action");
    assert_eq!(server.act(&new, "submit", Value::Null).await.expect(200).json()["state"], "REVIEWING");
    let approved = server.act(&new, "approve", json!({ "reviewer": "ada" })).await.expect(200).json();
    assert_eq!(
        (approved["state"].as_str(), approved["status"].as_str()),
        (Some("PUBLISHED"), Some("completed"))
    );

    let old_versions: Vec<u64> =
        history(&server, &old).await.iter().filter_map(|e| e["definition_version"].as_u64()).collect();
    let new_versions: Vec<u64> =
        history(&server, &new).await.iter().filter_map(|e| e["definition_version"].as_u64()).collect();
    assert_eq!(old_versions, [1, 1, 1, 1]);
    assert_eq!(new_versions, [2, 2, 2, 2, 2]);
    let old_history = history(&server, &old).await;
    let new_history = history(&server, &new).await;
    assert_ne!(old_history[0]["module_sha256"], new_history[0]["module_sha256"]);

    let definition = server.get(DEFINITION).await.expect(200).json();
    assert_eq!(definition["versions"][0]["instances"]["completed"], 1);
    assert_eq!(definition["versions"][1]["instances"]["completed"], 1);
}

async fn the_version_for_new_instances_can_be_pinned_or_chosen(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.deploy(module("document-processing-v2")).await.expect(201);
    let pin = async |version: Value| {
        let body = json!({ "version": version }).to_string().into_bytes();
        server.request(Method::PUT, &format!("{DEFINITION}/default-version"), &[], Some(body)).await
    };
    let pinned = pin(json!(1)).await.expect(200).json();
    assert_eq!((pinned["default_version"].as_u64(), pinned["pinned_version"].as_u64()), (Some(1), Some(1)));
    assert_eq!(create_on(&server, None).await["definition_version"], 1);
    assert_eq!(create_on(&server, Some(2)).await["definition_version"], 2, "a client may ask for a version");
    assert_problem(&pin(json!(9)).await, 404, "not-found");

    let unpinned = pin(Value::Null).await.expect(200).json();
    assert_eq!((unpinned["default_version"].as_u64(), unpinned["pinned_version"].as_u64()), (Some(2), None));
    assert_eq!(create_on(&server, None).await["definition_version"], 2);

    let definition = server.get(DEFINITION).await.expect(200).json();
    assert_eq!(definition["versions"][0]["instances"]["running"], 1);
    assert_eq!(definition["versions"][1]["instances"]["running"], 2);
    let missing = server
        .post(&format!("{DEFINITION}/instances"), "v9", &json!({ "input": doc("x"), "version": 9 }))
        .await;
    assert_problem(&missing, 404, "not-found");
}

async fn a_running_instance_migrates_on_purpose(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let id = id_of(&create_on(&server, None).await);
    server.act(&id, "validate", Value::Null).await.expect(200);
    assert_problem(
        &migrate(&server, &id, json!({ "to_version": 2, "reason": "upgrade" })).await,
        404,
        "not-found",
    );
    server.deploy(module("document-processing-v2")).await.expect(201);

    let dry = migrate(&server, &id, json!({ "to_version": 2, "reason": "upgrade", "dry_run": true }))
        .await
        .expect(200);
    assert_eq!(dry.header("switchyard-dry-run"), Some("true"));
    let would_be = dry.json();
    assert_eq!(
        (would_be["definition_version"].as_u64(), would_be["state"].as_str()),
        (Some(2), Some("VALIDATING"))
    );
    let unchanged = instance(&server, &id).await;
    assert_eq!(
        (unchanged["definition_version"].as_u64(), unchanged["revision"].as_u64()),
        (Some(1), Some(2))
    );

    assert_problem(
        &migrate(&server, &id, json!({ "to_version": 2, "reason": "  " })).await,
        400,
        "bad-request",
    );
    let migrated = migrate(&server, &id, json!({ "to_version": 2, "reason": "move to reviews" }))
        .await
        .expect(200)
        .json();
    assert_eq!((migrated["definition_version"].as_u64(), migrated["revision"].as_u64()), (Some(2), Some(3)));
    assert_eq!(migrated["data"]["document"]["url"], "s3://docs/a.pdf", "data now has v2's shape");

    let entry = history(&server, &id).await.pop().expect("a history entry");
    assert_eq!(
        (entry["trigger"]["kind"].as_str(), entry["trigger"]["name"].as_str()),
        (Some("admin"), Some("migrate"))
    );
    assert_eq!(
        entry["trigger"]["payload"],
        json!({ "from_version": 1, "to_version": 2, "reason": "move to reviews" })
    );
    assert_eq!(entry["definition_version"], 2);
    assert_eq!(entry["actor"], "anonymous");

    // It now follows v2's rules.
    server.act(&id, "format", Value::Null).await.expect(200);
    assert_eq!(server.act(&id, "submit", Value::Null).await.expect(200).json()["state"], "REVIEWING");
    // v2 refuses to take over a failed v1 document: it stays as it was.
    let failed = id_of(&create_on(&server, Some(1)).await);
    server.act(&failed, "validate", Value::Null).await.expect(200);
    server.act(&failed, "fail", json!({ "reason": "bad scan" })).await.expect(200);
    let refused = assert_problem(
        &migrate(&server, &failed, json!({ "to_version": 2, "reason": "upgrade" })).await,
        422,
        "rejected",
    );
    assert_eq!(refused["code"], "failed_on_v1");
    assert_eq!(instance(&server, &failed).await["definition_version"], 1);
    // v1 declares no migration from v2, and migrating to the current version does nothing.
    assert_problem(
        &migrate(&server, &id, json!({ "to_version": 1, "reason": "back" })).await,
        409,
        "no-migration-path",
    );
    assert_problem(
        &migrate(&server, &id, json!({ "to_version": 2, "reason": "again" })).await,
        409,
        "no-migration-path",
    );
}

async fn retired_versions_take_no_new_instances_and_delete_only_when_idle(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.deploy(module("document-processing-v2")).await.expect(201);
    let running = id_of(&create_on(&server, Some(1)).await);
    let finished = id_of(&create_on(&server, Some(1)).await);
    server.act(&finished, "cancel", Value::Null).await.expect(200);

    let retire = async |version: u32| {
        server.request(Method::POST, &format!("{DEFINITION}/versions/{version}/retire"), &[], None).await
    };
    let delete = async |version: u32| {
        server.request(Method::DELETE, &format!("{DEFINITION}/versions/{version}"), &[], None).await
    };
    assert_problem(&delete(1).await, 409, "version-not-retired");
    let retired = retire(1).await.expect(200).json();
    assert!(retired["retired_at"].is_string());
    let definition = server.get(DEFINITION).await.expect(200).json();
    assert_eq!(definition["versions"][0]["retired"], true);

    let refused = server
        .post(&format!("{DEFINITION}/instances"), "on-retired", &json!({ "input": doc("x"), "version": 1 }))
        .await;
    assert_problem(&refused, 422, "version-retired");
    assert_eq!(create_on(&server, None).await["definition_version"], 2);
    server.act(&running, "validate", Value::Null).await.expect(200);

    let in_use = assert_problem(&delete(1).await, 409, "version-in-use");
    assert_eq!(in_use["running_instances"], 1);
    server.act(&running, "cancel", Value::Null).await.expect(200);
    delete(1).await.expect(204);
    assert_problem(&server.get(&format!("{DEFINITION}/versions/1")).await, 404, "not-found");
    assert_eq!(instance(&server, &finished).await["status"], "cancelled", "finished instances stay readable");

    let pin = json!({ "version": 2 }).to_string().into_bytes();
    server.request(Method::PUT, &format!("{DEFINITION}/default-version"), &[], Some(pin)).await.expect(200);
    assert_problem(&retire(2).await, 409, "version-pinned");
}

async fn a_bulk_migration_survives_a_restart_and_races_with_clients(backend: Backend) {
    // Slow enough (18 batches, a quarter second apart) to be killed mid-way.
    let pace = "[migrations]\nbatch_size = 10\npause_between_batches_ms = 250\n";
    let mut server = TestServer::start_with_config(backend, pace).await;
    server.deploy(module("document-processing")).await.expect(201);
    // 240 v1 instances in mixed states: a quarter each UPLOADED, VALIDATING, FAILED
    // (which v2 refuses to take over) and PUBLISHED (finished: out of scope).
    let mut ids = Vec::new();
    for idx in 0..240 {
        let id = id_of(&create_on(&server, None).await);
        let actions: &[(&str, Value)] = match idx % 4 {
            0 => &[],
            1 => &[("validate", Value::Null)],
            2 => &[("validate", Value::Null), ("fail", json!({ "reason": "bad scan" }))],
            _ => &[("validate", Value::Null), ("format", Value::Null), ("publish", Value::Null)],
        };
        for (action, payload) in actions {
            server.act(&id, action, payload.clone()).await.expect(200);
        }
        ids.push(id);
    }
    server.deploy(module("document-processing-v2")).await.expect(201);

    let request = json!({ "definition": "document-processing", "from_version": 1, "to_version": 2, "reason": "v2 rollout" });
    let dry = json!({ "dry_run": true, "definition": "document-processing", "from_version": 1, "to_version": 2, "reason": "preview" });
    let preview = start_bulk(&server, &dry).await;
    let preview = wait_for_migration(&server, &preview).await;
    assert_eq!(
        (preview["total"].as_i64(), preview["migrated"].as_i64(), preview["failed"].as_i64()),
        (Some(180), Some(120), Some(60))
    );
    assert_eq!(instance(&server, &ids[0]).await["definition_version"], 1, "a dry run writes no instance");

    let location = start_bulk(&server, &request).await;
    // Clients keep acting while it runs; then the server dies mid-way.
    for id in ids.iter().step_by(4).take(20) {
        server.act(id, "validate", Value::Null).await.expect(200);
    }
    let before_kill = wait_for_progress(&server, &location, 20).await;
    server.restart().await;
    let resumed = server.get(&location).await.expect(200).json();
    assert!(progress(&resumed) >= progress(&before_kill), "progress is durable: {resumed}");
    assert!(server.log().contains("resuming migration"), "{}", server.log());
    let done = wait_for_migration(&server, &location).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["total"], 180);
    assert_eq!(done["failed"], 60, "v2 refuses FAILED instances: {done}");
    assert_eq!(done["failures"].as_array().map(Vec::len), Some(60));
    assert_eq!(
        done["migrated"].as_i64().unwrap_or_default() + done["skipped"].as_i64().unwrap_or_default(),
        120
    );

    for (idx, id) in ids.iter().enumerate() {
        let current = instance(&server, id).await;
        let migrations =
            history(&server, id).await.iter().filter(|entry| entry["trigger"]["name"] == "migrate").count();
        assert!(migrations <= 1, "{id} migrated {migrations} times");
        let expected_version = if idx % 4 < 2 { 2 } else { 1 };
        assert_eq!(current["definition_version"], expected_version, "instance {idx}: {current}");
    }
}

async fn start_bulk(server: &TestServer, body: &Value) -> String {
    let started =
        server.request(Method::POST, "/v1/admin/migrations", &[], Some(body.to_string().into_bytes())).await;
    let started = started.expect(202);
    assert_eq!(started.json()["status"], "running");
    started.header("location").expect("Location").to_owned()
}

/// Instances a migration has dealt with so far.
fn progress(migration: &Value) -> i64 {
    ["migrated", "failed", "skipped"].iter().map(|field| migration[field].as_i64().unwrap_or_default()).sum()
}

/// The migration once it has dealt with at least `at_least` instances, asserting it is
/// still running then.
async fn wait_for_progress(server: &TestServer, location: &str, at_least: i64) -> Value {
    for _ in 0..600 {
        let migration = server.get(location).await.expect(200).json();
        assert_eq!(migration["status"], "running", "it finished before it could be interrupted: {migration}");
        if progress(&migration) >= at_least {
            return migration;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the migration made no progress within 12 s");
}

async fn wait_for_migration(server: &TestServer, location: &str) -> Value {
    for _ in 0..600 {
        let migration = server.get(location).await.expect(200).json();
        if migration["status"] == "completed" {
            return migration;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the migration did not complete within 60 s");
}

async fn a_finished_instance_stays_finished_when_migrated(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    let published = id_of(&create_on(&server, None).await);
    for action in ["validate", "format", "publish"] {
        server.act(&published, action, Value::Null).await.expect(200);
    }
    let cancelled = id_of(&create_on(&server, None).await);
    server.act(&cancelled, "cancel", json!({ "reason": "duplicate" })).await.expect(200);
    server.deploy(module("document-processing-v2")).await.expect(201);

    // v2 maps both to the same terminal state; the host allows no other for them.
    for (id, state, status) in
        [(&published, "PUBLISHED", "completed"), (&cancelled, "CANCELLED", "cancelled")]
    {
        let before = instance(&server, id).await;
        let body = json!({ "to_version": 2, "reason": "keep the archive on v2" });
        let migrated = migrate(&server, id, body).await.expect(200).json();
        assert_eq!(
            (
                migrated["definition_version"].as_u64(),
                migrated["state"].as_str(),
                migrated["status"].as_str()
            ),
            (Some(2), Some(state), Some(status)),
            "{migrated}"
        );
        let revision = before["revision"].as_i64().expect("a revision") + 1;
        assert_eq!(migrated["revision"], revision);
        assert_eq!(migrated["allowed_actions"], json!([]));
        assert_eq!(migrated["message"], before["message"], "the message is kept");
        assert_eq!(
            migrated["data"]["steps"].as_array().and_then(|steps| steps.last()).map(|step| &step["action"]),
            Some(&json!("migrate"))
        );
        assert_eq!(instance(&server, id).await, migrated, "as stored");

        let entry = history(&server, id).await.pop().expect("a history entry");
        assert_eq!(
            (entry["trigger"]["kind"].as_str(), entry["trigger"]["name"].as_str()),
            (Some("admin"), Some("migrate"))
        );
        assert_eq!(
            (entry["from_state"].as_str(), entry["to_state"].as_str(), entry["definition_version"].as_u64()),
            (Some(state), Some(state), Some(2))
        );
        assert_eq!(entry["seq"], revision);
        // Finished under v2 as well: no action applies to it.
        let refused = assert_problem(&server.act(id, "cancel", Value::Null).await, 409, "action-not-allowed");
        assert_eq!(refused["allowed_actions"], json!([]));
    }
}

mod postgres_only {
    use super::*;

    /// Two hosts: the one that started a bulk migration runs it alone while it lives
    /// (the other never takes it up, though it looks every half lease), and once it
    /// dies (kill -9) the other takes it up as its lease runs out and finishes it,
    /// every instance migrated once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_migration_runs_on_one_host_and_another_takes_it_over_when_it_dies() {
        // 20 batches, a tenth of a second apart: five leases long.
        let config =
            "[migrations]\nbatch_size = 5\npause_between_batches_ms = 100\n[effects]\nlease_ms = 400\n";
        let mut first = TestServer::start_with_config(Backend::Postgres, config).await;
        first.deploy(module("document-processing")).await.expect(201);
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids.push(id_of(&create_on(&first, None).await));
        }
        first.deploy(module("document-processing-v2")).await.expect(201);
        let second = first.another_host().await;
        let request = json!({ "definition": "document-processing", "from_version": 1, "to_version": 2, "reason": "v2" });
        let location = start_bulk(&first, &request).await;
        // Two leases' time in, the other host has looked four times and left it alone.
        wait_for_progress(&first, &location, 40).await;
        assert!(!second.log().contains("resuming migration"), "{}", second.log());
        first.stop().await;

        let done = wait_for_migration(&second, &location).await;
        assert!(second.log().contains("resuming migration"), "{}", second.log());
        assert_eq!((done["total"].as_i64(), done["migrated"].as_i64()), (Some(100), Some(100)), "{done}");
        for id in &ids {
            let migrations = history(&second, id)
                .await
                .iter()
                .filter(|entry| entry["trigger"]["name"] == "migrate")
                .count();
            assert_eq!(migrations, 1, "{id} migrated {migrations} times");
            assert_eq!(instance(&second, id).await["definition_version"], 2);
        }
    }
}
