//! Compiled modules: a bounded in-memory set (the least recently used goes first) in
//! front of wasmtime artifacts on disk, so a restart does not recompile every version
//! and many versions do not all stay in memory.

use crate::model::ModuleHash;
use crate::runtime::LoadedModule;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

type Key = (String, u32);

#[derive(Debug)]
pub(super) struct ModuleCache {
    capacity: usize,
    /// Where artifacts are kept; `None` keeps none.
    artifacts: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    modules: HashMap<Key, (Arc<LoadedModule>, u64)>,
    /// Ticks on every use; the entry with the smallest tick is the least recently used.
    clock: u64,
}

impl ModuleCache {
    pub(super) fn new(capacity: usize, artifacts: Option<PathBuf>) -> Self {
        ModuleCache { capacity: capacity.max(1), artifacts, loaded: Mutex::default() }
    }

    pub(super) fn get(&self, name: &str, version: u32) -> Option<Arc<LoadedModule>> {
        let mut loaded = self.lock();
        loaded.clock += 1;
        let clock = loaded.clock;
        let (module, last_used) = loaded.modules.get_mut(&(name.to_owned(), version))?;
        *last_used = clock;
        Some(module.clone())
    }

    /// Keeps `module`, evicting the least recently used one beyond capacity. If another
    /// task loaded the same version meanwhile, that one is kept and returned.
    pub(super) fn insert(&self, name: &str, version: u32, module: Arc<LoadedModule>) -> Arc<LoadedModule> {
        let mut loaded = self.lock();
        loaded.clock += 1;
        let clock = loaded.clock;
        let kept = loaded.modules.entry((name.to_owned(), version)).or_insert((module, clock)).0.clone();
        while loaded.modules.len() > self.capacity {
            let oldest = loaded
                .modules
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                loaded.modules.remove(&oldest);
            }
        }
        kept
    }

    pub(super) fn remove(&self, name: &str, version: u32) {
        self.lock().modules.remove(&(name.to_owned(), version));
    }

    /// Where the artifact of `sha256` compiled under `engine_key` lives.
    pub(super) fn artifact_path(&self, sha256: &ModuleHash, engine_key: &str) -> Option<PathBuf> {
        Some(self.artifacts.as_ref()?.join(format!("{sha256}-{engine_key}.cwasm")))
    }

    /// Writes an artifact atomically (a temporary file, then a rename), so a reader
    /// never sees half of one.
    pub(super) async fn keep_artifact(&self, path: PathBuf, artifact: Vec<u8>) -> std::io::Result<()> {
        let Some(folder) = &self.artifacts else { return Ok(()) };
        tokio::fs::create_dir_all(folder).await?;
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, artifact).await?;
        tokio::fs::rename(&partial, &path).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A poisoned lock means a panic elsewhere mid-update; the map itself is intact.
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
