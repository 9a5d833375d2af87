//! Runs definition modules under wasmtime.
//!
//! One [`Runtime`] per process owns the `Engine` (pooling allocator, fuel, epochs). A
//! deployed module is validated and compiled once ([`Runtime::compile`], slow and
//! synchronous: `service` runs it on the blocking pool), then its manifest is read
//! ([`Runtime::declared`], a guest call) and checked ([`Runtime::load`], synchronous)
//! into a [`LoadedModule`], which holds an `InstancePre`. Every guest call gets a fresh
//! `Store` and instance, so a guest can never carry state from one call to the next,
//! and runs under a fuel budget, a wall-clock deadline and a memory cap.
//!
//! Guest calls are futures that yield every [`YIELD_EVERY`] units of fuel: a
//! transition (~2·10⁴ units) runs straight through on the caller's task without a
//! thread hand-off, while a guest that spins holds an executor thread for a couple of
//! milliseconds at a time at most.
//!
//! Invariant: pure. No database, HTTP or tokio here.

mod limits;
mod validate;

pub use limits::Limits;

use limits::{CallState, Malformed};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use switchyard_guest::abi::{self, Manifest};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
};

use crate::model::ModuleHash;

/// Linear memory a pool slot keeps mapped between calls. A transition dirties well
/// under this (the guest's stack and arena); a guest that dirties more has the rest
/// unmapped, so idle slots hold at most this much each.
const KEEP_RESIDENT: usize = 4 << 20;

/// Fuel between two yields of a running guest call (well under a millisecond of a
/// tight loop, more of ordinary code). Each
/// yield may wait behind other tasks, and that wait counts against the wall-clock
/// deadline: few yields keep a heavy but legitimate call clear of it under load.
const YIELD_EVERY: u64 = 1_000_000;

/// How often the epoch ticks; the wall-clock deadline is a whole number of ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a module was refused or a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("the guest ran out of fuel ({0} units)")]
    FuelExhausted(u64),
    #[error("the guest exceeded its wall-clock deadline of {0:?}")]
    Deadline(Duration),
    #[error("the guest exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("the guest trapped: {0}")]
    Trap(String),
    #[error("the guest returned a malformed response: {0}")]
    BadResponse(String),
    #[error("the runtime could not run the guest: {0}")]
    Host(String),
}

/// A compiled module whose shape passed the checks; its manifest is not read yet.
#[derive(Debug)]
pub struct Compiled {
    module: Module,
    sha256: ModuleHash,
}

/// A compiled module and the manifest it declared, not decoded or checked yet.
pub struct Declared {
    sha256: ModuleHash,
    instance_pre: InstancePre<CallState>,
    manifest: Vec<u8>,
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declared")
            .field("sha256", &self.sha256)
            .field("manifest_bytes", &self.manifest.len())
            .finish()
    }
}

/// A validated, compiled module with its manifest, ready to instantiate.
pub struct LoadedModule {
    pub sha256: ModuleHash,
    pub manifest: Manifest,
    instance_pre: InstancePre<CallState>,
}

impl LoadedModule {
    /// The size of the compiled code and data wasmtime keeps for the module.
    pub fn image_bytes(&self) -> usize {
        let image = self.instance_pre.module().image_range();
        (image.end as usize).saturating_sub(image.start as usize)
    }
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("sha256", &self.sha256)
            .field("name", &self.manifest.name)
            .finish()
    }
}

/// Which entry point to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Init,
    OnAction,
    OnEvent,
    /// From ABI version 2.
    OnOverride,
    Migrate,
}

impl Entry {
    fn export(self) -> &'static str {
        match self {
            Entry::Init => abi::exports::INIT,
            Entry::OnAction => abi::exports::ON_ACTION,
            Entry::OnEvent => abi::exports::ON_EVENT,
            Entry::OnOverride => abi::exports::ON_OVERRIDE,
            Entry::Migrate => abi::exports::MIGRATE,
        }
    }
}

/// A guest call's decoded response and the fuel it used.
#[derive(Debug)]
pub struct Called<T> {
    pub response: T,
    pub fuel_used: u64,
}

#[derive(Debug)]
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
}

