//! `switchyard-bench`: a load generator for the real Switchyard server over HTTP.
//!
//! # The docflow workload
//!
//! Each instance of the example `document-processing` definition (version 1) is driven
//! sequentially through its happy path:
//!
//! 1. `POST /v1/definitions/document-processing/instances` with a unique
//!    `Idempotency-Key` and `{"input":{"document_url":"s3://bench/<n>.pdf"},"version":1}`
//!    (expects `201`);
//! 2. `POST /v1/instances/{id}/actions/validate`, `…/format`, `…/publish`, each with a
//!    unique key and an empty body (expects `200`);
//! 3. `GET /v1/instances/{id}`, which must show `"state":"PUBLISHED"` and revision 4.
//!
//! Every tenth mutating request (chosen by its sequence number, so the choice is the
//! same on every run) is sent a second time with the same key and body. The replay must
//! answer the same status and byte-identical body with `Idempotent-Replayed: true`;
//! anything else counts as a replay mismatch. The final revision check shows that the
//! replays applied nothing. Any other unexpected answer counts as an error and ends
//! that instance.
//!
//! `--concurrency` instances are in flight at once. `--warmup` instances run first and
//! are not measured, then `--instances` measured ones. No new instance starts once
//! `--max-seconds` have passed since the workload began (or after Ctrl-C); every
//! request has a timeout, so the run is bounded in time.
//!
//! # Several hosts
//!
//! `--spawn postgres --hosts N` starts N servers on the one database, each with its own
//! port, `host_id` (`bench-0`, `bench-1`, …), log and module cache, and the same config.
//! They start one after another: the first migrates the schema and deploys the
//! modules, the others start once it answers `/healthz`. Requests are spread as a
//! round-robin load balancer with no affinity would: request k of instance n goes to
//! host (n + k) mod N, so an instance's create, actions, replays, GET (and tripflow's
//! long-polls) land on different hosts. With `--url` or `--spawn sqlite`, N must be 1.
//!
//! # Usage
//!
//! ```sh
//! cargo build --release -p switchyard -p switchyard-bench && cargo xtask modules
//! # start a server of its own (SQLite in a fresh temp dir, or a fresh PostgreSQL database):
//! ./target/release/switchyard-bench --spawn sqlite
//! ./target/release/switchyard-bench --spawn postgres --postgres postgres://postgres@127.0.0.1:5432
//! # three servers on one fresh PostgreSQL database, the load spread over them:
//! ./target/release/switchyard-bench --spawn postgres --hosts 3
//! # or load a server that is already running with document-processing deployed:
//! ./target/release/switchyard-bench --url http://127.0.0.1:8080 --concurrency 64
//! ```
//!
//! With `--spawn`, the server binary is `--server-bin`, else `$SWITCHYARD_BIN`, else
//! `target/release/switchyard` next to this executable's `target/`; the modules are
//! `--modules`, else `$SWITCHYARD_EXAMPLE_MODULES`, else `target/modules`. The server
//! logs (`host-<i>/server.log`) and the SQLite database live in a temp dir that is
//! deleted at the end unless `--keep` is given or something failed; the PostgreSQL
//! database is dropped at the end in any case.
//!
//! # Output
//!
//! Exactly one JSON line on stdout (progress goes to stderr): the number of `hosts`,
//! throughput, latency percentiles per request kind, error counts of the measured
//! phase and of the warm-up, and how the server batched the measured phase's commits
//! (`group_commit`, the difference of its `GET /metrics` figures read just before and
//! just after; of the largest batch, its histogram gives only the bucket). With
//! `--spawn`, also the server's CPU time during the measured phase and its peak RSS
//! (read before the server is stopped with SIGTERM); with `--spawn postgres`, the CPU
//! time of every local process named `postgres` during the measured phase
//! (`database_cpu_seconds`, which assumes nothing else uses that PostgreSQL meanwhile).
//! With several hosts, the commit figures and CPU times are summed over the hosts, the
//! peak RSS is the largest host's, and each host's own figures are added
//! (`server_cpu_seconds_per_host`, `server_peak_rss_mib_per_host`).
//! The exit status is 1 if there were errors or replay mismatches, in the warm-up or
//! the measured phase, and the line is printed anyway.

