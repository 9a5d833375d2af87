//! Effects' results on their way back: delivered to the instance through the engine,
//! or kept with the effect until they can be.

use super::{Error, Result, Service};
use crate::model::{Caller, Effect, EffectKind, EffectStatus, Role, Timestamp};
use crate::store::Progress;
use crate::telemetry;
use std::time::Duration;
use switchyard_guest::abi;
use switchyard_guest::{FailureKind, Received, TaskError};

/// How long a result that could not be delivered (the guest failed on it, the store
/// was away) waits before the next try.
const REDELIVER_AFTER: Duration = Duration::from_secs(5);

/// What became of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The instance took it: its transition committed, the effect closed with it.
    Applied,
    /// The definition refused it, or the instance had finished: the effect closed with
    /// the result and the reason, the instance unchanged.
    Refused(String),
    /// The effect was closed already (by another delivery, or cancelled).
    Closed,
    /// Kept with the effect, to be delivered again later; why it could not be now.
    Kept(String),
}

/// The history entries [`Service::diagnostics`] shows the guest calls of.
const RECENT_CALLS: usize = 20;

/// What [`Service::diagnostics`] reports.
#[derive(Debug)]
pub struct Diagnostics {
    pub instance: super::InstanceView,
    /// The module of the instance's last transition.
    pub module_sha256: Option<crate::model::ModuleHash>,
    /// Every effect, oldest first, open or closed.
    pub effects: Vec<Effect>,
    pub events: Vec<crate::model::PostedEvent>,
    /// The last history entries: which module ran each call, and the fuel it used.
    pub recent_calls: Vec<crate::model::HistoryEntry>,
    /// Who created the instance and the `Idempotency-Key` it used, if any.
    pub created_with_key: Option<(String, String)>,
}

/// A participant's late report of a task it answered with 202.
#[derive(Debug, Clone)]
pub enum TaskReport {
    Succeeded(serde_json::Value),
    Failed(serde_json::Value),
}

/// What a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// This report is the task's result.
    Taken(Delivered),
    /// The same result was reported before.
    Duplicate,
}

impl Service {
    /// Delivers `received`, the result of `effect` after `attempts` attempts, to its
    /// instance; keeps it with the effect if that cannot be done now. `leased` says
    /// whether it was worked out under the lease `effect` was read with, which must
    /// still be held for the result to count (a participant's report needs none).
    pub async fn deliver_result(
        &self,
        effect: &Effect,
        attempts: u32,
        received: Received,
        leased: bool,
    ) -> Result<Delivered> {
        let event = received.into_event(effect.id.clone());
        let result = super::engine::event_json(&event);
        let lease_token = leased.then_some(effect.lease_token);
        let settles = Some(super::engine::Settling { effect_id: effect.id.clone(), attempts, lease_token });
        // The effect's end, by the event it ends with, once that closes it.
        let ended = metrics::counter!(
            telemetry::EFFECTS,
            "kind" => effect.kind.as_str(),
            "outcome" => event.name.clone(),
        );
        let delivered = self.deliver(effect.instance_id, event, settles).await;
        let now = Timestamp::now();
        let (status, due_at, note, outcome) = match delivered {
            Ok(_) => {
                ended.increment(1);
                return Ok(Delivered::Applied);
            }
            Err(Error::EffectClosed) => return Ok(Delivered::Closed),
            Err(refused @ (Error::Rejected { .. } | Error::Finished(_))) => {
                let reason = refused.to_string();
                (EffectStatus::Done, now, reason.clone(), Delivered::Refused(reason))
            }
            Err(err) => {
                let reason = err.to_string();
                let due = Timestamp(now.0 + REDELIVER_AFTER.as_millis() as i64);
                (EffectStatus::Ready, due, reason.clone(), Delivered::Kept(reason))
            }
        };
        let progress = Progress { status, attempts, due_at, last_error: Some(note), result: Some(result) };
        if !self
            .store
            .record_effect_progress((&effect.id, lease_token), effect.status, &progress, now)
            .await?
        {
            return Ok(Delivered::Closed);
        }
        if status == EffectStatus::Done {
            ended.increment(1);
        }
        Ok(outcome)
    }

    /// Takes a participant's report on task `task_id`: the first report is its
    /// result; the same one again is a duplicate, another one a conflict.
    pub async fn report_task(&self, task_id: &str, report: TaskReport) -> Result<Reported> {
        let not_found = || Error::TaskNotFound(task_id.into());
        let effect = self.store.effect(task_id).await?.ok_or_else(not_found)?;
        if effect.kind != EffectKind::Task {
            return Err(not_found());
        }
        let received = match report {
            TaskReport::Succeeded(output) => Received::TaskSucceeded { key: effect.key.clone(), output },
            TaskReport::Failed(error) => Received::TaskFailed {
                key: effect.key.clone(),
                error: TaskError {
                    kind: FailureKind::Http,
                    status: None,
                    body: Some(error.to_string()),
                    attempts: effect.attempts.max(1),
                },
            },
        };
        let reported = super::engine::event_json(&received.clone().into_event(effect.id.clone()));
        let closed = matches!(effect.status, EffectStatus::Done | EffectStatus::Cancelled);
        if !closed {
            match self.deliver_result(&effect, effect.attempts.max(1), received, false).await? {
                Delivered::Closed => {}
                delivered => return Ok(Reported::Taken(delivered)),
            }
        }
        // Closed before this report: by an earlier report, or by the host.
        let effect = self.store.effect(task_id).await?.ok_or_else(not_found)?;
        if effect.result.as_deref() == Some(reported.as_str()) {
            return Ok(Reported::Duplicate);
        }
        Err(Error::ReportConflict(task_id.into()))
    }

    /// Everything there is to know about why an instance stands where it does.
    pub async fn diagnostics(&self, caller: &Caller, id: crate::model::InstanceId) -> Result<Diagnostics> {
        caller.require(Role::Admin)?;
        let instance = self.instance(id).await?;
        let effects = self.store.effects_of(id).await?;
        let events = self.store.posted_events(id).await?;
        let mut history = self.history(id).await?;
        let module_sha256 = history.last().map(|entry| entry.module_sha256.clone());
        let created_with_key = history
            .first()
            .filter(|entry| entry.trigger.kind == crate::model::TriggerKind::Start)
            .and_then(|entry| Some((entry.actor.clone(), entry.trigger.id.clone()?)));
        let recent = history.len().saturating_sub(RECENT_CALLS);
        let recent_calls = history.split_off(recent);
        Ok(Diagnostics { instance, module_sha256, effects, events, recent_calls, created_with_key })
    }
}

/// The event an effect's kept result is, as [`super::engine::event_json`] wrote it.
pub fn kept_event(result: &str) -> Option<abi::Event> {
    let kept: serde_json::Value = serde_json::from_str(result).ok()?;
    Some(abi::Event {
        name: kept.get("name")?.as_str()?.into(),
        id: kept.get("id")?.as_str()?.into(),
        payload: kept.get("payload")?.to_string(),
    })
}
