//! The transition feed: every committed transition, numbered in commit order.
//!
//! A batch takes its positions from the one-row `feed_clock` as the last statement
//! before COMMIT. The clock's row lock is held until the transaction ends, and a
//! transaction is visible to others before it releases its locks, so positions are
//! handed out in the order commits become visible: a reader that sees position `n`
//! sees every position before it. An id taken before the commit (a sequence) would not
//! do: a later commit can become visible before an earlier one. Taking the clock last
//! also keeps it out of deadlocks: nothing else is locked after it.

use super::rows::{self, parse};
use super::transition::{Statement, execute_rows};
use super::writer::{Arg, WriteTx};
use super::{Commit, Result, Store};
use crate::model::FeedItem;

const ADVANCE_CLOCK: &str = "UPDATE feed_clock SET position = position + $1 WHERE id = 1 RETURNING position";

const INSERT_FEED: Statement = Statement {
    before: "INSERT INTO feed (position, instance_id, seq, definition, status) VALUES ",
    after: "",
    columns: 5,
};

/// Numbers the transitions of `commits` in the open transaction; call it after
/// everything else the transaction writes.
pub(super) async fn append(tx: &mut impl WriteTx, commits: &[&Commit]) -> Result<()> {
    if commits.is_empty() {
        return Ok(());
    }
    let count = commits.len() as i64;
    let last = tx.fetch_int(ADVANCE_CLOCK, &[count.into()]).await?;
    let rows: Vec<(i64, &Commit)> = (last - count + 1..).zip(commits.iter().copied()).collect();
    execute_rows(tx, &rows, INSERT_FEED, bind, None).await?;
    Ok(())
}

fn bind<'a>(row: &'a (i64, &Commit), args: &mut Vec<Arg<'a>>) {
    let (position, commit) = *row;
    args.extend([
        position.into(),
        commit.instance.id.to_string().into(),
        commit.history.seq.into(),
        (&commit.instance.definition).into(),
        commit.instance.status.as_str().into(),
    ]);
}

impl Store {
    /// Up to `limit` transitions after `after`, in commit order.
    pub async fn feed(&self, after: i64, limit: u32) -> Result<Vec<FeedItem>> {
        let sql = format!(
            "SELECT f.position, f.definition, f.status, h.instance_id, h.seq, h.from_state, h.to_state,
                    h.trigger_kind, h.trigger_name, h.trigger_id, h.payload, h.actor, h.definition_version,
                    h.module_sha256, h.fuel_used, h.at
             FROM feed f JOIN history h ON h.instance_id = f.instance_id AND h.seq = f.seq
             WHERE f.position > $1 ORDER BY f.position LIMIT {limit}"
        );
        let found = read!(self, |pool| sqlx::query(&sql).bind(after).fetch_all(pool).await)?;
        found
            .iter()
            .map(|row| {
                use sqlx::Row;
                Ok(FeedItem {
                    position: row.try_get("position")?,
                    definition: row.try_get("definition")?,
                    status: parse(row.try_get("status")?)?,
                    entry: rows::history_entry(row)?,
                })
            })
            .collect()
    }
}
