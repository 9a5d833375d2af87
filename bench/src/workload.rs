//! The docflow workload: drives `document-processing` instances from creation to
//! `PUBLISHED` over HTTP and records what happened.

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The actions that take a new instance from `UPLOADED` to `PUBLISHED`.
const ACTIONS: [&str; 3] = ["validate", "format", "publish"];
/// Mutating requests per instance: the create and one per action.
const MUTATIONS_PER_INSTANCE: u64 = 1 + ACTIONS.len() as u64;
/// One in `REPLAY_EVERY` mutating requests is sent a second time (10 %).
const REPLAY_EVERY: u64 = 10;
/// The revision an instance has after its create and the three actions.
const FINAL_REVISION: u64 = MUTATIONS_PER_INSTANCE;
/// Extra time given to instances in flight at the deadline before they are abandoned.
const GRACE: Duration = Duration::from_secs(60);
/// How many error messages are written to stderr; the rest are only counted.
const LOGGED_ERRORS: u64 = 10;

/// The base URLs of the hosts a workload is spread over.
#[derive(Debug, Clone)]
pub struct Hosts(Arc<[String]>);

impl Hosts {
    pub fn new(urls: impl IntoIterator<Item = String>) -> Hosts {
        let urls: Arc<[String]> = urls.into_iter().map(|url| url.trim_end_matches('/').to_owned()).collect();
        assert!(!urls.is_empty(), "a workload needs a host");
        Hosts(urls)
    }

    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The hosts of instance `n`'s requests in turn.
    pub fn route(&self, n: u64) -> Route<'_> {
        Route { hosts: &self.0, n, k: 0 }
    }
}

impl std::fmt::Display for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// Request `k` of instance `n` goes to host `(n + k) % N`: no affinity, as behind a
/// round-robin load balancer, so an instance's requests (a replay and the one it
/// repeats included) land on different hosts and each sees the others' commits.
#[derive(Debug)]
pub struct Route<'a> {
    hosts: &'a [String],
    n: u64,
    k: u64,
}

impl<'a> Route<'a> {
    pub fn next(&mut self) -> &'a str {
        let index = (self.n.wrapping_add(self.k) % self.hosts.len() as u64) as usize;
        self.k += 1;
        &self.hosts[index]
    }
}

/// Where requests go and how instances are named.
#[derive(Debug, Clone)]
pub struct Workload {
    client: Client,
    hosts: Hosts,
    /// Makes idempotency keys unique across runs against the same server.
    run_id: String,
    logged_errors: Arc<AtomicU64>,
}

/// Everything measured over a set of instances.
#[derive(Debug, Default)]
pub struct Stats {
    /// Instances started (each one either reached `PUBLISHED` or counted an error).
    pub instances: u64,
    /// Every create and action request sent, replays included.
    pub mutating_requests: u64,
    /// Creates and actions that applied a transition (replays excluded).
    pub transitions: u64,
    pub errors: u64,
    pub replay_mismatches: u64,
    pub create_ms: Vec<f64>,
    pub action_ms: Vec<f64>,
    pub get_ms: Vec<f64>,
    pub replay_ms: Vec<f64>,
}

/// The result of [`Workload::run`].
#[derive(Debug)]
pub struct Phase {
    pub stats: Stats,
    pub elapsed: Duration,
    /// True when the deadline or Ctrl-C stopped the phase before all instances started.
    pub stopped_early: bool,
}

/// The server's group-commit figures at one moment, from `GET /metrics`.
#[derive(Debug, Clone)]
pub struct CommitCounters {
    pub commits: u64,
    /// Batches by size (`switchyard_commit_batch_size`); its count is the batches'.
    pub batch_sizes: Histogram,
}

/// A Prometheus histogram as `GET /metrics` writes it: the cumulative count at each
/// bucket's upper bound, `+Inf` last (as infinity).
#[derive(Debug, Clone)]
pub struct Histogram(Vec<(f64, u64)>);

impl Histogram {
    /// Histogram `name` in `GET /metrics`' `text`; `None` if it has none.
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|line| {
                let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect();
        (!buckets.is_empty()).then_some(Histogram(buckets))
    }

