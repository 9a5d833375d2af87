//! The use cases: deploy a definition, start an instance, run an action, read state.
//!
//! Invariant: this is the only layer that runs a guest and writes what it returned; a
//! guest's outcome is checked against the manifest before anything is committed, and
//! state, history and idempotency record commit together.

mod changes;
mod definitions;
mod engine;
mod instances;
mod leases;
mod lifecycle;
mod locks;
mod lru;
mod modules;
mod other_hosts;
mod posted;
mod recent;
mod results;

pub use definitions::{DefinitionSummary, Deployed, VersionSummary};
pub use instances::{ActRequest, Idempotent, InstanceView, StartRequest};
pub use leases::{Leases, under_lease};
pub use lifecycle::{BulkMigration, MigrateInstance, MigrationPace, Override};
pub use other_hosts::FeedWritten;
pub use posted::{Posted, Retried};
pub use results::{Delivered, Diagnostics, Reported, TaskReport, kept_event};

use crate::model::{IdempotencyKey, IdempotencyRecord, Instance, ModuleHash, StoredResponse, Timestamp};
use crate::runtime::{self, Called, Compiled, Entry, LoadedModule, Runtime};
use crate::store::{self, Store};
use crate::telemetry;
use changes::Changes;
use lru::Lru;
use modules::ModuleCache;
use recent::RecentInstances;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use switchyard_guest::abi::{Manifest, OutcomeError};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Why a use case did not happen. The API maps each variant to one status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    InvalidModule(String),
    #[error("{name} version {version} is deployed already with other bytes (sha256 {sha256})")]
    VersionConflict { name: String, version: u32, sha256: String },
    #[error("no definition named {0:?} is deployed")]
    DefinitionNotFound(String),
    #[error("{name} has no version {version}")]
    VersionNotFound { name: String, version: u32 },
    #[error("{name} version {version} is retired: it takes no new instances")]
    VersionRetired { name: String, version: u32 },
    #[error("the version was retired or deleted meanwhile: it takes no new instances")]
    VersionGone,
    #[error("{name} version {version} is pinned for new instances; pin another version first")]
    VersionPinned { name: String, version: u32 },
    #[error("{name} version {version} is not retired; retire it before deleting it")]
    VersionNotRetired { name: String, version: u32 },
    #[error("{name} version {version} still has {running} running instances")]
    VersionInUse { name: String, version: u32, running: i64 },
    #[error("cannot migrate from version {from_version} to {to_version}: {reason}")]
    NoMigrationPath { from_version: u32, to_version: u32, reason: String },
    #[error("no instance {0}")]
    InstanceNotFound(String),
    #[error("no migration {0}")]
    MigrationNotFound(String),
    #[error("{definition} version {version} has no action {action:?}")]
    UnknownAction { definition: String, version: u32, action: String },
    #[error("action {action:?} is not allowed in state {current_state}")]
    NotAllowed { action: String, current_state: String, allowed_actions: Vec<String> },
    #[error("the instance is at revision {}, not the one given in If-Match", current.0)]
    PreconditionFailed { current: crate::model::Revision },
    #[error("{reason}")]
    Rejected { code: String, reason: String },
    #[error("the definition failed: {0}")]
    Guest(#[from] runtime::Error),
    #[error("the definition failed: {0}")]
    BadOutcome(#[from] OutcomeError),
    #[error("the definition asked for effects it may not: {0}")]
    BadEffects(switchyard_guest::abi::EffectError),
    #[error("instance {0} is finished: it takes no more events")]
    Finished(String),
    #[error("the effect was closed already: its result was delivered, or it was cancelled")]
    EffectClosed,
    #[error("the event was received already")]
    EventDuplicate,
    #[error("{0}")]
    BadEvent(String),
    #[error("{0}")]
    BadCallback(String),
    #[error("no task {0}")]
    TaskNotFound(String),
    #[error("task {0} was reported with another result already")]
    ReportConflict(String),
    #[error("this needs the {} role; the caller's is {}", .0.required.as_str(), .0.role.as_str())]
    Forbidden(crate::model::Forbidden),
    #[error("the instance is changing too fast; retry")]
    Contention,
    #[error("this idempotency key was used by a concurrent request that finished first")]
    KeyTaken,
    #[error("storage failed")]
    Store(#[source] store::Error),
    /// The database's passing trouble outlasted the retries: nothing was written.
    #[error("the database is unavailable; retry")]
    StoreUnavailable(#[source] store::Error),
    /// The connection was lost as the change was committed: it may have been.
    #[error("the change may or may not have been made: the database was lost as it committed")]
    OutcomeUnknown(#[source] store::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::model::Forbidden> for Error {
    fn from(forbidden: crate::model::Forbidden) -> Self {
        Error::Forbidden(forbidden)
    }
}

impl From<store::Error> for Error {
    fn from(err: store::Error) -> Self {
        match err {
            store::Error::KeyTaken => Error::KeyTaken,
            store::Error::VersionGone => Error::VersionGone,
            other if other.is_unavailable() => Error::StoreUnavailable(other),
            other if other.is_unconfirmed() => Error::OutcomeUnknown(other),
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// Whether the host failed (storage, or a fault of its own), not the request or
    /// the definition: work that meets one stops, to be taken up again.
    pub fn is_host_fault(&self) -> bool {
        matches!(
            self,
            Error::Store(_) | Error::StoreUnavailable(_) | Error::OutcomeUnknown(_) | Error::Internal(_)
        )
    }

    /// Whether a guest call failed for the runtime's own reasons (wasmtime could not
    /// run it), not for the definition's.
    pub fn is_runtime_fault(&self) -> bool {
        matches!(self, Error::Guest(runtime::Error::Host(_) | runtime::Error::InvalidModule(_)))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How often a change is recomputed when other changes of the same instance keep
/// committing first.
const MAX_ATTEMPTS: usize = 16;

/// Manifests kept in memory, counted as [`modules::manifest_bytes`] does: thousands
/// of ordinary ones, and more than a hundred of the largest a module may declare.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

/// Settings of the service layer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: runtime::Limits,
    /// How long a response stays replayable under its idempotency key.
    pub idempotency_retention: Duration,
    pub caches: CacheBudgets,
    /// Where compiled modules are kept across restarts; `None` keeps them nowhere.
    pub module_cache: Option<std::path::PathBuf>,
    pub migration_pace: MigrationPace,
    pub callbacks: CallbackPolicy,
    /// Whom effects this process commits are leased to, and for how long: they are
    /// handed to this process's executor at once, not found by its next look.
    pub leases: Leases,
    /// How often a long-poll reads its instance again, for changes of other hosts
    /// that no notification announced (on a database other hosts share).
    pub long_poll_recheck: Duration,
}

/// The memory this process's caches may use, in bytes as each counts them.
#[derive(Debug, Clone, Copy)]
pub struct CacheBudgets {
    /// Compiled modules, each counted at its compiled image and manifest.
    pub modules: usize,
    /// The copies of instances this process committed last, each counted at its text
    /// (its data above all).
    pub recent_instances: usize,
}

/// What the service needs to know of terminal callbacks.
#[derive(Debug, Clone, Copy)]
pub struct CallbackPolicy {
    /// Whether a secret to sign them with is configured: without one, no
    /// `callback_url` is taken.
    pub signed: bool,
    /// Whether a `callback_url` may name a loopback, private or link-local address.
    pub allow_private: bool,
    /// The body a callback carries: the instance as `GET /v1/instances/{id}` shows it
    /// (the API's to render).
    pub render: fn(&InstanceView) -> Vec<u8>,
}

/// An effect due at once that this process committed, leased to it, and when the
/// commit was acknowledged.
pub type HandedOver = (crate::model::Effect, std::time::Instant);

#[derive(Debug)]
pub struct Service {
    store: Store,
    runtime: Arc<Runtime>,
    /// Guest calls in flight; sized to the runtime's pool so instantiation never
    /// fails for want of a slot.
    guest_calls: Semaphore,
    /// Compiles in flight: each may take every core for a long while (wasmtime
    /// compiles a module's functions in parallel), so few run at once.
    compiles: Arc<Semaphore>,
    compile_timeout: Duration,
    /// Manifests by their module's sha256.
    manifests: Lru<ModuleHash, Arc<Manifest>>,
    modules: ModuleCache,
    /// Names the engine configuration artifacts are compiled under.
    artifact_key: String,
    changes: Changes,
    /// Woken after a commit that wrote effects due later (or a child's end), so that
    /// the executor looks at the outbox again.
    outbox: tokio::sync::Notify,
    /// Changes each time another host was heard to commit: feed streams read on.
    feed_elsewhere: tokio::sync::watch::Sender<u64>,
    /// See [`Settings::long_poll_recheck`].
    long_poll_recheck: Duration,
    /// Effects due now that this process committed, leased to it, for its executor.
    handover: tokio::sync::mpsc::UnboundedSender<HandedOver>,
    handed_over: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<HandedOver>>>,
    leases: Leases,
    locks: locks::InstanceLocks,
    recent: RecentInstances,
    idempotency_retention: Duration,
    migration_pace: MigrationPace,
    callbacks: CallbackPolicy,
}

impl Service {
    pub fn new(store: Store, settings: Settings) -> Result<Service> {
        let guest_calls = Semaphore::new(settings.limits.concurrent_calls as usize);
        let compiles = Arc::new(Semaphore::new(settings.limits.concurrent_compiles as usize));
        let compile_timeout = settings.limits.compile_timeout;
        let (handover, handed_over) = tokio::sync::mpsc::unbounded_channel();
        let runtime = Runtime::new(settings.limits)?;
        Ok(Service {
            handover,
            handed_over: std::sync::Mutex::new(Some(handed_over)),
            leases: settings.leases,
            store,
            artifact_key: runtime.artifact_key(),
            runtime: Arc::new(runtime),
            guest_calls,
            compiles,
            compile_timeout,
            manifests: Lru::new(MANIFEST_CACHE_BYTES),
            modules: ModuleCache::new(settings.caches.modules, settings.module_cache),
            changes: Changes::default(),
            outbox: tokio::sync::Notify::new(),
            feed_elsewhere: tokio::sync::watch::Sender::new(0),
            long_poll_recheck: settings.long_poll_recheck,
            locks: Default::default(),
            recent: RecentInstances::new(settings.caches.recent_instances),
            idempotency_retention: settings.idempotency_retention,
            migration_pace: settings.migration_pace,
            callbacks: settings.callbacks,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves once a commit wrote effects since the last call (or now, if one did).
    pub async fn outbox_written(&self) {
        self.outbox.notified().await;
    }

    /// The effects this process commits that are due at once, leased to it: for the one
    /// executor of the process, which takes them once.
    pub fn take_handover(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<HandedOver>> {
        self.handed_over.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// A task's first attempt starts `delay` after the commit that asked for it.
    pub fn task_dispatched(&self, delay: std::time::Duration) {
        metrics::histogram!(telemetry::TASK_DISPATCH_SECONDS).record(delay);
    }

    /// Whether this process can serve: see [`Store::ready`].
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ready().await?)
    }

    /// Sets the gauges that are read rather than counted: memory of the caches, and
    /// the outbox (from the database, so every host tells of all of it).
    pub async fn sample_gauges(&self) -> Result<()> {
        metrics::gauge!(telemetry::MODULE_CACHE_BYTES).set(self.modules.bytes() as f64);
        metrics::gauge!(telemetry::RECENT_INSTANCES_BYTES).set(self.recent.bytes() as f64);
        let now = Timestamp::now();
        let (open, oldest_due) = self.store.outbox_summary(now).await?;
        metrics::gauge!(telemetry::OUTBOX_DEPTH).set(open as f64);
        let overdue_ms = oldest_due.map_or(0, |due| now.0.saturating_sub(due.0));
        metrics::gauge!(telemetry::OUTBOX_OLDEST_SECONDS).set(overdue_ms as f64 / 1000.0);
        Ok(())
    }

    /// The live records whose scope starts with one of `prefixes`, or that are `exact`.
    pub async fn idempotency_records_under(
        &self,
        prefixes: &[String],
        exact: Option<&IdempotencyKey>,
    ) -> Result<Vec<IdempotencyRecord>> {
        Ok(self.store.idempotency_records_under(prefixes, exact, self.idempotency_cutoff()).await?)
    }

    /// The response kept under `key`, if it is still within retention.
    pub async fn idempotency_record(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>> {
        Ok(self.store.idempotency_record(key, self.idempotency_cutoff()).await?)
    }

    /// Keeps `response` under `key` for a request that was not a transition.
    pub async fn remember(
        &self,
        key: IdempotencyKey,
        fingerprint: String,
        response: StoredResponse,
    ) -> Result<()> {
        let record = IdempotencyRecord { key, fingerprint, response, created_at: Timestamp::now() };
        match self.store.insert_idempotency_record(&record, self.idempotency_cutoff()).await {
            Err(store::Error::Duplicate) => Err(Error::KeyTaken),
            other => Ok(other?),
        }
    }

    /// Keeps `value`'s response under `idempotent`'s key, for an operation that
    /// succeeded without writing anything (so nothing can be done twice).
    async fn keep_response<T>(&self, idempotent: Option<&Idempotent<'_, T>>, value: &T) -> Result<()> {
        let Some(idempotent) = idempotent else { return Ok(()) };
        let response = (idempotent.render)(value);
        self.remember(idempotent.key.clone(), idempotent.fingerprint.clone(), response).await
    }

    /// `record` as an operation keeps it in its own transaction.
    fn keyed<'r>(&self, record: Option<&'r IdempotencyRecord>) -> Option<store::Keyed<'r>> {
        record.map(|record| store::Keyed { record, expired_before: self.idempotency_cutoff() })
    }

    /// Deletes idempotency records past retention; returns how many.
    pub async fn sweep_idempotency_records(&self) -> Result<u64> {
        Ok(self.store.delete_idempotency_records(self.idempotency_cutoff()).await?)
    }

    pub(super) fn idempotency_cutoff(&self) -> Timestamp {
        let retention = i64::try_from(self.idempotency_retention.as_millis()).unwrap_or(i64::MAX);
        Timestamp(Timestamp::now().0.saturating_sub(retention))
    }

    /// The manifest of the module `instance` runs.
    async fn manifest_of(&self, instance: &Instance) -> Result<Arc<Manifest>> {
        let sha256 = &instance.module_sha256;
        if let Some(manifest) = self.manifests.get(sha256) {
            return Ok(manifest);
        }
        let stored = self.store.definition_version_with_hash(sha256).await?.ok_or_else(|| {
            Error::VersionNotFound { name: instance.definition.clone(), version: instance.definition_version }
        })?;
        let bytes = modules::manifest_bytes(&stored.manifest);
        Ok(self.manifests.insert(sha256.clone(), Arc::new(stored.manifest), bytes))
    }

    /// The compiled module `instance` runs.
    async fn module_of(&self, instance: &Instance) -> Result<Arc<LoadedModule>> {
        self.module(&instance.definition, instance.definition_version, &instance.module_sha256).await
    }

    /// The compiled module `sha256` of `name` at `version`: from memory, else from its
    /// artifact on disk, else compiled (and its artifact kept). Tasks that need it at
    /// the same moment wait for one load.
    async fn module(&self, name: &str, version: u32, sha256: &ModuleHash) -> Result<Arc<LoadedModule>> {
        self.modules
            .get_or_load(sha256, || async {
                if let Some(module) = self.load_artifact(sha256).await {
                    return Ok(module);
                }
                let wasm = self
                    .store
                    .module_with_hash(sha256)
                    .await?
                    .ok_or_else(|| Error::VersionNotFound { name: name.into(), version })?;
                let compiled = self.start_compile(wasm.into()).await?.await;
                let module = module_error(self.read_manifest(compiled.map_err(internal)?).await?)?;
                self.keep_artifact(&module).await;
                Ok(module)
            })
            .await
    }

    /// The module `sha256` from the artifact this host kept, if there is one, its
    /// sha256 is the one recorded when it was written, and it loads. Anything else
    /// costs a compile, no more: a file changed on disk is never loaded as native code.
    async fn load_artifact(&self, sha256: &ModuleHash) -> Option<LoadedModule> {
        let path = self.modules.artifact_path(sha256, &self.artifact_key)?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        let recorded = match self.store.artifact_hash(sha256, &self.artifact_key).await {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::warn!(%err, "recompiling: the artifact's recorded sha256 cannot be read");
                return None;
            }
        };
        let (bytes, actual) = hashed(bytes).await.ok()?;
        if recorded.as_ref() != Some(&actual) {
            metrics::counter!(telemetry::MODULE_ARTIFACTS_REFUSED).increment(1);
            tracing::warn!(
                path = %path.display(),
                %actual,
                recorded = ?recorded.map(|recorded| recorded.0),
                "recompiling: refusing the artifact, whose sha256 is not the one recorded when this host wrote it"
            );
            return None;
        }
        let sha256 = sha256.clone();
        // SAFETY: the bytes are those `keep_artifact` wrote: what `Runtime::artifact`
        // produced in this program (their sha256 is the one it recorded).
        let deserialized =
            self.on_blocking_pool(move |runtime| unsafe { runtime.deserialize(&bytes, sha256) });
        let loaded = match deserialized.await {
            Ok(compiled) => self.read_manifest(compiled).await,
            Err(err) => Err(err),
        };
        match loaded {
            Ok(Ok(module)) => {
                metrics::counter!(telemetry::MODULE_ARTIFACT_LOADS).increment(1);
                Some(module)
            }
            Ok(Err(err)) => {
                tracing::warn!(path = %path.display(), %err, "recompiling: the artifact does not load");
                None
            }
            Err(err) => {
                tracing::warn!(%err, "recompiling: loading the artifact failed");
                None
            }
        }
    }

    /// Writes a module's artifact for later runs, and records its sha256; a failure
    /// costs a recompile, no more.
    async fn keep_artifact(&self, module: &LoadedModule) {
        let Some(path) = self.modules.artifact_path(&module.sha256, &self.artifact_key) else {
            return;
        };
        let kept = async {
            let artifact = self.runtime.artifact(module).map_err(|err| err.to_string())?;
            let (artifact, artifact_sha256) = hashed(artifact).await.map_err(|err| err.to_string())?;
            self.modules.write_artifact(path, artifact).await.map_err(|err| err.to_string())?;
            self.store
                .record_artifact_hash(&module.sha256, &self.artifact_key, &artifact_sha256)
                .await
                .map_err(|err| err.to_string())
        };
        if let Err(err) = kept.await {
            tracing::warn!(sha256 = %module.sha256, %err, "cannot keep the compiled module");
        }
    }

    /// Forgets what this process holds of `name` at `version` (it was deleted).
    fn forget_version(&self, name: &str, version: u32) {
        self.manifests.retain(|manifest| manifest.name != name || manifest.version != version);
        self.modules.forget(name, version);
    }

    /// Compiles a module being deployed, refusing it if the compile itself (not the
    /// wait for a compile slot) takes longer than `compile_timeout`.
    async fn compile_new(&self, wasm: Arc<[u8]>) -> Result<LoadedModule> {
        let compiling = self.start_compile(wasm).await?;
        let compiled = tokio::time::timeout(self.compile_timeout, compiling).await.map_err(|_| {
            Error::InvalidModule(format!(
                "compiling the module took longer than {:?}, the limit",
                self.compile_timeout
            ))
        })?;
        module_error(self.read_manifest(compiled.map_err(internal)?).await?)
    }

    /// Starts compiling `wasm` on the blocking pool once a compile slot is free. The
    /// slot is held until the compile ends, also when its caller stops waiting:
    /// wasmtime cannot stop a compile.
    async fn start_compile(&self, wasm: Arc<[u8]>) -> Result<JoinHandle<Result<Compiled, runtime::Error>>> {
        let slot = self.compiles.clone().acquire_owned().await.map_err(internal)?;
        metrics::counter!(telemetry::MODULE_COMPILES).increment(1);
        let runtime = self.runtime.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let compiled = runtime.compile(&wasm);
            tracing::info!(bytes = wasm.len(), took = ?started.elapsed(), "compile finished");
            drop(slot);
            compiled
        }))
    }

    /// Reads and checks the manifest of a compiled module (or passes its compile's
    /// failure on): the call under a pool slot, like any guest call; decoding and
    /// checking on the blocking pool. The outer error is the host's own.
    async fn read_manifest(
        &self,
        compiled: Result<Compiled, runtime::Error>,
    ) -> Result<Result<LoadedModule, runtime::Error>> {
        let declared = match compiled {
            Ok(compiled) => {
                let _permit = self.guest_calls.acquire().await.map_err(internal)?;
                self.runtime.declared(compiled).await
            }
            Err(err) => Err(err),
        };
        match declared {
            Ok(declared) => self.on_blocking_pool(move |runtime| runtime.load(declared)).await,
            Err(err) => Ok(Err(err)),
        }
    }

    /// Runs CPU-heavy `work` on the blocking pool; the error is a panic in `work`.
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> Result<T> {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || work(&runtime)).await.map_err(internal)
    }

    /// Runs one guest call, once a pool slot is free.
    async fn call_guest<Req, Resp>(
        &self,
        module: Arc<LoadedModule>,
        entry: Entry,
        request: Req,
    ) -> Result<Called<Resp>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let _permit = self.guest_calls.acquire().await.map_err(|err| Error::Internal(err.to_string()))?;
        metrics::counter!(telemetry::GUEST_CALLS).increment(1);
        let started = std::time::Instant::now();
        let called = self.runtime.call(&module, entry, &request).await;
        metrics::histogram!(telemetry::GUEST_CALL_SECONDS).record(started.elapsed());
        let called = called?;
        metrics::histogram!(telemetry::GUEST_CALL_FUEL).record(called.fuel_used as f64);
        Ok(called)
    }
}

/// A module's refusal as the service reports it.
fn module_error(loaded: Result<LoadedModule, runtime::Error>) -> Result<LoadedModule> {
    loaded.map_err(|err| match err {
        runtime::Error::InvalidModule(reason) => Error::InvalidModule(reason),
        // The host's own trouble, not the module's.
        runtime::Error::Host(reason) => Error::Internal(reason),
        other => Error::InvalidModule(format!("reading the manifest failed: {other}")),
    })
}

/// `bytes` and their sha256, computed on the blocking pool: an artifact may be
/// megabytes long.
async fn hashed(bytes: Vec<u8>) -> Result<(Vec<u8>, ModuleHash)> {
    tokio::task::spawn_blocking(move || {
        let sha256 = ModuleHash::of(&bytes);
        (bytes, sha256)
    })
    .await
    .map_err(internal)
}

fn internal(err: impl std::fmt::Display) -> Error {
    Error::Internal(err.to_string())
}
