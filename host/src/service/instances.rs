//! Starting instances, running actions on them and reading them back.

use super::{Error, MAX_ATTEMPTS, Result, Service};
use crate::model::{
    HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, InstanceFilter, InstanceId, Revision, Status,
    StoredResponse, Timestamp, Trigger, TriggerKind,
};
use crate::runtime::{self, Entry};
use crate::store::{self, Commit};
use std::time::Duration;
use switchyard_guest::abi::{Accepted, ActionRequest, CallKind, Context, InitRequest, Manifest, Outcome};

/// An instance with what may be done to it next.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub instance: Instance,
    /// The actions legal in its current state; none once terminal.
    pub allowed_actions: Vec<String>,
}

#[derive(Debug)]
pub struct StartRequest {
    pub definition: String,
    /// A specific version; by default the one new instances get.
    pub version: Option<u32>,
    /// The JSON input, as text.
    pub input: String,
    pub callback_url: Option<String>,
    pub actor: String,
}

#[derive(Debug)]
pub struct ActRequest {
    pub id: InstanceId,
    pub action: String,
    /// The JSON payload, as text (`null` for none).
    pub payload: String,
    /// Refuse unless the instance is still at this revision.
    pub if_match: Option<Revision>,
    pub actor: String,
}

/// A computed change: the instance as it would be, and the history entry saying why.
#[derive(Debug)]
pub(super) struct Change {
    pub view: InstanceView,
    pub history: HistoryEntry,
}

/// An idempotency key to store with the transition, and how to render its response.
pub struct Idempotent<'a> {
    pub key: IdempotencyKey,
    /// SHA-256 of the request body.
    pub fingerprint: String,
    pub render: &'a (dyn Fn(&InstanceView) -> StoredResponse + Sync),
}

impl std::fmt::Debug for Idempotent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Service {
    #[tracing::instrument(skip_all, fields(definition = %request.definition))]
    pub async fn start(
        &self,
        request: StartRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let version = self.version_for_start(&request.definition, request.version).await?;
        let module = self.module(&request.definition, version).await?;
        let id = InstanceId::generate();
        let now = Timestamp::now();
        let revision = Revision(1);
        let init = InitRequest { context: context(id, version, revision, now), input: request.input.clone() };
        let called = self.call_guest(module.clone(), Entry::Init, init).await?;
        let accepted = accepted(called.response)?;
        let status = status_after(&module.manifest, CallKind::Init, &accepted)?;
        let instance = Instance {
            id,
            definition: request.definition,
            definition_version: version,
            state: accepted.state,
            status,
            data: accepted.data,
            revision,
            error: error_of(status, &accepted.message),
            message: accepted.message,
            parent_id: None,
            callback_url: request.callback_url,
            created_at: now,
            updated_at: now,
        };
        let history = HistoryEntry {
            instance_id: id,
            seq: revision.0,
            from_state: None,
            to_state: instance.state.clone(),
            trigger: Trigger {
                kind: TriggerKind::Start,
                name: "init".into(),
                id: idempotent.map(|idempotent| idempotent.key.key.clone()),
                payload: request.input,
            },
            actor: request.actor,
            definition_version: version,
            module_sha256: module.sha256.clone(),
            fuel_used: called.fuel_used,
            at: now,
        };
        let view = view(&module.manifest, instance);
        match self.commit(&view, None, history, idempotent, None).await {
            Err(store::Error::Duplicate) => Err(Error::KeyTaken),
            other => other.map(|()| view).map_err(Error::from),
        }
    }

