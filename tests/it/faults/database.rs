//! The database going away under load — every connection reset and new ones refused
//! for a while, or every session ended as a PostgreSQL restart ends them — and a slow
//! network that drops connections: hosts reconnect by themselves, and clients that
//! retry with their keys lose and double nothing.

use super::{
    Clients, Cluster, Load, Rng, all_ready, audit, closed, failed_requests, finished, open_effects, wait_for,
};
use crate::support::{Backend, TestServer, module, postgres_address, postgres_server, proxy::Proxy};
use serde_json::json;
use std::time::{Duration, Instant};

const HOSTS: usize = 2;
/// How long the database stays unreachable: long enough for every host to find its
/// connections dead and fail to open new ones, for a while, as in a real restart.
const OUTAGE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_ride_out_a_database_restart() {
    const TEST: &str = "hosts_ride_out_a_database_restart";
    const UNITS: usize = 8;
    let proxy = Proxy::start(&postgres_address()).await;
    let cluster = Cluster::start(TEST, HOSTS, |url| proxy.route(url)).await;
    let mut load = Load::new(&cluster, Rng::seeded(TEST).fork());
    let reader = &cluster.hosts[0];

    // The database goes away under load: every connection reset, new ones refused.
    load.launch(UNITS);
    load.wait_acked(UNITS / 2).await;
    let open = open_effects(reader).await;
    proxy.set_refusing(true);
    let cut = proxy.cut_all();
    let down = Instant::now();
    assert!(cut > 0, "the hosts had connections to lose");
    all_ready(&cluster.hosts, 503).await;
    // Work keeps coming while it is away, and gets no acknowledgement.
    let unanswered = load.clients.unanswered();
    load.launch(UNITS);
    wait_for("clients refused while the database is away", || load.clients.unanswered() > unanswered).await;
    tokio::time::sleep_until((down + OUTAGE).into()).await;
    all_ready(&cluster.hosts, 503).await;
    proxy.set_refusing(false);
    let (outage, back) = (down.elapsed(), Instant::now());
    // The same processes serve again: nobody restarted them.
    all_ready(&cluster.hosts, 200).await;
    let ready = back.elapsed();
    assert!(proxy.live() > 0, "the hosts connected again through the proxy");
    let moved_on = closed(reader, open, back).await;

    // PostgreSQL ends every session of the database, as its restart does.
    load.launch(UNITS);
    load.wait_acked(load.clients.acked() + UNITS / 2).await;
    let open = open_effects(reader).await;
    let server_errors = load.clients.server_errors();
    let ended = reader.end_database_sessions().await;
    let restarted = Instant::now();
    assert!(ended > 0, "the hosts had sessions to lose");
    all_ready(&cluster.hosts, 200).await;
    let moved_on_after_restart = closed(reader, open, restarted).await;

    let units = load.finish().await;
    let finished = finished(reader, &units, restarted).await;
    // Held to none by `a_commit_that_meets_an_ended_session_is_made_again_not_answered_5xx`.
    let server_errors_after_restart = load.clients.server_errors() - server_errors;
    let figures = audit(reader, &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " outage_ms={} ready_ms={} moved_on_ms={} cut_connections={cut} ended_sessions={ended} \
         moved_on_after_restart_ms={} retried_requests={} server_errors_after_restart={server_errors_after_restart}",
        outage.as_millis(),
        ready.as_millis(),
        moved_on.as_millis(),
        moved_on_after_restart.as_millis(),
        load.clients.unanswered(),
    );
    figures.report(TEST, &extra);
    assert!(figures.every_kind(), "the load ran tasks, timers and children");
}

