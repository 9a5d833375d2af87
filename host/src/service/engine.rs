//! The transition engine. Every change to an existing instance (an action, an event
//! (an effect's result or one a client posted), a migration) goes through
//! [`Service::transition`]: take the instance (this process's copy, or the store's),
//! check the trigger against it, run the guest, check its outcome, and commit the new
//! state with its history entry, its effects and its idempotency record in one
//! transaction; when another change committed first, go again on the new state.
//! `start` shares the checks and the commit, without the loop: a new instance has no
//! earlier state to lose to.

use super::instances::{Idempotent, InstanceView};
use super::{Error, MAX_ATTEMPTS, Result, Service};
use crate::model::{
    Caller, Effect, EffectKind, EffectStatus, HistoryEntry, Instance, InstanceId, PostedEvent, Revision,
    Role, Status, Timestamp, Trigger as Cause, TriggerKind,
};
use crate::runtime::{self, Called, Entry, LoadedModule};
use crate::store::{self, Commit, Settle};
use crate::telemetry;
use serde::Serialize;
use sha2::Digest;
use std::sync::Arc;
use switchyard_guest::abi::{
    self, Accepted, ActionRequest, CallKind, Context, EventRequest, Manifest, Outcome,
};

/// What sets a transition off.
#[derive(Debug)]
pub(super) enum Trigger {
    /// A client's action, with its JSON payload.
    Action { action: String, payload: String },
    /// An event for `on_event`: an effect's result (`settles` names the effect; it is
    /// closed in the same commit) or an event a client posted (`posted` says when; it
    /// is kept in the same commit).
    Event { event: abi::Event, settles: Option<Settling>, posted: Option<Timestamp> },
    /// An admin's migration to another version, or a step of bulk `migration` (with
    /// the token of the lease the step runs under).
    Migrate { to_version: u32, reason: String, migration: Option<(uuid::Uuid, i64)> },
    /// An admin's cancel or force-complete, through `on_override`.
    Override { kind: abi::OverrideKind, reason: String },
}

impl Trigger {
    /// The kind history records it under.
    fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Action { .. } => TriggerKind::Action,
            Trigger::Event { event, .. } => event_kind(event),
            Trigger::Migrate { .. } | Trigger::Override { .. } => TriggerKind::Admin,
        }
    }
}

/// An event the host delivers is an effect's result; any other, a client's.
fn event_kind(event: &abi::Event) -> TriggerKind {
    if abi::events::is_host_event(&event.name) { TriggerKind::Effect } else { TriggerKind::Event }
}

