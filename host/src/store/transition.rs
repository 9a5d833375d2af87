//! The statements that write transitions: instance rows, history entries and
//! idempotency records, for one commit or a whole batch at once.
//!
//! A batch is written with a few multi-row statements instead of three statements per
//! commit: fewer statements to prepare and run, and on PostgreSQL fewer round trips.
//! Up to [`EXACT_CHUNK`] rows go in one statement of their own size; more go in chunks
//! of power-of-two sizes, so that a few dozen statement shapes serve every batch size
//! and stay prepared.

use super::backend::{Arg, Row, WriteTx};
use super::{Commit, Error, Result, lifecycle};
use crate::model::{
    Effect, EffectStatus, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, MigrationStep, Status,
    Timestamp,
};
use std::collections::HashSet;

/// The most rows in one statement (SQLite allows 32,766 parameters).
const MAX_CHUNK: usize = 64;
/// Up to this many rows take one statement of their exact size.
const EXACT_CHUNK: usize = 16;

/// How a batch's statements lock the rows they read or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locking {
    /// The database writes one transaction at a time (SQLite): nothing to lock.
    Serial,
    /// Hosts write at once (PostgreSQL): rows are locked, always in id order, so two
    /// batches never wait on each other in a cycle.
    Rows,
}

impl Locking {
    /// The suffix that keeps rows read from being deleted until the commit.
    fn share(self) -> &'static str {
        match self {
            Locking::Serial => "",
            Locking::Rows => " FOR KEY SHARE",
        }
    }
}

/// Writes `commits` in the open transaction. [`Error::RevisionConflict`] if an instance
/// was not at its base revision, [`Error::Duplicate`] if an idempotency key is taken,
/// [`Error::VersionGone`] if a version a commit moves onto is deleted or retired,
/// [`Error::LeaseLost`] if a lease a commit was computed under changed hands.
/// With several commits, the error does not say which one failed.
pub(super) async fn apply(tx: &mut impl WriteTx, commits: &[&Commit], locking: Locking) -> Result<()> {
    // Every statement below takes its rows in instance id order.
    let mut commits = commits.to_vec();
    commits.sort_by_key(|commit| commit.instance.id);
    let commits = commits.as_slice();
    check_versions(tx, commits, locking.share()).await?;
    let created: Vec<&Instance> = commits
        .iter()
        .filter(|commit| commit.base_revision.is_none())
        .map(|commit| &commit.instance)
        .collect();
    let changed: Vec<&Commit> =
        commits.iter().copied().filter(|commit| commit.base_revision.is_some()).collect();
    // A multi-row UPDATE locks rows in whatever order its plan visits them.
    if locking == Locking::Rows && changed.len() > 1 {
        lock_in_order(tx, &changed).await?;
    }
    let written = execute_rows(tx, &created, INSERT_INSTANCES, bind_created, None).await?
        + execute_rows(tx, &changed, UPDATE_INSTANCES, bind_changed, None).await?;
    if written != commits.len() as u64 {
        return Err(Error::RevisionConflict);
    }
    let history: Vec<(&HistoryEntry, Status)> =
        commits.iter().map(|commit| (&commit.history, commit.instance.status)).collect();
    execute_rows(tx, &history, INSERT_HISTORY, bind_history, None).await?;
    // Close what the transitions consumed or cancelled before opening what they ask
    // for: a timer that fired, or was cancelled, may be set again under its key.
    for commit in commits {
        if let Some(settle) = &commit.settles {
            let args = [
                (&settle.result).into(),
                commit.instance.updated_at.0.into(),
                (&settle.effect_id).into(),
                i64::from(settle.attempts).into(),
                settle.lease_token.into(),
            ];
            if tx.execute(SETTLE_EFFECT, &args).await? != 1 {
                return Err(Error::EffectClosed);
            }
        }
        if commit.cancels_effects {
            let args = [commit.instance.updated_at.0.into(), commit.instance.id.to_string().into()];
            tx.execute(CANCEL_EFFECTS, &args).await?;
        }
        for key in &commit.cancel_timers {
            let args =
                [commit.instance.updated_at.0.into(), commit.instance.id.to_string().into(), key.into()];
            tx.execute(CANCEL_TIMER, &args).await?;
        }
    }
    for commit in commits {
        let instance = &commit.instance;
        if let Some(event) = &commit.event {
            super::events::insert(tx, event).await?;
        }
        if let Some((effect_id, lease_token)) = &commit.child_of {
            let args = [
                instance.id.to_string().into(),
                instance.updated_at.0.into(),
                effect_id.into(),
                (*lease_token).into(),
            ];
            if tx.execute(CHILD_STARTED, &args).await? != 1 {
                return Err(Error::EffectClosed);
            }
        }
        // A child that ends has its end reported to its parent, by the executor.
        if instance.parent_id.is_some() && instance.status.is_terminal() {
            let args = [instance.id.to_string().into(), instance.updated_at.0.into()];
            tx.execute(CHILD_ENDED, &args).await?;
        }
    }
    let effects: Vec<(&Effect, Option<&(String, Timestamp)>)> = commits
        .iter()
        .flat_map(|commit| {
            commit.effects.iter().map(|effect| {
                let due_now = effect.due_at <= effect.created_at;
                (effect, commit.leased_to.as_ref().filter(|_| due_now))
            })
        })
        .collect();
    execute_rows(tx, &effects, INSERT_EFFECTS, bind_effect, None)
        .await
        .map_err(|err| if super::backend::unique_violation(&err) { Error::EffectKeyInUse } else { err })?;
    let records: Vec<&IdempotencyRecord> =
        commits.iter().filter_map(|commit| commit.idempotency.as_ref()).collect();
    insert_idempotency_records(tx, &records, expired_before(commits)).await?;
    for commit in commits {
        if let Some(migration) = commit.migration {
            lifecycle::advance_migration(tx, migration, commit.instance.id, &MigrationStep::Migrated).await?;
        }
    }
    Ok(())
}

