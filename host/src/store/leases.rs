//! Leases on background work: which host works on a piece of it, until when, under
//! which token. Effects carry theirs in their own rows ([`super::effects`]), bulk
//! migrations in theirs; periodic jobs (sweeps, event retries) share the `leases` table.
//!
//! Expiry is judged by the database's clock, never a host's: hosts whose clocks
//! disagree still agree on who holds what. A lease's token grows whenever the lease
//! changes hands, and a write made under a lease names its token, so a host that lost
//! its lease (it stalled past the expiry, and another host took over) cannot commit.

use super::{Result, Store};
use crate::model::Timestamp;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The database's clock, in epoch milliseconds, as each backend spells it.
pub(super) const POSTGRES_CLOCK: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
pub(super) const SQLITE_CLOCK: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// A lease's length in milliseconds, for SQL.
pub(super) fn millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// The database's clock as this host reckons it: its own, corrected by the offset
    /// measured at the last [`Store::read_clock`]. For writing expiries from outside
    /// SQL (an effect leased in its own commit); expiries are compared in SQL only.
    pub fn database_now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0.saturating_add(self.clock_offset.load(Ordering::Relaxed)))
    }

    /// Reads the database's clock and remembers how far this host's is off.
    pub async fn read_clock(&self) -> Result<Timestamp> {
        let sql = format!("SELECT {} AS value", self.clock());
        let before = Timestamp::now().0;
        let now = self.fetch_int(&sql, &[]).await?.unwrap_or_default();
        let midway = before + (Timestamp::now().0 - before) / 2;
        self.clock_offset.store(now - midway, Ordering::Relaxed);
        Ok(Timestamp(now))
    }

    /// Takes the lease on periodic job `name` for `owner` if nobody else holds it, or
    /// extends `owner`'s, to `lease` from now. Whether `owner` holds it now.
    pub async fn hold_lease(&self, name: &str, owner: &str, lease: Duration) -> Result<bool> {
        let now = self.clock();
        let sql = format!(
            "INSERT INTO leases (name, owner, token, expires_at) VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 token = leases.token + CASE WHEN leases.owner = excluded.owner THEN 0 ELSE 1 END,
                 owner = excluded.owner, expires_at = excluded.expires_at
             WHERE leases.owner = excluded.owner OR leases.expires_at < {now}"
        );
        Ok(self.execute(&sql, &[name.into(), owner.into(), millis(lease).into()]).await? == 1)
    }

    /// Takes the lease on running bulk migration `id` for `owner` unless another host
    /// holds it; the lease's token, or `None`.
    pub async fn lease_migration(&self, id: uuid::Uuid, owner: &str, lease: Duration) -> Result<Option<i64>> {
        let now = self.clock();
        let sql = format!(
            "UPDATE migrations SET lease_owner = $1, lease_expires_at = {now} + $2, lease_token = lease_token + 1
             WHERE id = $3 AND status = 'running' AND (lease_owner IS NULL OR lease_expires_at < {now})
             RETURNING lease_token"
        );
        let args = [owner.into(), millis(lease).into(), id.to_string().into()];
        Ok(self.write_all(&sql, &args, |row| row.int("lease_token")).await?.into_iter().next())
    }

    /// Extends the lease `owner` holds on migration `id` under `token`. False if it
    /// does not hold it any more.
    pub async fn extend_migration_lease(
        &self,
        id: uuid::Uuid,
        owner: &str,
        token: i64,
        lease: Duration,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE migrations SET lease_expires_at = {} + $1
             WHERE id = $2 AND lease_owner = $3 AND lease_token = $4 AND status = 'running'",
            self.clock()
        );
        let args = [millis(lease).into(), id.to_string().into(), owner.into(), token.into()];
        Ok(self.execute(&sql, &args).await? == 1)
    }

    /// Lets go of every effect lease `owner` holds (see [`Store::release_leases`]).
    pub async fn release_effect_leases(&self, owner: &str) -> Result<u64> {
        self.release_leases("effects", owner).await
    }

    /// Lets go of every migration lease `owner` holds (see [`Store::release_leases`]).
    pub async fn release_migration_leases(&self, owner: &str) -> Result<u64> {
        self.release_leases("migrations", owner).await
    }

    /// Lets go of every lease `owner` holds on the rows of `table`: a host that
    /// restarts takes its work up again at once instead of waiting for its old leases
    /// to expire. The tokens grow, so that nothing its previous run still has in
    /// flight can commit.
    async fn release_leases(&self, table: &str, owner: &str) -> Result<u64> {
        let sql = format!(
            "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL, lease_token = lease_token + 1
             WHERE lease_owner = $1"
        );
        self.execute(&sql, &[owner.into()]).await
    }
}
