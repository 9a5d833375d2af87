//! Serialises changes to one instance within this process, so concurrent actions on
//! a hot instance queue instead of computing on a stale revision and retrying. Across
//! processes the revision check in the commit still decides.

use crate::model::InstanceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::OwnedMutexGuard;

/// Entries whose lock nobody holds are swept once the map grows past this.
const SWEEP_AT: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct InstanceLocks(Mutex<HashMap<InstanceId, Weak<tokio::sync::Mutex<()>>>>);

impl InstanceLocks {
    pub(super) async fn lock(&self, id: InstanceId) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match locks.get(&id).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    if locks.len() >= SWEEP_AT {
                        locks.retain(|_, lock| lock.strong_count() > 0);
                    }
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(id, Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}