/// Whether `commit` was made: its history entry is there as it wrote it (a change made
/// by another host at the same revision differs in its trigger, actor or time).
pub(super) async fn was_made(tx: &mut impl WriteTx, commit: &Commit) -> Result<bool> {
    let entry = &commit.history;
    let sql = "SELECT CAST(at AS TEXT), trigger_kind || '|' || trigger_name || '|' || COALESCE(trigger_id, '') || '|' || actor
               FROM history WHERE instance_id = $1 AND seq = $2";
    let args = [entry.instance_id.to_string().into(), entry.seq.into()];
    let ours = (
        entry.at.0.to_string(),
        format!(
            "{}|{}|{}|{}",
            entry.trigger.kind.as_str(),
            entry.trigger.name,
            entry.trigger.id.as_deref().unwrap_or_default(),
            entry.actor
        ),
    );
    Ok(tx.fetch_optional(sql, &args, pair).await? == Some(ours))
}

/// A row of two text columns.
fn pair(row: &dyn Row) -> Result<(String, String)> {
    Ok((row.text(0)?, row.text(1)?))
}

/// Locks the rows of the instances `changed` (sorted by id) in id order.
async fn lock_in_order(tx: &mut impl WriteTx, changed: &[&Commit]) -> Result<()> {
    let ids: Vec<String> = (1..=changed.len()).map(|idx| format!("${idx}")).collect();
    let sql = format!(
        "SELECT id, id FROM instances WHERE id IN ({}) ORDER BY id FOR NO KEY UPDATE",
        ids.join(", ")
    );
    let args: Vec<Arg> = changed.iter().map(|commit| commit.instance.id.to_string().into()).collect();
    tx.fetch_all(&sql, &args, pair).await?;
    Ok(())
}

/// Fails unless every version the commits move instances onto exists with the module
/// they ran (not deleted, nor deployed again with other bytes) and is not retired, and
/// keeps those rows from being deleted until the commit. (A retirement
/// committing meanwhile is ordered after the start: it stops only later starts.)
async fn check_versions(tx: &mut impl WriteTx, commits: &[&Commit], share_lock: &str) -> Result<()> {
    let mut versions: Vec<(&str, u32, &str)> = commits
        .iter()
        .filter(|commit| commit.onto_version)
        .map(|commit| {
            let instance = &commit.instance;
            (instance.definition.as_str(), instance.definition_version, instance.module_sha256.0.as_str())
        })
        .collect();
    versions.sort();
    versions.dedup();
    if versions.is_empty() {
        return Ok(());
    }
    let pairs: Vec<String> = (0..versions.len())
        .map(|idx| {
            format!("(name = ${} AND version = ${} AND sha256 = ${})", 3 * idx + 1, 3 * idx + 2, 3 * idx + 3)
        })
        .collect();
    // Sorted, so that hosts lock the rows in one order.
    let sql = format!(
        "SELECT name, CAST(version AS TEXT) FROM definition_versions
         WHERE retired_at IS NULL AND ({}) ORDER BY name, version{share_lock}",
        pairs.join(" OR ")
    );
    let args: Vec<Arg> = versions
        .iter()
        .flat_map(|(name, version, sha256)| {
            [
                Arg::Text(Some((*name).into())),
                Arg::Int(Some(i64::from(*version))),
                Arg::Text(Some((*sha256).into())),
            ]
        })
        .collect();
    if tx.fetch_all(&sql, &args, pair).await?.len() != versions.len() {
        return Err(Error::VersionGone);
    }
    Ok(())
}

