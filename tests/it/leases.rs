//! Leases across hosts on one PostgreSQL database: one host at a time works on each
//! piece of background work, another takes over once its holder dies, and a host
//! that lost its lease cannot commit what it worked out under it (fencing).

use crate::support::{Backend, Participant, Reply, TestServer, module};
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

const FLIGHTS: &str = "/flights/reserve";

/// A stalled host's task result arrives after another host took the task over: it is
/// not applied, and the result of the host holding the lease is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lost_its_lease_cannot_deliver_its_result() {
    let participant = Participant::start().await;
    // The first host's attempt is answered while that host is frozen; the second
    // host's is still in flight when the first wakes up.
    participant.script(
        FLIGHTS,
        vec![
            Reply::Slow(Duration::from_millis(200), json!({ "reservation_id": "R-STALLED" })),
            Reply::Slow(Duration::from_millis(1_500), json!({ "reservation_id": "R-LEASED" })),
        ],
    );
    participant.script("/hotels/reserve", vec![Reply::Reserve]);
    let mut toml =
        String::from("[effects]\npoll_interval_ms = 50\nlease_ms = 600\nattempt_timeout_ms = 5000\n");
    for (task, path) in [("flights.reserve", FLIGHTS), ("hotels.reserve", "/hotels/reserve")] {
        toml.push_str(&format!("[tasks.\"{task}\"]\nurl = \"{}\"\n", participant.url(path)));
    }
    let stalled = TestServer::start_with_config(Backend::Postgres, &toml).await;
    stalled.deploy(module("trip-booking")).await.expect(201);
    let leased = stalled.another_host().await;
    let input = json!({ "trip_id": "T-1", "flight": { "to": "LIS" }, "hotel": { "city": "Lisbon" } });
    let id = stalled.create("trip-booking", input).await["id"].as_str().expect("id").to_owned();

    // The committing host runs the task; it freezes with the attempt in flight.
    participant.wait_for(FLIGHTS, 1).await;
    stalled.pause().await;
    // Its lease runs out; the other host takes the task over, under the same task id.
    let attempts = participant.wait_for(FLIGHTS, 2).await;
    assert_eq!(attempts[0].task_id(), attempts[1].task_id());
    // Woken with its answer waiting (the participant answered it long ago), the first
    // host either finds its lease gone or has its result refused for it.
    stalled.resume().await;
    let gave_up = stalled
        .wait_for_log(|line| {
            line.contains("the effect's lease was lost") || line.contains("its lease passed to another host")
        })
        .await;
    let waiting = leased.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(waiting["state"], "INITIATED", "the stalled host's result was not applied: {gave_up}");

    let done = leased.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(done["data"]["flight_reservation"], "R-LEASED", "the lease holder's result counts");
    assert_eq!(participant.received(FLIGHTS).len(), 2);
    let history = leased.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let flights = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|entry| entry["trigger"]["payload"]["key"] == "flight")
        .count();
    assert_eq!(flights, 1, "one result for the flight: {history}");
}

/// A periodic job (here the retries of posted events) is held by one host, which
/// keeps its lease while it lives; when that host dies, another takes it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_job_is_held_by_one_host_and_passes_on_when_it_dies() {
    let toml = "[effects]\npoll_interval_ms = 50\nlease_ms = 300\n";
    let first = TestServer::start_with_config(Backend::Postgres, toml).await;
    let second = first.another_host().await;
    let (server, database) = first.postgres_database().expect("a database of its own");
    let url = format!("{server}/{database}");
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut job = async || -> Option<(String, i64, i64)> {
        sqlx::query_as("SELECT owner, token, expires_at FROM leases WHERE name = 'effects.event-retries'")
            .fetch_optional(&mut db)
            .await
            .expect("the lease")
    };
    let (owner, token, expires_at) = wait_until("one host takes the job", &mut job).await;
    assert_eq!(token, 1);
    // Kept while its holder lives, though both hosts look every 50 ms: five lease
    // periods later, the same host holds it under the same token.
    let (kept_by, kept_token, _) = wait_until("the holder renews its lease", async || {
        job().await.filter(|held| held.2 > expires_at + 1_500)
    })
    .await;
    assert_eq!((kept_by.as_str(), kept_token), (owner.as_str(), 1));

    let port_of = |owner: &str| owner.rsplit(':').next().and_then(|port| port.parse::<u16>().ok());
    let (mut holder, heir) =
        if port_of(&owner) == Some(first.port()) { (first, second) } else { (second, first) };
    assert_eq!(port_of(&owner), Some(holder.port()), "held by one of the two hosts: {owner}");
    holder.stop().await;
    let (heir_owner, heir_token, _) =
        wait_until("the other host takes the job up", async || job().await.filter(|held| held.1 > 1)).await;
    assert_eq!((port_of(&heir_owner), heir_token), (Some(heir.port()), 2));
    db.close().await.expect("close");
}

/// Polls `probe` every 20 ms until it gives a value, for at most 15 s.
async fn wait_until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..750 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 15 s");
}
