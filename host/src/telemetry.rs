//! What the process tells about its work: Prometheus metrics and the log format.
//!
//! Every metric's name is a constant here, described once in [`describe`]; the code
//! that does the work records through the `metrics` facade, which costs an atomic add
//! when a recorder is installed and nothing otherwise. `GET /metrics` renders them.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const HTTP_REQUESTS: &str = "switchyard_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "switchyard_http_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "switchyard_requests_in_flight";
pub const TRANSITIONS: &str = "switchyard_transitions_total";
pub const TRANSITIONS_RECOMPUTED: &str = "switchyard_transitions_recomputed_total";
pub const GUEST_CALLS: &str = "switchyard_guest_calls_total";
pub const GUEST_CALL_FUEL: &str = "switchyard_guest_call_fuel";
pub const GUEST_CALL_SECONDS: &str = "switchyard_guest_call_duration_seconds";
pub const COMMITS: &str = "switchyard_commits_total";
pub const COMMIT_BATCH_SIZE: &str = "switchyard_commit_batch_size";
pub const COMMIT_SECONDS: &str = "switchyard_commit_duration_seconds";
pub const IDEMPOTENCY_REPLAYS: &str = "switchyard_idempotency_replays_total";
pub const EFFECTS: &str = "switchyard_effects_total";
pub const EFFECT_ATTEMPTS: &str = "switchyard_effect_attempts_total";
pub const OUTBOX_DEPTH: &str = "switchyard_outbox_depth";
pub const OUTBOX_OLDEST_SECONDS: &str = "switchyard_outbox_oldest_age_seconds";
pub const TASK_DISPATCH_SECONDS: &str = "switchyard_task_dispatch_seconds";
pub const LONG_POLLS_WAITING: &str = "switchyard_long_polls_waiting";
pub const NOTIFICATIONS_SENT: &str = "switchyard_notifications_sent_total";
pub const NOTIFICATIONS_RECEIVED: &str = "switchyard_notifications_received_total";
pub const MODULE_CACHE_HITS: &str = "switchyard_module_cache_hits_total";
pub const MODULE_COMPILES: &str = "switchyard_module_compiles_total";
pub const MODULE_ARTIFACT_LOADS: &str = "switchyard_module_artifact_loads_total";
pub const MODULE_ARTIFACTS_REFUSED: &str = "switchyard_module_artifacts_refused_total";
pub const MODULE_CACHE_BYTES: &str = "switchyard_module_cache_bytes";
pub const RECENT_INSTANCES_BYTES: &str = "switchyard_recent_instances_bytes";

/// Bucket bounds of the latency histograms, in seconds: 100 µs to 30 s.
const SECONDS_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// The recorder's handle, installed as the process's recorder by the first call; a
/// later server in the same process shares it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let fuel = [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
        let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        let builder = [
            (HTTP_REQUEST_SECONDS, &SECONDS_BUCKETS[..]),
            (GUEST_CALL_SECONDS, &SECONDS_BUCKETS),
            (COMMIT_SECONDS, &SECONDS_BUCKETS),
            (TASK_DISPATCH_SECONDS, &SECONDS_BUCKETS),
            (GUEST_CALL_FUEL, &fuel),
            (COMMIT_BATCH_SIZE, &batch),
        ]
        .into_iter()
        .fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
            // Only an empty list of buckets is refused, and none of these is empty.
            builder
                .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                .unwrap_or_else(|_| unreachable!())
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics shows none of these");
        }
        describe();
        handle
    })
}

/// Help texts, which the exposition prints once per metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route pattern and status.");
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer a request, by method and route."
    );
    describe_gauge!(REQUESTS_IN_FLIGHT, "Requests on /v1/ being served, long-polls not counted.");
    describe_counter!(
        TRANSITIONS,
        "Transitions tried, by definition, version, trigger (start, action, event, effect, admin, \
         migration) and outcome (committed, rejected, definition_failed, refused)."
    );
    describe_counter!(
        TRANSITIONS_RECOMPUTED,
        "Transitions computed again because the instance changed meanwhile."
    );
    describe_counter!(GUEST_CALLS, "Calls into definition modules, failed ones included.");
    describe_histogram!(GUEST_CALL_FUEL, "Fuel a guest call used, for calls that returned.");
    describe_histogram!(GUEST_CALL_SECONDS, Unit::Seconds, "Wall time of guest calls, failed ones included.");
    describe_counter!(
        COMMITS,
        "Transitions written in batches, a revision conflict refused in its batch included."
    );
    describe_histogram!(COMMIT_BATCH_SIZE, "Transitions per committed transaction (group commit).");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Time to write and make durable one batch.");
    describe_counter!(
        IDEMPOTENCY_REPLAYS,
        "Requests answered with the response kept under their Idempotency-Key."
    );
    describe_counter!(
        EFFECTS,
        "Effects this host finished working on, by kind and outcome (the event delivered, or \
         the callback's end)."
    );
    describe_counter!(EFFECT_ATTEMPTS, "Attempts at tasks and callbacks, by kind.");
    describe_gauge!(OUTBOX_DEPTH, "Effects not closed yet, in the whole database.");
    describe_gauge!(OUTBOX_OLDEST_SECONDS, Unit::Seconds, "Age of the oldest effect not closed yet.");
    describe_histogram!(
        TASK_DISPATCH_SECONDS,
        Unit::Seconds,
        "From the commit that asked for a task to its first attempt, for tasks handed over in memory."
    );
    describe_gauge!(LONG_POLLS_WAITING, "Long-polls parked until their instance changes.");
    describe_counter!(
        NOTIFICATIONS_SENT,
        "Notifications (PostgreSQL NOTIFY) sent to tell other hosts of this host's commits."
    );
    describe_counter!(
        NOTIFICATIONS_RECEIVED,
        "Notifications of other hosts' commits received (this host's own not counted)."
    );
    describe_counter!(MODULE_CACHE_HITS, "Modules found compiled in memory.");
    describe_counter!(
        MODULE_COMPILES,
        "Modules compiled: at deploy, and at first use without a kept artifact."
    );
    describe_counter!(MODULE_ARTIFACT_LOADS, "Modules loaded from their kept artifact.");
    describe_counter!(
        MODULE_ARTIFACTS_REFUSED,
        "Artifacts not loaded: their sha256 is not the one recorded when they were written."
    );
    describe_gauge!(MODULE_CACHE_BYTES, Unit::Bytes, "What the compiled modules in memory are counted at.");
    describe_gauge!(
        RECENT_INSTANCES_BYTES,
        Unit::Bytes,
        "What the copies of recently committed instances are counted at."
    );
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line each, the request's span as a prefix.
    Text,
    /// One JSON object a line, the request's span fields in `span`.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default: info, sqlx's warnings).
/// Lines are formatted by the code that logs them and written by a thread of their
/// own, so that a request's line costs no write to stderr; should that thread fall
/// behind, loggers wait rather than lose lines. What is queued is written when the
/// returned guard drops: hold it until the process ends.
pub fn init_logs(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    // Colours for a terminal only: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    guard
}

/// Counts one of something in gauge `name` until dropped (a parked long-poll, say).
#[derive(Debug)]
pub struct Counted(&'static str);

impl Counted {
    pub fn new(name: &'static str) -> Counted {
        metrics::gauge!(name).increment(1.0);
        Counted(name)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
