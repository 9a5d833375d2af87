//! The tripflow workload: `trip-booking` instances from creation to `COMPLETED`, with
//! the bench itself as the participant of `flights.reserve` and `hotels.reserve`.
//!
//! Each trip is one create, then long-polls until it is finished; the server runs the
//! two tasks (three transitions, two task round trips). The participant answers each
//! task at once with a reservation id and notes when each `flights.reserve` arrived,
//! so the report can say how long the host took from the trip's creation to the
//! participant (the dispatch delay: an upper bound of commit → participant, since
//! `created_at` is taken before the guest call and the commit).
//!
//! With several hosts, a trip's create and each of its polls go to the next host in
//! turn ([`Hosts::route`]); every host has the same task bindings, so whichever host
//! runs a task calls the same participant.

use crate::workload::{Histogram, Hosts, Percentiles, Route, round3};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the participant saw.
#[derive(Debug, Default)]
struct Seen {
    tasks: AtomicU64,
    /// Instance id → when its `flights.reserve` arrived, in ms since the epoch.
    flights: Mutex<HashMap<String, f64>>,
}

/// The participant server: one route per task, each answering 200 at once.
#[derive(Debug)]
pub struct Participant {
    pub base_url: String,
    seen: Arc<Seen>,
}

impl Participant {
    pub async fn start() -> anyhow::Result<Participant> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Seen::default());
        let app = Router::new().fallback(reserve).with_state(seen.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Participant { base_url, seen })
    }

    /// The `[tasks]` of the servers whose trips this participant serves.
    pub fn config(&self) -> String {
        format!(
            "[tasks.\"flights.reserve\"]\nurl = \"{0}/flights\"\n[tasks.\"hotels.reserve\"]\nurl = \"{0}/hotels\"\n",
            self.base_url
        )
    }
}

async fn reserve(State(seen): State<Arc<Seen>>, uri: axum::http::Uri, body: Bytes) -> impl IntoResponse {
    let arrived = now_ms();
    seen.tasks.fetch_add(1, Ordering::Relaxed);
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if uri.path() == "/flights"
        && let Some(instance) = request["instance_id"].as_str()
    {
        seen.flights.lock().unwrap_or_else(PoisonError::into_inner).insert(instance.to_owned(), arrived);
    }
    axum::Json(json!({ "reservation_id": request["task_id"] }))
}

/// The measured phase, as the JSON line reports it.
#[derive(Debug, Serialize)]
pub struct TripReport {
    pub trips: u64,
    pub completed: u64,
    pub errors: u64,
    pub seconds: f64,
    pub trips_per_s: f64,
    pub transitions_per_s: f64,
    pub tasks_per_s: f64,
    /// Create sent → the trip seen `COMPLETED`.
    pub create_to_completed_ms: Percentiles,
    /// The trip's `created_at` → its `flights.reserve` at the participant.
    pub dispatch_delay_ms: Percentiles,
}

