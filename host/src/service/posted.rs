//! Events clients post to instances (a vendor's webhook, say): kept once per event id
//! and applied through `on_event`, in the order they arrive.

use super::engine::{Asked, Trigger};
use super::instances::InstanceView;
use super::{Error, Result, Service};
use crate::model::{InstanceId, PostedEvent, Timestamp};
use switchyard_guest::abi;

/// The longest event id taken.
const MAX_EVENT_ID: usize = 255;

/// What became of a posted event.
#[derive(Debug)]
pub enum Posted {
    Applied(InstanceView),
    /// The definition refused it (or the instance had finished): kept, nothing changed.
    Refused {
        code: String,
        reason: String,
    },
    /// An event with this id was received before; what became of that one.
    Duplicate(PostedEvent),
}

impl Service {
    /// Applies the event `name` with id `event_id` and `payload` (JSON text) to
    /// instance `id`, once per event id.
    #[tracing::instrument(skip(self, payload, actor))]
    pub async fn post_event(
        &self,
        id: InstanceId,
        event_id: String,
        name: String,
        payload: String,
        actor: &str,
    ) -> Result<Posted> {
        if event_id.is_empty()
            || event_id.len() > MAX_EVENT_ID
            || !event_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::BadEvent(format!(
                "event_id must be 1 to {MAX_EVENT_ID} visible ASCII characters"
            )));
        }
        if !abi::is_task_name(&name) {
            return Err(Error::BadEvent(format!(
                "{name:?} is not an event type (letters, digits, '.', '_', '-')"
            )));
        }
        if abi::events::is_host_event(&name) {
            return Err(Error::BadEvent(format!("{name} is reserved for the host's own events")));
        }
        if let Some(kept) = self.store.posted_event(id, &event_id).await? {
            return Ok(Posted::Duplicate(kept));
        }
        let received_at = Timestamp::now();
        let event = abi::Event { name, id: event_id, payload };
        let trigger = Trigger::Event { event: event.clone(), settles: None, posted: Some(received_at) };
        let refused =
            match self.transition(id, &trigger, Asked { actor, if_match: None, idempotent: None }).await {
                Ok(view) => return Ok(Posted::Applied(view)),
                Err(Error::Rejected { code, reason }) => (code, reason),
                Err(finished @ Error::Finished(_)) => ("instance_finished".to_owned(), finished.to_string()),
                Err(Error::EventDuplicate) => return self.duplicate(id, &event.id).await,
                Err(err) => return Err(err),
            };
        let kept = PostedEvent {
            instance_id: id,
            event_id: event.id.clone(),
            name: event.name,
            payload: event.payload,
            refused: Some(refused.clone()),
            seq: None,
            received_at,
        };
        match self.store.keep_event(&kept).await {
            Ok(()) => Ok(Posted::Refused { code: refused.0, reason: refused.1 }),
            Err(crate::store::Error::EventDuplicate) => self.duplicate(id, &event.id).await,
            Err(err) => Err(err.into()),
        }
    }

    /// Every event posted to instance `id`, in the order received.
    pub async fn posted_events(&self, id: InstanceId) -> Result<Vec<PostedEvent>> {
        self.stored_instance(id).await?;
        Ok(self.store.posted_events(id).await?)
    }

    async fn duplicate(&self, id: InstanceId, event_id: &str) -> Result<Posted> {
        let kept = self.store.posted_event(id, event_id).await?;
        kept.map(Posted::Duplicate).ok_or_else(|| Error::Internal("a duplicate event vanished".into()))
    }
}
