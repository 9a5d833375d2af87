//! Two server processes on one database, as several hosts run: each keeps its own
//! copy of the instances it touched, and neither may act on a stale one; on
//! PostgreSQL each wakes the other's long-polls, feed streams and effect executor.

use crate::support::{Backend, Response, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(
    a_host_acts_on_an_instance_another_host_moved_on,
    an_action_computed_from_a_stale_copy_is_not_applied,
    a_change_that_loses_the_race_is_recomputed_on_the_stored_state,
    concurrent_actions_on_two_hosts_race_and_all_apply,
    if_match_losing_the_race_to_another_host_is_refused,
    a_key_used_on_one_host_replays_on_another,
    a_long_poll_answers_a_change_made_on_another_host_when_its_wait_ends,
);

const RECOMPUTED: &str = "switchyard_transitions_recomputed_total";

/// A host with document-processing deployed, and a second host on its database.
async fn two_hosts(backend: Backend) -> (TestServer, TestServer) {
    two_hosts_with(backend, "", "document-processing").await
}

/// A host with this config and `module` deployed, and a second host on its database
/// with the same config.
async fn two_hosts_with(backend: Backend, config: &str, module_name: &str) -> (TestServer, TestServer) {
    let first = TestServer::start_with_config(backend, config).await;
    first.deploy(module(module_name)).await.expect(201);
    let second = first.another_host().await;
    (first, second)
}

async fn created_on(host: &TestServer) -> String {
    let created = host.create("document-processing", json!({ "document_url": "s3://hosts" })).await;
    created["id"].as_str().expect("id").to_owned()
}

async fn a_host_acts_on_an_instance_another_host_moved_on(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    b.act(&id, "format", Value::Null).await.expect(200);
    // `a` last saw VALIDATING, where `publish` is not allowed; the store says FORMATTING.
    let published = a.act(&id, "publish", Value::Null).await.expect(200).json();
    assert_eq!(published["state"], "PUBLISHED");
    assert_eq!(published["revision"], 4);
}

async fn an_action_computed_from_a_stale_copy_is_not_applied(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    b.act(&id, "format", Value::Null).await.expect(200);
    // `a` last saw VALIDATING, where `format` is allowed; the store has moved on.
    let refused = a.act(&id, "format", Value::Null).await;
    let problem = assert_problem(&refused, 409, "action-not-allowed");
    assert_eq!(problem["current_state"], "FORMATTING");
    assert_eq!(problem["allowed_actions"], json!(["publish", "fail", "cancel"]));
    let history = a.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let formats = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|entry| entry["trigger"]["name"] == "format")
        .count();
    assert_eq!(formats, 1, "format was applied once");
    let current = b.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 3);
}

