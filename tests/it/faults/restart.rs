//! PostgreSQL itself restarted under load (issue #13): not a proxy's outage nor ended
//! sessions, but a private cluster of the test's own stopped as an operator does and
//! started again. The hosts, never restarted, say they are not ready while it is
//! down, reconnect by themselves once it is back, and clients that retry with their
//! keys lose and double nothing.

use super::{
    Clients, Cluster, Load, Rng, all_ready, audit, closed, failed_requests, finished, open_effects, wait_for,
};
use crate::support::TestServer;
use crate::support::private_postgres::PrivatePostgres;
use std::time::{Duration, Instant};

/// How long a client waits for an answer before it sends again: a host holds a request
/// for up to 10 s while it waits for a connection, longer than the database is down.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_ride_out_a_real_postgres_restart() {
    const TEST: &str = "hosts_ride_out_a_real_postgres_restart";
    const HOSTS: usize = 2;
    const UNITS: usize = 8;
    // Declared first, dropped last: the hosts' database is dropped while it still runs.
    let postgres = PrivatePostgres::start().await;
    let cluster = Cluster::start_on(TEST, HOSTS, &postgres.url, str::to_owned).await;
    // Clients give up on a host waiting for the database and send again, to the other.
    let mut load = Load::with(Clients::waiting(cluster.urls(), CLIENT_TIMEOUT), Rng::seeded(TEST).fork());
    let reader = &cluster.hosts[0];

    // PostgreSQL stops under load: every session ended, new connections refused.
    load.launch(UNITS);
    load.wait_acked(UNITS / 2).await;
    let open = open_effects(reader).await;
    let down = Instant::now();
    postgres.stop().await;
    // Work keeps coming while it is down: clients get no answer and send again; the
    // hosts say they are not ready.
    let unanswered = load.clients.unanswered();
    load.launch(UNITS);
    let retried =
        wait_for("clients unanswered while PostgreSQL is down", || load.clients.unanswered() > unanswered);
    tokio::join!(all_ready(&cluster.hosts, 503), retried);
    postgres.start_again().await;
    let (restart, back) = (down.elapsed(), Instant::now());
    // The same processes serve again: nobody restarted them.
    all_ready(&cluster.hosts, 200).await;
    let ready = back.elapsed();
    let server_errors = load.clients.server_errors();
    let heard = notifications_received(&cluster.hosts).await;
    let moved_on = closed(reader, open, back).await;

    // New work after the restart, on the hosts' new connections.
    load.launch(UNITS);
    let units = load.finish().await;
    let finished = finished(reader, &units, back).await;
    // A 503 while PostgreSQL was down is fair; once every host is ready again, no 5xx is.
    let server_errors_after_ready = load.clients.server_errors() - server_errors;
    // Each host hears the other's commits again: its listener connected anew by itself.
    let heard_after: Vec<f64> = notifications_received(&cluster.hosts)
        .await
        .iter()
        .zip(&heard)
        .map(|(now, then)| now - then)
        .collect();
    let figures = audit(reader, &cluster.stub, &units, &load.clients.acks(), finished).await;
    let extra = format!(
        " restart_ms={} ready_ms={} moved_on_ms={} retried_requests={} server_errors={server_errors} \
         server_errors_after_ready={server_errors_after_ready} notifications_after_restart={}",
        restart.as_millis(),
        ready.as_millis(),
        moved_on.as_millis(),
        load.clients.unanswered(),
        heard_after.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
    );
    figures.report(TEST, &extra);
    assert!(figures.every_kind(), "the load ran tasks, timers and children");
    assert!(
        heard_after.iter().all(|heard| *heard > 0.0),
        "every host hears the other's commits after the restart: {heard_after:?}"
    );
    assert_eq!(
        server_errors_after_ready,
        0,
        "answered 5xx after PostgreSQL was back; the hosts logged:\n{}",
        failed_requests(&cluster.hosts)
    );
}

/// How many other hosts' commits each host has heard of (`LISTEN`) so far.
async fn notifications_received(hosts: &[TestServer]) -> Vec<f64> {
    let mut received = Vec::new();
    for host in hosts {
        received.push(host.metric("switchyard_notifications_received_total").await);
    }
    received
}
