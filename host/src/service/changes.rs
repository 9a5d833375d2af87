//! Wakes long-polls when an instance changes (in this process), handing them the
//! instance as committed: N waiters on one instance cost no read at all.

use super::InstanceView;
use crate::model::InstanceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The instance as this process last committed it while somebody waited (`None`
/// before the first such commit).
type Latest = Option<Arc<InstanceView>>;

/// One `watch` channel per instance that somebody is waiting on.
#[derive(Debug, Default)]
pub(super) struct Changes {
    watched: Arc<Mutex<HashMap<InstanceId, watch::Sender<Latest>>>>,
}

/// A waiter's end; dropping the last one forgets the channel.
#[derive(Debug)]
pub(super) struct Subscription {
    id: InstanceId,
    receiver: watch::Receiver<Latest>,
    watched: Arc<Mutex<HashMap<InstanceId, watch::Sender<Latest>>>>,
}

impl Changes {
    /// Subscribe before reading the instance, so no change slips between the two.
    pub(super) fn subscribe(&self, id: InstanceId) -> Subscription {
        let mut watched = lock(&self.watched);
        let sender = watched.entry(id).or_insert_with(|| watch::channel(None).0);
        Subscription { id, receiver: sender.subscribe(), watched: self.watched.clone() }
    }

    /// Hands `view`, just committed, to the instance's waiters. Commits of one instance
    /// may finish out of order: an older revision than the one handed over is dropped.
    pub(super) fn publish(&self, view: &InstanceView) {
        let watched = lock(&self.watched);
        let Some(sender) = watched.get(&view.instance.id) else { return };
        sender.send_if_modified(|latest| {
            let newer =
                latest.as_ref().is_none_or(|latest| latest.instance.revision < view.instance.revision);
            if newer {
                *latest = Some(Arc::new(view.clone()));
            }
            newer
        });
    }
}

impl Subscription {
    /// The instance as committed next after subscribing (or after the previous call).
    pub(super) async fn changed(&mut self) -> Arc<InstanceView> {
        loop {
            // The sender lives in the map while this receiver exists, so this never errs.
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(view) = self.receiver.borrow_and_update().clone() {
                return view;
            }
        }
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

#[cfg(test)]
mod tests;