impl Runtime {
    pub fn new(limits: Limits) -> Result<Self, Error> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.concurrent_calls)
            .total_memories(limits.concurrent_calls)
            .total_tables(limits.concurrent_calls)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(validate::MAX_TABLE_ELEMENTS)
            .max_memory_size(limits.memory_bytes)
            .total_stacks(limits.concurrent_calls)
            // Reset a slot by rewriting only the pages the last call dirtied (found with
            // Linux's PAGEMAP_SCAN) instead of unmapping them: a fresh instance then takes
            // no page faults, and no TLB shootdown interrupts the other cores.
            .linear_memory_keep_resident(limits.memory_bytes.min(KEEP_RESIDENT))
            .table_keep_resident(validate::MAX_TABLE_ELEMENTS * std::mem::size_of::<usize>())
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack_bytes)
            // Determinism: the same call on the same input gives the same result everywhere.
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            // Proposals rustc does not emit for wasm32-unknown-unknown stay off. Threads,
            // GC and exceptions are not even compiled in (see the wasmtime features).
            .wasm_gc(false)
            .wasm_stack_switching(false)
            .wasm_memory64(false)
            .wasm_multi_memory(false)
            .wasm_tail_call(false)
            .wasm_wide_arithmetic(false)
            .wasm_custom_page_sizes(false);
        let engine = Engine::new(&config).map_err(|err| Error::Host(err.to_string()))?;
        spawn_epoch_ticker(&engine);
        Ok(Runtime { linker: Linker::new(&engine), engine, limits })
    }

    /// Validates and compiles `wasm`: CPU-heavy, for a blocking thread.
    ///
    /// Refuses modules that import anything, lack an export or have the wrong
    /// signature, or declare too much memory.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, Error> {
        if wasm.len() > self.limits.module_bytes {
            return Err(Error::InvalidModule(format!(
                "the module is {} bytes; the limit is {}",
                wasm.len(),
                self.limits.module_bytes
            )));
        }
        let module = Module::new(&self.engine, wasm)
            .map_err(|err| Error::InvalidModule(format!("not a valid WebAssembly module: {err}")))?;
        self.checked(module, ModuleHash::of(wasm))
    }

    /// A module compiled earlier by [`Runtime::artifact`], without compiling again.
    ///
    /// # Safety
    /// `artifact` must be bytes that [`Runtime::artifact`] of this program produced.
    /// Wasmtime checks that the engine configuration matches, but it cannot check
    /// that the machine code is its own.
    pub unsafe fn deserialize(&self, artifact: &[u8], sha256: ModuleHash) -> Result<Compiled, Error> {
        // SAFETY: the caller guarantees these bytes came from `Module::serialize` here.
        let module = unsafe { Module::deserialize(&self.engine, artifact) }
            .map_err(|err| Error::InvalidModule(format!("the compiled artifact does not load: {err}")))?;
        self.checked(module, sha256)
    }

    /// The compiled form of `module`, to keep for [`Runtime::deserialize`].
    pub fn artifact(&self, module: &LoadedModule) -> Result<Vec<u8>, Error> {
        module.instance_pre.module().serialize().map_err(|err| Error::Host(err.to_string()))
    }

    /// Names the engine configuration artifacts are valid for: files of another
    /// configuration are not even read.
    pub fn artifact_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn checked(&self, module: Module, sha256: ModuleHash) -> Result<Compiled, Error> {
        validate::module_shape(&module, &self.limits)?;
        Ok(Compiled { module, sha256 })
    }

    /// Calls a compiled module's `switchyard_manifest`, under the limits of any guest
    /// call, and keeps what it answers for [`Runtime::load`].
    pub async fn declared(&self, compiled: Compiled) -> Result<Declared, Error> {
        let Compiled { module, sha256 } = compiled;
        let instance_pre =
            self.linker.instantiate_pre(&module).map_err(|err| Error::InvalidModule(err.to_string()))?;
        let manifest = self.call_raw(&instance_pre, abi::exports::MANIFEST, None).await?.response;
        Ok(Declared { sha256, instance_pre, manifest })
    }

    /// Decodes and validates the manifest a module declared: linear in its size, which
    /// is capped, but for a blocking thread all the same.
    ///
    /// Refuses modules whose manifest is too large, does not decode or validate, or
    /// that speak another ABI version.
    pub fn load(&self, declared: Declared) -> Result<LoadedModule, Error> {
        let Declared { sha256, instance_pre, manifest: manifest_bytes } = declared;
        if manifest_bytes.len() > abi::MAX_MANIFEST_BYTES {
            return Err(Error::InvalidModule(abi::ManifestError::TooLarge(manifest_bytes.len()).to_string()));
        }
        // `abi` is the manifest's first field: read it alone, so that a module built for
        // another ABI is named as such instead of failing to decode.
        let (abi, _) = postcard::take_from_bytes::<u32>(&manifest_bytes)
            .map_err(|err| Error::InvalidModule(format!("the manifest does not decode: {err}")))?;
        if !abi::SUPPORTED_ABI_VERSIONS.contains(&abi) {
            return Err(Error::InvalidModule(format!(
                "the module speaks ABI version {abi}; this host speaks versions {:?}",
                abi::SUPPORTED_ABI_VERSIONS
            )));
        }
        // Every version so far encodes the manifest alike.
        let manifest: Manifest = postcard::from_bytes(&manifest_bytes)
            .map_err(|err| Error::InvalidModule(format!("the manifest does not decode: {err}")))?;
        manifest.validate().map_err(|err| Error::InvalidModule(err.to_string()))?;
        if abi >= 2 {
            validate::entry_point(instance_pre.module(), abi::exports::ON_OVERRIDE)?;
        }
        Ok(LoadedModule { sha256, manifest, instance_pre })
    }

    /// Calls `entry` in a fresh instance of `module` with `request`, decoding the response.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        module: &LoadedModule,
        entry: Entry,
        request: &Req,
    ) -> Result<Called<Resp>, Error> {
        let request = postcard::to_allocvec(request).map_err(|err| Error::Host(err.to_string()))?;
        let called = self.call_raw(&module.instance_pre, entry.export(), Some(&request)).await?;
        let response = postcard::from_bytes(&called.response).map_err(|err| {
            Error::BadResponse(format!("{} response does not decode: {err}", entry.export()))
        })?;
        Ok(Called { response, fuel_used: called.fuel_used })
    }

    /// One call in a fresh store: write `request` (if any) into guest memory, call
    /// `export`, copy the response out.
    async fn call_raw(
        &self,
        instance_pre: &InstancePre<CallState>,
        export: &str,
        request: Option<&[u8]>,
    ) -> Result<Called<Vec<u8>>, Error> {
        let mut store = limits::store(&self.engine, &self.limits, YIELD_EVERY)?;
        let result = async {
            let instance = instance_pre.instantiate_async(&mut store).await?;
            let memory = instance
                .get_memory(&mut store, abi::exports::MEMORY)
                .ok_or_else(|| wasmtime::format_err!("no memory export"))?;
            let packed = match request {
                None => {
                    let entry = instance.get_typed_func::<(), i64>(&mut store, export)?;
                    entry.call_async(&mut store, ()).await?
                }
                Some(request) => {
                    let len = i32::try_from(request.len())?;
                    let alloc = instance.get_typed_func::<i32, i32>(&mut store, abi::exports::ALLOC)?;
                    let ptr = alloc.call_async(&mut store, len).await?;
                    if ptr == 0 {
                        let reason = format!("switchyard_alloc could not allocate {len} bytes");
                        return Err(Malformed(reason).into());
                    }
                    memory
                        .write(&mut store, ptr as u32 as usize, request)
                        .map_err(|_| Malformed("switchyard_alloc returned an unusable block".into()))?;
                    let entry = instance.get_typed_func::<(i32, i32), i64>(&mut store, export)?;
                    entry.call_async(&mut store, (ptr, len)).await?
                }
            };
            let (ptr, len) = abi::unpack(packed);
            if len as usize > self.limits.response_bytes {
                let limit = self.limits.response_bytes;
                return Err(Malformed(format!("the response is {len} bytes; the limit is {limit}")).into());
            }
            let start = ptr as usize;
            memory
                .data(&store)
                .get(start..start + len as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Malformed("the response lies outside guest memory".into()).into())
        }
        .await;
        let fuel_used = self.limits.fuel_per_call - store.get_fuel().unwrap_or(0);
        match result {
            Ok(response) => Ok(Called { response, fuel_used }),
            Err(err) => Err(limits::classify(err, &store, &self.limits)),
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(
            |err| tracing::error!(%err, "cannot start the epoch ticker; guest deadlines rely on fuel alone"),
        );
}

#[cfg(test)]
mod tests;