mod tripflow;
mod workload;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use workload::{CommitCounters, Hosts, Percentiles, Workload, round3};

/// Every request (connect, send, read the whole answer) must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(about = "Drive the docflow workload against a switchyard server and print one JSON line")]
struct Args {
    /// A running server with document-processing v1 deployed [default: http://127.0.0.1:8080].
    #[arg(long, conflicts_with = "spawn")]
    url: Option<String>,
    /// Start a server of its own on a fresh database instead.
    #[arg(long, value_enum)]
    spawn: Option<Backend>,
    /// Servers to start on the one database, the requests spread over them with no
    /// affinity (round robin); more than 1 needs --spawn postgres.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    hosts: u64,
    /// The switchyard binary for --spawn [default: target/release/switchyard].
    #[arg(long, env = "SWITCHYARD_BIN")]
    server_bin: Option<PathBuf>,
    /// The folder of example modules for --spawn [default: target/modules].
    #[arg(long, env = "SWITCHYARD_EXAMPLE_MODULES")]
    modules: Option<PathBuf>,
    /// The PostgreSQL server on which --spawn postgres creates (and drops) a database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Instances in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Measured instances.
    #[arg(long, default_value_t = 5000)]
    instances: u64,
    /// Start no new instance after this many seconds (warmup included).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Instances run first and not measured.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Keep the temp dir (server logs, SQLite database) of --spawn.
    #[arg(long)]
    keep: bool,
    /// docflow (document-processing, driven by its client) or tripflow (trip-booking,
    /// driven by its tasks; needs --spawn).
    #[arg(long, value_enum, default_value = "docflow")]
    workload: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Docflow,
    Tripflow,
}

/// The JSON line of either workload.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Line {
    Docflow(Report),
    Tripflow(TripflowReport),
}

impl Line {
    fn failed(&self) -> bool {
        match self {
            Line::Docflow(report) => report.failed(),
            Line::Tripflow(report) => report.trips.errors + report.warmup_errors > 0,
        }
    }
}

/// The tripflow JSON line.
#[derive(Debug, Serialize)]
struct TripflowReport {
    workload: &'static str,
    backend: &'static str,
    hosts: u64,
    concurrency: u64,
    warmup: u64,
    warmup_errors: u64,
    #[serde(flatten)]
    trips: tripflow::TripReport,
    /// From the server's own histogram: commit → the task's first attempt.
    commit_to_dispatch_ms: Option<tripflow::DispatchBound>,
    #[serde(flatten)]
    server: ServerFigures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The JSON line.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    backend: &'static str,
    hosts: u64,
    concurrency: u64,
    /// Measured instances started; fewer than asked if `stopped_early`.
    instances: u64,
    warmup: u64,
    stopped_early: bool,
    seconds: f64,
    mutating_requests_per_s: f64,
    transitions_per_s: f64,
    latency_ms: Latency,
    errors: u64,
    replay_mismatches: u64,
    /// Errors and replay mismatches of the warm-up: they fail the run too.
    warmup_errors: u64,
    #[serde(flatten)]
    server: ServerFigures,
    /// How the server batched the measured phase's commits; `None` if it has no
    /// `GET /metrics` (an older build).
    group_commit: Option<GroupCommit>,
}

impl Report {
    fn failed(&self) -> bool {
        self.errors + self.replay_mismatches + self.warmup_errors > 0
    }
}

