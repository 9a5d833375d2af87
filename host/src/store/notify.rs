//! Cross-host wake-ups on PostgreSQL: after each commit batch this host tells the
//! others which instances changed (`NOTIFY`), and hears what they committed (`LISTEN`).
//!
//! A notification is a hint. It carries instance ids, never state, and may be lost (a
//! listener reconnecting, a host dying between its COMMIT and its NOTIFY, PgBouncer in
//! transaction mode): whoever it wakes reads the store, and every waiter also polls,
//! so a lost one costs at most a poll period.
//!
//! NOTIFY takes a lock on the whole cluster while its transaction commits: sent inside
//! a batch's transaction it would serialise every host's commits, fsync included. So
//! the committer only appends the batch's ids to a buffer ([`Notifier::committed`]); a
//! task of its own sends them afterwards, in a transaction of its own on a connection
//! of its own that does not wait for its WAL flush (a hint needs no durability), and
//! whatever queues while one NOTIFY is in flight goes out in the next. The listener has
//! a connection of its own too, straight to the database: LISTEN cannot pass through a
//! transaction pooler.

use super::{Commit, Store};
use crate::model::InstanceId;
use crate::telemetry;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The one channel every host of a database announces on.
const CHANNEL: &str = "switchyard";

/// The longest payload sent; PostgreSQL refuses one of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// Ids queued beyond this are not kept: the next notification tells everyone to look
/// at everything (cheaper, past this, than naming each).
const MAX_QUEUED: usize = 8192;

/// The first word of every payload; a payload of another version wakes everything.
const VERSION: &str = "1";

/// Waits between tries to send (the database is away) or to listen again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A NOTIFY not done by then is given up on, with its connection (whose peer may have
/// vanished without a word), rather than holding up every later one.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What another host committed, as this one heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// These instances changed; `effects`: the outbox holds new work for later (an
    /// effect due later, a child's end).
    Committed { instances: Vec<InstanceId>, effects: bool },
    /// Notifications may have been missed (the listener (re)connected, or a host
    /// announced more than it names): anything may have changed.
    Missed,
}

/// The committer's end: takes the ids of each batch, for the task that sends them.
#[derive(Debug, Clone, Default)]
pub(super) struct Notifier(Arc<Outgoing>);

#[derive(Debug, Default)]
struct Outgoing {
    /// Commits are recorded only once a sender runs ([`Store::hear_other_hosts`]).
    started: AtomicBool,
    /// The store closes: the sender closes its connection and ends.
    closing: AtomicBool,
    queued: Mutex<Queued>,
    wake: tokio::sync::Notify,
}

/// What is waiting to be announced.
#[derive(Debug, Default, PartialEq, Eq)]
struct Queued {
    instances: Vec<InstanceId>,
    effects: bool,
    /// More was committed than [`MAX_QUEUED`] ids name.
    everything: bool,
}

impl Notifier {
    /// Queues `commits`, just committed, for the next notification. Called on the
    /// commit path: an append under a lock, no I/O.
    pub(super) fn committed<'a>(&self, commits: impl Iterator<Item = &'a Commit>) {
        if !self.0.started.load(Ordering::Relaxed) {
            return;
        }
        let mut commits = commits.peekable();
        if commits.peek().is_none() {
            return;
        }
        let mut queued = lock(&self.0.queued);
        for commit in commits {
            queued.effects |= commit.wakes_executors();
            queued.instances.push(commit.instance.id);
        }
        queued.cap();
        drop(queued);
        self.0.wake.notify_one();
    }

    /// Stops the sender, which closes its connection; later commits are not announced.
    pub(super) fn close(&self) {
        self.0.started.store(false, Ordering::Relaxed);
        self.0.closing.store(true, Ordering::Relaxed);
        self.0.wake.notify_one();
    }
}

impl Queued {
    fn is_empty(&self) -> bool {
        self.instances.is_empty() && !self.effects && !self.everything
    }

    fn merge(&mut self, later: Queued) {
        self.instances.extend(later.instances);
        self.effects |= later.effects;
        self.everything |= later.everything;
        self.cap();
    }

    fn cap(&mut self) {
        if self.everything || self.instances.len() > MAX_QUEUED {
            self.everything = true;
            self.instances = Vec::new();
        }
    }

    /// The payloads announcing this, each under [`MAX_PAYLOAD`] bytes: `VERSION sender
    /// flags ids`, flags `e` (effects), `*` (everything) or `-`, ids comma-separated.
    fn payloads(mut self, sender: &str) -> Vec<String> {
        self.instances.sort_unstable();
        self.instances.dedup();
        let flags = if self.everything {
            "*"
        } else if self.effects {
            "e"
        } else {
            "-"
        };
        let head = format!("{VERSION} {sender} {flags} ");
        let mut payloads = Vec::new();
        let mut payload = head.clone();
        for id in &self.instances {
            let id = id.to_string();
            if payload.len() + id.len() + 1 > MAX_PAYLOAD {
                payloads.push(std::mem::replace(&mut payload, head.clone()));
            }
            if !payload.ends_with(' ') {
                payload.push(',');
            }
            payload.push_str(&id);
        }
        payloads.push(payload);
        payloads
    }
}

