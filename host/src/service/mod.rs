//! The use cases: deploy a definition, start an instance, run an action, read state.
//!
//! Invariant: this is the only layer that runs a guest and writes what it returned; a
//! guest's outcome is checked against the manifest before anything is committed, and
//! state, history and idempotency record commit together.

mod changes;
mod definitions;
mod engine;
mod instances;
mod lifecycle;
mod locks;
mod metrics;
mod modules;
mod posted;
mod recent;
mod results;

pub use definitions::{DefinitionSummary, Deployed, VersionSummary};
pub use instances::{ActRequest, Idempotent, InstanceView, StartRequest};
pub use lifecycle::{BulkMigration, MigrateInstance, MigrationPace, Override};
pub use metrics::{DISPATCH_BUCKETS_US, MetricsSnapshot};
pub use posted::{Posted, Retried};
pub use results::{Delivered, Diagnostics, Reported, TaskReport, kept_event};

use crate::model::{IdempotencyKey, IdempotencyRecord, ModuleHash, StoredResponse, Timestamp};
use crate::runtime::{self, Called, Compiled, Entry, LoadedModule, Runtime};
use crate::store::{self, Store};
use changes::Changes;
use modules::ModuleCache;
use recent::RecentInstances;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use switchyard_guest::abi::{Manifest, OutcomeError};
use tokio::sync::Semaphore;

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
            other => Error::Store(other),
        }
    }
}

impl Error {
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

/// Running instances whose last committed copy is kept in memory (a few hundred
/// bytes each).
const RECENT_INSTANCES: usize = 16_384;

/// Settings of the service layer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: runtime::Limits,
    /// How long a response stays replayable under its idempotency key.
    pub idempotency_retention: Duration,
    /// Compiled modules kept in memory.
    pub cached_modules: usize,
    /// Where compiled modules are kept across restarts; `None` keeps them nowhere.
    pub module_cache: Option<std::path::PathBuf>,
    pub migration_pace: MigrationPace,
    pub callbacks: CallbackPolicy,
    /// Whom effects this process commits are leased to, and for how long: they are
    /// handed to this process's executor at once, not found by its next look.
    pub leases: Leases,
}

/// This process's name in effect leases, and their length.
#[derive(Debug, Clone)]
pub struct Leases {
    pub owner: String,
    pub lease: Duration,
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
    /// Manifests by (definition, version): small, so all are kept.
    versions: RwLock<HashMap<(String, u32), Arc<CachedVersion>>>,
    modules: ModuleCache,
    changes: Changes,
    /// Woken after a commit that wrote effects due later (or a child's end), so that
    /// the executor looks at the outbox again.
    outbox: tokio::sync::Notify,
    /// Effects due now that this process committed, leased to it, for its executor.
    handover: tokio::sync::mpsc::UnboundedSender<HandedOver>,
    handed_over: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<HandedOver>>>,
    leases: Leases,
    locks: locks::InstanceLocks,
    recent: RecentInstances,
    metrics: metrics::Metrics,
    idempotency_retention: Duration,
    migration_pace: MigrationPace,
    callbacks: CallbackPolicy,
}