/// What `--spawn` measured of its hosts and of PostgreSQL in the measured phase;
/// `null` where it has no figure (no `--spawn`, no `/proc`, no local PostgreSQL).
#[derive(Debug, Serialize)]
struct ServerFigures {
    /// Summed over the hosts.
    server_cpu_seconds: Option<f64>,
    /// Written only with several hosts, so that `--hosts 1` keeps its line.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_seconds_per_host: Option<Vec<f64>>,
    /// PostgreSQL's own processes, whose work the server's CPU time leaves out.
    database_cpu_seconds: Option<f64>,
    /// The largest host's.
    server_peak_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_peak_rss_mib_per_host: Option<Vec<f64>>,
}

/// CPU seconds so far of each host and of the local PostgreSQL.
struct CpuTimes {
    hosts: Option<Vec<f64>>,
    database: Option<f64>,
}

impl CpuTimes {
    fn read(server: Option<&Spawned>, postgres: bool) -> CpuTimes {
        CpuTimes {
            hosts: server.and_then(Spawned::cpu_seconds),
            database: postgres.then(postgres_cpu_seconds).flatten(),
        }
    }
}

impl ServerFigures {
    /// From the CPU times read at each end of the measured phase, and the hosts' peak
    /// RSS, which must be read before they stop.
    fn between(before: CpuTimes, after: CpuTimes, server: Option<&Spawned>) -> ServerFigures {
        let per_host = before
            .hosts
            .zip(after.hosts)
            .map(|(before, after)| before.iter().zip(after).map(|(b, a)| a - b).collect::<Vec<f64>>());
        let peak_rss = server.and_then(Spawned::peak_rss_mib);
        let several = |values: Vec<f64>| (values.len() > 1).then(|| values.into_iter().map(round3).collect());
        ServerFigures {
            server_cpu_seconds: per_host.as_ref().map(|spent| round3(spent.iter().sum())),
            server_cpu_seconds_per_host: per_host.and_then(several),
            database_cpu_seconds: before.database.zip(after.database).map(|(b, a)| round3(a - b)),
            server_peak_rss_mib: peak_rss
                .as_ref()
                .and_then(|peaks| peaks.iter().copied().reduce(f64::max))
                .map(round3),
            server_peak_rss_mib_per_host: peak_rss.and_then(several),
        }
    }
}

#[derive(Debug, Serialize)]
struct GroupCommit {
    commits: u64,
    batches: u64,
    mean_batch: f64,
    /// The upper bound of the largest batch's histogram bucket (1, 2, 4, … 256);
    /// `null` for a larger batch, or none.
    largest_batch_at_most: Option<u64>,
}

