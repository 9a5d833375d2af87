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
//! # Usage
//!
//! ```sh
//! cargo build --release -p switchyard -p switchyard-bench && cargo xtask modules
//! # start a server of its own (SQLite in a fresh temp dir, or a fresh PostgreSQL database):
//! ./target/release/switchyard-bench --spawn sqlite
//! ./target/release/switchyard-bench --spawn postgres --postgres postgres://postgres@127.0.0.1:5432
//! # or load a server that is already running with document-processing deployed:
//! ./target/release/switchyard-bench --url http://127.0.0.1:8080 --concurrency 64
//! ```
//!
//! With `--spawn`, the server binary is `--server-bin`, else `$SWITCHYARD_BIN`, else
//! `target/release/switchyard` next to this executable's `target/`; the modules are
//! `--modules`, else `$SWITCHYARD_EXAMPLE_MODULES`, else `target/modules`. The server
//! log and database live in a temp dir that is deleted at the end unless `--keep` is
//! given or something failed.
//!
//! # Output
//!
//! Exactly one JSON line on stdout (progress goes to stderr): throughput, latency
//! percentiles per request kind, error counts and, with `--spawn`, the server's CPU
//! time during the measured phase, its peak RSS and how it batched commits (the
//! server is stopped with SIGTERM and logs those figures on its way out). The exit status is 1 if there
//! were errors or replay mismatches, and the line is printed anyway.

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
use workload::{Percentiles, Workload, round3};

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
    /// Keep the temp dir (server log, SQLite database) of --spawn.
    #[arg(long)]
    keep: bool,
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
    server_cpu_seconds: Option<f64>,
    server_peak_rss_mib: Option<f64>,
    /// How the spawned server batched its commits over the whole run, warm-up included
    /// (from the line it logs as it shuts down).
    group_commit: Option<GroupCommit>,
}

#[derive(Debug, Serialize)]
struct GroupCommit {
    commits: u64,
    batches: u64,
    mean_batch: f64,
    largest_batch: u64,
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

    let result = match args.spawn {
        None => {
            let url = args.url.clone().unwrap_or_else(|| DEFAULT_URL.into());
            bench(&args, &run_id, &url, None, &stop).await
        }
        Some(backend) => {
            let mut server = Spawned::new(&run_id);
            let result = match server.start(&args, backend).await {
                Ok(()) => {
                    let url = server.base_url.clone();
                    let mut result = bench(&args, &run_id, &url, Some(&server), &stop).await;
                    let group_commit = server.shut_down().await;
                    if let Ok(report) = &mut result {
                        report.group_commit = group_commit;
                    }
                    result
                }
                Err(err) => Err(err),
            };
            let failed =
                !matches!(&result, Ok(report) if report.errors == 0 && report.replay_mismatches == 0);
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
            if report.errors == 0 && report.replay_mismatches == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("switchyard-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the warmup and the measured phase against `url`.
async fn bench(
    args: &Args,
    run_id: &str,
    url: &str,
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
    let workload = Workload::new(client, url, run_id);
    workload.preflight().await?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);

    if args.warmup > 0 {
        eprintln!("warmup: {} instances at concurrency {} against {url}", args.warmup, args.concurrency);
        let warmup = workload.run(0, args.warmup, args.concurrency, deadline, stop).await;
        let failures = warmup.stats.errors + warmup.stats.replay_mismatches;
        if failures > 0 {
            eprintln!("warmup: {failures} errors (not counted)");
        }
    }

    eprintln!("measuring: {} instances at concurrency {}", args.instances, args.concurrency);
    let cpu_before = server.and_then(Spawned::cpu_seconds);
    let phase = workload.run(args.warmup, args.instances, args.concurrency, deadline, stop).await;
    let cpu_after = server.and_then(Spawned::cpu_seconds);
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
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(before, after)| round3(after - before)),
        server_peak_rss_mib: server.and_then(Spawned::peak_rss_mib).map(round3),
        group_commit: None,
    })
}

/// A `switchyard serve` process started by the bench, with its temp dir and database.
#[derive(Debug)]
struct Spawned {
    base_url: String,
    scratch: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
    run_id: String,
    /// The PostgreSQL server and the database created on it, to drop at the end.
    postgres: Option<(String, String)>,
}

impl Spawned {
    fn new(run_id: &str) -> Spawned {
        Spawned {
            base_url: String::new(),
            scratch: std::env::temp_dir().join(format!("switchyard-bench-{run_id}")),
            child: None,
            pid: None,
            run_id: run_id.to_owned(),
            postgres: None,
        }
    }

    /// Creates the temp dir and database, starts the server and waits for `/healthz`.
    async fn start(&mut self, args: &Args, backend: Backend) -> anyhow::Result<()> {
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

        let database = match backend {
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
                url
            }
            Backend::Sqlite => format!("sqlite://{}", self.scratch.join("bench.db").display()),
        };

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free port")?
            .port();
        self.base_url = format!("http://127.0.0.1:{port}");
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", &database])
            .arg("--modules")
            .arg(&modules)
            .arg("--module-cache")
            .arg(self.scratch.join("modules"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        eprintln!(
            "spawned {} ({backend:?}) on {}; log: {}",
            binary.display(),
            self.base_url,
            log_path.display()
        );

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
                bail!("the server exited with {status}; log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the server did not answer /healthz within 60 s; log:\n{}", self.log_tail())
    }

    /// Stops the server with SIGTERM, as an operator would, and reads the group-commit
    /// figures it logs on the way out; `None` if it does not stop within 10 s.
    async fn shut_down(&mut self) -> Option<GroupCommit> {
        let pid = self.pid?.to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().await.ok()?;
        let child = self.child.as_mut()?;
        if !signalled.success() || tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err()
        {
            return None;
        }
        let log = std::fs::read_to_string(self.log_path()).ok()?;
        let line = log.lines().rev().find(|line| line.contains("group commit"))?;
        let field = |name: &str| -> Option<u64> {
            let value =
                line.split_whitespace().find_map(|word| word.strip_prefix(name)?.strip_prefix('='))?;
            value.parse().ok()
        };
        let (commits, batches) = (field("commits")?, field("batches")?);
        let mean_batch = round3(commits as f64 / batches.max(1) as f64);
        Some(GroupCommit { commits, batches, mean_batch, largest_batch: field("largest_batch")? })
    }

    /// Kills the server, drops the PostgreSQL database and deletes the temp dir; `keep`
    /// keeps the temp dir if the server was started in it.
    async fn cleanup(&mut self, keep: bool) {
        let keep = keep && self.log_path().exists();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        if let Some((server, database)) = self.postgres.take() {
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
        if keep {
            eprintln!("kept {} (server log: {})", self.scratch.display(), self.log_path().display());
        } else if let Err(err) = std::fs::remove_dir_all(&self.scratch)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("could not delete {}: {err}", self.scratch.display());
        }
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// User plus system CPU time of the server so far, from `/proc/<pid>/stat`.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        // The command name may hold spaces and parentheses: count fields after the last ')'.
        // There, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / clock_ticks_per_second())
    }

    /// The server's peak resident set (`VmHWM` in `/proc/<pid>/status`) in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
        let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
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
