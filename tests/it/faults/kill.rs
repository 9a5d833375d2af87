//! Hosts killed with `-9` under load, one at a time, and started again.

use super::{Cluster, Load, Rng, audit, closed, finished, open_effects};
use crate::support::TestServer;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Kills, each in a round of load of its own.
const KILLS: usize = 5;
const UNITS_PER_ROUND: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_survive_kill_9_under_load() {
    const TEST: &str = "three_hosts_survive_kill_9_under_load";
    let mut cluster = Cluster::start(TEST, 3, str::to_owned).await;
    let mut rng = Rng::seeded(TEST);
    let mut load = Load::new(&cluster, rng.fork());
    let (mut takeovers, mut moves) = (Vec::new(), Vec::new());
    let mut last_kill = Instant::now();
    for round in 0..KILLS {
        // Kill once this round's work is under way: some of it acknowledged, the rest
        // in flight or waiting on its effects.
        load.launch(UNITS_PER_ROUND);
        load.wait_acked(load.clients.acked() + UNITS_PER_ROUND / 2).await;
        let mut open = open_effects(&cluster.hosts[0]).await;
        for _ in 0..50 {
            if !open.is_empty() || load.clients.in_flight() > 0 {
                break;
            }
            // The round's work went faster than the test: more of it, then.
            load.launch(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
            open = open_effects(&cluster.hosts[0]).await;
        }
        // A random host among those working on effects now, if any is.
        let holders = holding(&cluster.hosts).await;
        let victim = if holders.is_empty() {
            rng.below(cluster.hosts.len())
        } else {
            holders[rng.below(holders.len())]
        };
        let reader = (victim + 1) % cluster.hosts.len();
        let in_flight = load.clients.in_flight();
        cluster.hosts[victim].stop().await;
        let killed = Instant::now();
        last_kill = killed;
        assert!(
            !open.is_empty() || in_flight > 0,
            "round {round}: the kill came with work open (effects {}, requests {in_flight})",
            open.len()
        );
        // The dead host stays down until the effects it held are taken over by the
        // others (once their leases ran out), and what was open at its death has moved on.
        let (held, took) = taken_over(&cluster.hosts[reader], cluster.hosts[victim].port(), killed).await;
        let moved = closed(&cluster.hosts[reader], open.clone(), killed).await;
        println!(
            "faults: {TEST} kill {round}: host {victim} held {held} effects, taken over after {} ms; \
             {} effects open and {in_flight} requests in flight, all moved on after {} ms",
            took.as_millis(),
            open.len(),
            moved.as_millis()
        );
        if held > 0 {
            takeovers.push(took.as_millis());
        }
        moves.push(moved.as_millis());
        cluster.hosts[victim].start_again().await;
    }
    assert!(!takeovers.is_empty(), "some kill took effects down with the host, for the others to take over");
    let units = load.finish().await;
    let finished = finished(&cluster.hosts[0], &units, last_kill).await;
    let figures = audit(&cluster.hosts[0], &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " takeover_ms_max={} moved_on_ms_max={} kills={KILLS} kills_with_leases={} retried_requests={}",
        takeovers.iter().max().copied().unwrap_or_default(),
        moves.iter().max().copied().unwrap_or_default(),
        takeovers.len(),
        load.clients.unanswered()
    );
    figures.report(TEST, &extra);
    assert!(figures.every_kind(), "the load ran tasks, timers and children");
}

/// The open effects leased to the host on `port` (its `host_id` is `<hostname>:<port>`).
const LEASED: &str = "SELECT id FROM effects \
                      WHERE status IN ('pending', 'waiting', 'ready') AND lease_owner LIKE $1";

/// The hosts that hold leases on open effects.
async fn holding(hosts: &[TestServer]) -> Vec<usize> {
    let owners = hosts[0]
        .query_texts(
            "SELECT DISTINCT lease_owner FROM effects \
             WHERE status IN ('pending', 'waiting', 'ready') AND lease_owner IS NOT NULL AND $1 = $1",
            "",
        )
        .await;
    let holds = |host: &TestServer| owners.iter().any(|owner| owner.ends_with(&format!(":{}", host.port())));
    (0..hosts.len()).filter(|&n| holds(&hosts[n])).collect()
}

/// How many open effects the dead host on `port` held, and how long after `killed`
/// every one of them was leased by another host or closed (at most 30 s).
async fn taken_over(reader: &TestServer, port: u16, killed: Instant) -> (usize, Duration) {
    let owner = format!("%:{port}");
    let held: HashSet<String> = reader.query_texts(LEASED, &owner).await.into_iter().collect();
    while killed.elapsed() < Duration::from_secs(30) {
        let still = reader.query_texts(LEASED, &owner).await;
        if still.iter().all(|effect| !held.contains(effect)) {
            return (held.len(), killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("effects of the dead host on port {port} were not taken over within 30 s: {held:?}");
}
