//! Starting instances, running actions on them and reading them back.

use super::changes::Changed;
use super::engine::{self, Asked, Trigger};
use super::{Error, Result, Service};
use crate::model::{
    Caller, Effect, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, InstanceFilter, InstanceId,
    ModuleHash, Revision, Status, StoredResponse, Timestamp, Trigger as Cause, TriggerKind,
};
use crate::runtime::Entry;
use crate::telemetry;
use std::sync::Arc;
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
    pub caller: Caller,
}

/// An idempotency key to store with a change (a transition, or an operation such as a
/// deploy) in the change's own transaction, and how to render the response it keeps.
pub struct Idempotent<'a, T = InstanceView> {
    pub key: IdempotencyKey,
    /// SHA-256 of the request body.
    pub fingerprint: String,
    pub render: &'a (dyn Fn(&T) -> StoredResponse + Sync),
}

impl<T> Idempotent<'_, T> {
    /// The record that answers later requests under the key with `value`'s response.
    pub(super) fn record(&self, value: &T, at: Timestamp) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            response: (self.render)(value),
            created_at: at,
        }
    }
}

impl<T> std::fmt::Debug for Idempotent<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Service {
    pub async fn start(
        &self,
        request: StartRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        if let Some(url) = &request.callback_url {
            self.check_callback_url(url).await?;
        }
        self.start_as(InstanceId::generate(), request, None, idempotent).await
    }

