//! Wakes long-polls when an instance changes (in this process).

use crate::model::{InstanceId, Revision};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One `watch` channel per instance that somebody is waiting on.
#[derive(Debug, Default)]
pub(super) struct Changes {
    watched: Arc<Mutex<HashMap<InstanceId, watch::Sender<Revision>>>>,
}

/// A waiter's end; dropping the last one forgets the channel.
#[derive(Debug)]
pub(super) struct Subscription {
    id: InstanceId,
    receiver: watch::Receiver<Revision>,
    watched: Arc<Mutex<HashMap<InstanceId, watch::Sender<Revision>>>>,
}

impl Changes {
    /// Subscribe before reading the instance, so no change slips between the two.
    pub(super) fn subscribe(&self, id: InstanceId) -> Subscription {
        let mut watched = lock(&self.watched);
        let sender = watched.entry(id).or_insert_with(|| watch::channel(Revision(0)).0);
        Subscription { id, receiver: sender.subscribe(), watched: self.watched.clone() }
    }

    pub(super) fn publish(&self, id: InstanceId, revision: Revision) {
        if let Some(sender) = lock(&self.watched).get(&id) {
            sender.send_replace(revision);
        }
    }
}

impl Subscription {
    /// Resolves at the next change after subscribing (or the previous `changed`).
    pub(super) async fn changed(&mut self) {
        // The sender lives in the map while this receiver exists, so this never errs.
        let _ = self.receiver.changed().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watched = lock(&self.watched);
        // This receiver is still counted until it drops: 1 means it was the last.
        if watched.get(&self.id).is_some_and(|sender| sender.receiver_count() <= 1) {
            watched.remove(&self.id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
