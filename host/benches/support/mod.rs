//! Shared by the benches: timing, an executor for guest calls, reading the module folder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The median of `rounds` runs.
pub fn median(rounds: usize, mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

/// `target/modules`, where `cargo xtask modules` puts the example definitions.
pub fn modules_folder() -> PathBuf {
    std::env::var_os("SWITCHYARD_EXAMPLE_MODULES")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/modules"), PathBuf::from)
}

/// A single-threaded executor: guest calls are futures, run here one at a time.
pub fn executor() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime")
}
