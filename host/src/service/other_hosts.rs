//! What other hosts on the database commit, as this process hears of it
//! (`store::Heard`: PostgreSQL's notifications): it wakes the long-polls on the
//! instances named, the effect executor and feed streams. A hint only: each of them
//! reads the store again, and polls as the backstop.

use super::Service;
use crate::store::Heard;
use tokio::sync::watch;

impl Service {
    /// Wakes this process's waiters on what other hosts commit, for as long as the
    /// store hears of it; returns at once on a database no other host writes to.
    pub async fn follow_other_hosts(&self) {
        let Some(mut heard) = self.store.hear_other_hosts() else { return };
        while let Some(news) = heard.recv().await {
            match news {
                Heard::Committed { instances, effects } => {
                    instances.into_iter().for_each(|id| self.changes.heard(id));
                    if effects {
                        self.outbox.notify_one();
                    }
                }
                Heard::Missed => {
                    self.changes.heard_everything();
                    self.outbox.notify_one();
                }
            }
            // Every commit adds to the feed.
            self.feed_elsewhere.send_modify(|heard| *heard += 1);
        }
    }

    /// Changes whenever there may be more feed to read: this process wrote commits,
    /// or heard that another host did.
    pub fn feed_written(&self) -> FeedWritten {
        FeedWritten { here: self.store.batches_written(), elsewhere: self.feed_elsewhere.subscribe() }
    }
}

/// See [`Service::feed_written`].
#[derive(Debug)]
pub struct FeedWritten {
    here: watch::Receiver<u64>,
    elsewhere: watch::Receiver<u64>,
}

impl FeedWritten {
    /// Takes what was written so far as seen: only later commits wake [`Self::changed`].
    pub fn mark_seen(&mut self) {
        self.here.borrow_and_update();
        self.elsewhere.borrow_and_update();
    }

    /// Resolves once commits were written since last seen, here or elsewhere.
    pub async fn changed(&mut self) {
        tokio::select! {
            Ok(()) = self.here.changed() => {}
            Ok(()) = self.elsewhere.changed() => {}
            // Both senders live as long as the service.
            else => std::future::pending().await,
        }
    }
}
