//! The version lifecycle: pinning the version new instances get, retiring and deleting
//! versions, and migrating running instances between versions, one or in bulk.

use super::engine::{self, Asked, Change, Trigger};
use super::instances::{Idempotent, InstanceView};
use super::{DefinitionSummary, Error, MAX_ATTEMPTS, Result, Service};
use crate::model::{
    Caller, DefinitionVersion, HistoryEntry, Instance, Migration, MigrationStatus, MigrationStep, Role,
    Status, Timestamp, Trigger as Cause, TriggerKind,
};
use crate::runtime::{self, Entry};
use crate::store::{Deletion, Pinning, Retirement};
use std::sync::Arc;
use switchyard_guest::abi::{CallKind, MigrateOutcome, MigrateRequest};

/// How fast a bulk migration goes: instances per batch, and the pause after each
/// batch, so that an operator can keep a large migration from crowding out traffic.
#[derive(Debug, Clone, Copy)]
pub struct MigrationPace {
    pub batch: u32,
    pub pause: std::time::Duration,
}

impl MigrationPace {
    /// Batches of 50 with no pause: between batches other work runs anyway.
    pub const DEFAULT: MigrationPace = MigrationPace { batch: 50, pause: std::time::Duration::ZERO };
}

/// Moving one instance to another version.
#[derive(Debug)]
pub struct MigrateInstance {
    pub id: crate::model::InstanceId,
    pub to_version: u32,
    pub reason: String,
    pub caller: Caller,
}

/// A bulk migration as requested.
#[derive(Debug)]
pub struct BulkMigration {
    pub definition: String,
    pub from_version: u32,
    pub to_version: u32,
    pub states: Option<Vec<String>>,
    pub dry_run: bool,
    pub reason: String,
    pub caller: Caller,
}

impl Service {
    /// Pins the version new instances of `name` get; `None` returns to the highest
    /// non-retired version. A retired version cannot be pinned.
    pub async fn pin_version(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<u32>,
        idempotent: Option<&Idempotent<'_, DefinitionSummary>>,
    ) -> Result<DefinitionSummary> {
        caller.require(Role::Admin)?;
        let pinned = self.definition(name).await?.pinned(version);
        let record = idempotent.map(|idempotent| idempotent.record(&pinned, Timestamp::now()));
        let not_found = |version| Error::VersionNotFound { name: name.into(), version };
        match self.store.pin_version(name, version, self.keyed(record.as_ref())).await? {
            Pinning::Pinned => Ok(pinned),
            Pinning::NoDefinition => Err(Error::DefinitionNotFound(name.into())),
            Pinning::NoVersion => Err(not_found(version.unwrap_or_default())),
            Pinning::Retired => {
                Err(Error::VersionRetired { name: name.into(), version: version.unwrap_or_default() })
            }
        }
    }

    /// Stops new instances on a version; running ones carry on. A pinned version
    /// cannot be retired.
    pub async fn retire_version(
        &self,
        caller: &Caller,
        name: &str,
        version: u32,
        idempotent: Option<&Idempotent<'_, DefinitionVersion>>,
    ) -> Result<DefinitionVersion> {
        caller.require(Role::Admin)?;
        let mut retired = self.definition_version(name, version).await?;
        let at = retired.retired_at.unwrap_or_else(Timestamp::now);
        retired.retired_at = Some(at);
        let record = idempotent.map(|idempotent| idempotent.record(&retired, at));
        match self.store.retire_version(name, version, at, self.keyed(record.as_ref())).await? {
            Retirement::Retired => Ok(retired),
            Retirement::Already(at) => {
                retired.retired_at = Some(at);
                self.keep_response(idempotent, &retired).await?;
                Ok(retired)
            }
            Retirement::NotFound => Err(Error::VersionNotFound { name: name.into(), version }),
            Retirement::Pinned => Err(Error::VersionPinned { name: name.into(), version }),
        }
    }

    /// Deletes a retired version no running instance uses.
    pub async fn delete_version(
        &self,
        caller: &Caller,
        name: &str,
        version: u32,
        idempotent: Option<&Idempotent<'_, ()>>,
    ) -> Result<()> {
        caller.require(Role::Admin)?;
        let record = idempotent.map(|idempotent| idempotent.record(&(), Timestamp::now()));
        match self.store.delete_definition_version(name, version, self.keyed(record.as_ref())).await? {
            Deletion::Deleted => {
                self.forget_version(name, version);
                Ok(())
            }
            Deletion::NotFound => Err(Error::VersionNotFound { name: name.into(), version }),
            Deletion::NotRetired => Err(Error::VersionNotRetired { name: name.into(), version }),
            Deletion::StillRunning(running) => {
                Err(Error::VersionInUse { name: name.into(), version, running })
            }
        }
    }