impl GroupCommit {
    fn between(before: &CommitCounters, after: &CommitCounters) -> GroupCommit {
        let commits = after.commits.saturating_sub(before.commits);
        let sizes = after.batch_sizes.since(&before.batch_sizes);
        let batches = sizes.count();
        GroupCommit {
            commits,
            batches,
            mean_batch: round3(commits as f64 / batches.max(1) as f64),
            largest_batch_at_most: sizes.bound_of(batches).filter(|_| batches > 0).map(|size| size as u64),
        }
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    create: Percentiles,
    action: Percentiles,
    get: Percentiles,
    replay: Percentiles,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C: no new instances; finishing the ones in flight");
            ctrl_c.store(true, Ordering::Relaxed);
        }
    });

    let result = match (args.spawn, args.workload) {
        (spawn, _) if args.hosts > 1 && spawn != Some(Backend::Postgres) => Err(anyhow::anyhow!(
            "--hosts {} needs --spawn postgres: several hosts share one PostgreSQL database \
             (a SQLite database is one process's; --url names one server)",
            args.hosts
        )),
        (None, Kind::Docflow) => {
            let hosts = Hosts::new([args.url.clone().unwrap_or_else(|| DEFAULT_URL.into())]);
            bench(&args, &run_id, &hosts, None, &stop).await.map(Line::Docflow)
        }
        (None, Kind::Tripflow) => {
            Err(anyhow::anyhow!("tripflow binds the server's tasks to the bench: use --spawn"))
        }
        (Some(backend), kind) => {
            let mut server = Spawned::new(&run_id);
            let participant = match kind {
                Kind::Tripflow => Some(tripflow::Participant::start().await),
                Kind::Docflow => None,
            };
            let result = match participant.transpose() {
                Ok(participant) => {
                    let config = participant.as_ref().map(tripflow::Participant::config);
                    match server.start(&args, backend, config.as_deref()).await {
                        Ok(()) => {
                            let hosts = server.hosts();
                            let result = match &participant {
                                Some(participant) => {
                                    trips(&args, &run_id, &hosts, &server, participant, &stop)
                                        .await
                                        .map(Line::Tripflow)
                                }
                                None => bench(&args, &run_id, &hosts, Some(&server), &stop)
                                    .await
                                    .map(Line::Docflow),
                            };
                            server.shut_down().await;
                            result
                        }
                        Err(err) => Err(err),
                    }
                }
                Err(err) => Err(err),
            };
            let failed = result.as_ref().map_or(true, Line::failed);
            server.cleanup(args.keep || failed).await;
            result
        }
    };
    match result {
        Ok(report) => {
            match serde_json::to_string(&report) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("cannot write the report: {err}"),
            }
            if report.failed() { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
        }
        Err(err) => {
            eprintln!("switchyard-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs tripflow's warm-up and measured phase against the spawned `server`.
async fn trips(
    args: &Args,
    run_id: &str,
    hosts: &Hosts,
    server: &Spawned,
    participant: &tripflow::Participant,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<TripflowReport> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .pool_max_idle_per_host(usize::try_from(args.concurrency).unwrap_or(usize::MAX))
        .build()
        .context("cannot build the HTTP client")?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let shape = |first, count| (run_id, first, count, args.concurrency);
    eprintln!("warmup: {} trips at concurrency {} against {hosts}", args.warmup, args.concurrency);
    let warmup = tripflow::run(&client, hosts, participant, shape(0, args.warmup), deadline, stop).await;
    eprintln!("measuring: {} trips at concurrency {}", args.instances, args.concurrency);
    let postgres = args.spawn == Some(Backend::Postgres);
    let cpu_before = CpuTimes::read(Some(server), postgres);
    let dispatch_before = tripflow::dispatch_histogram(&client, hosts).await;
    let measured =
        tripflow::run(&client, hosts, participant, shape(args.warmup, args.instances), deadline, stop).await;
    let dispatch_after = tripflow::dispatch_histogram(&client, hosts).await;
    let cpu_after = CpuTimes::read(Some(server), postgres);
    Ok(TripflowReport {
        workload: "tripflow",
        backend: if postgres { "postgres" } else { "sqlite" },
        hosts: args.hosts,
        concurrency: args.concurrency,
        warmup: args.warmup,
        warmup_errors: warmup.errors,
        trips: measured,
        commit_to_dispatch_ms: dispatch_before
            .zip(dispatch_after)
            .map(|(before, after)| tripflow::DispatchBound::between(&before, &after)),
        server: ServerFigures::between(cpu_before, cpu_after, Some(server)),
    })
}

/// Runs the warmup and the measured phase against `hosts`.
async fn bench(
    args: &Args,
    run_id: &str,
    hosts: &Hosts,
    server: Option<&Spawned>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .pool_max_idle_per_host(usize::try_from(args.concurrency).unwrap_or(usize::MAX))
        .build()
        .context("cannot build the HTTP client")?;
    let workload = Workload::new(client, hosts.clone(), run_id);
    workload.preflight().await?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);

    let warmup_errors = if args.warmup > 0 {
        eprintln!("warmup: {} instances at concurrency {} against {hosts}", args.warmup, args.concurrency);
        let warmup = workload.run(0, args.warmup, args.concurrency, deadline, stop).await;
        let failures = warmup.stats.errors + warmup.stats.replay_mismatches;
        if failures > 0 {
            eprintln!("warmup: {failures} errors");
        }
        failures
    } else {
        0
    };

    eprintln!("measuring: {} instances at concurrency {}", args.instances, args.concurrency);
    let postgres = args.spawn == Some(Backend::Postgres);
    // The counters are read outside the CPU window: their requests are not the workload's.
    let counters_before = workload.commit_counters().await;
    let cpu_before = CpuTimes::read(server, postgres);
    let phase = workload.run(args.warmup, args.instances, args.concurrency, deadline, stop).await;
    let cpu_after = CpuTimes::read(server, postgres);
    let counters_after = workload.commit_counters().await;
    let group_commit = match (counters_before, counters_after) {
        (Ok(before), Ok(after)) => Some(GroupCommit::between(&before, &after)),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("no group-commit figures: {err}");
            None
        }
    };
    let mut stats = phase.stats;
    let seconds = phase.elapsed.as_secs_f64();
    let per_second = |count: u64| if seconds > 0.0 { round3(count as f64 / seconds) } else { 0.0 };
    if phase.stopped_early {
        eprintln!("stopped early: {} of {} measured instances started", stats.instances, args.instances);
    }

    Ok(Report {
        workload: "docflow",
        backend: match args.spawn {
            Some(Backend::Sqlite) => "sqlite",
            Some(Backend::Postgres) => "postgres",
            None => "external",
        },
        hosts: args.hosts,
        concurrency: args.concurrency,
        instances: stats.instances,
        warmup: args.warmup,
        stopped_early: phase.stopped_early,
        seconds: round3(seconds),
        mutating_requests_per_s: per_second(stats.mutating_requests),
        transitions_per_s: per_second(stats.transitions),
        latency_ms: Latency {
            create: Percentiles::of(&mut stats.create_ms),
            action: Percentiles::of(&mut stats.action_ms),
            get: Percentiles::of(&mut stats.get_ms),
            replay: Percentiles::of(&mut stats.replay_ms),
        },
        errors: stats.errors,
        replay_mismatches: stats.replay_mismatches,
        warmup_errors,
        server: ServerFigures::between(cpu_before, cpu_after, server),
        group_commit,
    })
}

/// What `--spawn` starts: a temp dir, one database (a SQLite file in the temp dir, or a
/// database created on PostgreSQL) and the `switchyard serve` processes sharing it.
#[derive(Debug)]
struct Spawned {
    scratch: PathBuf,
    run_id: String,
    /// The PostgreSQL server and the database created on it, to drop at the end.
    postgres: Option<(String, String)>,
    hosts: Vec<Host>,
}

impl Spawned {
    fn new(run_id: &str) -> Spawned {
        Spawned {
            scratch: std::env::temp_dir().join(format!("switchyard-bench-{run_id}")),
            run_id: run_id.to_owned(),
            postgres: None,
            hosts: Vec::new(),
        }
    }

    /// Creates the temp dir and the database, then starts `--hosts` servers on it, each
    /// once the one before answers `/healthz`. `config`: the text of a config file to
    /// start every host with.
    async fn start(&mut self, args: &Args, backend: Backend, config: Option<&str>) -> anyhow::Result<()> {
        let target = target_dir()?;
        let binary = args.server_bin.clone().unwrap_or_else(|| target.join("release").join("switchyard"));
        let modules = args.modules.clone().unwrap_or_else(|| target.join("modules"));
        if !binary.is_file() {
            bail!("no server binary at {}: run `cargo build --release -p switchyard`", binary.display());
        }
        if !modules.join("document-processing.wasm").is_file() {
            bail!("no document-processing.wasm in {}: run `cargo xtask modules`", modules.display());
        }
        std::fs::create_dir_all(&self.scratch)
            .with_context(|| format!("cannot create {}", self.scratch.display()))?;
        let database = self.create_database(args, backend).await?;
        let config = match config {
            Some(config) => {
                let path = self.scratch.join("config.toml");
                std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        for index in 0..args.hosts {
            // Only the first host deploys the modules, and the others start once it
            // answers: it has migrated the schema by then, so none races it on the
            // migrations, and they find the definitions in the database.
            let deploy = (index == 0).then_some(modules.as_path());
            let mut host = Host::spawn(&binary, &self.scratch, index, &database, config.as_deref(), deploy)?;
            eprintln!(
                "spawned {} ({backend:?}) as host {index} on {}; log: {}",
                binary.display(),
                host.base_url,
                host.log_path().display()
            );
            let ready = host.wait_ready().await;
            self.hosts.push(host);
            ready?;
        }
        Ok(())
    }

    /// Creates the database every host serves; returns its URL.
    async fn create_database(&mut self, args: &Args, backend: Backend) -> anyhow::Result<String> {
        match backend {
            Backend::Postgres => {
                let server = args.postgres.trim_end_matches('/');
                let database = format!("switchyard_bench_{}", self.run_id);
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {server}"))?;
                sqlx::query(&format!("CREATE DATABASE {database}"))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("cannot create database {database}"))?;
                let _ = admin.close().await;
                let url = format!("{server}/{database}");
                self.postgres = Some((server.to_owned(), database));
                Ok(url)
            }
            Backend::Sqlite => Ok(format!("sqlite://{}", self.scratch.join("bench.db").display())),
        }
    }

    /// Drops the PostgreSQL database, if one was created.
    async fn drop_database(&mut self) {
        let Some((server, database)) = self.postgres.take() else { return };
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            admin.close().await
        };
        match tokio::time::timeout(Duration::from_secs(30), dropped).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop database {database}: {err}"),
            Err(_) => eprintln!("could not drop database {database}: timed out"),
        }
    }

    fn hosts(&self) -> Hosts {
        Hosts::new(self.hosts.iter().map(|host| host.base_url.clone()))
    }

    /// Stops every host with SIGTERM, as an operator would, so that each closes its
    /// database cleanly; [`Spawned::cleanup`] kills any not gone within 10 s.
    async fn shut_down(&mut self) {
        // All are signalled before any is waited for: they stop side by side, within
        // one grace period, as a deployment stopped at once would.
        for host in &self.hosts {
            host.terminate().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for host in &mut self.hosts {
            host.wait_stopped(deadline).await;
        }
    }

    /// Kills the hosts, drops the PostgreSQL database and deletes the temp dir; `keep`
    /// keeps the temp dir if a host was started in it.
    async fn cleanup(&mut self, keep: bool) {
        let keep = keep && !self.hosts.is_empty();
        for host in &mut self.hosts {
            if let Some(mut child) = host.child.take() {
                let _ = child.kill().await;
            }
        }
        self.drop_database().await;
        if keep {
            eprintln!("kept {} (server logs: host-*/server.log)", self.scratch.display());
        } else if let Err(err) = std::fs::remove_dir_all(&self.scratch)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("could not delete {}: {err}", self.scratch.display());
        }
    }

    /// Each host's CPU seconds so far; `None` if any is unknown.
    fn cpu_seconds(&self) -> Option<Vec<f64>> {
        self.hosts.iter().map(Host::cpu_seconds).collect()
    }

    /// Each host's peak RSS in MiB; `None` if any is unknown.
    fn peak_rss_mib(&self) -> Option<Vec<f64>> {
        self.hosts.iter().map(Host::peak_rss_mib).collect()
    }
}

