//! The version lifecycle: pinning, retiring, deleting, and bulk migrations.

use super::backend::{Arg, End, WriteTx};
use super::{Claim, Error, Keyed, Result, Store, claim_key, rows};
use crate::model::{Instance, InstanceId, Migration, MigrationStep, Timestamp};

/// What [`Store::pin_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    Pinned,
    NoDefinition,
    NoVersion,
    Retired,
}

/// What [`Store::retire_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    Retired,
    /// Retired before, at this time; nothing was written.
    Already(Timestamp),
    NotFound,
    /// The version is pinned for new instances.
    Pinned,
}

/// What [`Store::delete_definition_version`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    NotRetired,
    /// So many instances still run on the version.
    StillRunning(i64),
}

impl Store {
    /// Pins the version new instances of `name` get (`None` returns to the default),
    /// unless it is retired. Pinning and retiring both lock the definition's row
    /// first, so neither decides on what the other is changing.
    pub async fn pin_version(
        &self,
        name: &str,
        version: Option<u32>,
        keyed: Option<Keyed<'_>>,
    ) -> Result<Pinning> {
        let (claim, name, for_update) = (Claim::of(keyed), name.to_owned(), self.for_update());
        transaction!(self, |tx| async move {
            claim_key(tx, claim.as_ref()).await?;
            if lock_definition(tx, &name, for_update).await?.is_none() {
                return Ok(End::Rollback(Pinning::NoDefinition));
            }
            if let Some(version) = version {
                match retired_at(tx, &name, version, "").await? {
                    None => return Ok(End::Rollback(Pinning::NoVersion)),
                    Some(Some(_)) => return Ok(End::Rollback(Pinning::Retired)),
                    Some(None) => {}
                }
            }
            let args = [version.map(i64::from).into(), name.as_str().into()];
            tx.execute("UPDATE definitions SET pinned_version = $1 WHERE name = $2", &args).await?;
            Ok(End::Commit(Pinning::Pinned))
        })
    }

    /// Marks a version retired at `at`, unless it is pinned (the first retirement is
    /// kept).
    pub async fn retire_version(
        &self,
        name: &str,
        version: u32,
        at: Timestamp,
        keyed: Option<Keyed<'_>>,
    ) -> Result<Retirement> {
        let (claim, name, for_update) = (Claim::of(keyed), name.to_owned(), self.for_update());
        transaction!(self, |tx| async move {
            claim_key(tx, claim.as_ref()).await?;
            let pinned = lock_definition(tx, &name, for_update).await?.flatten();
            match retired_at(tx, &name, version, for_update).await? {
                None => return Ok(End::Rollback(Retirement::NotFound)),
                Some(Some(at)) => return Ok(End::Rollback(Retirement::Already(Timestamp(at)))),
                Some(None) if pinned == Some(i64::from(version)) => {
                    return Ok(End::Rollback(Retirement::Pinned));
                }
                Some(None) => {}
            }
            let args = [at.0.into(), name.as_str().into(), i64::from(version).into()];
            tx.execute(
                "UPDATE definition_versions SET retired_at = $1 WHERE name = $2 AND version = $3",
                &args,
            )
            .await?;
            Ok(End::Commit(Retirement::Retired))
        })
    }

    /// Deletes a retired version that no running instance uses. The version's row is
    /// locked first: a start or migration onto it ([`super::Commit::onto_version`])
    /// locks it too, so either the instance is counted here or its commit finds the
    /// version gone.
    pub async fn delete_definition_version(
        &self,
        name: &str,
        version: u32,
        keyed: Option<Keyed<'_>>,
    ) -> Result<Deletion> {
        let (claim, name, for_update) = (Claim::of(keyed), name.to_owned(), self.for_update());
        transaction!(self, |tx| async move {
            claim_key(tx, claim.as_ref()).await?;
            match retired_at(tx, &name, version, for_update).await? {
                None => return Ok(End::Rollback(Deletion::NotFound)),
                Some(None) => return Ok(End::Rollback(Deletion::NotRetired)),
                Some(Some(_)) => {}
            }
            let args = [name.as_str().into(), i64::from(version).into()];
            let running = tx
                .fetch_optional(
                    "SELECT COUNT(*) AS n FROM instances
                     WHERE definition = $1 AND definition_version = $2 AND status = 'running'",
                    &args,
                    |row| row.int("n"),
                )
                .await?
                .unwrap_or_default();
            if running > 0 {
                return Ok(End::Rollback(Deletion::StillRunning(running)));
            }
            tx.execute("DELETE FROM definition_versions WHERE name = $1 AND version = $2", &args).await?;
            Ok(End::Commit(Deletion::Deleted))
        })
    }