impl Service {
    pub fn new(store: Store, settings: Settings) -> Result<Service> {
        let guest_calls = Semaphore::new(settings.limits.concurrent_calls as usize);
        let (handover, handed_over) = tokio::sync::mpsc::unbounded_channel();
        Ok(Service {
            handover,
            handed_over: std::sync::Mutex::new(Some(handed_over)),
            leases: settings.leases,
            store,
            runtime: Arc::new(Runtime::new(settings.limits)?),
            guest_calls,
            versions: RwLock::default(),
            modules: ModuleCache::new(settings.cached_modules, settings.module_cache),
            changes: Changes::default(),
            outbox: tokio::sync::Notify::new(),
            locks: Default::default(),
            recent: RecentInstances::new(RECENT_INSTANCES),
            metrics: metrics::Metrics::default(),
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
        self.metrics.dispatched(delay);
    }

    /// Whether this process can serve: see [`Store::ready`].
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ready().await?)
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        let commits = self.store.commit_stats();
        let (dispatch, dispatch_sum_us) = self.metrics.dispatch();
        MetricsSnapshot {
            dispatch,
            dispatch_sum_us,
            long_polls_waiting: self.metrics.long_polls_waiting(),
            transitions_recomputed: self.metrics.transitions_recomputed(),
            guest_calls: self.metrics.guest_calls(),
            commits: commits.commits,
            commit_batches: commits.batches,
            largest_commit_batch: commits.largest_batch,
        }
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

    /// What this process knows of `name` at `version`, read from the store once.
    async fn version(&self, name: &str, version: u32) -> Result<Arc<CachedVersion>> {
        if let Some(cached) = self.read_versions().get(&(name.to_owned(), version)) {
            return Ok(cached.clone());
        }
        let stored = self.definition_version(name, version).await?;
        let cached = CachedVersion { manifest: stored.manifest, sha256: stored.sha256 };
        Ok(self.cache_version(name, version, cached))
    }

    /// The compiled module of `name` at `version`: from memory, else from its artifact
    /// on disk, else compiled (and its artifact kept).
    async fn module(&self, name: &str, version: u32) -> Result<Arc<LoadedModule>> {
        if let Some(module) = self.modules.get(name, version) {
            return Ok(module);
        }
        let cached = self.version(name, version).await?;
        let artifact = self.modules.artifact_path(&cached.sha256, &self.runtime.artifact_key());
        if let Some(path) = &artifact
            && let Ok(bytes) = tokio::fs::read(path).await
        {
            let sha256 = cached.sha256.clone();
            // SAFETY: only `keep_artifact` writes into the artifact folder, and only
            // what `Runtime::artifact` produced in this program.
            let loaded = self.load_with(move |runtime| unsafe { runtime.deserialize(&bytes, sha256) }).await;
            match loaded {
                Ok(Ok(module)) => return Ok(self.modules.insert(name, version, Arc::new(module))),
                Ok(Err(err)) => {
                    tracing::warn!(path = %path.display(), %err, "recompiling: the artifact does not load")
                }
                Err(err) => tracing::warn!(%err, "recompiling: loading the artifact failed"),
            }
        }
        let wasm = self
            .store
            .module_bytes(name, version)
            .await?
            .ok_or_else(|| Error::VersionNotFound { name: name.into(), version })?;
        let module = self.compile(wasm.into()).await?;
        self.keep_artifact(&module).await;
        Ok(self.modules.insert(name, version, Arc::new(module)))
    }

    /// Writes a module's artifact for later runs; a failure costs a recompile, no more.
    async fn keep_artifact(&self, module: &LoadedModule) {
        let Some(path) = self.modules.artifact_path(&module.sha256, &self.runtime.artifact_key()) else {
            return;
        };
        let kept = match self.runtime.artifact(module) {
            Ok(artifact) => self.modules.keep_artifact(path, artifact).await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = kept {
            tracing::warn!(sha256 = %module.sha256, %err, "cannot keep the compiled module");
        }
    }

    fn forget_version(&self, name: &str, version: u32) {
        let mut versions = self.versions.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        versions.remove(&(name.to_owned(), version));
        self.modules.remove(name, version);
    }

    fn cache_version(&self, name: &str, version: u32, cached: CachedVersion) -> Arc<CachedVersion> {
        let mut versions = self.versions.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        versions.entry((name.to_owned(), version)).or_insert_with(|| Arc::new(cached)).clone()
    }

    async fn compile(&self, wasm: Arc<[u8]>) -> Result<LoadedModule> {
        let loaded = self.load_with(move |runtime| runtime.compile(&wasm)).await?;
        loaded.map_err(|err| match err {
            runtime::Error::InvalidModule(reason) => Error::InvalidModule(reason),
            // The host's own trouble, not the module's.
            runtime::Error::Host(reason) => Error::Internal(reason),
            other => Error::InvalidModule(format!("reading the manifest failed: {other}")),
        })
    }

    /// Produces a compiled module on the blocking pool (compiling or deserializing is
    /// CPU-heavy), then reads its manifest. The outer error is a panic in `produce`.
    async fn load_with(
        &self,
        produce: impl FnOnce(&Runtime) -> Result<Compiled, runtime::Error> + Send + 'static,
    ) -> Result<Result<LoadedModule, runtime::Error>> {
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || produce(&runtime))
            .await
            .map_err(|err| Error::Internal(err.to_string()))?;
        Ok(match compiled {
            // Reading the manifest is a guest call: it needs a pool slot like any other.
            Ok(compiled) => {
                let _permit =
                    self.guest_calls.acquire().await.map_err(|err| Error::Internal(err.to_string()))?;
                self.runtime.load(compiled).await
            }
            Err(err) => Err(err),
        })
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
        self.metrics.guest_called();
        Ok(self.runtime.call(&module, entry, &request).await?)
    }

    fn read_versions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, u32), Arc<CachedVersion>>> {
        // A poisoned lock means a panic elsewhere mid-insert; the map itself is intact.
        self.versions.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A deployed version as this process holds it: deployed versions never change, so
/// this is never stale.
#[derive(Debug)]
struct CachedVersion {
    manifest: Manifest,
    sha256: ModuleHash,
}