/// One `switchyard serve` process of [`Spawned`], with a port, `host_id`, log and
/// module cache of its own (the last two in its own subdir of the temp dir).
#[derive(Debug)]
struct Host {
    index: u64,
    base_url: String,
    dir: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
}

impl Host {
    /// Starts host `index` on `database`; `modules`: a folder to deploy at start-up.
    fn spawn(
        binary: &Path,
        scratch: &Path,
        index: u64,
        database: &str,
        config: Option<&Path>,
        modules: Option<&Path>,
    ) -> anyhow::Result<Host> {
        let dir = scratch.join(format!("host-{index}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free port")?
            .port();
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(binary);
        command.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", database]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        if let Some(modules) = modules {
            command.arg("--modules").arg(modules);
        }
        let child = command
            .arg("--module-cache")
            .arg(dir.join("modules"))
            // Leases need a host_id per host; the environment's settings are TOML
            // values, hence the quotes.
            .env("SWITCHYARD_HOST_ID", format!("\"bench-{index}\""))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Host {
            index,
            base_url: format!("http://127.0.0.1:{port}"),
            dir,
            pid: child.id(),
            child: Some(child),
        })
    }

    /// Waits up to 60 s for `/healthz` to answer 200; fails early if the host exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        for _ in 0..600 {
            if let Ok(response) = client.get(format!("{}/healthz", self.base_url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("host {} exited with {status}; log:\n{}", self.index, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("host {} did not answer /healthz within 60 s; log:\n{}", self.index, self.log_tail())
    }

    async fn terminate(&self) {
        let (Some(pid), Some(_)) = (self.pid, &self.child) else { return };
        let signalled = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if !signalled.is_ok_and(|status| status.success()) {
            eprintln!("could not send SIGTERM to host {} ({pid})", self.index);
        }
    }

    async fn wait_stopped(&mut self, deadline: tokio::time::Instant) {
        let Some(child) = self.child.as_mut() else { return };
        if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
            eprintln!("host {} ({:?}) did not stop within 10 s of SIGTERM", self.index, self.pid);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// User plus system CPU time of the process so far.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = ProcStat::read(Path::new(&format!("/proc/{}", self.pid?)))?;
        Some(stat.ticks as f64 / clock_ticks_per_second())
    }

    /// The process's peak resident set (`VmHWM` in `/proc/<pid>/status`) in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
        let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    }
}