/// The batch's expiry cutoff: the earliest of its commits', so that no record counts
/// as expired for one commit while it is live for another.
fn expired_before(commits: &[&Commit]) -> Timestamp {
    commits.iter().map(|commit| commit.expired_before).min().unwrap_or(Timestamp(i64::MIN))
}

/// Stores the records, each in place of an expired one under its key.
/// [`Error::Duplicate`] if any of the keys is held by a live record.
pub(super) async fn insert_idempotency_records(
    tx: &mut impl WriteTx,
    records: &[&IdempotencyRecord],
    expired_before: Timestamp,
) -> Result<()> {
    let headers = records
        .iter()
        .map(|record| serde_json::to_string(&record.response.headers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::Corrupt(err.to_string()))?;
    let rows: Vec<(&IdempotencyRecord, &String)> = records.iter().copied().zip(&headers).collect();
    let inserted =
        execute_rows(tx, &rows, INSERT_IDEMPOTENCY, bind_idempotency, Some(expired_before.0)).await?;
    if inserted != records.len() as u64 {
        return Err(Error::Duplicate);
    }
    Ok(())
}

/// Which of the commits' idempotency keys are held by live records. Requests are not
/// looked up one by one before they run: a batch asks for all its keys at once.
pub(super) async fn taken_keys(
    tx: &mut impl WriteTx,
    commits: &[&Commit],
) -> Result<HashSet<IdempotencyKey>> {
    let keys: Vec<&IdempotencyKey> =
        commits.iter().filter_map(|commit| commit.idempotency.as_ref()).map(|record| &record.key).collect();
    let expired_before = expired_before(commits);
    let mut taken = HashSet::new();
    for chunk in chunks(&keys) {
        let mut args: Vec<Arg> =
            chunk.iter().flat_map(|key| [(&key.scope).into(), (&key.key).into()]).collect();
        args.push(expired_before.0.into());
        for (scope, key) in tx.fetch_all(&SELECT_KEYS.sql(chunk.len()), &args, pair).await? {
            taken.insert(IdempotencyKey { scope, key });
        }
    }
    Ok(taken)
}

/// A statement over rows of values: its text around the `VALUES` list, and how many
/// values a row has. `$LAST` in `before` or `after` stands for one more value after the
/// rows'.
pub(super) struct Statement {
    pub(super) before: &'static str,
    pub(super) after: &'static str,
    pub(super) columns: usize,
}

const INSERT_INSTANCES: Statement = Statement {
    before: "INSERT INTO instances (id, definition, definition_version, module_sha256, state, status, data,
             revision, message, error, parent_id, callback_url, created_at, updated_at) VALUES ",
    after: "",
    columns: 14,
};

/// Each row updates its instance only if it is still at `base_revision`.
const UPDATE_INSTANCES: Statement = Statement {
    before:
        "WITH changed (id, base_revision, definition_version, module_sha256, state, status, data, revision,
             message, error, updated_at) AS (VALUES ",
    after: ") UPDATE instances SET definition_version = changed.definition_version,
             module_sha256 = changed.module_sha256, state = changed.state,
             status = changed.status, data = changed.data, revision = changed.revision,
             message = changed.message, error = changed.error, updated_at = changed.updated_at
         FROM changed WHERE instances.id = changed.id AND instances.revision = changed.base_revision",
    columns: 11,
};

/// Closes an open effect with its result; one row, or the effect was closed already
/// (or its lease, if `$5` names one, changed hands).
const SETTLE_EFFECT: &str =
    "UPDATE effects SET status = 'done', result = $1, updated_at = $2, attempts = $4, lease_owner = NULL
     WHERE id = $3 AND status IN ('pending', 'waiting', 'ready') AND lease_token = COALESCE($5, lease_token)";