    /// Moves a running instance to `to_version` through the target module's `migrate`,
    /// retrying if an action commits first.
    #[tracing::instrument(skip_all, fields(id = %request.id, to_version = request.to_version))]
    pub async fn migrate_instance(
        &self,
        request: &MigrateInstance,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        request.caller.require(Role::Admin)?;
        let trigger = Trigger::Migrate {
            to_version: request.to_version,
            reason: request.reason.clone(),
            migration: None,
        };
        let asked = Asked { caller: &request.caller, if_match: None, idempotent };
        self.transition(request.id, &trigger, asked).await
    }

    /// What migrating would produce, written nowhere.
    pub async fn migrate_instance_dry_run(&self, request: &MigrateInstance) -> Result<InstanceView> {
        request.caller.require(Role::Admin)?;
        let current = self.stored_instance(request.id).await?;
        let change = self
            .migration_change(current, request.to_version, &request.reason, &request.caller.name, None)
            .await?;
        Ok(change.view)
    }

    /// Checks the migration path, runs the target module's `migrate` and checks its
    /// result against the target manifest.
    pub(super) async fn migration_change(
        &self,
        current: Instance,
        to_version: u32,
        reason: &str,
        actor: &str,
        trigger_id: Option<String>,
    ) -> Result<Change> {
        let from_version = current.definition_version;
        if from_version == to_version {
            return Err(Error::NoMigrationPath {
                from_version,
                to_version,
                reason: "the instance is at that version already".into(),
            });
        }
        let target = self.definition_version(&current.definition, to_version).await?;
        if target.retired_at.is_some() {
            return Err(Error::VersionRetired { name: current.definition, version: to_version });
        }
        let module = self.module(&current.definition, to_version, &target.sha256).await?;
        let manifest = &module.manifest;
        if !manifest.migrates_from.contains(&from_version) {
            return Err(undeclared_migration(from_version, to_version));
        }
        let now = Timestamp::now();
        let revision = current.revision.next();
        let call = MigrateRequest {
            context: engine::context(current.id, to_version, revision, now),
            from_version,
            state: current.state.clone(),
            data: current.data.clone(),
        };
        let called = self.call_guest(module.clone(), Entry::Migrate, call).await?;
        let (state, data) = match called.response {
            MigrateOutcome::Refused(rejection) => {
                engine::no_nul_in(&rejection)?;
                return Err(Error::Rejected { code: rejection.code, reason: rejection.reason });
            }
            MigrateOutcome::Migrated { state, data } => (state, data),
        };
        if serde_json::from_str::<serde::de::IgnoredAny>(&data).is_err() {
            return Err(runtime::Error::BadResponse("the migrated data is not JSON".into()).into());
        }
        let call = CallKind::Migrate { from_terminal: current.status.is_terminal() };
        let status = Status::of(manifest.check_outcome(call, &state)?.terminal);
        let payload = serde_json::json!({
            "from_version": from_version,
            "to_version": to_version,
            "reason": reason,
        });
        let history = HistoryEntry {
            instance_id: current.id,
            seq: revision.0,
            from_state: Some(current.state.clone()),
            to_state: state.clone(),
            trigger: Cause {
                kind: TriggerKind::Admin,
                name: "migrate".into(),
                id: trigger_id,
                payload: payload.to_string(),
            },
            actor: actor.into(),
            definition_version: to_version,
            module_sha256: module.sha256.clone(),
            fuel_used: called.fuel_used,
            at: now,
        };
        let next = Instance {
            definition_version: to_version,
            module_sha256: module.sha256.clone(),
            state,
            status,
            data,
            revision,
            updated_at: now,
            ..current
        };
        // A migration keeps a finished instance finished: it ends nothing.
        Ok(Change {
            view: engine::view(manifest, next),
            history,
            effects: Vec::new(),
            cancel_timers: Vec::new(),
            ends: false,
            migrates: true,
        })
    }

    // --- bulk migrations ---------------------------------------------------------------

