//! Wakes long-polls when an instance changes: a commit of this process hands them the
//! instance as committed (N waiters on one instance cost no read at all); a change
//! another host was heard to make only wakes them, to read the instance again.

use super::InstanceView;
use crate::model::InstanceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the waiters on one instance are shown.
#[derive(Debug, Default)]
struct Latest {
    /// The instance as this process last committed it while somebody waited.
    committed: Option<Arc<InstanceView>>,
    /// How often another host was heard to change it.
    heard: u64,
}

type Watched = Arc<Mutex<HashMap<InstanceId, watch::Sender<Latest>>>>;

/// One `watch` channel per instance that somebody is waiting on.
#[derive(Debug, Default)]
pub(super) struct Changes {
    watched: Watched,
}

/// A waiter's end; dropping the last one forgets the channel.
#[derive(Debug)]
pub(super) struct Subscription {
    id: InstanceId,
    receiver: watch::Receiver<Latest>,
    /// `Latest::heard` as this waiter saw it last.
    heard: u64,
    watched: Watched,
}

/// Why a waiter woke.
#[derive(Debug)]
pub(super) enum Changed {
    /// This process committed the instance so.
    Committed(Arc<InstanceView>),
    /// Another host changed it (a hint: the store says how).
    Elsewhere,
}

impl Changes {
    /// Subscribe before reading the instance, so no change slips between the two.
    pub(super) fn subscribe(&self, id: InstanceId) -> Subscription {
        let mut watched = lock(&self.watched);
        let sender = watched.entry(id).or_insert_with(|| watch::channel(Latest::default()).0);
        let receiver = sender.subscribe();
        let heard = receiver.borrow().heard;
        Subscription { id, receiver, heard, watched: self.watched.clone() }
    }

    /// Hands `view`, just committed, to the instance's waiters. Commits of one instance
    /// may finish out of order: an older revision than the one handed over is dropped.
    pub(super) fn publish(&self, view: &InstanceView) {
        let watched = lock(&self.watched);
        let Some(sender) = watched.get(&view.instance.id) else { return };
        sender.send_if_modified(|latest| {
            let newer = latest
                .committed
                .as_ref()
                .is_none_or(|latest| latest.instance.revision < view.instance.revision);
            if newer {
                latest.committed = Some(Arc::new(view.clone()));
            }
            newer
        });
    }

    /// Wakes the waiters on `id`, which another host changed.
    pub(super) fn heard(&self, id: InstanceId) {
        if let Some(sender) = lock(&self.watched).get(&id) {
            sender.send_modify(|latest| latest.heard += 1);
        }
    }

    /// Wakes every waiter: other hosts may have changed anything.
    pub(super) fn heard_everything(&self) {
        for sender in lock(&self.watched).values() {
            sender.send_modify(|latest| latest.heard += 1);
        }
    }
}

impl Subscription {
    /// What changed next after subscribing (or after the previous call).
    pub(super) async fn changed(&mut self) -> Changed {
        loop {
            // The sender lives in the map while this receiver exists, so this never errs.
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let latest = self.receiver.borrow_and_update();
            if latest.heard != self.heard {
                self.heard = latest.heard;
                return Changed::Elsewhere;
            }
            if let Some(view) = latest.committed.clone() {
                return Changed::Committed(view);
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