/// PostgreSQL ends every session while commits are in flight, again and again: the
/// database is back at once, so a commit that met an ended session is made again on
/// a new one, and no client is answered 5xx (issue #13). Clients that were would send
/// again with their keys; each action is in the history once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_meets_an_ended_session_is_made_again_not_answered_5xx() {
    const WRITERS: usize = 8;
    const ACTIONS: usize = 12;
    const ENDS: usize = 5;
    let first = TestServer::start(Backend::Postgres).await;
    first.deploy(module("hostile-guest")).await.expect(201);
    let second = first.another_host().await;
    let clients = Clients::new(vec![first.base_url.clone(), second.base_url.clone()]);
    // A writer per instance: `echo` stays in IDLE, so each action is legal after any other.
    let mut ids = Vec::new();
    for _ in 0..WRITERS {
        ids.push(first.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned());
    }
    let writers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(writer, id)| {
            let (clients, id) = (clients.clone(), id.clone());
            tokio::spawn(async move {
                for n in 0..ACTIONS {
                    let key = format!("{id}-{n}");
                    let path = format!("/v1/instances/{id}/actions/echo");
                    clients.send(writer, &path, &key, &json!({ "payload": { "n": n } })).await;
                    clients.acknowledged(&id, &key, "echo");
                }
            })
        })
        .collect();
    let mut ended = 0;
    for end in 1..=ENDS {
        let acked = clients.acked();
        let progress = || clients.acked() >= end * WRITERS * ACTIONS / (ENDS + 1) && clients.acked() > acked;
        wait_for("actions acknowledged between two ends of the sessions", progress).await;
        ended += first.end_database_sessions().await;
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    for id in &ids {
        let history = first.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
        let echoed: Vec<i64> = history["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|entry| entry["trigger"]["payload"]["n"].as_i64())
            .collect();
        let expected: Vec<i64> = (0..i64::try_from(ACTIONS).unwrap_or_default()).collect();
        assert_eq!(echoed, expected, "{id}: every action once, in order");
    }
    let server_errors = clients.server_errors();
    println!(
        "faults: a_commit_that_meets_an_ended_session_is_made_again_not_answered_5xx ended_sessions={ended} \
         acknowledged={} server_errors={server_errors}",
        clients.acked()
    );
    assert_eq!(server_errors, 0, "answered 5xx; the hosts logged:\n{}", failed_requests([&first, &second]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_survive_a_slow_and_flaky_network_to_the_database() {
    const TEST: &str = "hosts_survive_a_slow_and_flaky_network_to_the_database";
    const ROUNDS: usize = 3;
    const UNITS_PER_ROUND: usize = 4;
    const CUTS_PER_ROUND: usize = 2;
    let proxy = Proxy::start(&postgres_address()).await;
    let cluster = Cluster::start(TEST, HOSTS, |url| proxy.route(url)).await;
    let mut rng = Rng::seeded(TEST);
    let mut load = Load::new(&cluster, rng.fork());
    let reader = &cluster.hosts[0];
    let mut cuts = 0;
    for _ in 0..ROUNDS {
        // 5 to 20 ms for every chunk, each way. (At 20 to 50 ms a commit batch, a
        // sequence of round trips, takes about a second, and the load takes a minute.)
        let delay = 5 + rng.below(16);
        proxy.set_delay(Duration::from_millis(u64::try_from(delay).unwrap_or(5)));
        load.launch(UNITS_PER_ROUND);
        load.wait_acked(load.clients.acked() + UNITS_PER_ROUND / 2).await;
        for _ in 0..CUTS_PER_ROUND {
            cuts += usize::from(proxy.cut_one(|live| rng.below(live)));
        }
    }
    assert!(cuts >= ROUNDS, "connections were live to cut: {cuts} cut");
    let last_fault = Instant::now();
    let units = load.finish().await;
    let finished = finished(reader, &units, last_fault).await;
    // The audit reads a lot; the network's delay has been proven enough by now.
    proxy.set_delay(Duration::ZERO);
    let figures = audit(reader, &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " cut_connections={cuts} connections_made={} retried_requests={}",
        proxy.accepted(),
        load.clients.unanswered()
    );
    figures.report(TEST, &extra);
    assert!(figures.every_kind(), "the load ran tasks, timers and children");
}

/// Commits are made and their answers lost: the proxy lets a `COMMIT` through, then
/// cuts the connection before PostgreSQL's answer comes back, as a network or a
/// database that fails at that moment does. Whatever the host then does — answer 5xx,
/// retry, record the effect's attempt as failed — what was committed stays committed
/// once and the work goes on: no acknowledged transition lost or doubled, and no
/// effect stuck (a child started by a commit whose answer was lost is found started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_whose_answers_are_lost_neither_lose_nor_double_nor_stick() {
    const TEST: &str = "commits_whose_answers_are_lost_neither_lose_nor_double_nor_stick";
    const ROUNDS: usize = 6;
    const UNITS_PER_ROUND: usize = 4;
    const CUTS_PER_ROUND: u64 = 4;
    let proxy = Proxy::start(&postgres_address()).await;
    let cluster = Cluster::start(TEST, HOSTS, |url| proxy.route(url)).await;
    let mut load = Load::new(&cluster, Rng::seeded(TEST).fork());
    let reader = &cluster.hosts[0];
    for round in 1..=ROUNDS {
        load.launch(UNITS_PER_ROUND);
        proxy.cut_after_commits(CUTS_PER_ROUND);
        let cut = u64::try_from(round).unwrap_or_default() * CUTS_PER_ROUND;
        wait_for("commits cut off from their answers", || proxy.commits_cut() >= cut).await;
    }
    let last_fault = Instant::now();
    let units = load.finish().await;
    // Whatever was open must move on; what is stuck is shown with its children.
    closed(reader, open_effects(reader).await, last_fault).await;
    let finished = finished(reader, &units, last_fault).await;
    let figures = audit(reader, &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " commits_cut={} retried_requests={} server_errors={}",
        proxy.commits_cut(),
        load.clients.unanswered(),
        load.clients.server_errors()
    );
    figures.report(TEST, &extra);
    assert!(figures.every_kind(), "the load ran tasks, timers and children");
}

/// The answer to a transition's COMMIT is lost (the proxy cuts the connection once the
/// COMMIT went through): the host reads back that its commit was made and answers
/// 200, not 500, and the action is in the history once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_read_back_and_answered() {
    let proxy = Proxy::start(&postgres_address()).await;
    let host = TestServer::start_routed(&postgres_server(), "", |url| proxy.route(url)).await;
    host.deploy(module("hostile-guest")).await.expect(201);
    let id = host.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned();
    proxy.cut_after_commits(1);
    let answer = host.act(&id, "echo", json!({ "n": 1 })).await;
    assert_eq!(proxy.commits_cut(), 1, "the COMMIT's answer was lost");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let history = host.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2), "made once: {history}");
    assert!(host.log().contains("read back whether its commits were made"), "{}", host.log());
}
