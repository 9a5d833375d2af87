//! Events clients posted to instances: kept once per (instance, event id), applied
//! ones in the commit of the transition that applied them.

use super::writer::{WriteTx, unique_violation};
use super::{Error, Result, Store};
use crate::model::{InstanceId, PostedEvent, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

const SELECT: &str =
    "SELECT instance_id, event_id, name, payload, status, code, reason, seq, received_at FROM events";

/// Keeps `event`; [`Error::EventDuplicate`] if its id is kept already.
pub(super) async fn insert(tx: &mut impl WriteTx, event: &PostedEvent) -> Result<()> {
    let (status, code, reason) = match &event.refused {
        Some((code, reason)) => ("refused", Some(code.clone()), Some(reason.clone())),
        None => ("applied", None, None),
    };
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
    ];
    let sql =
        "INSERT INTO events (instance_id, event_id, name, payload, status, code, reason, seq, received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    match tx.execute(sql, &args).await {
        Err(err) if unique_violation(&err) => Err(Error::EventDuplicate),
        other => other.map(drop),
    }
}

impl Store {
    /// Keeps an event that applied nothing (the definition refused it).
    pub async fn keep_event(&self, event: &PostedEvent) -> Result<()> {
        let mut writing = self.writing().await?;
        let mut tx = writing.begin().await?;
        insert(&mut tx, event).await?;
        tx.commit().await?;
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
        let sql = format!("{SELECT} WHERE instance_id = $1 ORDER BY received_at, seq");
        let rows = read!(self, |pool| sqlx::query(&sql).bind(instance.to_string()).fetch_all(pool).await)?;
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
    let instance_id: String = row.try_get("instance_id")?;
    Ok(PostedEvent {
        instance_id: instance_id.parse().map_err(|err| Error::Corrupt(format!("{instance_id:?}: {err}")))?,
        event_id: row.try_get("event_id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        refused,
        seq: row.try_get("seq")?,
        received_at: Timestamp(row.try_get("received_at")?),
    })
}