    /// This and another host's histogram together; `None` if their buckets differ.
    pub fn add(mut self, other: &Histogram) -> Option<Histogram> {
        let same = self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.0 == b.0);
        if !same {
            return None;
        }
        for ((_, sum), (_, count)) in self.0.iter_mut().zip(&other.0) {
            *sum += count;
        }
        Some(self)
    }

    /// What was counted after `earlier`, a reading of the same histogram.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let grown = self.0.iter().zip(&earlier.0);
        Histogram(
            grown.map(|((bound, count), (_, before))| (*bound, count.saturating_sub(*before))).collect(),
        )
    }

    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, count)| *count)
    }

    /// The upper bound of the bucket of the `rank`-th smallest value (1-based), so an
    /// "at most"; `None` past the last finite bound or with fewer values.
    pub fn bound_of(&self, rank: u64) -> Option<f64> {
        self.0
            .iter()
            .find(|(_, count)| *count >= rank.max(1))
            .map(|(bound, _)| *bound)
            .filter(|b| b.is_finite())
    }
}

/// p50, p90 and p99 of a latency sample in milliseconds; `null` with no sample.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    pub fn of(samples: &mut [f64]) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        // Nearest-rank percentile.
        let rank = |p: f64| {
            let index = ((p / 100.0 * samples.len() as f64).ceil() as usize).max(1) - 1;
            samples.get(index).map(|ms| round3(*ms))
        };
        Percentiles { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0) }
    }
}

/// Rounds to three decimals so the JSON line stays readable.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.instances += other.instances;
        self.mutating_requests += other.mutating_requests;
        self.transitions += other.transitions;
        self.errors += other.errors;
        self.replay_mismatches += other.replay_mismatches;
        self.create_ms.extend(other.create_ms);
        self.action_ms.extend(other.action_ms);
        self.get_ms.extend(other.get_ms);
        self.replay_ms.extend(other.replay_ms);
    }
}

/// What the server answered, and how long the whole exchange took.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    elapsed_ms: f64,
}

impl Workload {
    pub fn new(client: Client, hosts: Hosts, run_id: &str) -> Workload {
        Workload { client, hosts, run_id: run_id.to_owned(), logged_errors: Arc::new(AtomicU64::new(0)) }
    }

