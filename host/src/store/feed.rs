//! The transition feed: every committed transition, numbered in commit order.
//!
//! SQLite has one writer at a time and history is never deleted, so history's rowids
//! already number transitions in commit order: the feed reads them, and a commit writes
//! nothing for it.
//!
//! PostgreSQL commits concurrently, and an id taken before the commit (a sequence) is
//! not enough: a later commit can become visible before an earlier one, behind a
//! reader's cursor. There, a batch takes its positions from the one-row `feed_clock` as
//! the last statement before COMMIT and writes them to `feed`. The clock's row lock is
//! held until the transaction ends, and a transaction is visible to others before it
//! releases its locks, so positions are handed out in the order commits become visible:
//! a reader that sees position `n` sees every position before it. Taking the clock last
//! also keeps it out of deadlocks: nothing else is locked after it.

use super::backend::{Arg, WriteTx};
use super::rows::{self, parse};
use super::transition::{Statement, chunks};
use super::{Commit, Result, Store};
use crate::model::FeedItem;

/// Advances the clock by a chunk's size (`$LAST`) and writes the chunk's rows, numbered
/// from the positions it took: one round trip per chunk.
const APPEND: Statement = Statement {
    before:
        "WITH clock AS (UPDATE feed_clock SET position = position + $LAST WHERE id = 1 RETURNING position)
             INSERT INTO feed (position, instance_id, seq)
             SELECT clock.position - $LAST + taken.n, taken.instance_id, taken.seq FROM clock, (VALUES ",
    after: ") AS taken (n, instance_id, seq)",
    columns: 3,
};

/// A history row written before entries recorded their status (an older host) counts
/// as running unless it is the instance's last.
const COLUMNS: &str = "i.definition,
     COALESCE(h.status, CASE WHEN h.seq = i.revision THEN i.status ELSE 'running' END) AS status, h.instance_id, h.seq, h.from_state, h.to_state, h.trigger_kind,
     h.trigger_name, h.trigger_id, h.payload, h.actor, h.definition_version, h.module_sha256, h.fuel_used, h.at";

/// Numbers the transitions of `commits` in the open PostgreSQL transaction; call it
/// after everything else the transaction writes.
pub(super) async fn append(tx: &mut impl WriteTx, commits: &[&Commit]) -> Result<()> {
    for chunk in chunks(commits) {
        let mut args = Vec::with_capacity(chunk.len() * APPEND.columns + 1);
        for (n, commit) in (1..).zip(chunk) {
            args.extend([Arg::from(n), commit.instance.id.to_string().into(), commit.history.seq.into()]);
        }
        args.push((chunk.len() as i64).into());
        tx.execute(&APPEND.sql(chunk.len()), &args).await?;
    }
    Ok(())
}

impl Store {
    /// Up to `limit` transitions after `after`, in commit order.
    pub async fn feed(&self, after: i64, limit: u32) -> Result<Vec<FeedItem>> {
        let sql = if self.serial() {
            format!(
                "SELECT h.rowid AS position, {COLUMNS} FROM history h JOIN instances i ON i.id = h.instance_id
                 WHERE h.rowid > $1 ORDER BY h.rowid LIMIT {limit}"
            )
        } else {
            format!(
                "SELECT f.position, {COLUMNS} FROM feed f
                 JOIN history h ON h.instance_id = f.instance_id AND h.seq = f.seq
                 JOIN instances i ON i.id = h.instance_id
                 WHERE f.position > $1 ORDER BY f.position LIMIT {limit}"
            )
        };
        self.scan(&sql, &[after.into()], |row| {
            Ok(FeedItem {
                position: row.int("position")?,
                definition: row.text("definition")?,
                status: parse(row.text("status")?)?,
                entry: rows::history_entry(row)?,
            })
        })
        .await
    }
}
