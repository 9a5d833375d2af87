//! Counters and gauges this process keeps about its work, read by `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds, in microseconds, of the dispatch-delay histogram's buckets (one more,
/// unbounded, follows).
pub const DISPATCH_BUCKETS_US: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

#[derive(Debug, Default)]
pub(super) struct Metrics {
    long_polls_waiting: AtomicU64,
    transitions_recomputed: AtomicU64,
    guest_calls: AtomicU64,
    module_compiles: AtomicU64,
    artifact_loads: AtomicU64,
    artifacts_refused: AtomicU64,
    /// Tasks by dispatch delay: one count per bucket of [`DISPATCH_BUCKETS_US`], then
    /// the unbounded one.
    dispatch: [AtomicU64; DISPATCH_BUCKETS_US.len() + 1],
    dispatch_sum_us: AtomicU64,
}

/// The figures at one moment.
#[derive(Debug, Clone, Copy)]
pub struct MetricsSnapshot {
    /// Long-polls parked until their instance changes.
    pub long_polls_waiting: u64,
    /// Transitions computed again because another change of the instance committed
    /// first, or because this process's copy of the instance turned out stale.
    pub transitions_recomputed: u64,
    /// Calls into definition modules (failed ones included), manifests not counted.
    pub guest_calls: u64,
    /// Modules compiled: at deploy, and at first use on a host without their artifact.
    pub module_compiles: u64,
    /// Modules loaded from the artifact this host kept.
    pub artifact_loads: u64,
    /// Artifacts not loaded because their sha256 is not the one recorded when they
    /// were written.
    pub artifacts_refused: u64,
    /// What the compiled modules in memory, and the recent instances, are counted at.
    pub module_cache_bytes: u64,
    pub recent_instances_bytes: u64,
    /// Transitions committed, and the batches they were committed in.
    pub commits: u64,
    pub commit_batches: u64,
    pub largest_commit_batch: u64,
    /// Tasks by the delay from the commit that asked for them to their first attempt's
    /// start, per bucket of [`DISPATCH_BUCKETS_US`] (not cumulative), and its sum.
    pub dispatch: [u64; DISPATCH_BUCKETS_US.len() + 1],
    pub dispatch_sum_us: u64,
}

/// Counts one parked long-poll until dropped.
#[derive(Debug)]
pub(super) struct Waiting<'a>(&'a AtomicU64);

impl Metrics {
    pub(super) fn waiting(&self) -> Waiting<'_> {
        self.long_polls_waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.long_polls_waiting)
    }

    pub(super) fn recomputed(&self) {
        self.transitions_recomputed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn guest_called(&self) {
        self.guest_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn compiled(&self) {
        self.module_compiles.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn artifact_loaded(&self) {
        self.artifact_loads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn artifact_refused(&self) {
        self.artifacts_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn dispatched(&self, delay: std::time::Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let bucket = DISPATCH_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(DISPATCH_BUCKETS_US.len());
        self.dispatch[bucket].fetch_add(1, Ordering::Relaxed);
        self.dispatch_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub(super) fn dispatch(&self) -> ([u64; DISPATCH_BUCKETS_US.len() + 1], u64) {
        (
            self.dispatch.each_ref().map(|count| count.load(Ordering::Relaxed)),
            self.dispatch_sum_us.load(Ordering::Relaxed),
        )
    }

    pub(super) fn guest_calls(&self) -> u64 {
        self.guest_calls.load(Ordering::Relaxed)
    }

    /// Compiles, artifact loads and refused artifacts.
    pub(super) fn modules(&self) -> (u64, u64, u64) {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (count(&self.module_compiles), count(&self.artifact_loads), count(&self.artifacts_refused))
    }

    pub(super) fn long_polls_waiting(&self) -> u64 {
        self.long_polls_waiting.load(Ordering::Relaxed)
    }

    pub(super) fn transitions_recomputed(&self) -> u64 {
        self.transitions_recomputed.load(Ordering::Relaxed)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
