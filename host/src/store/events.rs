//! Events clients posted to instances: kept once per (instance, event id), applied
//! ones in the commit of the transition that applied them; one the definition failed
//! on is kept `accepted` and applied later, in the order received.

use super::backend::{End, Row, WriteTx, unique_violation};
use super::{Error, Result, Store};
use crate::model::{InstanceId, PendingEvent, PostedEvent, Timestamp};

const SELECT: &str = "SELECT instance_id, event_id, name, payload, status, code, reason, seq, received_at, \
     attempts, next_attempt_at, last_error FROM events";

/// Keeps `event`, or applies or refuses the `accepted` event of its id;
/// [`Error::EventDuplicate`] if its id is kept already otherwise.
pub(super) async fn insert(tx: &mut impl WriteTx, event: &PostedEvent) -> Result<()> {
    let (status, code, reason) = match (&event.refused, &event.pending) {
        (Some((code, reason)), _) => ("refused", Some(code.clone()), Some(reason.clone())),
        (None, Some(_)) => ("accepted", None, None),
        (None, None) => ("applied", None, None),
    };
    let pending = event.pending.as_ref();
    let args = [
        event.instance_id.to_string().into(),
        (&event.event_id).into(),
        (&event.name).into(),
        (&event.payload).into(),
        status.into(),
        code.into(),
        reason.into(),
        event.seq.into(),
        event.received_at.0.into(),
        i64::from(pending.map_or(0, |pending| pending.attempts)).into(),
        pending.map(|pending| pending.next_attempt_at.0).into(),
        pending.map(|pending| pending.last_error.as_str()).into(),
    ];
    let sql = "INSERT INTO events (instance_id, event_id, name, payload, status, code, reason, seq, received_at,
                   attempts, next_attempt_at, last_error)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (instance_id, event_id) DO UPDATE SET status = excluded.status, code = excluded.code,
                   reason = excluded.reason, seq = excluded.seq, next_attempt_at = NULL
               WHERE events.status = 'accepted' AND excluded.status <> 'accepted'";
    match tx.execute(sql, &args).await {
        Ok(0) => Err(Error::EventDuplicate),
        Err(err) if unique_violation(&err) => Err(Error::EventDuplicate),
        other => other.map(drop),
    }
}

impl Store {
    /// Keeps an event that applied nothing: refused, or accepted to be applied later.
    pub async fn keep_event(&self, event: &PostedEvent) -> Result<()> {
        let event = event.clone();
        transaction!(self, |tx| async move {
            insert(tx, &event).await?;
            Ok(End::Commit(()))
        })
    }

    /// Records another failed try of an accepted event and when to try again.
    pub async fn reschedule_event(&self, event: &PostedEvent, pending: &PendingEvent) -> Result<()> {
        let sql = "UPDATE events SET attempts = $1, next_attempt_at = $2, last_error = $3
                   WHERE instance_id = $4 AND event_id = $5 AND status = 'accepted'";
        let args = [
            i64::from(pending.attempts).into(),
            pending.next_attempt_at.0.into(),
            (&pending.last_error).into(),
            event.instance_id.to_string().into(),
            (&event.event_id).into(),
        ];
        self.execute(sql, &args).await?;
        Ok(())
    }

    pub async fn posted_event(&self, instance: InstanceId, event_id: &str) -> Result<Option<PostedEvent>> {
        let sql = format!("{SELECT} WHERE instance_id = $1 AND event_id = $2");
        self.fetch_optional(&sql, &[instance.to_string().into(), event_id.into()], posted_event).await
    }

    /// Every event posted to `instance`, in the order received.
    pub async fn posted_events(&self, instance: InstanceId) -> Result<Vec<PostedEvent>> {
        let sql = format!("{SELECT} WHERE instance_id = $1 ORDER BY received_at, event_id");
        self.scan(&sql, &[instance.to_string().into()], posted_event).await
    }

    /// Whether `instance` has an event waiting to be applied (a later one must wait
    /// behind it).
    pub async fn has_accepted_event(&self, instance: InstanceId) -> Result<bool> {
        let sql = "SELECT COUNT(*) AS value FROM events WHERE instance_id = $1 AND status = 'accepted'";
        Ok(self.fetch_int(sql, &[instance.to_string().into()]).await?.unwrap_or_default() > 0)
    }

    /// Up to `limit` accepted events due at `now`, each the oldest of its instance
    /// (the others wait behind it).
    pub async fn due_accepted_events(&self, now: Timestamp, limit: u32) -> Result<Vec<PostedEvent>> {
        let sql = format!(
            "{SELECT} WHERE status = 'accepted' AND next_attempt_at <= $1 AND NOT EXISTS (
                 SELECT 1 FROM events earlier WHERE earlier.instance_id = events.instance_id
                   AND earlier.status = 'accepted'
                   AND (earlier.received_at < events.received_at
                        OR (earlier.received_at = events.received_at AND earlier.event_id < events.event_id)))
             ORDER BY received_at LIMIT {limit}"
        );
        self.scan(&sql, &[now.0.into()], posted_event).await
    }
}

fn posted_event(row: &dyn Row) -> Result<PostedEvent> {
    let status = row.text("status")?;
    let refused = match status.as_str() {
        "refused" => Some((
            row.text_or_null("code")?.unwrap_or_default(),
            row.text_or_null("reason")?.unwrap_or_default(),
        )),
        _ => None,
    };
    let pending = match status.as_str() {
        "accepted" => Some(PendingEvent {
            attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
            next_attempt_at: Timestamp(row.int_or_null("next_attempt_at")?.unwrap_or_default()),
            last_error: row.text_or_null("last_error")?.unwrap_or_default(),
        }),
        _ => None,
    };
    let instance_id = row.text("instance_id")?;
    Ok(PostedEvent {
        instance_id: instance_id.parse().map_err(|err| Error::Corrupt(format!("{instance_id:?}: {err}")))?,
        event_id: row.text("event_id")?,
        name: row.text("name")?,
        payload: row.text("payload")?,
        refused,
        seq: row.int_or_null("seq")?,
        pending,
        received_at: Timestamp(row.int("received_at")?),
    })
}