/// Counts a transition tried on an instance of `definition` at `version`, by how it ended.
pub(super) fn count_transition<T>(definition: &str, version: u32, trigger: TriggerKind, result: &Result<T>) {
    let outcome = match result {
        Ok(_) => "committed",
        Err(
            Error::Rejected { .. }
            | Error::NotAllowed { .. }
            | Error::UnknownAction { .. }
            | Error::PreconditionFailed { .. }
            | Error::NoMigrationPath { .. }
            | Error::Finished(_),
        ) => "rejected",
        Err(Error::Guest(_) | Error::BadOutcome(_) | Error::BadEffects(_)) => "definition_failed",
        Err(_) => "refused",
    };
    metrics::counter!(
        telemetry::TRANSITIONS,
        "definition" => definition.to_owned(),
        "version" => version.to_string(),
        "trigger" => trigger.as_str(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// The effect a result closes, with its attempts so far and the token of the lease
/// the result was worked out under (`None` for a participant's report).
#[derive(Debug, Clone)]
pub(crate) struct Settling {
    pub effect_id: String,
    pub attempts: u32,
    pub lease_token: Option<i64>,
}

/// What a commit records besides the instance: the bulk migration it is a step of,
/// the effect whose result it delivers, the posted event it applies.
#[derive(Debug, Default)]
pub(super) struct Closes {
    pub migration: Option<(uuid::Uuid, i64)>,
    pub settles: Option<Settle>,
    pub posted: Option<(abi::Event, Timestamp)>,
    /// The parent's child effect a new instance is started for, and its lease's token.
    pub child_of: Option<(String, i64)>,
    /// Whether the instance's open effects are cancelled with this commit.
    pub cancels_effects: bool,
}

impl Trigger {
    fn closes(&self) -> Closes {
        match self {
            Trigger::Migrate { migration, .. } => Closes { migration: *migration, ..Closes::default() },
            Trigger::Event { event, settles, posted } => Closes {
                migration: None,
                settles: settles.as_ref().map(|settling| Settle {
                    effect_id: settling.effect_id.clone(),
                    attempts: settling.attempts,
                    result: event_json(event),
                    lease_token: settling.lease_token,
                }),
                posted: posted.map(|received_at| (event.clone(), received_at)),
                child_of: None,
                cancels_effects: false,
            },
            Trigger::Override { kind, .. } => {
                Closes { cancels_effects: *kind == abi::OverrideKind::Cancel, ..Closes::default() }
            }
            Trigger::Action { .. } => Closes::default(),
        }
    }
}

/// Who asked, and under which conditions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked<'a> {
    pub caller: &'a Caller,
    /// Refuse unless the instance is still at this revision.
    pub if_match: Option<Revision>,
    pub idempotent: Option<&'a Idempotent<'a>>,
}

/// A computed change: the instance as it would be, the history entry saying why, and
/// what the transition asks of the outbox.
#[derive(Debug)]
pub(super) struct Change {
    pub view: InstanceView,
    pub history: HistoryEntry,
    pub effects: Vec<Effect>,
    pub cancel_timers: Vec<String>,
    /// Whether the change ends the instance: its terminal callback is then due.
    pub ends: bool,
    /// Whether it moves the instance to another version (a migration).
    pub migrates: bool,
}

impl Service {
    /// Runs `trigger` on instance `id` until it commits, is refused, or keeps losing to
    /// other changes ([`Error::Contention`]).
    pub(super) async fn transition(
        &self,
        id: InstanceId,
        trigger: &Trigger,
        asked: Asked<'_>,
    ) -> Result<InstanceView> {
        let mut read = None;
        let result = self.transition_once_read(id, trigger, asked, &mut read).await;
        if let Some((definition, version)) = read {
            count_transition(&definition, version, trigger.kind(), &result);
        }
        result
    }

    /// [`Service::transition`]; `read` names the instance's definition and version as
    /// first read, if it was.
    async fn transition_once_read(
        &self,
        id: InstanceId,
        trigger: &Trigger,
        asked: Asked<'_>,
        read: &mut Option<(String, u32)>,
    ) -> Result<InstanceView> {
        let _serialised = self.locks.lock(id).await;
        // The copy this process committed last spares a read. Should a verdict computed
        // from it go against the request, the copy may have been stale: the verdict
        // stands if the store is still at the copy's revision, and is computed again
        // from the store otherwise. So a guest runs twice only when its input was stale.
        let mut copy = self.recent.get(id);
        let mut stored = None;
        for _ in 0..MAX_ATTEMPTS {
            let (current, from_copy) = match (copy.take(), stored.take()) {
                (Some(instance), _) => (instance, true),
                (None, Some(instance)) => (instance, false),
                (None, None) => (self.stored_instance(id).await?, false),
            };
            let revision = current.revision;
            read.get_or_insert_with(|| (current.definition.clone(), current.definition_version));
            match self.attempt(current, trigger, asked).await {
                Ok(Some(view)) => return Ok(view),
                Ok(None) => metrics::counter!(telemetry::TRANSITIONS_RECOMPUTED).increment(1),
                Err(err) if from_copy && judged_on_state(&err) => {
                    let instance = self.stored_instance(id).await?;
                    if instance.revision == revision {
                        return Err(err);
                    }
                    self.recent.forget(id);
                    metrics::counter!(telemetry::TRANSITIONS_RECOMPUTED).increment(1);
                    stored = Some(instance);
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Contention)
    }

    /// One try of [`Service::transition`]; `None` if another change committed first.
    async fn attempt(
        &self,
        current: Instance,
        trigger: &Trigger,
        asked: Asked<'_>,
    ) -> Result<Option<InstanceView>> {
        let current = check_revision(current, asked.if_match)?;
        let base_revision = current.revision;
        let key = asked.idempotent.map(|idempotent| idempotent.key.key.clone());
        let change = self.compute(current, trigger, asked.caller, key).await?;
        self.try_commit(change, base_revision, trigger, asked).await
    }

    /// What `trigger` does to `current`, computed by the guest and checked. `key` is
    /// the request's idempotency key, recorded as the trigger's id where it has none.
    pub(super) async fn compute(
        &self,
        current: Instance,
        trigger: &Trigger,
        caller: &Caller,
        key: Option<String>,
    ) -> Result<Change> {
        let actor = caller.name.as_str();
        match trigger {
            Trigger::Action { action, payload } => {
                self.action_change(current, action, payload, caller, key).await
            }
            Trigger::Event { event, .. } => self.event_change(current, event, actor).await,
            Trigger::Migrate { to_version, reason, migration } => {
                let trigger_id = migration.map(|(migration, _)| migration.to_string()).or(key);
                self.migration_change(current, *to_version, reason, actor, trigger_id).await
            }
            Trigger::Override { kind, reason } => {
                self.override_change(current, *kind, reason, actor, key).await
            }
        }
    }

    async fn override_change(
        &self,
        current: Instance,
        kind: abi::OverrideKind,
        reason: &str,
        actor: &str,
        key: Option<String>,
    ) -> Result<Change> {
        // A failed instance may still be force-completed (resolved by hand), if its
        // definition agrees; anything else finished stays as it is.
        let resolvable = kind == abi::OverrideKind::ForceComplete && current.status == Status::Failed;
        if current.status.is_terminal() && !resolvable {
            return Err(Error::Finished(current.id.to_string()));
        }
        let module = self.module_of(&current).await?;
        let (now, revision) = (Timestamp::now(), current.revision.next());
        let called = if module.manifest.abi >= 2 {
            let request = abi::OverrideRequest {
                context: context(current.id, current.definition_version, revision, now),
                state: current.state.clone(),
                data: current.data.clone(),
                kind,
                reason: reason.into(),
            };
            self.call_outcome(module.clone(), Entry::OnOverride, request).await?
        } else {
            // An ABI-1 module has no `on_override`: the default, as the SDK has it.
            Called { response: default_override(&module.manifest, &current, kind, reason), fuel_used: 0 }
        };
        let name = match kind {
            abi::OverrideKind::Cancel => "cancel",
            abi::OverrideKind::ForceComplete => "force-complete",
        };
        let payload = serde_json::json!({ "reason": reason }).to_string();
        let cause = Cause { kind: TriggerKind::Admin, name: name.into(), id: key, payload };
        outcome_change(current, &module, CallKind::Override, called, cause, actor, now)
    }

    async fn action_change(
        &self,
        current: Instance,
        action: &str,
        payload: &str,
        caller: &Caller,
        key: Option<String>,
    ) -> Result<Change> {
        let module = self.module_of(&current).await?;
        let manifest = &module.manifest;
        if manifest.action(action).is_none() {
            return Err(Error::UnknownAction {
                definition: current.definition,
                version: current.definition_version,
                action: action.into(),
            });
        }
        let allowed_actions = allowed_actions(manifest, &current);
        if !allowed_actions.iter().any(|allowed| allowed == action) {
            return Err(Error::NotAllowed {
                action: action.into(),
                current_state: current.state,
                allowed_actions,
            });
        }
        if manifest.action(action).is_some_and(|declared| declared.admin_only) {
            caller.require(Role::Admin)?;
        }
        let (now, revision) = (Timestamp::now(), current.revision.next());
        let request = ActionRequest {
            context: context(current.id, current.definition_version, revision, now),
            state: current.state.clone(),
            data: current.data.clone(),
            action: action.into(),
            payload: payload.into(),
        };
        let called = self.call_outcome(module.clone(), Entry::OnAction, request).await?;
        let cause =
            Cause { kind: TriggerKind::Action, name: action.into(), id: key, payload: payload.into() };
        outcome_change(current, &module, CallKind::Action(action), called, cause, &caller.name, now)
    }

    async fn event_change(&self, current: Instance, event: &abi::Event, actor: &str) -> Result<Change> {
        if current.status.is_terminal() {
            return Err(Error::Finished(current.id.to_string()));
        }
        let module = self.module_of(&current).await?;
        let (now, revision) = (Timestamp::now(), current.revision.next());
        let request = EventRequest {
            context: context(current.id, current.definition_version, revision, now),
            state: current.state.clone(),
            data: current.data.clone(),
            event: event.clone(),
        };
        let called = self.call_outcome(module.clone(), Entry::OnEvent, request).await?;
        let cause = Cause {
            kind: event_kind(event),
            name: event.name.clone(),
            id: Some(event.id.clone()),
            payload: event.payload.clone(),
        };
        outcome_change(current, &module, CallKind::Event, called, cause, actor, now)
    }

    /// Runs a call answering an [`Outcome`], decoded as the module's ABI encodes it.
    pub(super) async fn call_outcome<Req: Serialize>(
        &self,
        module: Arc<LoadedModule>,
        entry: Entry,
        request: Req,
    ) -> Result<Called<Outcome>> {
        let called: Called<Outcome> = if module.manifest.abi == 1 {
            let called: Called<abi::v1::Outcome> = self.call_guest(module, entry, request).await?;
            Called { response: called.response.into(), fuel_used: called.fuel_used }
        } else {
            self.call_guest(module, entry, request).await?
        };
        match &called.response {
            Outcome::Accepted(accepted) => {
                no_nul("message", accepted.message.as_deref().unwrap_or_default())?
            }
            Outcome::Rejected(rejection) => no_nul_in(rejection)?,
        }
        Ok(called)
    }

    /// Commits a change computed from `base_revision`. `None` when another change
    /// committed first and the caller should compute again from the new state; under
    /// `If-Match` that is a refusal instead.
    pub(super) async fn try_commit(
        &self,
        change: Change,
        base_revision: Revision,
        trigger: &Trigger,
        asked: Asked<'_>,
    ) -> Result<Option<InstanceView>> {
        let id = change.view.instance.id;
        match self.commit(change, Some(base_revision), trigger.closes(), asked.idempotent).await {
            Ok(view) => Ok(Some(view)),
            Err(store::Error::RevisionConflict) if asked.if_match.is_some() => {
                let current = self.stored_instance(id).await?;
                Err(Error::PreconditionFailed { current: current.revision })
            }
            Err(store::Error::RevisionConflict) => Ok(None),
            Err(err) => Err(commit_error(err)),
        }
    }

    /// Commits `change`: created if there is no `base_revision`, else updated from it.
    pub(super) async fn commit(
        &self,
        change: Change,
        base_revision: Option<Revision>,
        closes: Closes,
        idempotent: Option<&Idempotent<'_>>,
    ) -> store::Result<InstanceView> {
        let Change { view, history, mut effects, cancel_timers, ends, migrates } = change;
        let instance = &view.instance;
        if ends && let Some(url) = &instance.callback_url {
            effects.push(callback_row(instance, url, (self.callbacks.render)(&view)));
        }
        let idempotency = idempotent.map(|idempotent| idempotent.record(&view, instance.updated_at));
        // Effects due now go to this process's executor, leased to it in the commit;
        // the executor looks at the outbox again for the rest (`Commit::wakes_executors`).
        // The commit writes them with their first lease.
        let handed_over: Vec<Effect> = effects
            .iter()
            .filter(|effect| effect.due_at <= effect.created_at)
            .map(|effect| Effect { lease_token: 1, ..effect.clone() })
            .collect();
        let lease_until = Timestamp(
            self.store
                .database_now()
                .0
                .saturating_add(i64::try_from(self.leases.lease.as_millis()).unwrap_or(i64::MAX)),
        );
        let event = closes.posted.map(|(event, received_at)| PostedEvent {
            instance_id: instance.id,
            event_id: event.id,
            name: event.name,
            payload: event.payload,
            refused: None,
            seq: Some(history.seq),
            pending: None,
            received_at,
        });
        let commit = Commit {
            instance: instance.clone(),
            base_revision,
            history,
            idempotency,
            expired_before: self.idempotency_cutoff(),
            migration: closes.migration,
            effects,
            cancel_timers,
            settles: closes.settles,
            event,
            child_of: closes.child_of,
            cancels_effects: closes.cancels_effects,
            // Only effects due at once are leased; a commit without any leases nothing.
            leased_to: (!handed_over.is_empty()).then(|| (self.leases.owner.clone(), lease_until)),
            onto_version: base_revision.is_none() || migrates,
        };
        let wakes_executor = commit.wakes_executors();
        if let Err(err) = self.store.commit(commit).await {
            // A taken key wrote nothing; after any other failure the copy may be stale.
            if !matches!(err, store::Error::Duplicate) {
                self.recent.forget(instance.id);
            }
            return Err(err);
        }
        self.recent.committed(instance);
        self.changes.publish(&view);
        let committed = std::time::Instant::now();
        for effect in handed_over {
            // Without an executor (it stopped), the lease runs out and the effect waits
            // for the next host to look.
            let _ = self.handover.send((effect, committed));
        }
        if wakes_executor {
            self.outbox.notify_one();
        }
        Ok(view)
    }
}

/// The change an outcome of `module` makes to `current`, checked against its manifest.
pub(super) fn outcome_change(
    current: Instance,
    module: &LoadedModule,
    call: CallKind<'_>,
    called: Called<Outcome>,
    cause: Cause,
    actor: &str,
    now: Timestamp,
) -> Result<Change> {
    let manifest = &module.manifest;
    let revision = current.revision.next();
    let current_status = current.status;
    let accepted = accepted(called.response)?;
    let status = status_after(manifest, call, &accepted)?;
    let history = HistoryEntry {
        instance_id: current.id,
        seq: revision.0,
        from_state: (call != CallKind::Init).then(|| current.state.clone()),
        to_state: accepted.state.clone(),
        trigger: cause,
        actor: actor.into(),
        definition_version: current.definition_version,
        module_sha256: module.sha256.clone(),
        fuel_used: called.fuel_used,
        at: now,
    };
    let (effects, cancel_timers) = outbox_rows(&current, revision, now, accepted.effects);
    let next = Instance {
        state: accepted.state,
        status,
        data: accepted.data,
        revision,
        error: error_of(status, &accepted.message),
        message: accepted.message,
        updated_at: now,
        ..current
    };
    // A failed instance force-completed ends again, as completed.
    let ends = status.is_terminal() && status != current_status;
    Ok(Change { view: view(manifest, next), history, effects, cancel_timers, ends, migrates: false })
}

/// What the SDK's default `on_override` answers, for modules that have none: the
/// manifest's first terminal state of the override's status, the data unchanged.
fn default_override(
    manifest: &Manifest,
    current: &Instance,
    kind: abi::OverrideKind,
    reason: &str,
) -> Outcome {
    match abi::default_override(manifest, &current.state, kind, reason) {
        Ok((state, message)) => Outcome::Accepted(Accepted {
            state,
            data: current.data.clone(),
            message: Some(message),
            effects: Vec::new(),
        }),
        Err(rejection) => Outcome::Rejected(rejection),
    }
}

/// The outbox rows of an outcome's effects, and the timers it cancels.
fn outbox_rows(
    instance: &Instance,
    revision: Revision,
    now: Timestamp,
    effects: Vec<abi::Effect>,
) -> (Vec<Effect>, Vec<String>) {
    let mut rows = Vec::new();
    let mut cancel_timers = Vec::new();
    for effect in effects {
        let (key, kind, name, input, options, due_at) = match effect {
            abi::Effect::Task(task) => {
                let options = serde_json::json!({
                    "retry": task.retry.map(|retry| serde_json::json!({
                        "max_attempts": retry.max_attempts,
                        "initial_interval_ms": retry.initial_interval_ms,
                        "backoff_coefficient": retry.backoff_coefficient,
                        "max_interval_ms": retry.max_interval_ms,
                    })),
                    "attempt_timeout_ms": task.attempt_timeout_ms,
                    "report_timeout_ms": task.report_timeout_ms,
                });
                (task.key, EffectKind::Task, Some(task.name), Some(task.input), options, now)
            }
            abi::Effect::Timer { key, after_ms } => {
                let due = Timestamp(now.0.saturating_add(i64::try_from(after_ms).unwrap_or(i64::MAX)));
                (key, EffectKind::Timer, None, None, serde_json::json!({ "after_ms": after_ms }), due)
            }
            abi::Effect::Child { key, definition, version, input } => {
                let options = serde_json::json!({ "version": version });
                (key, EffectKind::Child, Some(definition), Some(input), options, now)
            }
            abi::Effect::CancelTimer { key } => {
                cancel_timers.push(key);
                continue;
            }
        };
        rows.push(Effect {
            id: effect_id(instance.id, revision, &key),
            instance_id: instance.id,
            seq: revision.0,
            key,
            kind,
            name,
            input,
            options: options.to_string(),
            definition: instance.definition.clone(),
            definition_version: instance.definition_version,
            status: EffectStatus::Pending,
            attempts: 0,
            due_at,
            last_error: None,
            result: None,
            child_id: None,
            created_at: now,
            updated_at: now,
            lease_token: 0,
        });
    }
    (rows, cancel_timers)
}

/// The terminal callback of `instance`, which has just ended, carrying `body`.
fn callback_row(instance: &Instance, url: &str, body: Vec<u8>) -> Effect {
    let revision = instance.revision;
    Effect {
        id: effect_id(instance.id, revision, CALLBACK_KEY),
        instance_id: instance.id,
        seq: revision.0,
        key: format!("{CALLBACK_KEY}:{}", revision.0),
        kind: EffectKind::Callback,
        name: Some(url.into()),
        input: Some(String::from_utf8_lossy(&body).into_owned()),
        options: "{}".into(),
        definition: instance.definition.clone(),
        definition_version: instance.definition_version,
        status: EffectStatus::Pending,
        attempts: 0,
        due_at: instance.updated_at,
        last_error: None,
        result: None,
        child_id: None,
        created_at: instance.updated_at,
        updated_at: instance.updated_at,
        lease_token: 0,
    }
}

/// The terminal callback's key, followed by `:` and the revision that ended the
/// instance (a failed instance that is force-completed ends twice). No definition's
/// key can clash with it: `:` is not allowed in theirs.
const CALLBACK_KEY: &str = "callback";

/// The id of the effect `key` of the transition that produced `revision`: the same
/// on every attempt and every host, a UUID so that participants can store it as one.
pub(super) fn effect_id(instance: InstanceId, revision: Revision, key: &str) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(instance.0.as_bytes())
        .chain_update(revision.0.to_le_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// How an event is kept with the effect it closes.
pub(super) fn event_json(event: &abi::Event) -> String {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "name": event.name, "id": event.id, "payload": payload }).to_string()
}

/// A guest's free text goes into text columns, which cannot hold NUL on PostgreSQL:
/// one with a NUL is a bad answer, not a storage failure.
pub(super) fn no_nul(field: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        let reason = format!("the outcome's {field} contains a NUL character");
        return Err(runtime::Error::BadResponse(reason).into());
    }
    Ok(())
}

/// [`no_nul`] for a rejection's code and reason.
pub(super) fn no_nul_in(rejection: &abi::Rejection) -> Result<()> {
    no_nul("code", &rejection.code)?;
    no_nul("reason", &rejection.reason)
}

/// A commit's failure as the service reports it.
pub(super) fn commit_error(err: store::Error) -> Error {
    match err {
        store::Error::Duplicate => Error::KeyTaken,
        store::Error::EffectKeyInUse => Error::BadEffects(abi::EffectError::OpenKey),
        store::Error::EffectClosed => Error::EffectClosed,
        store::Error::EventDuplicate => Error::EventDuplicate,
        store::Error::VersionGone => Error::VersionGone,
        other => other.into(),
    }
}

/// Whether `err` is a verdict on the instance's state, which a stale copy could have
/// got wrong. A failed commit is not: its effect may be durable, so it is never redone.
fn judged_on_state(err: &Error) -> bool {
    matches!(
        err,
        Error::UnknownAction { .. }
            | Error::NotAllowed { .. }
            | Error::PreconditionFailed { .. }
            | Error::Rejected { .. }
            | Error::Guest(_)
            | Error::BadOutcome(_)
            | Error::BadEffects(_)
            | Error::Finished(_)
            | Error::VersionNotFound { .. }
    )
}

/// `instance`, if it is still at `if_match` (when given).
pub(super) fn check_revision(instance: Instance, if_match: Option<Revision>) -> Result<Instance> {
    match if_match {
        Some(expected) if expected != instance.revision => {
            Err(Error::PreconditionFailed { current: instance.revision })
        }
        _ => Ok(instance),
    }
}

/// What the guest is told about the call. The seed is derived from the instance and
/// revision, so replaying a history entry reproduces it.
pub(super) fn context(
    id: InstanceId,
    definition_version: u32,
    revision: Revision,
    now: Timestamp,
) -> Context {
    let seed = abi::seed(id.0.as_bytes(), revision.0);
    Context { instance_id: id.to_string(), definition_version, now_ms: now.0, seed }
}

/// An accepted outcome whose data is JSON and whose effects are well-formed.
fn accepted(outcome: Outcome) -> Result<Accepted> {
    match outcome {
        Outcome::Rejected(rejection) => {
            Err(Error::Rejected { code: rejection.code, reason: rejection.reason })
        }
        Outcome::Accepted(accepted) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&accepted.data).is_err() {
                return Err(runtime::Error::BadResponse("the new data is not JSON".into()).into());
            }
            // Keys still open from earlier transitions are the store's to refuse.
            abi::check_effects(&accepted.effects, |_| false).map_err(Error::BadEffects)?;
            Ok(accepted)
        }
    }
}

/// Checks the outcome against the manifest; the status the instance then has.
fn status_after(manifest: &Manifest, call: CallKind<'_>, accepted: &Accepted) -> Result<Status> {
    let state = manifest.check_outcome(call, &accepted.state)?;
    Ok(Status::of(state.terminal))
}

/// A failed instance's message is its error.
pub(super) fn error_of(status: Status, message: &Option<String>) -> Option<String> {
    if status == Status::Failed { message.clone() } else { None }
}

fn allowed_actions(manifest: &Manifest, instance: &Instance) -> Vec<String> {
    if instance.status.is_terminal() {
        return Vec::new();
    }
    manifest.allowed_actions(&instance.state).map(|action| action.name.clone()).collect()
}

pub(super) fn view(manifest: &Manifest, instance: Instance) -> InstanceView {
    InstanceView { allowed_actions: allowed_actions(manifest, &instance), instance }
}