    // --- bulk migrations ---------------------------------------------------------------

    /// Running instances of `definition` at `version` (in `states`, if given), in id
    /// order after `after`.
    pub async fn migration_candidates(
        &self,
        migration: &Migration,
        after: Option<InstanceId>,
        limit: u32,
    ) -> Result<Vec<Instance>> {
        let (sql, args) = candidates_sql(migration, after, Some(limit), rows::INSTANCE_SELECT);
        self.scan(&sql, &args, rows::instance).await
    }

    /// How many instances a new migration covers.
    pub async fn count_migration_candidates(&self, migration: &Migration) -> Result<i64> {
        let (sql, args) = candidates_sql(migration, None, None, "SELECT COUNT(*) AS value FROM instances");
        Ok(self.scan_int(&sql, &args).await?.unwrap_or_default())
    }

    /// Stores a new migration, leased to `owner` for `lease` under token 1, with
    /// `keyed`'s record in the same transaction.
    pub async fn insert_migration(
        &self,
        migration: &Migration,
        (owner, lease): (&str, std::time::Duration),
        keyed: Option<Keyed<'_>>,
    ) -> Result<()> {
        let states = migration
            .states
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|err| Error::Corrupt(err.to_string()))?;
        let sql = format!(
            "INSERT INTO migrations (id, definition, from_version, to_version, states, dry_run, reason, actor,
                 status, total, migrated, failed, skipped, cursor, created_at, updated_at, finished_at,
                 lease_owner, lease_expires_at, lease_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, 0, NULL, $11, $11, NULL, $12, {} + $13, 1)",
            self.clock()
        );
        let args: Vec<Arg<'static>> = vec![
            migration.id.to_string().into(),
            migration.definition.clone().into(),
            i64::from(migration.from_version).into(),
            i64::from(migration.to_version).into(),
            states.into(),
            i64::from(migration.dry_run).into(),
            migration.reason.clone().into(),
            migration.actor.clone().into(),
            migration.status.as_str().into(),
            migration.total.into(),
            migration.created_at.0.into(),
            owner.to_owned().into(),
            super::leases::millis(lease).into(),
        ];
        let claim = Claim::of(keyed);
        transaction!(self, |tx| async move {
            claim_key(tx, claim.as_ref()).await?;
            tx.execute(&sql, &args).await?;
            Ok(End::Commit(()))
        })
    }

    pub async fn migration(&self, id: uuid::Uuid) -> Result<Option<Migration>> {
        let sql = format!("{} WHERE id = $1", rows::MIGRATION_SELECT);
        self.fetch_optional(&sql, &[id.to_string().into()], rows::migration).await
    }

    /// Running migrations no host holds a lease on: left by a host that died or stopped.
    pub async fn unleased_migrations(&self) -> Result<Vec<Migration>> {
        let sql = format!(
            "{} WHERE status = 'running' AND (lease_owner IS NULL OR lease_expires_at < {}) ORDER BY created_at",
            rows::MIGRATION_SELECT,
            self.clock()
        );
        self.scan(&sql, &[], rows::migration).await
    }

    /// `(instance id, reason)` of every instance that could not be migrated.
    pub async fn migration_failures(&self, id: uuid::Uuid) -> Result<Vec<(String, String)>> {
        let sql =
            "SELECT instance_id, reason FROM migration_failures WHERE migration_id = $1 ORDER BY instance_id";
        self.scan(sql, &[id.to_string().into()], |row| Ok((row.text("instance_id")?, row.text("reason")?)))
            .await
    }

    /// Records what happened to `instance` and moves the cursor past it, unless an
    /// earlier run recorded it already. A real migration's instance commit records
    /// its step itself ([`super::Commit::migration`]).
    pub async fn record_migration_step(
        &self,
        (migration, token): (uuid::Uuid, i64),
        instance: InstanceId,
        step: &MigrationStep,
    ) -> Result<()> {
        let step = step.clone();
        transaction!(self, |tx| async move {
            if let MigrationStep::Failed(reason) = &step {
                let args = [migration.to_string().into(), instance.to_string().into(), reason.into()];
                tx.execute(
                    "INSERT INTO migration_failures (migration_id, instance_id, reason) VALUES ($1, $2, $3)
                     ON CONFLICT (migration_id, instance_id) DO NOTHING",
                    &args,
                )
                .await?;
            }
            advance_migration(tx, (migration, token), instance, &step).await?;
            Ok(End::Commit(()))
        })
    }

    /// Marks a migration completed with its final count of skipped instances, and lets
    /// go of its lease; [`Error::LeaseLost`] unless its lease still has `token`.
    pub async fn finish_migration(
        &self,
        (id, token): (uuid::Uuid, i64),
        skipped: i64,
        at: Timestamp,
    ) -> Result<()> {
        let sql =
            "UPDATE migrations SET status = 'completed', skipped = $1, finished_at = $2, updated_at = $2,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $3 AND lease_token = $4";
        match self.execute(sql, &[skipped.into(), at.0.into(), id.to_string().into(), token.into()]).await? {
            1 => Ok(()),
            _ => Err(Error::LeaseLost),
        }
    }
}