/// What `payload` announces, or `None` if this process (`me`) sent it.
fn read_payload(payload: &str, me: &str) -> Option<Heard> {
    let mut words = payload.split(' ');
    let (Some(VERSION), Some(sender), Some(flags), Some(ids), None) =
        (words.next(), words.next(), words.next(), words.next(), words.next())
    else {
        // Another version (a rolling upgrade), or not ours: look at everything.
        return Some(Heard::Missed);
    };
    if sender == me {
        return None;
    }
    if flags == "*" {
        return Some(Heard::Missed);
    }
    let instances = ids.split(',').filter_map(|id| id.parse().ok()).collect();
    Some(Heard::Committed { instances, effects: flags == "e" })
}

impl Commit {
    /// Whether executors should look at the outbox again after this commit: it wrote
    /// an effect due later (effects due at once are leased to the committing host),
    /// or a child ended, which makes its parent's effect due.
    pub(crate) fn wakes_executors(&self) -> bool {
        self.effects.iter().any(|effect| effect.due_at > effect.created_at)
            || (self.instance.parent_id.is_some() && self.instance.status.is_terminal())
    }
}

impl Store {
    /// Whether other processes may commit to this database (PostgreSQL), so that
    /// waiters must look for changes this process did not make.
    pub fn shared(&self) -> bool {
        !self.serial()
    }

    /// Starts announcing this process's commits to the other hosts and listening for
    /// theirs; what is heard arrives on the receiver, until it is dropped. `None` on
    /// SQLite (one process), or if this was called before.
    pub fn hear_other_hosts(&self) -> Option<mpsc::Receiver<Heard>> {
        let super::Db::Postgres(db) = &*self.db else { return None };
        if db.notifier.0.started.swap(true, Ordering::Relaxed) {
            return None;
        }
        let me = uuid::Uuid::new_v4().simple().to_string();
        let (heard, receiver) = mpsc::channel(1024);
        tokio::spawn(announce(db.url.clone(), db.notifier.0.clone(), me.clone()));
        tokio::spawn(listen(db.url.clone(), me, heard));
        Some(receiver)
    }
}

/// Sends what the committer queues, one NOTIFY transaction at a time; what fails to go
/// out is tried again with what queues meanwhile.
async fn announce(url: String, outgoing: Arc<Outgoing>, me: String) {
    let mut connection: Option<PgConnection> = None;
    let mut unsent = Queued::default();
    let mut retry_after = RETRY_AFTER;
    loop {
        if unsent.is_empty() {
            outgoing.wake.notified().await;
        } else {
            tokio::time::sleep(retry_after).await;
        }
        if outgoing.closing.load(Ordering::Relaxed) {
            if let Some(connection) = connection {
                let _ = connection.close().await;
            }
            return;
        }
        unsent.merge(std::mem::take(&mut *lock(&outgoing.queued)));
        if unsent.is_empty() {
            continue;
        }
        let payloads = std::mem::take(&mut unsent).payloads(&me);
        let sent = match tokio::time::timeout(SEND_TIMEOUT, send(&mut connection, &url, &payloads)).await {
            Ok(sent) => sent.map_err(|err| err.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        match sent {
            Ok(()) => {
                metrics::counter!(telemetry::NOTIFICATIONS_SENT).increment(payloads.len() as u64);
                retry_after = RETRY_AFTER;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot notify other hosts of commits; trying again");
                connection = None;
                // The ids are gone with the payloads; the others look at everything.
                unsent.everything = true;
                retry_after = (retry_after * 2).min(MAX_RETRY_AFTER);
            }
        }
    }
}

/// Sends `payloads` in one transaction (the cluster-wide lock is taken once), on
/// `connection`, opened first if there is none.
async fn send(connection: &mut Option<PgConnection>, url: &str, payloads: &[String]) -> sqlx::Result<()> {
    let connection = match connection {
        Some(connection) => connection,
        None => {
            let mut opened = PgConnection::connect(url).await?;
            // A lost hint costs a poll period; waiting for the WAL flush would hold the
            // lock that every notifying commit of the cluster needs for that long.
            sqlx::query("SET synchronous_commit = off").execute(&mut opened).await?;
            connection.insert(opened)
        }
    };
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(connection)
        .await?;
    Ok(())
}

/// Listens on a connection of its own, and again after losing it; after each (re)connect,
/// reports [`Heard::Missed`], since notifications sent meanwhile are lost.
async fn listen(url: String, me: String, heard: mpsc::Sender<Heard>) {
    let mut retry_after = RETRY_AFTER;
    loop {
        let mut listener = match listener(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(%err, "the listener cannot connect; other hosts' commits are found by polling until it does");
                tokio::time::sleep(retry_after).await;
                retry_after = (retry_after * 2).min(MAX_RETRY_AFTER);
                continue;
            }
        };
        retry_after = RETRY_AFTER;
        tracing::info!("listening for other hosts' commits");
        if heard.send(Heard::Missed).await.is_err() {
            return;
        }
        loop {
            // Ends when the service stops following (its receiver dropped).
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = heard.closed() => return,
            };
            let notification = match received {
                Ok(Some(notification)) => notification,
                Ok(None) => {
                    tracing::warn!("the listener's connection was lost; connecting again");
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "the listener failed; connecting again");
                    break;
                }
            };
            let Some(news) = read_payload(notification.payload(), &me) else { continue };
            metrics::counter!(telemetry::NOTIFICATIONS_RECEIVED).increment(1);
            if heard.send(news).await.is_err() {
                return;
            }
        }
    }
}

async fn listener(url: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    // A lost connection is made again here, so that what was missed is reported.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