    /// Checks that every host answers and sees `document-processing` v1 deployed.
    pub async fn preflight(&self) -> anyhow::Result<()> {
        for host in self.hosts.all() {
            let health =
                self.send(host, Method::GET, "/healthz", None, None).await.map_err(anyhow::Error::msg)?;
            anyhow::ensure!(health.status == StatusCode::OK, "{host}/healthz answered {}", health.status);
            let path = "/v1/definitions/document-processing/versions/1";
            let version = self.send(host, Method::GET, path, None, None).await.map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                version.status == StatusCode::OK,
                "{host}{path} answered {}: deploy target/modules/document-processing.wasm first \
                 (or start the server with --modules)",
                version.status
            );
        }
        Ok(())
    }

    /// The commit counters of all hosts together.
    pub async fn commit_counters(&self) -> Result<CommitCounters, String> {
        let mut total: Option<CommitCounters> = None;
        for host in self.hosts.all() {
            let counters = self.host_commit_counters(host).await?;
            total = Some(match total {
                None => counters,
                Some(total) => CommitCounters {
                    commits: total.commits + counters.commits,
                    batch_sizes: total
                        .batch_sizes
                        .add(&counters.batch_sizes)
                        .ok_or("the hosts' batch-size buckets differ")?,
                },
            });
        }
        total.ok_or_else(|| "no host".to_owned())
    }

    /// Reads one host's commit counters from `GET /metrics` (Prometheus' text format).
    async fn host_commit_counters(&self, host: &str) -> Result<CommitCounters, String> {
        let answer = self.send(host, Method::GET, "/metrics", None, None).await?;
        if answer.status != StatusCode::OK {
            return Err(format!("GET {host}/metrics: {} (want 200)", answer.status));
        }
        let text = String::from_utf8_lossy(&answer.body);
        let missing = |name: &str| format!("GET {host}/metrics: no value for {name}");
        let commits = text
            .lines()
            .find_map(|line| line.strip_prefix("switchyard_commits_total ")?.trim().parse().ok())
            .ok_or_else(|| missing("switchyard_commits_total"))?;
        let batch_sizes = Histogram::parse(&text, "switchyard_commit_batch_size")
            .ok_or_else(|| missing("switchyard_commit_batch_size"))?;
        Ok(CommitCounters { commits, batch_sizes })
    }

    /// Runs instances `first..first + count` with `concurrency` of them in flight, each
    /// driven sequentially. No new instance starts after `deadline` or once `stop` is
    /// set; instances still running at `deadline` + [`GRACE`] are abandoned.
    pub async fn run(
        &self,
        first: u64,
        count: u64,
        concurrency: u64,
        deadline: Instant,
        stop: &Arc<AtomicBool>,
    ) -> Phase {
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let total = Arc::new(Mutex::new(Stats::default()));
        let stopped_early = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        for _ in 0..concurrency.min(count) {
            let (workload, next, total, stop, stopped_early) =
                (self.clone(), next.clone(), total.clone(), stop.clone(), stopped_early.clone());
            workers.spawn(async move {
                loop {
                    if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                        stopped_early.store(true, Ordering::Relaxed);
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let mut stats = Stats { instances: 1, ..Stats::default() };
                    if let Err(message) = workload.instance(first + index, &mut stats).await {
                        stats.errors += 1;
                        workload.log_error(&message);
                    }
                    total.lock().unwrap_or_else(PoisonError::into_inner).merge(stats);
                }
            });
        }
        let progress = tokio::spawn(progress(total.clone(), count));
        let finished = tokio::time::timeout_at((deadline + GRACE).into(), async {
            while let Some(joined) = workers.join_next().await {
                if let Err(err) = joined {
                    eprintln!("a worker failed: {err}");
                }
            }
        })
        .await;
        if finished.is_err() {
            eprintln!("instances still in flight {} s after the deadline were abandoned", GRACE.as_secs());
            workers.abort_all();
            stopped_early.store(true, Ordering::Relaxed);
        }
        progress.abort();
        let elapsed = started.elapsed();
        let stats = std::mem::take(&mut *total.lock().unwrap_or_else(PoisonError::into_inner));
        Phase { stats, elapsed, stopped_early: stopped_early.load(Ordering::Relaxed) }
    }

    /// Drives instance `n`: create, validate, format, publish, then one read.
    async fn instance(&self, n: u64, stats: &mut Stats) -> Result<(), String> {
        let body = format!(r#"{{"input":{{"document_url":"s3://bench/{n}.pdf"}},"version":1}}"#).into_bytes();
        let key = format!("bench-{}-{n}-create", self.run_id);
        let path = "/v1/definitions/document-processing/instances";
        let seq = n * MUTATIONS_PER_INSTANCE;
        let mut route = self.hosts.route(n);
        let created = self.mutate(&mut route, seq, path, &key, Some(body), stats).await?;
        let id = serde_json::from_slice::<Value>(&created)
            .ok()
            .and_then(|instance| instance.get("id")?.as_str()?.parse::<uuid::Uuid>().ok())
            .ok_or_else(|| format!("instance {n}: the create answer has no valid id: {}", lossy(&created)))?;

        for (step, action) in (1..).zip(ACTIONS) {
            let key = format!("bench-{}-{n}-{action}", self.run_id);
            let path = format!("/v1/instances/{id}/actions/{action}");
            self.mutate(&mut route, seq + step, &path, &key, None, stats).await?;
        }

        let answer = self.send(route.next(), Method::GET, &format!("/v1/instances/{id}"), None, None).await?;
        stats.get_ms.push(answer.elapsed_ms);
        let instance = serde_json::from_slice::<Value>(&answer.body).unwrap_or(Value::Null);
        let state = instance.get("state").and_then(Value::as_str);
        let revision = instance.get("revision").and_then(Value::as_u64);
        if answer.status != StatusCode::OK || state != Some("PUBLISHED") || revision != Some(FINAL_REVISION) {
            return Err(format!(
                "GET /v1/instances/{id}: {} (want 200, PUBLISHED, revision {FINAL_REVISION}): {}",
                answer.status,
                lossy(&answer.body)
            ));
        }
        Ok(())
    }

    /// Sends one create or action and, if it is a replay slot, sends it again with the
    /// same key and body. Returns the body of the first answer. `seq` is
    /// `n * MUTATIONS_PER_INSTANCE + step`, step 0 being the create.
    async fn mutate(
        &self,
        route: &mut Route<'_>,
        seq: u64,
        path: &str,
        key: &str,
        body: Option<Vec<u8>>,
        stats: &mut Stats,
    ) -> Result<Vec<u8>, String> {
        stats.mutating_requests += 1;
        let first = self.send(route.next(), Method::POST, path, Some(key), body.clone()).await?;
        let expected = if seq.is_multiple_of(MUTATIONS_PER_INSTANCE) {
            stats.create_ms.push(first.elapsed_ms);
            StatusCode::CREATED
        } else {
            stats.action_ms.push(first.elapsed_ms);
            StatusCode::OK
        };
        if first.status != expected {
            return Err(format!("POST {path}: {} (want {expected}): {}", first.status, lossy(&first.body)));
        }
        stats.transitions += 1;

        if is_replayed(seq) {
            stats.mutating_requests += 1;
            let replay = self.send(route.next(), Method::POST, path, Some(key), body).await?;
            stats.replay_ms.push(replay.elapsed_ms);
            let flagged = replay.headers.get("idempotent-replayed").is_some_and(|value| value == "true");
            if replay.status != first.status || replay.body != first.body || !flagged {
                stats.replay_mismatches += 1;
                self.log_error(&format!(
                    "replay of POST {path}: {} then {} (Idempotent-Replayed: {flagged}); bodies {} / {}",
                    first.status,
                    replay.status,
                    lossy(&first.body),
                    lossy(&replay.body)
                ));
            }
        }
        Ok(first.body)
    }

    async fn send(
        &self,
        host: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let mut request = self.client.request(method.clone(), format!("{host}{path}"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let started = Instant::now();
        let failed = |err: reqwest::Error| format!("{method} {path}: {}", chain(&err));
        let response = request.send().await.map_err(failed)?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await.map_err(failed)?.to_vec();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(Answer { status, headers, body, elapsed_ms })
    }

    fn log_error(&self, message: &str) {
        let logged = self.logged_errors.fetch_add(1, Ordering::Relaxed);
        if logged < LOGGED_ERRORS {
            eprintln!("error: {message}");
        } else if logged == LOGGED_ERRORS {
            eprintln!("(further errors are only counted)");
        }
    }
}

/// Writes a progress line to stderr every five seconds until aborted.
async fn progress(total: Arc<Mutex<Stats>>, count: u64) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (done, errors) = {
            let stats = total.lock().unwrap_or_else(PoisonError::into_inner);
            (stats.instances, stats.errors + stats.replay_mismatches)
        };
        eprintln!("  {done}/{count} instances, {errors} errors");
    }
}