/// Counts one step and moves the cursor, only if the cursor is still before
/// `instance`: a step replayed after a crash is not counted twice. Fails with
/// [`Error::LeaseLost`] unless the migration's lease still has `token` (fencing).
pub(super) async fn advance_migration(
    tx: &mut impl WriteTx,
    (migration, token): (uuid::Uuid, i64),
    instance: InstanceId,
    step: &MigrationStep,
) -> Result<()> {
    let counter = match step {
        MigrationStep::Migrated => "migrated",
        MigrationStep::Skipped => "skipped",
        MigrationStep::Failed(_) => "failed",
    };
    let sql = format!(
        "UPDATE migrations SET {counter} = {counter} + CASE WHEN cursor IS NULL OR cursor < $1 THEN 1 ELSE 0 END,
             cursor = CASE WHEN cursor IS NULL OR cursor < $1 THEN $1 ELSE cursor END, updated_at = $2
         WHERE id = $3 AND lease_token = $4"
    );
    let args =
        [instance.to_string().into(), Timestamp::now().0.into(), migration.to_string().into(), token.into()];
    match tx.execute(&sql, &args).await? {
        1 => Ok(()),
        _ => Err(Error::LeaseLost),
    }
}

/// `select` over the migration's candidates, and its arguments.
fn candidates_sql<'m>(
    migration: &'m Migration,
    after: Option<InstanceId>,
    limit: Option<u32>,
    select: &str,
) -> (String, Vec<Arg<'m>>) {
    let mut sql =
        format!("{select} WHERE definition = $1 AND definition_version = $2 AND status = 'running'");
    let mut params: Vec<Arg> = vec![(&migration.definition).into(), i64::from(migration.from_version).into()];
    if let Some(states) = &migration.states {
        let placeholders: Vec<String> = (0..states.len()).map(|idx| format!("${}", idx + 3)).collect();
        sql.push_str(&format!(" AND state IN ({})", placeholders.join(", ")));
        params.extend(states.iter().map(Arg::from));
    }
    if let Some(after) = after {
        params.push(after.to_string().into());
        sql.push_str(&format!(" AND id > ${}", params.len()));
    }
    if let Some(limit) = limit {
        sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
    }
    (sql, params)
}

/// Locks the definition's row; its pinned version, `None` if there is no such definition.
async fn lock_definition(tx: &mut impl WriteTx, name: &str, for_update: &str) -> Result<Option<Option<i64>>> {
    let sql = format!("SELECT pinned_version FROM definitions WHERE name = $1{for_update}");
    tx.fetch_optional(&sql, &[name.into()], |row| row.int_or_null("pinned_version")).await
}

/// When the version was retired (`Some(None)`: it was not), `None` if it does not exist.
async fn retired_at(
    tx: &mut impl WriteTx,
    name: &str,
    version: u32,
    lock: &str,
) -> Result<Option<Option<i64>>> {
    let sql = format!("SELECT retired_at FROM definition_versions WHERE name = $1 AND version = $2{lock}");
    tx.fetch_optional(&sql, &[name.into(), i64::from(version).into()], |row| row.int_or_null("retired_at"))
        .await
}
