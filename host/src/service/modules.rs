//! Compiled modules, known by their sha256: a set in memory bounded by bytes (the least
//! recently used goes first) in front of wasmtime artifacts on disk, so that a restart
//! does not recompile every version and many versions do not all stay in memory.
//!
//! A module is loaded once however many tasks need it at the same moment: the first
//! loads it, the others wait for that load.

use super::lru::Lru;
use super::{Error, Result};
use crate::model::ModuleHash;
use crate::runtime::LoadedModule;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use switchyard_guest::abi::Manifest;
use tokio::sync::OnceCell;

/// A load in progress; every task that needs the module waits on it.
type Loading = Arc<OnceCell<Arc<LoadedModule>>>;

#[derive(Debug)]
pub(super) struct ModuleCache {
    loaded: Lru<ModuleHash, Arc<LoadedModule>>,
    loading: Mutex<HashMap<ModuleHash, Loading>>,
    /// Where artifacts are kept; `None` keeps none.
    artifacts: Option<PathBuf>,
}

impl ModuleCache {
    /// Keeps at most `budget` bytes of modules in memory, and artifacts in the folder
    /// `artifacts`, which is made private to this user, and cleared of the partial
    /// files a crash mid-write left. A folder that cannot be prepared keeps none.
    pub(super) fn new(budget: usize, artifacts: Option<PathBuf>) -> Self {
        let artifacts = artifacts.filter(|folder| match prepare(folder) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(folder = %folder.display(), %err, "keeping no compiled modules on disk");
                false
            }
        });
        ModuleCache { loaded: Lru::new(budget), loading: Mutex::default(), artifacts }
    }

    /// The module `sha256` names, from memory or else from `load`, which runs once
    /// for all the tasks that ask meanwhile (should it fail, the next waiting task
    /// tries again).
    pub(super) async fn get_or_load<Load>(
        &self,
        sha256: &ModuleHash,
        load: impl FnOnce() -> Load,
    ) -> Result<Arc<LoadedModule>>
    where
        Load: Future<Output = Result<LoadedModule>>,
    {
        let loading = {
            // The memory is looked at under this lock, and a finished load is put in
            // memory before it leaves this map: a task that finds no load in progress
            // finds the module in memory, unless it was evicted since.
            let mut loading = self.lock_loading();
            if let Some(in_progress) = loading.get(sha256) {
                in_progress.clone()
            } else if let Some(module) = self.loaded.get(sha256) {
                metrics::counter!(crate::telemetry::MODULE_CACHE_HITS).increment(1);
                return Ok(module);
            } else {
                loading.entry(sha256.clone()).or_default().clone()
            }
        };
        let loaded = loading.get_or_try_init(|| async { Ok::<_, Error>(self.insert(load().await?)) }).await;
        let mut in_progress = self.lock_loading();
        if in_progress.get(sha256).is_some_and(|current| Arc::ptr_eq(current, &loading)) {
            in_progress.remove(sha256);
        }
        loaded.cloned()
    }

    /// Keeps `module` in memory (if it fits the budget), or the copy kept already.
    pub(super) fn insert(&self, module: LoadedModule) -> Arc<LoadedModule> {
        let bytes = module.image_bytes() + manifest_bytes(&module.manifest);
        self.loaded.insert(module.sha256.clone(), Arc::new(module), bytes)
    }

    /// Drops the modules of `name` at `version` from memory.
    pub(super) fn forget(&self, name: &str, version: u32) {
        self.loaded.retain(|module| module.manifest.name != name || module.manifest.version != version);
    }

    /// What the modules in memory are counted at, together.
    pub(super) fn bytes(&self) -> usize {
        self.loaded.bytes()
    }

    /// Where the artifact of `sha256` compiled under `engine_key` lives.
    pub(super) fn artifact_path(&self, sha256: &ModuleHash, engine_key: &str) -> Option<PathBuf> {
        Some(self.artifacts.as_ref()?.join(format!("{sha256}-{engine_key}.cwasm")))
    }

    /// Writes an artifact atomically (a partial file, then a rename), so a reader
    /// never sees half of one.
    pub(super) async fn write_artifact(&self, path: PathBuf, artifact: Vec<u8>) -> std::io::Result<()> {
        let partial = path.with_extension(format!("{PARTIAL}{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, artifact).await?;
        tokio::fs::rename(&partial, &path).await
    }

    fn lock_loading(&self) -> std::sync::MutexGuard<'_, HashMap<ModuleHash, Loading>> {
        // A poisoned lock means a panic elsewhere mid-update; the map itself is intact.
        self.loading.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How the extension of an artifact being written starts.
const PARTIAL: &str = "partial-";

/// Creates `folder` readable by this user only (native code is loaded from it), and
/// removes partial artifacts a crash left.
fn prepare(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(folder)?;
        // An existing folder too.
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(folder)?;
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension.to_string_lossy().starts_with(PARTIAL)) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Roughly what a manifest holds in memory: its strings and their headers.
pub(super) fn manifest_bytes(manifest: &Manifest) -> usize {
    use std::mem::size_of;
    let text = |text: &String| size_of::<String>() + text.len();
    let states: usize =
        manifest.states.iter().map(|state| text(&state.name) + text(&state.description) + 8).sum();
    let actions: usize = manifest
        .actions
        .iter()
        .map(|action| {
            let edges: usize = action.from.iter().chain(&action.to).map(text).sum();
            text(&action.name) + text(&action.description) + edges + 2 * size_of::<Vec<String>>() + 8
        })
        .sum();
    size_of::<Manifest>()
        + manifest.name.len()
        + manifest.initial_state.len()
        + states
        + actions
        + manifest.migrates_from.len() * size_of::<u32>()
}