/// An error with its causes, which `reqwest` does not print by itself.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A response body for an error message, cut to a readable length.
fn lossy(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Whether the `seq`-th mutating request is replayed: one in [`REPLAY_EVERY`], spread
/// evenly over creates and each action. (`seq % REPLAY_EVERY` would never pick a
/// create, `seq` being 4 × instance + step.) Fibonacci hashing: the product's high
/// bits depend on every bit of `seq`.
fn is_replayed(seq: u64) -> bool {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32).is_multiple_of(REPLAY_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instances_requests_go_to_each_host_in_turn_from_its_own() {
        let hosts = Hosts::new(["http://a/", "http://b", "http://c"].map(String::from));
        let mut route = hosts.route(4);
        let sent: Vec<&str> = (0..4).map(|_| route.next()).collect();
        assert_eq!(sent, ["http://b", "http://c", "http://a", "http://b"]);
        assert_eq!(Hosts::new(["http://a".to_owned()]).route(7).next(), "http://a");
    }

    #[test]
    fn replays_one_in_ten_of_every_kind_of_request() {
        let instances = 10_000;
        for step in 0..MUTATIONS_PER_INSTANCE {
            let replayed = (0..instances).filter(|n| is_replayed(n * MUTATIONS_PER_INSTANCE + step)).count();
            let share = replayed as f64 / instances as f64;
            assert!((0.09..0.11).contains(&share), "step {step}: {share}");
        }
    }
}