    /// A `callback_url` is taken only if callbacks can be signed, and, unless the
    /// config allows it, only if every address its host resolves to is public: the
    /// server must not be made to POST into its own network.
    async fn check_callback_url(&self, url: &str) -> Result<()> {
        if !self.callbacks.signed {
            return Err(Error::BadCallback(
                "this server has no [callbacks] secret to sign callbacks with".into(),
            ));
        }
        let parsed =
            reqwest::Url::parse(url).map_err(|err| Error::BadCallback(format!("callback_url: {err}")))?;
        if self.callbacks.allow_private {
            return Ok(());
        }
        let host =
            parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addresses = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| Error::BadCallback(format!("callback_url: {host} does not resolve: {err}")))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(Error::BadCallback(format!(
                    "callback_url: {host} resolves to {}, a loopback, private or link-local address",
                    address.ip()
                )));
            }
        }
        Ok(())
    }

    /// Starts the child instance `effect` (a parent's child effect) asks for. Its id is
    /// derived from the effect, and the effect records it in the same commit, so a
    /// start that is tried again finds the child started.
    pub(crate) async fn start_child(&self, effect: &Effect) -> Result<InstanceView> {
        let version = serde_json::from_str::<serde_json::Value>(&effect.options)
            .ok()
            .and_then(|options| u32::try_from(options.get("version")?.as_u64()?).ok());
        let request = StartRequest {
            definition: effect.name.clone().unwrap_or_default(),
            version,
            input: effect.input.clone().unwrap_or_else(|| "null".into()),
            callback_url: None,
            actor: Caller::HOST.into(),
        };
        let parent = Some((effect.instance_id, (effect.id.clone(), effect.lease_token)));
        self.start_as(child_id(effect), request, parent, None).await
    }

    /// Starts instance `id`, the child of `parent` for its effect, if given.
    #[tracing::instrument(skip_all, fields(definition = %request.definition, %id))]
    async fn start_as(
        &self,
        id: InstanceId,
        request: StartRequest,
        parent: Option<(InstanceId, (String, i64))>,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let (version, sha256) = self.version_for_start(&request.definition, request.version).await?;
        let definition = request.definition.clone();
        let started = self.start_version(id, request, (version, sha256), parent, idempotent).await;
        engine::count_transition(&definition, version, TriggerKind::Start, &started);
        started
    }

    /// [`Service::start_as`] once the version is chosen.
    async fn start_version(
        &self,
        id: InstanceId,
        request: StartRequest,
        (version, sha256): (u32, ModuleHash),
        parent: Option<(InstanceId, (String, i64))>,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let module = self.module(&request.definition, version, &sha256).await?;
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
            module_sha256: sha256,
            state: String::new(),
            status: Status::Running,
            data: "null".into(),
            revision: Revision(0),
            message: None,
            error: None,
            parent_id: parent.as_ref().map(|(parent, _)| *parent),
            callback_url: request.callback_url,
            created_at: now,
            updated_at: now,
        };
        let key = idempotent.map(|idempotent| idempotent.key.key.clone());
        let cause = Cause { kind: TriggerKind::Start, name: "init".into(), id: key, payload: request.input };
        let change =
            engine::outcome_change(unborn, &module, CallKind::Init, called, cause, &request.actor, now)?;
        let closes =
            engine::Closes { child_of: parent.map(|(_, effect)| effect), ..engine::Closes::default() };
        self.commit(change, None, closes, idempotent).await.map_err(engine::commit_error)
    }

    #[tracing::instrument(skip_all, fields(id = %request.id, action = %request.action))]
    pub async fn act(
        &self,
        request: ActRequest,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<InstanceView> {
        let trigger = Trigger::Action { action: request.action, payload: request.payload };
        let asked = Asked { caller: &request.caller, if_match: request.if_match, idempotent };
        self.transition(request.id, &trigger, asked).await
    }

    /// Delivers `event` to instance `id` through `on_event`. `settles` names the
    /// effect whose result the event is, closed in the same commit.
    #[tracing::instrument(skip_all, fields(%id, event = %event.name))]
    pub(crate) async fn deliver(
        &self,
        id: InstanceId,
        event: abi::Event,
        settles: Option<engine::Settling>,
    ) -> Result<InstanceView> {
        let trigger = Trigger::Event { event, settles, posted: None };
        let host = Caller::host();
        self.transition(id, &trigger, Asked { caller: &host, if_match: None, idempotent: None }).await
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
        let manifest = self.manifest_of(&instance).await?;
        Ok(engine::view(&manifest, instance))
    }

    /// The instance once its revision differs from `seen`, or as it is when `give_up`
    /// resolves (the wait is over, or the server stops). A terminal instance is
    /// returned at once: it will not change. A commit of this process hands waiters
    /// the instance as committed, so that wake-up reads nothing. Another host's change
    /// is read from the store: when a notification tells of it, else when the wait ends
    /// or at the next recheck (`long_poll_recheck`, on a shared database).
    pub async fn wait_for_change(
        &self,
        id: InstanceId,
        seen: Revision,
        give_up: impl Future<Output = ()>,
    ) -> Result<InstanceView> {
        let answers =
            |view: &InstanceView| view.instance.revision != seen || view.instance.status.is_terminal();
        let mut subscription = self.changes.subscribe(id);
        let view = self.instance(id).await?;
        if answers(&view) {
            return Ok(view);
        }
        let _waiting = telemetry::Counted::new(telemetry::LONG_POLLS_WAITING);
        let mut recheck = self.store.shared().then(|| {
            let every = self.long_poll_recheck;
            let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            recheck
        });
        let changed = async {
            loop {
                let changed = tokio::select! {
                    changed = subscription.changed() => changed,
                    () = next_tick(&mut recheck) => Changed::Elsewhere,
                };
                match changed {
                    // The commit of `seen` itself (or an older one, finishing late) may
                    // be handed over after the read above.
                    Changed::Committed(view) if view.instance.revision > seen => {
                        return Arc::unwrap_or_clone(view);
                    }
                    Changed::Committed(_) => {}
                    // A failed read leaves the answer to the next wake-up, or to the end.
                    Changed::Elsewhere => match self.instance(id).await {
                        Ok(view) if answers(&view) => return view,
                        Ok(_) => {}
                        Err(err) => tracing::debug!(%err, "cannot read the instance again; waiting on"),
                    },
                }
            }
        };
        tokio::select! {
            view = changed => Ok(view),
            () = give_up => self.instance(id).await,
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

    /// Up to `limit` committed transitions after position `after`, in commit order.
    pub async fn feed(&self, after: i64, limit: u32) -> Result<Vec<crate::model::FeedItem>> {
        Ok(self.store.feed(after, limit).await?)
    }

    pub(super) async fn stored_instance(&self, id: InstanceId) -> Result<Instance> {
        self.store.instance(id).await?.ok_or_else(|| Error::InstanceNotFound(id.to_string()))
    }
}

/// The next tick of `interval`; never without one.
async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A child's id: a UUIDv7 of the time its parent asked for it, with the rest derived
/// from the effect, so every try to start it names the same instance.
fn child_id(effect: &Effect) -> InstanceId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(effect.id.as_bytes());
    let mut random = [0; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(effect.created_at.0).unwrap_or_default();
    InstanceId(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
}

/// Whether `ip` is an address on the public internet.
fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(std::net::IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}
