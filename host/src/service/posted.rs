//! Events clients post to instances (a vendor's webhook, say): kept once per event id
//! and applied through `on_event`, in the order they arrive.

use super::engine::{Asked, Trigger};
use super::instances::InstanceView;
use super::{Error, Result, Service};
use crate::model::{Caller, InstanceId, PendingEvent, PostedEvent, Timestamp};
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
    /// Kept, to be applied later: the definition failed on it (or on an earlier event
    /// of the instance, which it waits behind).
    Accepted(PostedEvent),
}

/// What became of another try at an accepted event.
#[derive(Debug)]
pub enum Retried {
    Applied,
    Refused,
    /// The definition failed on it again: it stays accepted.
    Failed(String),
}

impl Service {
    /// Applies the event `name` with id `event_id` and `payload` (JSON text) to
    /// instance `id`, once per event id.
    #[tracing::instrument(skip(self, payload, caller))]
    pub async fn post_event(
        &self,
        id: InstanceId,
        event_id: String,
        name: String,
        payload: String,
        caller: &Caller,
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
        let mut kept = PostedEvent {
            instance_id: id,
            event_id: event.id.clone(),
            name: event.name.clone(),
            payload: event.payload.clone(),
            refused: None,
            seq: None,
            pending: None,
            received_at,
        };
        // Events apply in the order received: behind one still waiting, this one waits too.
        if self.store.has_accepted_event(id).await? {
            let waiting = "an earlier event of the instance waits to be applied".to_owned();
            kept.pending =
                Some(PendingEvent { attempts: 0, next_attempt_at: received_at, last_error: waiting });
            return self.keep(kept).await;
        }
        let trigger = Trigger::Event { event, settles: None, posted: Some(received_at) };
        match self.transition(id, &trigger, Asked { caller, if_match: None, idempotent: None }).await {
            Ok(view) => Ok(Posted::Applied(view)),
            Err(Error::EventDuplicate) => self.duplicate(id, &kept.event_id).await,
            Err(err) => match refusal(err)? {
                Ok(refused) => {
                    kept.refused = Some(refused);
                    self.keep(kept).await
                }
                Err(failure) => {
                    tracing::warn!(%failure, event_id = %kept.event_id, "the definition failed on an event; it is applied later");
                    kept.pending =
                        Some(PendingEvent { attempts: 1, next_attempt_at: received_at, last_error: failure });
                    self.keep(kept).await
                }
            },
        }
    }

    /// Tries again to apply `event`, an accepted event that is the oldest waiting for
    /// its instance. The caller reschedules it when the definition failed again.
    pub async fn retry_event(&self, event: &PostedEvent) -> Result<Retried> {
        let trigger = Trigger::Event {
            event: abi::Event {
                name: event.name.clone(),
                id: event.event_id.clone(),
                payload: event.payload.clone(),
            },
            settles: None,
            posted: Some(event.received_at),
        };
        let host = Caller::host();
        let asked = Asked { caller: &host, if_match: None, idempotent: None };
        match self.transition(event.instance_id, &trigger, asked).await {
            // Applied here, or by another host meanwhile.
            Ok(_) | Err(Error::EventDuplicate) => Ok(Retried::Applied),
            Err(err) => match refusal(err)? {
                Ok(refused) => {
                    let refused = PostedEvent { refused: Some(refused), pending: None, ..event.clone() };
                    match self.store.keep_event(&refused).await {
                        Ok(()) | Err(crate::store::Error::EventDuplicate) => Ok(Retried::Refused),
                        Err(err) => Err(err.into()),
                    }
                }
                Err(failure) => Ok(Retried::Failed(failure)),
            },
        }
    }

    /// Keeps an event that applied nothing: refused, or accepted for later.
    async fn keep(&self, kept: PostedEvent) -> Result<Posted> {
        match self.store.keep_event(&kept).await {
            Ok(()) if kept.pending.is_some() => {
                self.outbox.notify_one();
                Ok(Posted::Accepted(kept))
            }
            Ok(()) => {
                let (code, reason) = kept.refused.unwrap_or_default();
                Ok(Posted::Refused { code, reason })
            }
            Err(crate::store::Error::EventDuplicate) => {
                self.duplicate(kept.instance_id, &kept.event_id).await
            }
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

/// How a failed try at an event is kept: `Ok(Ok(..))` refused (the definition's code
/// and reason, or the instance finished), `Ok(Err(..))` the definition failed on it (it
/// or the instance was too busy: it is applied later), `Err` anything else (the request fails, nothing kept).
fn refusal(err: Error) -> Result<std::result::Result<(String, String), String>> {
    match err {
        Error::Rejected { code, reason } => Ok(Ok((code, reason))),
        finished @ Error::Finished(_) => Ok(Ok(("instance_finished".to_owned(), finished.to_string()))),
        Error::Guest(_) | Error::BadOutcome(_) | Error::BadEffects(_) | Error::Contention => {
            Ok(Err(err.to_string()))
        }
        err => Err(err),
    }
}
