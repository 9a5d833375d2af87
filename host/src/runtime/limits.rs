//! What a guest may use, and how running out of it is reported.

use super::{EPOCH_TICK, Error};
use std::time::Duration;
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

/// Bounds on modules and guest calls.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel per call. A docflow transition uses about 2·10⁴ units, so the default of
    /// 5·10⁷ leaves a wide margin while stopping a tight runaway loop within a few
    /// milliseconds (such a loop burns ~10¹⁰ units a second here).
    pub fuel_per_call: u64,
    /// Wall-clock backstop for a call, in case fuel accounting is not enough.
    pub deadline: Duration,
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Native stack for guest code; bounds recursion.
    pub stack_bytes: usize,
    /// Largest module accepted at deploy.
    pub module_bytes: usize,
    /// Largest response a guest may return.
    pub response_bytes: usize,
    /// Pool slots: guest calls that may run at the same moment.
    pub concurrent_calls: u32,
    /// Compiles that may run at the same moment (`service` keeps to it); one may take
    /// every core, since wasmtime compiles a module's functions in parallel.
    pub concurrent_compiles: u32,
    /// How long compiling a module being deployed may take before the deploy is
    /// refused (`service` keeps to it). The compile itself cannot be stopped: it runs
    /// on, holding its compile slot, until it ends.
    pub compile_timeout: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        fuel_per_call: 50_000_000,
        deadline: Duration::from_secs(1),
        memory_bytes: 32 << 20,
        stack_bytes: 512 << 10,
        module_bytes: 8 << 20,
        response_bytes: 4 << 20,
        concurrent_calls: 32,
        concurrent_compiles: 2,
        compile_timeout: Duration::from_secs(30),
    };
}

/// The host state of one call's store.
#[derive(Debug)]
pub(super) struct CallState {
    memory_bytes: usize,
    /// Set when the guest asked for more memory than allowed.
    hit_memory_limit: bool,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.hit_memory_limit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= super::validate::MAX_TABLE_ELEMENTS)
    }
}

pub(super) fn store(engine: &Engine, limits: &Limits, yield_every: u64) -> Result<Store<CallState>, Error> {
    let mut store =
        Store::new(engine, CallState { memory_bytes: limits.memory_bytes, hit_memory_limit: false });
    store.limiter(|state| state);
    let host = |err: wasmtime::Error| Error::Host(err.to_string());
    store.set_fuel(limits.fuel_per_call).map_err(host)?;
    store.fuel_async_yield_interval(Some(yield_every)).map_err(host)?;
    let ticks = limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    Ok(store)
}

/// A block or response the guest placed or sized wrongly: its fault, unlike every other
/// failure around a call that is not a trap (such as a pool with no free slot).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Malformed(pub(super) String);

/// Names what went wrong in a failed call.
pub(super) fn classify(err: wasmtime::Error, store: &Store<CallState>, limits: &Limits) -> Error {
    if store.data().hit_memory_limit {
        return Error::MemoryLimit(limits.memory_bytes);
    }
    if let Some(Malformed(reason)) = err.downcast_ref::<Malformed>() {
        return Error::BadResponse(reason.clone());
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Error::FuelExhausted(limits.fuel_per_call),
        Some(Trap::Interrupt) => Error::Deadline(limits.deadline),
        Some(trap) => Error::Trap(trap.to_string()),
        None => Error::Host(err.to_string()),
    }
}
