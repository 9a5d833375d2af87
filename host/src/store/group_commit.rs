//! Group commit: transitions from concurrent requests share one transaction, so one
//! fsync makes a whole batch durable instead of one fsync per request.
//!
//! A single task takes every commit queued while the previous batch was being written,
//! looks up the batch's idempotency keys (a commit whose key is taken is a replay and
//! writes nothing), writes the rest with shared multi-row statements, commits the
//! transaction, then answers each caller: nobody hears "done" before its batch is on
//! disk. Should a write fail (a revision conflict, a key taken meanwhile by another
//! host), the batch is redone with each commit in a savepoint, so the failure undoes
//! that commit alone. A commit that fails on the database's passing trouble (a
//! deadlock, a lock wait given up, a lost connection) before its COMMIT was sent is
//! written again, alone, a few times. Should the COMMIT itself fail, the batch may have
//! been committed all the same (a connection lost after the COMMIT was sent): what the
//! database shows on a new connection decides, and only what was not made is written
//! again; if it cannot be asked, the callers hear that the outcome is unknown. There is no timer: under light load a batch is one commit and
//! costs what a plain transaction costs; under heavy load batches grow by themselves.
//!
//! On PostgreSQL the committer is a task of the runtime writing through the pool; on
//! SQLite it is the thread that owns the writing connection, and runs the other writes
//! between batches (see [`super::sqlite`]).

use super::backend::{WriteTx, Writer};
use super::notify::Notifier;
use super::postgres::Pool;
use super::transition::Locking;
use super::{Commit, Error, Result, feed, transition};
use crate::telemetry;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

/// The most commits in one transaction; bounds the work lost to a failed commit.
const MAX_BATCH: usize = 256;

/// How often a commit that failed on the database's passing trouble (a deadlock, a
/// lost connection) is written again, alone, before its caller hears of it.
const RETRIES: u32 = 3;

/// Takes commits (and, on SQLite, other writes: jobs `J`) for the writer.
pub(super) struct Committer<J> {
    queue: mpsc::Sender<Message<J>>,
    stats: Arc<Counters>,
}

impl<J> std::fmt::Debug for Committer<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").field("stats", &self.stats).finish_non_exhaustive()
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a commit; boxing it costs an allocation each"
)]
enum Message<J> {
    Commit(Pending),
    /// Run between batches, in the order received.
    Job(J),
    /// Commit what is queued, refuse the rest, let the writer go, then answer.
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Pending {
    commit: Commit,
    done: oneshot::Sender<Result<()>>,
}

#[derive(Debug)]
struct Counters {
    commits: AtomicU64,
    batches: AtomicU64,
    largest: AtomicU64,
    /// Changes after every batch written: what feed readers wait on.
    written: watch::Sender<u64>,
}

/// How group commit has batched so far.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub commits: u64,
    pub batches: u64,
    pub largest_batch: u64,
}

impl Committer<Infallible> {
    /// Commits through the pool, from a task of the runtime; each batch's ids go to `notifier`.
    pub(super) fn spawn(pool: Arc<Pool>, notifier: Notifier) -> Committer<Infallible> {
        let (committer, queue) = Committer::new();
        tokio::spawn(run(pool, queue, committer.stats.clone(), notifier));
        committer
    }
}

impl Committer<super::sqlite::Job> {
    /// Writes on `connection`, from a thread of its own: the connection's statements,
    /// and the fsync of every commit, never run on the runtime's threads.
    pub(super) fn spawn_thread(connection: rusqlite::Connection) -> Result<Committer<super::sqlite::Job>> {
        let (committer, queue) = Committer::new();
        let stats = committer.stats.clone();
        // Only to wait for the queue: the writer's futures are ready when polled.
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(Error::Committer)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || runtime.block_on(run(connection, queue, stats, Notifier::default())))
            .map_err(Error::Committer)?;
        Ok(committer)
    }

    /// Queues `job` for the writer.
    pub(super) async fn submit(&self, job: super::sqlite::Job) -> Result<()> {
        self.queue.send(Message::Job(job)).await.map_err(|_| Error::CommitterStopped)
    }
}

impl<J> Committer<J> {
    fn new() -> (Committer<J>, mpsc::Receiver<Message<J>>) {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let stats = Counters {
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            written: watch::Sender::new(0),
        };
        (Committer { queue, stats: Arc::new(stats) }, receiver)
    }