/// The child effect waits for its child now; the child's end makes it due.
const CHILD_STARTED: &str =
    "UPDATE effects SET status = 'waiting', child_id = $1, due_at = 9223372036854775807,
         updated_at = $2, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = $3 AND status = 'pending' AND lease_token = $4";

const CHILD_ENDED: &str = "UPDATE effects SET status = 'ready', due_at = $2, updated_at = $2
     WHERE child_id = $1 AND status = 'waiting'";

const CANCEL_EFFECTS: &str = "UPDATE effects SET status = 'cancelled', updated_at = $1, lease_owner = NULL
     WHERE instance_id = $2 AND status IN ('pending', 'waiting', 'ready')";

const CANCEL_TIMER: &str = "UPDATE effects SET status = 'cancelled', updated_at = $1, lease_owner = NULL
     WHERE instance_id = $2 AND effect_key = $3 AND kind = 'timer' AND status = 'pending'";

const INSERT_EFFECTS: Statement = Statement {
    before: "INSERT INTO effects (id, instance_id, seq, effect_key, kind, name, input, options, definition,
             definition_version, status, attempts, due_at, created_at, updated_at, lease_owner, lease_expires_at,
             lease_token)
             VALUES ",
    after: "",
    columns: 18,
};

const INSERT_HISTORY: Statement = Statement {
    before: "INSERT INTO history (instance_id, seq, from_state, to_state, trigger_kind, trigger_name,
             trigger_id, payload, actor, definition_version, module_sha256, fuel_used, at, status) VALUES ",
    after: "",
    columns: 14,
};

const SELECT_KEYS: Statement = Statement {
    before: "WITH asked (scope, idempotency_key) AS (VALUES ",
    after: ") SELECT kept.scope, kept.idempotency_key FROM idempotency_keys kept
         JOIN asked ON kept.scope = asked.scope AND kept.idempotency_key = asked.idempotency_key
         WHERE kept.created_at >= $LAST",
    columns: 2,
};

const INSERT_IDEMPOTENCY: Statement = Statement {
    before: "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, status, headers, body,
             created_at) VALUES ",
    after: " ON CONFLICT (scope, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint,
             status = excluded.status, headers = excluded.headers, body = excluded.body,
             created_at = excluded.created_at
         WHERE idempotency_keys.created_at < $LAST",
    columns: 7,
};

/// Runs `statement` over all `rows`, chunk by chunk, with `last` for `$LAST`; the
/// rows affected in all.
pub(super) async fn execute_rows<'r, T>(
    tx: &mut impl WriteTx,
    rows: &'r [T],
    statement: Statement,
    bind: impl Fn(&'r T, &mut Vec<Arg<'r>>),
    last: Option<i64>,
) -> Result<u64> {
    let mut affected = 0;
    for chunk in chunks(rows) {
        let mut args = Vec::with_capacity(chunk.len() * statement.columns + 1);
        for row in chunk {
            bind(row, &mut args);
        }
        args.extend(last.map(Arg::from));
        affected += tx.execute(&statement.sql(chunk.len()), &args).await?;
    }
    Ok(affected)
}

/// `rows` in one chunk, or, beyond [`EXACT_CHUNK`], in chunks of the largest power of
/// two that fits, up to [`MAX_CHUNK`].
pub(super) fn chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = match rest.len() {
            0 => return None,
            len @ 1..=EXACT_CHUNK => len,
            len => MAX_CHUNK.min(1 << len.ilog2()),
        };
        let (chunk, after) = rest.split_at(size);
        rest = after;
        Some(chunk)
    })
}

impl Statement {
    /// The statement's text for `rows` rows: `($1, $2), ($3, $4)` and so on.
    pub(super) fn sql(&self, rows: usize) -> String {
        let last = format!("${}", rows * self.columns + 1);
        let mut sql = String::with_capacity(self.before.len() + self.after.len() + rows * self.columns * 5);
        sql.push_str(&self.before.replace("$LAST", &last));
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..self.columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", row * self.columns + column + 1));
            }
            sql.push(')');
        }
        sql.push_str(&self.after.replace("$LAST", &last));
        sql
    }
}

