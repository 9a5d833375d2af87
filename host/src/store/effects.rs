//! The outbox as the executor sees it: leasing due effects, recording what an attempt
//! left to do, closing effects whose result the definition did not take.
//!
//! A lease (`lease_owner`, `lease_expires_at`, `lease_token`) says which host works on
//! an effect until when, by the database's clock; an expired lease is anyone's, and
//! taking it grows its token, which the holder's writes name ([`super::leases`]).
//! Effects are written by transition commits ([`super::transition`]); here only their
//! progress changes.

use super::leases::millis;
use super::{Result, Store, rows};
use crate::model::{Effect, EffectStatus, Timestamp};
use std::time::Duration;

/// What an attempt left to do with an effect.
#[derive(Debug, Clone)]
pub struct Progress {
    pub status: EffectStatus,
    pub attempts: u32,
    pub due_at: Timestamp,
    pub last_error: Option<String>,
    /// The event it comes back as, once known (JSON).
    pub result: Option<String>,
}

impl Store {
    /// Leases up to `limit` open effects that are due now and not leased by a live
    /// host, to `owner` for `lease`; returns them. Effects of the same instance come
    /// in the order they were asked for.
    pub async fn lease_due_effects(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Effect>> {
        // PostgreSQL: hosts skip each other's rows instead of queueing on them.
        // SQLite has one writer.
        let lock = if self.serial() { "" } else { " FOR UPDATE SKIP LOCKED" };
        let now = self.clock();
        let sql = format!(
            "UPDATE effects SET lease_owner = $1, lease_expires_at = {now} + $2, lease_token = lease_token + 1
             WHERE id IN (SELECT id FROM effects
                 WHERE status IN ('pending', 'waiting', 'ready') AND due_at <= {now}
                   AND (lease_expires_at IS NULL OR lease_expires_at < {now})
                 ORDER BY due_at, id LIMIT {limit}{lock})
             RETURNING {}",
            rows::EFFECT_COLUMNS
        );
        let mut effects = self.write_all(&sql, &[owner.into(), millis(lease).into()], rows::effect).await?;
        effects.sort_by_key(|effect| (effect.instance_id, effect.seq));
        Ok(effects)
    }

    /// How long until the next open effect can be leased, by the database's clock:
    /// until it falls due, or, if a host holds it past that, until its lease runs out.
    pub async fn next_effect_due(&self) -> Result<Option<Duration>> {
        let sql = format!(
            "SELECT MIN(CASE WHEN lease_expires_at > due_at THEN lease_expires_at ELSE due_at END) - {} AS value
             FROM effects WHERE status IN ('pending', 'waiting', 'ready')",
            self.clock()
        );
        let wait = self.scan_int(&sql, &[]).await?;
        Ok(wait.map(|wait| Duration::from_millis(u64::try_from(wait).unwrap_or(0))))
    }

    /// How many effects are open, and when the one due longest ago fell due (if one
    /// is due at `now`): what `GET /metrics` tells of the outbox.
    pub async fn outbox_summary(&self, now: Timestamp) -> Result<(i64, Option<Timestamp>)> {
        let sql = "SELECT COUNT(*) AS open, MIN(CASE WHEN due_at <= $1 THEN due_at END) AS oldest_due
                   FROM effects WHERE status IN ('pending', 'waiting', 'ready')";
        let summary = self
            .scan_one(sql, &[now.0.into()], |row| Ok((row.int("open")?, row.int_or_null("oldest_due")?)))
            .await?;
        let (open, oldest_due) = summary.unwrap_or_default();
        Ok((open, oldest_due.map(Timestamp)))
    }

    pub async fn effect(&self, id: &str) -> Result<Option<Effect>> {
        let sql = format!("SELECT {} FROM effects WHERE id = $1", rows::EFFECT_COLUMNS);
        self.fetch_optional(&sql, &[id.into()], rows::effect).await
    }

    /// Up to `limit` running children whose parent's admin cancel closed their child
    /// effect, and that were not sent a cancel of their own yet, with that parent: a
    /// parent's cancel cancels its children after its own commit, so a crash in between
    /// leaves them running.
    pub async fn children_of_cancelled(
        &self,
        limit: u32,
    ) -> Result<Vec<(crate::model::InstanceId, crate::model::InstanceId)>> {
        let sql = format!(
            "SELECT child.id, child.parent_id FROM effects spawned
             JOIN instances child ON child.id = spawned.child_id
             WHERE spawned.kind = 'child' AND spawned.status = 'cancelled' AND spawned.child_id IS NOT NULL
               AND child.status = 'running'
               AND NOT EXISTS (SELECT 1 FROM history cancel WHERE cancel.instance_id = child.id
                                 AND cancel.trigger_kind = 'admin' AND cancel.trigger_name = 'cancel')
             LIMIT {limit}"
        );
        self.scan(&sql, &[], |row| Ok((rows::parse(row.text("id")?)?, rows::parse(row.text("parent_id")?)?)))
            .await
    }

    /// Every effect of an instance, in the order they were asked for.
    pub async fn effects_of(&self, instance: crate::model::InstanceId) -> Result<Vec<Effect>> {
        let sql = format!(
            "SELECT {} FROM effects WHERE instance_id = $1 ORDER BY seq, created_at",
            rows::EFFECT_COLUMNS
        );
        self.scan(&sql, &[instance.to_string().into()], rows::effect).await
    }

    /// Records `progress` on an effect that is still `from` (the status the work on
    /// it started from) and lets go of its lease. False if it moved on meanwhile (a
    /// report came first, it was cancelled, a child's start committed though its answer
    /// was lost), or if `lease_token` is given and the lease has changed hands since
    /// (fencing).
    pub async fn record_effect_progress(
        &self,
        (id, lease_token): (&str, Option<i64>),
        from: EffectStatus,
        progress: &Progress,
        now: Timestamp,
    ) -> Result<bool> {
        let sql = "UPDATE effects SET status = $1, attempts = $2, due_at = $3, last_error = $4,
                 result = COALESCE($5, result), updated_at = $6, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $7 AND status = $9 AND lease_token = COALESCE($8, lease_token)";
        let args = [
            progress.status.as_str().into(),
            i64::from(progress.attempts).into(),
            progress.due_at.0.into(),
            (&progress.last_error).into(),
            (&progress.result).into(),
            now.0.into(),
            id.into(),
            lease_token.into(),
            from.as_str().into(),
        ];
        Ok(self.execute(sql, &args).await? == 1)
    }

    /// Extends the lease on an effect to `lease` from now, if it still has `token`.
    /// False if not (the effect was closed, or the lease ran out and was taken).
    pub async fn extend_effect_lease(&self, id: &str, token: i64, lease: Duration) -> Result<bool> {
        let sql = format!(
            "UPDATE effects SET lease_expires_at = {} + $1
             WHERE id = $2 AND lease_token = $3 AND lease_owner IS NOT NULL",
            self.clock()
        );
        Ok(self.execute(&sql, &[millis(lease).into(), id.into(), token.into()]).await? == 1)
    }
}