    pub(super) async fn commit(&self, commit: Commit) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Message::Commit(Pending { commit, done }))
            .await
            .map_err(|_| Error::CommitterStopped)?;
        outcome.await.map_err(|_| Error::CommitterStopped)?
    }

    /// Commits what is queued and stops; later commits get [`Error::CommitterStopped`].
    /// Returns once the writer is gone (on SQLite, its connection closed).
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Whether commits are still taken: false once closed, or should the committer
    /// have died.
    pub(super) fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Changes each time a batch has been written (committed or not).
    pub(super) fn batches_written(&self) -> watch::Receiver<u64> {
        self.stats.written.subscribe()
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            largest_batch: self.stats.largest.load(Ordering::Relaxed),
        }
    }
}

async fn run<W: Writer>(
    mut writer: W,
    mut queue: mpsc::Receiver<Message<W::Job>>,
    stats: Arc<Counters>,
    notifier: Notifier,
) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut closers = Vec::new();
    let mut jobs = Vec::new();
    while queue.recv_many(&mut messages, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            match message {
                Message::Commit(pending) => batch.push(pending),
                Message::Job(job) => jobs.push(job),
                Message::Close(done) => {
                    // What is queued already is still received, then `recv_many` ends.
                    queue.close();
                    closers.push(done);
                }
            }
        }
        // Requests made at the same time: their order is nobody's promise.
        for job in jobs.drain(..) {
            writer.run(job);
        }
        if batch.is_empty() {
            continue;
        }
        let size = batch.len() as u64;
        stats.commits.fetch_add(size, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.largest.fetch_max(size, Ordering::Relaxed);
        let started = std::time::Instant::now();
        commit_batch(&mut writer, batch, &notifier).await;
        metrics::histogram!(telemetry::COMMIT_SECONDS).record(started.elapsed());
        metrics::histogram!(telemetry::COMMIT_BATCH_SIZE).record(size as f64);
        metrics::counter!(telemetry::COMMITS).increment(size);
        stats.written.send_modify(|written| *written += 1);
    }
    drop(writer);
    for done in closers {
        let _ = done.send(());
    }
}

async fn commit_batch<W: Writer>(writer: &mut W, batch: Vec<Pending>, notifier: &Notifier) {
    // Conflicts are rare: first write the whole batch with shared statements; if that
    // fails, throw the transaction away and go again, isolating each commit.
    let outcomes = match apply_together(writer, &batch).await {
        Ok(Some(outcomes)) => Ok(outcomes),
        Ok(None) => apply_isolated(writer, &batch.iter().collect::<Vec<_>>()).await,
        Err(err) => Err(err),
    };
    let mut outcomes = outcomes.unwrap_or_else(|err| failed(err, batch.len()));
    settle_unconfirmed(writer, &batch, &mut outcomes).await;
    // What failed on the database's passing trouble, before any COMMIT was sent (so
    // nothing of it was written), is written again after a short pause.
    for retry in 1..=RETRIES {
        let again: Vec<usize> =
            (0..batch.len()).filter(|&idx| outcomes[idx].as_ref().is_err_and(Error::is_transient)).collect();
        let Some(Err(cause)) = again.first().map(|&idx| &outcomes[idx]) else { break };
        tracing::warn!(
            commits = again.len(),
            retry,
            ?cause,
            "commits failed on a transient database error; writing them again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10 << retry)).await;
        let pending: Vec<&Pending> = again.iter().map(|&idx| &batch[idx]).collect();
        let retried = apply_isolated(writer, &pending).await.unwrap_or_else(|err| failed(err, again.len()));
        for (idx, outcome) in again.into_iter().zip(retried) {
            outcomes[idx] = outcome;
        }
    }
    let committed = batch.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_ok());
    notifier.committed(committed.map(|(pending, _)| &pending.commit));
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        // The caller may have gone (a dropped request); its commit stands regardless.
        let _ = pending.done.send(outcome);
    }
}