/// User plus system CPU time of every local process named `postgres` so far, and of
/// the children they have reaped, so that a backend exiting mid-phase still counts;
/// `None` if there is no such process (a PostgreSQL on another machine).
fn postgres_cpu_seconds() -> Option<f64> {
    let ticks = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| ProcStat::read(&entry.ok()?.path()))
        .filter(|stat| stat.comm == "postgres")
        .map(|stat| stat.ticks + stat.reaped_ticks)
        .reduce(|sum, ticks| sum + ticks)?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// What `/proc/<pid>/stat` says of a process: its name and CPU time in clock ticks.
struct ProcStat {
    comm: String,
    /// utime + stime.
    ticks: u64,
    /// cutime + cstime: children that have exited and been waited for.
    reaped_ticks: u64,
}

impl ProcStat {
    /// `None` for anything but a process's folder, or a process gone meanwhile.
    fn read(process: &Path) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(process.join("stat")).ok()?;
        // The name may hold spaces and parentheses: count fields after the last ')'.
        // There, field 3 (state) is index 0, so utime, stime, cutime, cstime (14–17)
        // are 11–14.
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let mut fields = tail.split_whitespace().skip(11).map(|field| field.parse::<u64>().ok());
        let mut next = || fields.next().flatten();
        let ticks = next()? + next()?;
        let reaped_ticks = next()? + next()?;
        Some(ProcStat { comm, ticks, reaped_ticks })
    }
}

/// `sysconf(_SC_CLK_TCK)` by way of `getconf`; 100 (Linux's USER_HZ) if that fails.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// `target/`, found from this executable's own path (`target/<profile>/switchyard-bench`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the bench executable has no path")?;
    exe.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the bench executable does not live in target/<profile>/")
}
