//! Starting instances, running actions on them and reading them back.

use super::engine::{self, Asked, Trigger};
use super::{Error, Result, Service};
use crate::model::{
    HistoryEntry, IdempotencyKey, Instance, InstanceFilter, InstanceId, Revision, Status, StoredResponse,
    Timestamp, Trigger as Cause, TriggerKind,
};
use crate::runtime::Entry;
use std::time::Duration;
use switchyard_guest::abi::{self, CallKind, InitRequest};

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
        let init = InitRequest {
            context: engine::context(id, version, Revision(1), now),
            input: request.input.clone(),
        };
        let called = self.call_outcome(module.clone(), Entry::Init, init).await?;
        // What the instance is before `init`: the outcome makes revision 1 of it.
        let unborn = Instance {
            id,
            definition: request.definition,
            definition_version: version,
            state: String::new(),
            status: Status::Running,
            data: "null".into(),
            revision: Revision(0),
            message: None,
            error: None,
            parent_id: None,
            callback_url: request.callback_url,
            created_at: now,
            updated_at: now,
        };
        let key = idempotent.map(|idempotent| idempotent.key.key.clone());
        let cause = Cause { kind: TriggerKind::Start, name: "init".into(), id: key, payload: request.input };
        let change =
            engine::outcome_change(unborn, &module, CallKind::Init, called, cause, &request.actor, now)?;
        self.commit(change, None, engine::Closes::default(), idempotent).await.map_err(engine::commit_error)
    }

    #[tracing::instrument(skip_all, fields(id = %request.id, action = %request.action))]
    pub async fn act(
        &self,
        request: ActRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let trigger = Trigger::Action { action: request.action, payload: request.payload };
        let asked = Asked { actor: &request.actor, if_match: request.if_match, idempotent };
        self.transition(request.id, &trigger, asked).await
    }

    /// Delivers `event` to instance `id` through `on_event`. `settles` names the
    /// effect whose result the event is, closed in the same commit.
    #[tracing::instrument(skip_all, fields(%id, event = %event.name))]
    pub(crate) async fn deliver(
        &self,
        id: InstanceId,
        event: abi::Event,
        settles: Option<(String, u32)>,
        actor: &str,
    ) -> Result<InstanceView> {
        let trigger = Trigger::Event { event, settles, posted: None };
        self.transition(id, &trigger, Asked { actor, if_match: None, idempotent: None }).await
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
        Ok(engine::view(&version.manifest, instance))
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

    pub(super) async fn stored_instance(&self, id: InstanceId) -> Result<Instance> {
        self.store.instance(id).await?.ok_or_else(|| Error::InstanceNotFound(id.to_string()))
    }
}