    #[tracing::instrument(skip_all, fields(id = %request.id, action = %request.action))]
    pub async fn act(
        &self,
        request: ActRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let _serialised = self.locks.lock(request.id).await;
        // The copy this process committed last spares a read. Should a verdict computed
        // from it go against the request, the copy may have been stale: the verdict
        // stands if the store is still at the copy's revision, and is computed again
        // from the store otherwise. So a guest runs twice only when its input was stale.
        let mut copy = self.recent.get(request.id);
        let mut stored = None;
        for _ in 0..MAX_ATTEMPTS {
            let (current, from_copy) = match (copy.take(), stored.take()) {
                (Some(instance), _) => (instance, true),
                (None, Some(instance)) => (instance, false),
                (None, None) => (self.stored_instance(request.id).await?, false),
            };
            let revision = current.revision;
            match self.act_on(current, &request, idempotent).await {
                Ok(Some(view)) => return Ok(view),
                Ok(None) => self.metrics.recomputed(),
                Err(err) if from_copy && judged_on_state(&err) => {
                    let instance = self.stored_instance(request.id).await?;
                    if instance.revision == revision {
                        return Err(err);
                    }
                    self.recent.forget(request.id);
                    self.metrics.recomputed();
                    stored = Some(instance);
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Contention)
    }

    /// One attempt of [`Service::act`]; `None` if another change committed first.
    async fn act_on(
        &self,
        current: Instance,
        request: &ActRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<Option<InstanceView>> {
        let current = check_revision(current, request.if_match)?;
        let base_revision = current.revision;
        let change = self.action_change(current, request, idempotent).await?;
        self.try_commit(change, base_revision, request.if_match, idempotent, None).await
    }

    /// What `request` does to `current`, computed by the guest and checked.
    async fn action_change(
        &self,
        current: Instance,
        request: &ActRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<Change> {
        let module = self.module(&current.definition, current.definition_version).await?;
        let manifest = &module.manifest;
        if manifest.action(&request.action).is_none() {
            return Err(Error::UnknownAction {
                definition: current.definition,
                version: current.definition_version,
                action: request.action.clone(),
            });
        }
        let allowed_actions = allowed_actions(manifest, &current);
        if !allowed_actions.contains(&request.action) {
            return Err(Error::NotAllowed {
                action: request.action.clone(),
                current_state: current.state,
                allowed_actions,
            });
        }
        let now = Timestamp::now();
        let revision = current.revision.next();
        let call = ActionRequest {
            context: context(current.id, current.definition_version, revision, now),
            state: current.state.clone(),
            data: current.data.clone(),
            action: request.action.clone(),
            payload: request.payload.clone(),
        };
        let called = self.call_guest(module.clone(), Entry::OnAction, call).await?;
        let accepted = accepted(called.response)?;
        let status = status_after(manifest, CallKind::Action(&request.action), &accepted)?;
        let history = HistoryEntry {
            instance_id: current.id,
            seq: revision.0,
            from_state: Some(current.state.clone()),
            to_state: accepted.state.clone(),
            trigger: Trigger {
                kind: TriggerKind::Action,
                name: request.action.clone(),
                id: idempotent.map(|idempotent| idempotent.key.key.clone()),
                payload: request.payload.clone(),
            },
            actor: request.actor.clone(),
            definition_version: current.definition_version,
            module_sha256: module.sha256.clone(),
            fuel_used: called.fuel_used,
            at: now,
        };
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
        Ok(Change { view: view(manifest, next), history })
    }

    /// The instance, if it is still at `if_match` (when given).
    pub(super) async fn current_instance(
        &self,
        id: InstanceId,
        if_match: Option<Revision>,
    ) -> Result<Instance> {
        check_revision(self.stored_instance(id).await?, if_match)
    }

    /// Commits a change computed from `base_revision`. `None` when another change
    /// committed first and the caller should compute again from the new state; under
    /// `If-Match` that is a refusal instead.
    pub(super) async fn try_commit(
        &self,
        change: Change,
        base_revision: Revision,
        if_match: Option<Revision>,
        idempotent: Option<&Idempotent<'_>>,
        migration: Option<uuid::Uuid>,
    ) -> Result<Option<InstanceView>> {
        match self.commit(&change.view, Some(base_revision), change.history, idempotent, migration).await {
            Ok(()) => Ok(Some(change.view)),
            Err(store::Error::RevisionConflict) if if_match.is_some() => {
                let current = self.stored_instance(change.view.instance.id).await?;
                Err(Error::PreconditionFailed { current: current.revision })
            }
            Err(store::Error::RevisionConflict) => Ok(None),
            Err(store::Error::Duplicate) => Err(Error::KeyTaken),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn instance(&self, id: InstanceId) -> Result<InstanceView> {
        let instance = self.stored_instance(id).await?;
        self.view_of(instance).await
    }

    /// A finished instance needs no manifest: its version may be deleted.
    async fn view_of(&self, instance: Instance) -> Result<InstanceView> {
        if instance.status.is_terminal() {
            return Ok(InstanceView { allowed_actions: Vec::new(), instance });
        }
        let version = self.version(&instance.definition, instance.definition_version).await?;
        Ok(view(&version.manifest, instance))
    }

    /// The instance once its revision differs from `seen`, or as it is after `timeout`.
    /// A terminal instance is returned at once: it will not change.
    pub async fn wait_for_change(
        &self,
        id: InstanceId,
        seen: Revision,
        timeout: Duration,
    ) -> Result<InstanceView> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut subscription = self.changes.subscribe(id);
        loop {
            let view = self.instance(id).await?;
            if view.instance.revision != seen || view.instance.status.is_terminal() {
                return Ok(view);
            }
            let _waiting = self.metrics.waiting();
            if tokio::time::timeout_at(deadline, subscription.changed()).await.is_err() {
                return Ok(view);
            }
        }
    }

    pub async fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceView>> {
        let instances = self.store.instances(filter).await?;
        let mut views = Vec::with_capacity(instances.len());
        for instance in instances {
            views.push(self.view_of(instance).await?);
        }
        Ok(views)
    }

    pub async fn history(&self, id: InstanceId) -> Result<Vec<HistoryEntry>> {
        let history = self.store.history(id).await?;
        if history.is_empty() {
            return Err(Error::InstanceNotFound(id.to_string()));
        }
        Ok(history)
    }

    async fn stored_instance(&self, id: InstanceId) -> Result<Instance> {
        self.store.instance(id).await?.ok_or_else(|| Error::InstanceNotFound(id.to_string()))
    }

    async fn commit(
        &self,
        view: &InstanceView,
        base_revision: Option<Revision>,
        history: HistoryEntry,
        idempotent: Option<&Idempotent<'_>>,
        migration: Option<uuid::Uuid>,
    ) -> store::Result<()> {
        let instance = &view.instance;
        let idempotency = idempotent.map(|idempotent| IdempotencyRecord {
            key: idempotent.key.clone(),
            fingerprint: idempotent.fingerprint.clone(),
            response: (idempotent.render)(view),
            created_at: instance.updated_at,
        });
        let commit = Commit {
            instance: instance.clone(),
            base_revision,
            history,
            idempotency,
            expired_before: self.idempotency_cutoff(),
            migration,
        };
        if let Err(err) = self.store.commit(commit).await {
            // A taken key wrote nothing; after any other failure the copy may be stale.
            if !matches!(err, store::Error::Duplicate) {
                self.recent.forget(instance.id);
            }
            return Err(err);
        }
        self.recent.committed(instance);
        self.changes.publish(instance.id, instance.revision);
        Ok(())
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
            | Error::VersionNotFound { .. }
    )
}

/// `instance`, if it is still at `if_match` (when given).
fn check_revision(instance: Instance, if_match: Option<Revision>) -> Result<Instance> {
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
    let seed = switchyard_guest::abi::seed(id.0.as_bytes(), revision.0);
    Context { instance_id: id.to_string(), definition_version, now_ms: now.0, seed }
}

fn accepted(outcome: Outcome) -> Result<Accepted> {
    match outcome {
        Outcome::Rejected(rejection) => {
            Err(Error::Rejected { code: rejection.code, reason: rejection.reason })
        }
        Outcome::Accepted(accepted) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&accepted.data).is_err() {
                return Err(runtime::Error::BadResponse("the new data is not JSON".into()).into());
            }
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
fn error_of(status: Status, message: &Option<String>) -> Option<String> {
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
