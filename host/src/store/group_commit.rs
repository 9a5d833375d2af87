//! Group commit: transitions from concurrent requests share one transaction, so one
//! fsync makes a whole batch durable instead of one fsync per request.
//!
//! A single task takes every commit queued while the previous batch was being written,
//! applies them, commits the transaction, then answers each caller: nobody hears
//! "done" before its batch is on disk. Should one commit fail (a revision conflict),
//! the batch is redone with each commit in a savepoint, so the failure undoes that
//! commit alone. There is no timer: under light load a batch is one commit and costs what a
//! plain transaction costs; under heavy load batches grow by themselves.

use super::{Commit, Error, Result, transition};
use sqlx::AnyPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The most commits in one transaction; bounds the work lost to a failed commit.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub(super) struct Committer {
    queue: mpsc::Sender<Pending>,
    stats: Arc<Counters>,
}

#[derive(Debug)]
struct Pending {
    commit: Commit,
    done: oneshot::Sender<Result<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    batches: AtomicU64,
    largest: AtomicU64,
}

/// How group commit has batched so far.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub commits: u64,
    pub batches: u64,
    pub largest_batch: u64,
}

impl Committer {
    pub(super) fn start(pool: AnyPool) -> Committer {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let stats = Arc::new(Counters::default());
        tokio::spawn(run(pool, receiver, stats.clone()));
        Committer { queue, stats }
    }

    pub(super) async fn commit(&self, commit: Commit) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let stopped = || Error::Corrupt("the committer has stopped".into());
        self.queue.send(Pending { commit, done }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            largest_batch: self.stats.largest.load(Ordering::Relaxed),
        }
    }
}

async fn run(pool: AnyPool, mut queue: mpsc::Receiver<Pending>, stats: Arc<Counters>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len() as u64;
        stats.commits.fetch_add(size, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.largest.fetch_max(size, Ordering::Relaxed);
        commit_batch(&pool, std::mem::take(&mut batch)).await;
    }
}

async fn commit_batch(pool: &AnyPool, batch: Vec<Pending>) {
    // Conflicts are rare: first try the whole batch without savepoints; if any commit
    // fails, throw the transaction away and go again, isolating each commit. A batch
    // of one needs no second try: its outcome is its commit's.
    let outcomes = match apply_batch(pool, &batch, Isolation::None).await {
        Ok(outcomes) if batch.len() == 1 || outcomes.iter().all(Result::is_ok) => Ok(outcomes),
        _ => apply_batch(pool, &batch, Isolation::Savepoints).await,
    };
    let outcomes = outcomes.unwrap_or_else(|err| {
        let err = Arc::new(err);
        batch.iter().map(|_| Err(Error::Batch(err.clone()))).collect()
    });
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        // The caller may have gone (a dropped request); its commit stands regardless.
        let _ = pending.done.send(outcome);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// All commits with shared statements; any failure rolls everything back.
    None,
    /// Each commit in a savepoint, so a failure undoes that commit alone.
    Savepoints,
}

/// Applies the commits in one transaction; the outer error fails them all.
async fn apply_batch(
    pool: &AnyPool,
    batch: &[Pending],
    isolation: Isolation,
) -> Result<Vec<Result<()>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if isolation == Isolation::None {
        let commits: Vec<&Commit> = batch.iter().map(|pending| &pending.commit).collect();
        if let Err(err) = transition::apply(&mut tx, &commits).await {
            tx.rollback().await?;
            return Ok(vec![Err(err)]);
        }
        tx.commit().await?;
        return Ok(batch.iter().map(|_| Ok(())).collect());
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for pending in batch {
        sqlx::query("SAVEPOINT change").execute(&mut *tx).await?;
        let outcome = transition::apply(&mut tx, &[&pending.commit]).await;
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT change").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE SAVEPOINT change").execute(&mut *tx).await?;
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}