    /// Checks the request and starts the migration in the background.
    pub async fn start_migration(
        self: &Arc<Self>,
        request: BulkMigration,
        idempotent: Option<&Idempotent<'_, Migration>>,
    ) -> Result<Migration> {
        request.caller.require(Role::Admin)?;
        let BulkMigration { definition, from_version, to_version, states, dry_run, reason, caller } = request;
        self.definition_version(&definition, from_version).await?;
        let target = self.definition_version(&definition, to_version).await?;
        if target.retired_at.is_some() {
            return Err(Error::VersionRetired { name: definition, version: to_version });
        }
        if from_version == to_version || !target.manifest.migrates_from.contains(&from_version) {
            return Err(undeclared_migration(from_version, to_version));
        }
        let now = Timestamp::now();
        let mut migration = Migration {
            id: uuid::Uuid::now_v7(),
            definition,
            from_version,
            to_version,
            states,
            dry_run,
            reason,
            actor: caller.name,
            status: MigrationStatus::Running,
            total: 0,
            migrated: 0,
            failed: 0,
            skipped: 0,
            cursor: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        migration.total = self.store.count_migration_candidates(&migration).await?;
        let record = idempotent.map(|idempotent| idempotent.record(&migration, now));
        let lease = (self.leases.owner.as_str(), self.leases.lease);
        self.store.insert_migration(&migration, lease, self.keyed(record.as_ref())).await?;
        // Inserted under the lease's first token.
        tokio::spawn(self.clone().run_migration(migration.id, 1));
        Ok(migration)
    }

    /// A migration with the `(instance id, reason)` of each failure.
    pub async fn migration(
        &self,
        caller: &Caller,
        id: uuid::Uuid,
    ) -> Result<(Migration, Vec<(String, String)>)> {
        caller.require(Role::Admin)?;
        let migration = self.stored_migration(id).await?;
        let failures = self.store.migration_failures(id).await?;
        Ok((migration, failures))
    }

    async fn stored_migration(&self, id: uuid::Uuid) -> Result<Migration> {
        self.store.migration(id).await?.ok_or_else(|| Error::MigrationNotFound(id.to_string()))
    }

    /// Lets go of the migration leases this host held before it restarted, so that it
    /// takes them up again at once.
    pub async fn release_migration_leases(&self) -> Result<()> {
        let released = self.store.release_migration_leases(&self.leases.owner).await?;
        if released > 0 {
            tracing::info!(released, "took back this host's migrations");
        }
        Ok(())
    }

    /// Takes up the running migrations no host holds a lease on (left by a host that
    /// died or stopped) and runs them; called periodically.
    pub async fn adopt_migrations(self: &Arc<Self>) -> Result<()> {
        for migration in self.store.unleased_migrations().await? {
            let Some(token) =
                self.store.lease_migration(migration.id, &self.leases.owner, self.leases.lease).await?
            else {
                continue;
            };
            tracing::info!(id = %migration.id, cursor = ?migration.cursor, "resuming migration");
            tokio::spawn(self.clone().run_migration(migration.id, token));
        }
        Ok(())
    }

    /// Runs migration `id` for as long as this host holds its lease (under `token`).
    #[tracing::instrument(skip(self))]
    async fn run_migration(self: Arc<Self>, id: uuid::Uuid, token: i64) {
        let (store, owner, lease) = (&self.store, self.leases.owner.as_str(), self.leases.lease);
        let extend = move || store.extend_migration_lease(id, owner, token, lease);
        match super::under_lease(lease, self.migrate_batches((id, token)), extend).await {
            Some(Ok(())) => {}
            // The migration stays `running`, and a host takes it up once the lease expires.
            Some(Err(err)) => tracing::error!(%err, "migration stopped"),
            None => tracing::warn!("the migration's lease was lost; another host goes on with it"),
        }
    }

    async fn migrate_batches(&self, (id, token): (uuid::Uuid, i64)) -> Result<()> {
        loop {
            let migration = self.stored_migration(id).await?;
            let batch = self
                .store
                .migration_candidates(&migration, migration.cursor, self.migration_pace.batch)
                .await?;
            if batch.is_empty() {
                break;
            }
            for instance in batch {
                let instance_id = instance.id;
                let step = self.migrate_one(&migration, token, instance).await?;
                if step != MigrationStep::Migrated || migration.dry_run {
                    self.store.record_migration_step((id, token), instance_id, &step).await?;
                }
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(self.migration_pace.pause).await;
        }
        let migration = self.stored_migration(id).await?;
        // Instances that finished or moved on before their turn were never picked up.
        let skipped = (migration.total - migration.migrated - migration.failed).max(migration.skipped);
        self.store.finish_migration((id, token), skipped, Timestamp::now()).await?;
        tracing::info!(
            migrated = migration.migrated,
            failed = migration.failed,
            skipped,
            "migration completed"
        );
        Ok(())
    }

    /// Migrates one instance (or, in a dry run, only computes it). A real migration
    /// records its step in the instance's own commit.
    async fn migrate_one(
        &self,
        migration: &Migration,
        token: i64,
        instance: Instance,
    ) -> Result<MigrationStep> {
        let id = instance.id;
        let trigger = Trigger::Migrate {
            to_version: migration.to_version,
            reason: migration.reason.clone(),
            migration: Some((migration.id, token)),
        };
        // Only an admin starts a migration; it runs on as that admin.
        let caller = Caller { name: migration.actor.clone(), role: Role::Admin };
        let asked = Asked { caller: &caller, if_match: None, idempotent: None };
        let _serialised = self.locks.lock(id).await;
        let mut current = instance;
        for _ in 0..MAX_ATTEMPTS {
            let in_scope = current.definition_version == migration.from_version
                && !current.status.is_terminal()
                && migration.states.as_ref().is_none_or(|states| states.contains(&current.state));
            if !in_scope {
                return Ok(MigrationStep::Skipped);
            }
            let base_revision = current.revision;
            let change = match self.compute(current, &trigger, asked.caller, None).await {
                Ok(change) => change,
                Err(err) if err.is_host_fault() => return Err(err),
                Err(refused) => return Ok(MigrationStep::Failed(refused.to_string())),
            };
            if migration.dry_run {
                return Ok(MigrationStep::Migrated);
            }
            match self.try_commit(change, base_revision, &trigger, asked).await {
                Ok(Some(_)) => return Ok(MigrationStep::Migrated),
                Ok(None) => {}
                Err(err) if err.is_host_fault() => return Err(err),
                // The target version was retired or deleted meanwhile.
                Err(refused) => return Ok(MigrationStep::Failed(refused.to_string())),
            }
            current = self.stored_instance(id).await?;
        }
        Ok(MigrationStep::Failed("the instance kept changing; not migrated".into()))
    }
}

fn undeclared_migration(from_version: u32, to_version: u32) -> Error {
    let reason = format!("version {to_version} does not declare a migration from version {from_version}");
    Error::NoMigrationPath { from_version, to_version, reason }
}

/// An admin's cancel or force-complete of one instance.
#[derive(Debug)]
pub struct Override {
    pub id: crate::model::InstanceId,
    pub kind: switchyard_guest::abi::OverrideKind,
    pub reason: String,
    pub caller: Caller,
}

impl Service {
    /// Cancels or force-completes an instance through its definition's `on_override`
    /// (which may choose another state, or refuse). A cancel closes the instance's open
    /// effects in the same commit, then cancels its running children.
    #[tracing::instrument(skip_all, fields(id = %request.id, kind = ?request.kind))]
    pub async fn admin_override(
        &self,
        request: &Override,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        request.caller.require(Role::Admin)?;
        let trigger = Trigger::Override { kind: request.kind, reason: request.reason.clone() };
        let asked = Asked { caller: &request.caller, if_match: None, idempotent };
        let view = self.transition(request.id, &trigger, asked).await?;
        if request.kind == switchyard_guest::abi::OverrideKind::Cancel {
            self.cancel_children(request.id, &request.caller).await;
        }
        Ok(view)
    }

    /// Cancels children still running under a cancelled parent (their cancel was cut
    /// short by a crash), and theirs; how many it cancelled. The executor runs it at
    /// start and then now and then.
    pub async fn cancel_orphaned_children(&self) -> usize {
        const BATCH: u32 = 100;
        let mut cancelled = 0;
        loop {
            let orphans = match self.store.children_of_cancelled(BATCH).await {
                Ok(orphans) => orphans,
                Err(err) => {
                    tracing::warn!(%err, "cannot look for children of cancelled instances");
                    return cancelled;
                }
            };
            let mut progressed = false;
            for (child, parent) in &orphans {
                if self.cancel_child(*child, *parent, &Caller::host()).await {
                    cancelled += 1;
                    progressed = true;
                }
            }
            // A child whose definition refuses its cancel stays running: do not ask again now.
            if orphans.len() < BATCH as usize || !progressed {
                return cancelled;
            }
        }
    }

    /// Cancels `child` of the cancelled `parent`, then its own running children.
    /// Whether it was cancelled now.
    async fn cancel_child(
        &self,
        child: crate::model::InstanceId,
        parent: crate::model::InstanceId,
        caller: &Caller,
    ) -> bool {
        let reason = format!("its parent {parent} was cancelled");
        let trigger = Trigger::Override { kind: switchyard_guest::abi::OverrideKind::Cancel, reason };
        let asked = Asked { caller, if_match: None, idempotent: None };
        match self.transition(child, &trigger, asked).await {
            Ok(_) => {
                self.cancel_children(child, caller).await;
                true
            }
            Err(Error::Finished(_)) => false,
            Err(err) => {
                tracing::warn!(%err, %child, "cannot cancel the child; it runs on");
                false
            }
        }
    }

    /// Cancels the running children of `id`, and theirs. Best effort after the parent's
    /// commit: a child that cannot be cancelled now is logged and left running, and
    /// [`Service::cancel_orphaned_children`] tries again later.
    fn cancel_children<'a>(
        &'a self,
        id: crate::model::InstanceId,
        caller: &'a Caller,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let effects = match self.store.effects_of(id).await {
                Ok(effects) => effects,
                Err(err) => return tracing::warn!(%err, %id, "cannot find the children to cancel"),
            };
            let children = effects.iter().filter(|effect| effect.kind == crate::model::EffectKind::Child);
            for child in children.filter_map(|effect| effect.child_id) {
                self.cancel_child(child, id, caller).await;
            }
        })
    }
}