async fn a_change_that_loses_the_race_is_recomputed_on_the_stored_state(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let id = created_on(&a).await;
    b.act(&id, "validate", Value::Null).await.expect(200);
    // `a` still holds UPLOADED at revision 1, where `cancel` is legal too: its first
    // attempt is computed on that copy and loses the commit to `b`'s revision 2.
    let cancelled = a.act(&id, "cancel", Value::Null).await.expect(200).json();
    assert_eq!((cancelled["state"].as_str(), cancelled["revision"].as_i64()), (Some("CANCELLED"), Some(3)));
    let steps: Vec<(&str, &str)> = cancelled["data"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| (step["action"].as_str().unwrap_or_default(), step["from"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(steps, [("validate", "UPLOADED"), ("cancel", "VALIDATING")], "computed again on revision 2");
    assert_eq!(a.metric(RECOMPUTED).await, 1.0);
}

async fn concurrent_actions_on_two_hosts_race_and_all_apply(backend: Backend) {
    let first = TestServer::start(backend).await;
    first.deploy(module("hostile-guest")).await.expect(201);
    let second = first.another_host().await;
    let created = first.create("hostile", json!({})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // `echo` stays in IDLE, so every one is legal whichever host commits first.
    let echoes = (0..24).map(|n| {
        let host = if n % 2 == 0 { &first } else { &second };
        host.act(&id, "echo", json!({ "n": n }))
    });
    for response in futures::future::join_all(echoes).await {
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    }
    let history = first.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let items = history["items"].as_array().expect("items");
    let seqs: Vec<i64> = items.iter().filter_map(|entry| entry["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    let mut echoed: Vec<i64> =
        items.iter().skip(1).filter_map(|entry| entry["trigger"]["payload"]["n"].as_i64()).collect();
    echoed.sort_unstable();
    assert_eq!(echoed, (0..24).collect::<Vec<_>>(), "each action exactly once");
    let recomputed = first.metric(RECOMPUTED).await + second.metric(RECOMPUTED).await;
    assert!(recomputed >= 1.0, "the hosts raced: {recomputed} changes were computed again");
}

async fn if_match_losing_the_race_to_another_host_is_refused(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    // `b` created the instance and holds it at revision 1.
    let id = created_on(&b).await;
    a.act(&id, "validate", Value::Null).await.expect(200);
    let path = format!("/v1/instances/{id}/actions/validate");
    let headers = [("idempotency-key", "race"), ("if-match", "\"1\"")];
    let refused = b.request(reqwest::Method::POST, &path, &headers, Some(b"{}".to_vec())).await;
    let problem = assert_problem(&refused, 412, "precondition-failed");
    assert_eq!(problem["current_etag"], "\"2\"", "the revision that won");
    let current = a.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 2, "the loser wrote nothing");
}

async fn a_key_used_on_one_host_replays_on_another(backend: Backend) {
    let (a, b) = two_hosts(backend).await;
    let create = "/v1/definitions/document-processing/instances";
    let body = json!({ "input": { "document_url": "s3://replayed" } });
    let first = a.post(create, "create-on-a", &body).await.expect(201);
    let again = b.post(create, "create-on-a", &body).await.expect(201);
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let id = first.json()["id"].as_str().expect("id").to_owned();
    let validate = format!("/v1/instances/{id}/actions/validate");
    let first = a.post(&validate, "validate-on-a", &json!({})).await.expect(200);
    let again = b.post(&validate, "validate-on-a", &json!({})).await.expect(200);
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let current = b.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(current["revision"], 2, "applied once");
    let listed = a.get("/v1/instances?limit=10").await.expect(200).json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "one instance created");
}

/// Without notifications, and with a recheck longer than the wait, nothing tells a
/// host of another's change before the wait ends.
async fn a_long_poll_answers_a_change_made_on_another_host_when_its_wait_ends(backend: Backend) {
    let config = "notify_other_hosts = false\nlong_poll_recheck_ms = 60000\n";
    let (a, b) = two_hosts_with(backend, config, "document-processing").await;
    let id = created_on(&a).await;
    // `b` loads the module now, not within the short wait.
    created_on(&b).await;
    let (polled, took) = validated_while_polled(&a, &b, &id, 2, async {}).await;
    // `b`'s commit woke nobody on `a`: the wait ran out, and `a` read the instance again.
    assert!(took >= Duration::from_millis(1900), "answered at the end of the wait");
    let polled = polled.expect(200);
    assert_eq!(polled.header("etag"), Some("\"2\""));
    assert_eq!(polled.json()["state"], "VALIDATING");
}

/// Long-polls `a` for instance `id` past revision 1 for `wait` seconds; once the poll
/// is parked, runs `meanwhile`, then validates the instance on `b`. What the poll
/// answered, and when.
async fn validated_while_polled(
    a: &TestServer,
    b: &TestServer,
    id: &str,
    wait: u32,
    meanwhile: impl Future<Output = ()>,
) -> (Response, Duration) {
    let started = Instant::now();
    let (path, prefer) = (format!("/v1/instances/{id}"), format!("wait={wait}"));
    let headers = [("if-none-match", "\"1\""), ("prefer", prefer.as_str())];
    let poll = async {
        let polled = a.request(Method::GET, &path, &headers, None).await;
        (polled, started.elapsed())
    };
    let change = async {
        a.wait_for_metric("switchyard_long_polls_waiting", |waiting| waiting == 1.0).await;
        meanwhile.await;
        b.act(id, "validate", Value::Null).await.expect(200);
    };
    tokio::join!(poll, change).0
}

/// Cross-host wake-ups: PostgreSQL only (SQLite is one process, whose wake-ups stay in
/// memory). Every backstop poll is a minute here, so only a notification explains an
/// answer within seconds.
mod notified {
    use super::*;
    use crate::feed::Stream;

    const SLOW_POLLS: &str = "long_poll_recheck_ms = 60000\n\
                              [feed]\npoll_interval_ms = 60000\n\
                              [effects]\npoll_interval_ms = 60000\n";

    /// Well within the backstop polls of a minute, and far beyond a notification's way.
    const PROMPTLY: Duration = Duration::from_secs(10);

    const RECEIVED: &str = "switchyard_notifications_received_total";

    /// Two hosts with [`SLOW_POLLS`] and `module_name`, each listening for the other's
    /// commits (and so announcing its own).
    async fn listening_hosts(module_name: &str) -> (TestServer, TestServer) {
        let (a, b) = two_hosts_with(Backend::Postgres, SLOW_POLLS, module_name).await;
        for host in [&a, &b] {
            host.wait_for_log(|log| log.contains("listening for other hosts' commits")).await;
        }
        (a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_answers_another_hosts_change_well_before_its_wait_ends() {
        let (a, b) = listening_hosts("document-processing").await;
        let id = created_on(&a).await;
        let (polled, took) = validated_while_polled(&a, &b, &id, 30, async {}).await;
        assert!(took < PROMPTLY, "answered at once, not after {took:?}");
        let polled = polled.expect(200);
        assert_eq!(polled.header("etag"), Some("\"2\""));
        assert_eq!(polled.json()["state"], "VALIDATING");
        assert!(a.metric(RECEIVED).await >= 1.0);
        assert!(b.metric("switchyard_notifications_sent_total").await >= 1.0);
    }

    /// A timer is leased by nobody until it is due. The host that set it dies before:
    /// the other, told of the timer when it was set, fires it when due rather than at
    /// its next look at the outbox.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timer_set_on_a_host_that_died_fires_on_another_when_due() {
        let (a, mut b) = listening_hosts("hostile-guest").await;
        let id = b.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned();
        let heard = a.wait_for_metric(RECEIVED, |received| received >= 1.0).await;
        let set = Instant::now();
        b.act(&id, "wake", json!({ "key": "alarm", "after_ms": 3000 })).await.expect(200);
        a.wait_for_metric(RECEIVED, |received| received > heard).await;
        b.stop().await;
        let fired = a.wait_until(&id, |instance| instance["data"]["fired"] == json!(["alarm"])).await;
        assert_eq!(fired["revision"], 3);
        assert!(set.elapsed() < PROMPTLY, "fired when due, not at the next poll: {:?}", set.elapsed());
        let fired_here = a.metric_where("switchyard_effects_total", &[("kind", "timer")]).await;
        assert_eq!(fired_here, 1.0, "the surviving host fired it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_stream_on_one_host_delivers_another_hosts_commit_at_once() {
        let (a, b) = listening_hosts("document-processing").await;
        let id = created_on(&b).await;
        let mut stream = Stream::open(&a, None).await;
        let (_, created) = stream.next().await;
        assert_eq!(created["subject"], id.as_str());
        // The stream has caught up and waits.
        let acted = Instant::now();
        b.act(&id, "validate", Value::Null).await.expect(200);
        let (_, validated) = stream.next().await;
        assert!(acted.elapsed() < PROMPTLY, "delivered at once, not after {:?}", acted.elapsed());
        assert_eq!(
            (validated["subject"].as_str(), validated["data"]["seq"].as_i64()),
            (Some(id.as_str()), Some(2))
        );
    }

    /// Notifications sent while a listener reconnects are lost; once it listens again,
    /// every waiter reads its instance again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_answers_at_once_across_a_lost_listener_connection() {
        let (a, b) = listening_hosts("document-processing").await;
        let id = created_on(&a).await;
        let ended = async {
            let listeners = a
                .execute_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> $1::int",
                    "0",
                )
                .await;
            assert_eq!(listeners, 2, "each host's listener");
        };
        let (polled, took) = validated_while_polled(&a, &b, &id, 30, ended).await;
        assert!(took < PROMPTLY, "answered at once, not after {took:?}");
        assert_eq!(polled.expect(200).header("etag"), Some("\"2\""));
        a.wait_for_log(|log| log.matches("listening for other hosts' commits").count() == 2).await;
    }

    /// The backstop alone: with notifications off, a long-poll finds another host's
    /// change at its next recheck.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_notifications_a_long_poll_finds_another_hosts_change_at_its_recheck() {
        let config = "notify_other_hosts = false\nlong_poll_recheck_ms = 200\n";
        let (a, b) = two_hosts_with(Backend::Postgres, config, "document-processing").await;
        let id = created_on(&a).await;
        let (polled, took) = validated_while_polled(&a, &b, &id, 30, async {}).await;
        assert!(took < PROMPTLY, "answered at a recheck, not after {took:?}");
        assert_eq!(polled.expect(200).header("etag"), Some("\"2\""));
        assert!(!a.log().contains("listening for other hosts' commits"));
        assert_eq!(b.metric("switchyard_notifications_sent_total").await, 0.0);
    }
}

mod postgres_only {
    use super::*;

    /// Two hosts change the same few instances at once, in batches, each commit racing
    /// others on the other host: every action applies once, every client hears 200, and
    /// no two transactions wait on each other in a cycle (batches lock rows in id order;
    /// PostgreSQL would find a cycle a second later and fail one of them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hosts_racing_on_the_same_instances_apply_every_action_once_without_deadlock() {
        const INSTANCES: usize = 4;
        const CLIENTS: usize = 32;
        const ROUNDS: usize = 4;
        let first = TestServer::start(Backend::Postgres).await;
        first.deploy(module("hostile-guest")).await.expect(201);
        let second = first.another_host().await;
        let mut ids = Vec::new();
        for _ in 0..INSTANCES {
            ids.push(first.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned());
        }
        // Each client walks the instances in its own order, through its own host.
        let clients = (0..CLIENTS).map(|client| {
            let (host, ids) = (if client % 2 == 0 { &first } else { &second }, &ids);
            async move {
                for round in 0..ROUNDS {
                    let id = &ids[(client + round * (client % 3 + 1)) % INSTANCES];
                    let answer = host.act(id, "echo", json!({ "client": client, "round": round })).await;
                    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                }
            }
        });
        futures::future::join_all(clients).await;
        let mut echoes = 0;
        for id in &ids {
            let history = first.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
            echoes += history["items"].as_array().map_or(0, |items| items.len() - 1);
        }
        assert_eq!(echoes, CLIENTS * ROUNDS, "each action applied once");
        for host in [&first, &second] {
            assert!(!host.log().contains("40P01"), "a deadlock: {}", host.log());
        }
    }
}
