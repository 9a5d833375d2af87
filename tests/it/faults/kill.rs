//! Hosts killed with `-9` under load, one at a time, and started again.

use super::{Cluster, Load, Rng, audit, closed, finished, open_effects};
use std::time::Instant;

/// Kills, each in a round of load of its own.
const KILLS: usize = 5;
const UNITS_PER_ROUND: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_survive_kill_9_under_load() {
    const TEST: &str = "three_hosts_survive_kill_9_under_load";
    let mut cluster = Cluster::start(3, str::to_owned).await;
    let mut rng = Rng::seeded(TEST);
    let mut load = Load::new(&cluster, rng.fork());
    let mut takeovers = Vec::new();
    let mut last_kill = Instant::now();
    for round in 0..KILLS {
        // Kill once this round's work is under way: some of it acknowledged, the rest
        // in flight or waiting on its effects.
        load.launch(UNITS_PER_ROUND);
        load.wait_acked(load.clients.acked() + UNITS_PER_ROUND / 2).await;
        let victim = rng.below(cluster.hosts.len());
        let reader = (victim + 1) % cluster.hosts.len();
        let open = open_effects(&cluster.hosts[reader]).await;
        let in_flight = load.clients.in_flight();
        cluster.hosts[victim].stop().await;
        let killed = Instant::now();
        last_kill = killed;
        assert!(
            !open.is_empty() || in_flight > 0,
            "round {round}: the kill came with work open (effects {}, requests {in_flight})",
            open.len()
        );
        // The dead host stays down until what was open at its death has moved on: its
        // leased effects taken over by the others once their leases ran out.
        let took = closed(&cluster.hosts[reader], open.clone(), killed).await;
        println!(
            "faults: {TEST} kill {round}: host {victim} with {} effects open and {in_flight} requests in flight; \
             all moved on after {} ms",
            open.len(),
            took.as_millis()
        );
        takeovers.push(took.as_millis());
        cluster.hosts[victim].start_again().await;
    }
    let units = load.finish().await;
    let finished = finished(&cluster.hosts[0], &units, last_kill).await;
    let figures = audit(&cluster.hosts[0], &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " takeover_ms_max={} kills={KILLS} retried_requests={}",
        takeovers.iter().max().copied().unwrap_or_default(),
        load.clients.unanswered()
    );
    cluster.keep_logs(TEST);
    figures.report(TEST, &extra);
}
