//! Events clients posted to instances: kept once per (instance, event id), applied
//! ones in the commit of the transition that applied them; one the definition failed
//! on is kept `accepted` and applied later, in the order received.

use super::writer::{WriteTx, unique_violation};
use super::{Error, Result, Store};
use crate::model::{InstanceId, PendingEvent, PostedEvent, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

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
        let mut writing = self.writing().await?;
        let mut tx = writing.begin().await?;
        insert(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records another failed try of an accepted event and when to try again.
    pub async fn reschedule_event(&self, event: &PostedEvent, pending: &PendingEvent) -> Result<()> {
        sqlx::query(
            "UPDATE events SET attempts = $1, next_attempt_at = $2, last_error = $3
             WHERE instance_id = $4 AND event_id = $5 AND status = 'accepted'",
        )
        .bind(i64::from(pending.attempts))
        .bind(pending.next_attempt_at.0)
        .bind(&pending.last_error)
        .bind(event.instance_id.to_string())
        .bind(&event.event_id)
        .execute(&mut *self.writing().await?)
        .await?;
        Ok(())
    }

    pub async fn posted_event(&self, instance: InstanceId, event_id: &str) -> Result<Option<PostedEvent>> {
        let sql = format!("{SELECT} WHERE instance_id = $1 AND event_id = $2");
        let row = read!(self, |pool| {
            sqlx::query(&sql).bind(instance.to_string()).bind(event_id).fetch_optional(pool).await
        })?;
        row.as_ref().map(posted_event).transpose()
    }

    /// Every event posted to `instance`, in the order received.
    pub async fn posted_events(&self, instance: InstanceId) -> Result<Vec<PostedEvent>> {
        let sql = format!("{SELECT} WHERE instance_id = $1 ORDER BY received_at, event_id");
        let rows = read!(self, |pool| sqlx::query(&sql).bind(instance.to_string()).fetch_all(pool).await)?;
        rows.iter().map(posted_event).collect()
    }

    /// Whether `instance` has an event waiting to be applied (a later one must wait
    /// behind it).
    pub async fn has_accepted_event(&self, instance: InstanceId) -> Result<bool> {
        let sql = "SELECT COUNT(*) FROM events WHERE instance_id = $1 AND status = 'accepted'";
        let count: i64 =
            read!(self, |pool| sqlx::query_scalar(sql).bind(instance.to_string()).fetch_one(pool).await)?;
        Ok(count > 0)
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
        let rows = read!(self, |pool| sqlx::query(&sql).bind(now.0).fetch_all(pool).await)?;
        rows.iter().map(posted_event).collect()
    }
}

fn posted_event(row: &AnyRow) -> Result<PostedEvent> {
    let status: String = row.try_get("status")?;
    let refused = match status.as_str() {
        "refused" => Some((
            row.try_get::<Option<String>, _>("code")?.unwrap_or_default(),
            row.try_get::<Option<String>, _>("reason")?.unwrap_or_default(),
        )),
        _ => None,
    };
    let pending = match status.as_str() {
        "accepted" => Some(PendingEvent {
            attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
            next_attempt_at: Timestamp(row.try_get::<Option<i64>, _>("next_attempt_at")?.unwrap_or_default()),
            last_error: row.try_get::<Option<String>, _>("last_error")?.unwrap_or_default(),
        }),
        _ => None,
    };
    let instance_id: String = row.try_get("instance_id")?;
    Ok(PostedEvent {
        instance_id: instance_id.parse().map_err(|err| Error::Corrupt(format!("{instance_id:?}: {err}")))?,
        event_id: row.try_get("event_id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        refused,
        seq: row.try_get("seq")?,
        pending,
        received_at: Timestamp(row.try_get("received_at")?),
    })
}
