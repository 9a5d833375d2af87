//! Counters and gauges this process keeps about its work, read by `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct Metrics {
    long_polls_waiting: AtomicU64,
    transitions_recomputed: AtomicU64,
    guest_calls: AtomicU64,
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
    /// Transitions committed, and the batches they were committed in.
    pub commits: u64,
    pub commit_batches: u64,
    pub largest_commit_batch: u64,
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

    pub(super) fn guest_calls(&self) -> u64 {
        self.guest_calls.load(Ordering::Relaxed)
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