/// Runs `count` trips, `concurrency` in flight at once, none started after `deadline`.
pub async fn run(
    client: &reqwest::Client,
    hosts: &Hosts,
    participant: &Participant,
    (run_id, first, count, concurrency): (&str, u64, u64, u64),
    deadline: Instant,
    stop: &Arc<AtomicBool>,
) -> TripReport {
    let tasks_before = participant.seen.tasks.load(Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (client, hosts, next, stop, run_id) =
            (client.clone(), hosts.clone(), next.clone(), stop.clone(), run_id.to_owned());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    return done;
                }
                let n = first + index;
                done.push(trip(&client, hosts.route(n), &format!("trip-{run_id}-{n}")).await);
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = workers.join_next().await {
        outcomes.extend(joined.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    let tasks = participant.seen.tasks.load(Ordering::Relaxed) - tasks_before;
    let flights = participant.seen.flights.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut latencies = Vec::new();
    let mut dispatch = Vec::new();
    let mut errors = 0;
    for outcome in &outcomes {
        match outcome {
            Ok((id, created_at_ms, latency_ms)) => {
                latencies.push(*latency_ms);
                if let Some(arrived) = flights.get(id) {
                    dispatch.push((arrived - created_at_ms).max(0.0));
                }
            }
            Err(message) => {
                errors += 1;
                if errors <= 10 {
                    eprintln!("error: {message}");
                }
            }
        }
    }
    let completed = latencies.len() as u64;
    let per_second = |n: u64| if seconds > 0.0 { round3(n as f64 / seconds) } else { 0.0 };
    TripReport {
        trips: outcomes.len() as u64,
        completed,
        errors,
        seconds: round3(seconds),
        trips_per_s: per_second(completed),
        transitions_per_s: per_second(completed * 3),
        tasks_per_s: per_second(tasks),
        create_to_completed_ms: Percentiles::of(&mut latencies),
        dispatch_delay_ms: Percentiles::of(&mut dispatch),
    }
}

/// One trip to `COMPLETED`: its id, `created_at` (ms) and the latency (ms).
async fn trip(
    client: &reqwest::Client,
    mut route: Route<'_>,
    key: &str,
) -> Result<(String, f64, f64), String> {
    let started = Instant::now();
    let body =
        json!({ "input": { "trip_id": key, "flight": { "to": "LIS" }, "hotel": { "city": "Lisbon" } } });
    let created = client
        .post(format!("{}/v1/definitions/trip-booking/instances", route.next()))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .map_err(|err| format!("create: {err}"))?;
    if created.status() != 201 {
        return Err(format!("create answered {}", created.status()));
    }
    let instance: Value = created.json().await.map_err(|err| format!("create: {err}"))?;
    let id = instance["id"].as_str().ok_or("no id")?.to_owned();
    let created_at =
        rfc3339_ms(instance["created_at"].as_str().unwrap_or_default()).ok_or("no created_at")?;
    let mut revision = instance["revision"].as_i64().unwrap_or(1);
    for _ in 0..100 {
        let polled = client
            .get(format!("{}/v1/instances/{id}", route.next()))
            .header("if-none-match", format!("\"{revision}\""))
            .header("prefer", "wait=10")
            .send()
            .await
            .map_err(|err| format!("poll: {err}"))?;
        if polled.status() == 304 {
            continue;
        }
        let now: Value = polled.json().await.map_err(|err| format!("poll: {err}"))?;
        match now["state"].as_str() {
            Some("COMPLETED") => return Ok((id, created_at, started.elapsed().as_secs_f64() * 1000.0)),
            _ if now["status"] != "running" => return Err(format!("trip {id} ended {}", now["state"])),
            _ => revision = now["revision"].as_i64().unwrap_or(revision),
        }
    }
    Err(format!("trip {id} did not complete"))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds, as the API
/// writes them (`2026-12-01T22:30:48.288Z`).
fn rfc3339_ms(text: &str) -> Option<f64> {
    let format = time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(text, &format).ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e6)
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_apis_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.250Z"), Some(1250.0));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}

/// The dispatch-delay histogram (`switchyard_task_dispatch_seconds`) of all hosts
/// together.
pub async fn dispatch_histogram(client: &reqwest::Client, hosts: &Hosts) -> Option<Histogram> {
    let mut total: Option<Histogram> = None;
    for url in hosts.all() {
        let text = client.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
        let histogram = Histogram::parse(&text, "switchyard_task_dispatch_seconds")?;
        total = Some(match total {
            None => histogram,
            Some(total) => total.add(&histogram)?,
        });
    }
    total
}

/// Commit → first attempt, from the histogram's growth between two readings: for each
/// percentile, the upper bound of the bucket it falls in (so "at most"), in ms.
#[derive(Debug, Serialize)]
pub struct DispatchBound {
    pub tasks: u64,
    pub p50_at_most: Option<f64>,
    pub p99_at_most: Option<f64>,
}

impl DispatchBound {
    pub fn between(before: &Histogram, after: &Histogram) -> DispatchBound {
        let grown = after.since(before);
        let tasks = grown.count();
        let at = |p: f64| {
            let rank = (p / 100.0 * tasks as f64).ceil() as u64;
            grown.bound_of(rank).map(|seconds| round3(seconds * 1000.0))
        };
        DispatchBound { tasks, p50_at_most: at(50.0), p99_at_most: at(99.0) }
    }
}