/// A COMMIT that failed may have committed all the same (the connection was lost with
/// its answer): the database decides. A commit whose history entry is there, as it
/// wrote it, was made; one whose entry is not was not, and is written again like any
/// commit that met a lost connection. Should the database not answer, the outcome
/// stays unknown.
async fn settle_unconfirmed<W: Writer>(writer: &mut W, batch: &[Pending], outcomes: &mut [Result<()>]) {
    let unconfirmed: Vec<usize> =
        (0..batch.len()).filter(|&idx| outcomes[idx].as_ref().is_err_and(Error::is_unconfirmed)).collect();
    if unconfirmed.is_empty() {
        return;
    }
    let made = async {
        let mut tx = writer.begin().await?;
        let mut made = Vec::with_capacity(unconfirmed.len());
        for &idx in &unconfirmed {
            made.push(transition::was_made(&mut tx, &batch[idx].commit).await?);
        }
        tx.rollback().await?;
        Ok::<_, Error>(made)
    };
    let made = match made.await {
        Ok(made) => made,
        Err(err) => {
            return tracing::warn!(%err, "cannot read back whether a commit was made; its outcome is unknown");
        }
    };
    tracing::info!(commits = unconfirmed.len(), "a COMMIT failed; read back whether its commits were made");
    for (idx, made) in unconfirmed.into_iter().zip(made) {
        outcomes[idx] = match std::mem::replace(&mut outcomes[idx], Ok(())) {
            _ if made => Ok(()),
            // What the COMMIT met (a lost connection, mostly): nothing was written.
            Err(Error::Batch(inner)) => match &*inner {
                Error::Unconfirmed(cause) => Err(Error::Batch(cause.clone())),
                _ => Err(Error::Batch(inner)),
            },
            other => other,
        };
    }
}

/// The outcome of each of `count` commits whose transaction failed as a whole.
fn failed(err: Error, count: usize) -> Vec<Result<()>> {
    let err = match err {
        Error::Batch(inner) => inner,
        other => Arc::new(other),
    };
    (0..count).map(|_| Err(Error::Batch(err.clone()))).collect()
}

/// Writes the batch with a few multi-row statements. Commits whose idempotency key is
/// taken get [`Error::Duplicate`] and write nothing. `None` when the writing failed
/// and the failure cannot be pinned on one commit: everything was rolled back. An
/// error when the transaction could not be opened, rolled back or committed.
async fn apply_together<W: Writer>(writer: &mut W, batch: &[Pending]) -> Result<Option<Vec<Result<()>>>> {
    let mut tx = writer.begin().await?;
    let commits: Vec<&Commit> = batch.iter().map(|pending| &pending.commit).collect();
    // A replayed request gets this far: its key decides, and it applies nothing. A
    // lone commit skips the lookup (a round trip): its write fails on a taken key.
    let taken = match commits.len() {
        1 => Default::default(),
        _ => match transition::taken_keys(&mut tx, &commits).await {
            Ok(taken) => taken,
            Err(_) => return tx.rollback().await.map(|()| None),
        },
    };
    let is_taken =
        |commit: &Commit| commit.idempotency.as_ref().is_some_and(|record| taken.contains(&record.key));
    let fresh: Vec<&Commit> = commits.iter().copied().filter(|commit| !is_taken(commit)).collect();
    let written = match transition::apply(&mut tx, &fresh, locking::<W>()).await {
        Ok(()) if !W::SERIAL => feed::append(&mut tx, &fresh).await,
        Ok(()) => Ok(()),
        Err(err) => Err(err),
    };
    let mut failure = match written {
        Ok(()) => {
            tx.commit().await.map_err(unconfirmed)?;
            None
        }
        // With one commit written, the failure is that commit's.
        Err(err) if fresh.len() == 1 => {
            tx.rollback().await?;
            Some(err)
        }
        Err(_) => return tx.rollback().await.map(|()| None),
    };
    let outcomes = commits.iter().map(|commit| {
        if is_taken(commit) { Err(Error::Duplicate) } else { failure.take().map_or(Ok(()), Err) }
    });
    Ok(Some(outcomes.collect()))
}

fn locking<W: Writer>() -> Locking {
    if W::SERIAL { Locking::Serial } else { Locking::Rows }
}

/// A COMMIT that failed may have committed all the same (the connection was lost
/// after it was sent): never written again.
fn unconfirmed(err: Error) -> Error {
    Error::Unconfirmed(Arc::new(err))
}

/// Writes each commit in a savepoint, so a failure undoes that commit alone.
async fn apply_isolated<W: Writer>(writer: &mut W, batch: &[&Pending]) -> Result<Vec<Result<()>>> {
    let mut tx = writer.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for pending in batch {
        tx.execute("SAVEPOINT change", &[]).await?;
        let outcome = transition::apply(&mut tx, &[&pending.commit], locking::<W>()).await;
        if outcome.is_err() {
            tx.execute("ROLLBACK TO SAVEPOINT change", &[]).await?;
        }
        tx.execute("RELEASE SAVEPOINT change", &[]).await?;
        outcomes.push(outcome);
    }
    if !W::SERIAL {
        let written: Vec<&Commit> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(pending, _)| &pending.commit)
            .collect();
        feed::append(&mut tx, &written).await?;
    }
    tx.commit().await.map_err(unconfirmed)?;
    Ok(outcomes)
}