fn bind_created<'a>(instance: &'a &Instance, args: &mut Vec<Arg<'a>>) {
    args.extend([instance.id.to_string().into(), (&instance.definition).into()]);
    bind_transitioned(instance, args);
    args.extend([
        instance.parent_id.map(|id| id.to_string()).into(),
        (&instance.callback_url).into(),
        instance.created_at.0.into(),
        instance.updated_at.0.into(),
    ]);
}

fn bind_changed<'a>(commit: &'a &Commit, args: &mut Vec<Arg<'a>>) {
    let instance = &commit.instance;
    args.extend([instance.id.to_string().into(), commit.base_revision.map(|revision| revision.0).into()]);
    bind_transitioned(instance, args);
    args.push(instance.updated_at.0.into());
}

/// The columns a transition sets, in the order both instance statements list them.
fn bind_transitioned<'a>(instance: &'a Instance, args: &mut Vec<Arg<'a>>) {
    args.extend([
        i64::from(instance.definition_version).into(),
        (&instance.module_sha256.0).into(),
        (&instance.state).into(),
        instance.status.as_str().into(),
        (&instance.data).into(),
        instance.revision.0.into(),
        (&instance.message).into(),
        (&instance.error).into(),
    ]);
}

fn bind_effect<'a>(row: &'a (&Effect, Option<&(String, Timestamp)>), args: &mut Vec<Arg<'a>>) {
    let (effect, lease) = *row;
    args.extend([
        (&effect.id).into(),
        effect.instance_id.to_string().into(),
        effect.seq.into(),
        (&effect.key).into(),
        effect.kind.as_str().into(),
        (&effect.name).into(),
        (&effect.input).into(),
        (&effect.options).into(),
        (&effect.definition).into(),
        i64::from(effect.definition_version).into(),
        EffectStatus::Pending.as_str().into(),
        i64::from(effect.attempts).into(),
        effect.due_at.0.into(),
        effect.created_at.0.into(),
        effect.updated_at.0.into(),
        lease.map(|(owner, _)| owner.as_str()).into(),
        lease.map(|(_, expiry)| expiry.0).into(),
        // Leased in its own commit: the first lease of the effect.
        i64::from(lease.is_some()).into(),
    ]);
}

fn bind_history<'a>(row: &'a (&HistoryEntry, Status), args: &mut Vec<Arg<'a>>) {
    let (entry, status) = *row;
    args.extend([
        entry.instance_id.to_string().into(),
        entry.seq.into(),
        (&entry.from_state).into(),
        (&entry.to_state).into(),
        entry.trigger.kind.as_str().into(),
        (&entry.trigger.name).into(),
        (&entry.trigger.id).into(),
        (&entry.trigger.payload).into(),
        (&entry.actor).into(),
        i64::from(entry.definition_version).into(),
        (&entry.module_sha256.0).into(),
        i64::try_from(entry.fuel_used).unwrap_or(i64::MAX).into(),
        entry.at.0.into(),
        status.as_str().into(),
    ]);
}

fn bind_idempotency<'a>(row: &'a (&IdempotencyRecord, &String), args: &mut Vec<Arg<'a>>) {
    let (record, headers) = *row;
    args.extend([
        (&record.key.scope).into(),
        (&record.key.key).into(),
        (&record.fingerprint).into(),
        i64::from(record.response.status).into(),
        headers.as_str().into(),
        record.response.body.as_slice().into(),
        record.created_at.0.into(),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_exact_when_small_then_powers_of_two() {
        let sizes = |n: usize| chunks(&vec![0; n]).map(<[i32]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(13), [13]);
        assert_eq!(sizes(EXACT_CHUNK + 4), [16, 4]);
        assert_eq!(sizes(MAX_CHUNK * 2 + 3), [MAX_CHUNK, MAX_CHUNK, 3]);
    }

    #[test]
    fn numbers_the_values_of_every_row() {
        let statement = Statement { before: "INSERT INTO t (a, b) VALUES ", after: " END", columns: 2 };
        assert_eq!(statement.sql(1), "INSERT INTO t (a, b) VALUES ($1, $2) END");
        assert_eq!(statement.sql(3), "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) END");
        let statement = Statement { before: "VALUES ", after: " WHERE x < $LAST", columns: 2 };
        assert_eq!(statement.sql(2), "VALUES ($1, $2), ($3, $4) WHERE x < $5");
    }
}
