//! The effect executor: runs what committed transitions asked for (the outbox), after
//! their commit, and turns what comes back into events through the engine.
//!
//! One loop per process leases due effects (a lease names this host and an expiry, so
//! a host that dies leaves its effects to the others once the leases run out, and one
//! that restarts takes its own back at once), runs each on a task of its own, and
//! sleeps until the next effect falls due, a commit writes new effects, or the poll
//! interval passes. An effect is closed only in the commit that delivers its result,
//! so a crash at any point leaves it open and it runs again, under the same id: a
//! task's participant sees one `task_id` however often it is attempted.
//!
//! Invariant: depends on `service` and `store`, never on `api`; results reach an
//! instance only through `Service::deliver_result`.

mod callback;
mod task;

pub use callback::{Callbacks, signature};
use task::random;
pub use task::{Binding, Participants, RetryOverride, RetryPolicy};

use crate::model::{Effect, EffectKind, EffectStatus, PendingEvent, Status, Timestamp};
use crate::service::{self, Delivered, Retried, Service, kept_event, under_lease};
use crate::store::Progress;
use std::sync::Arc;
use std::time::Duration;
use switchyard_guest::abi::TerminalStatus;
use switchyard_guest::{FailureKind, Received, TaskError};

/// Effects leased at once.
const BATCH: u32 = 64;

/// How the executor works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This host's name in leases: stable across its restarts, unique among live hosts.
    pub host_id: String,
    /// How long a lease lasts unless extended (the work on an effect extends it).
    pub lease: Duration,
    /// The longest sleep between two looks for due effects (the backstop to wake-ups).
    pub poll_every: Duration,
    pub participants: Participants,
    pub callbacks: Callbacks,
    /// Certificate authorities trusted for `https://` besides the public roots.
    pub trusted: Vec<reqwest::Certificate>,
}

/// Runs effects until `stop` turns true.
pub async fn run(service: Arc<Service>, settings: Settings, mut stop: tokio::sync::watch::Receiver<bool>) {
    let settings = Arc::new(settings);
    match service.store().release_effect_leases(&settings.host_id).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "took back this host's effects"),
        Err(err) => tracing::warn!(%err, "cannot take back this host's effects; they wait for their leases"),
    }
    let client = task::client(&settings.trusted);
    let Some(mut handed_over) = service.take_handover() else {
        return tracing::error!("another executor runs in this process");
    };
    // Children whose cancel a crash cut short: at start, then once per lease period,
    // by one host at a time.
    let mut next_sweep = tokio::time::Instant::now();
    let mut event_retries = Job { name: EVENTS, held: false, next_look: tokio::time::Instant::now() };
    loop {
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep += settings.lease;
            let (service, settings) = (service.clone(), settings.clone());
            tokio::spawn(async move {
                if let Err(err) = service.store().read_clock().await {
                    tracing::warn!(%err, "cannot read the database's clock");
                }
                if service.holds_job(ORPHANS, settings.lease).await {
                    let cancelled = service.cancel_orphaned_children().await;
                    if cancelled > 0 {
                        tracing::info!(cancelled, "cancelled children of cancelled instances");
                    }
                }
            });
        }
        let leased = match service.store().lease_due_effects(&settings.host_id, settings.lease, BATCH).await {
            Ok(leased) => leased,
            Err(err) => {
                tracing::warn!(%err, "cannot lease effects");
                Vec::new()
            }
        };
        if event_retries.held(&service, &settings).await {
            retry_events(&service, &settings).await;
        }
        let full = leased.len() == BATCH as usize;
        for effect in leased {
            let (service, settings, client) = (service.clone(), settings.clone(), client.clone());
            tokio::spawn(async move { keep_leased(&service, &settings, &client, effect, None).await });
        }
        if full {
            continue;
        }
        let next_due = service.store().next_effect_due().await.ok().flatten();
        let sleep = next_due.map_or(settings.poll_every, |until_due| until_due.min(settings.poll_every));
        let look_again = tokio::time::Instant::now() + sleep;
        // Until then, effects this process committed arrive leased already.
        loop {
            tokio::select! {
                Some((effect, committed)) = handed_over.recv() => {
                    let (service, settings, client) = (service.clone(), settings.clone(), client.clone());
                    tokio::spawn(async move { keep_leased(&service, &settings, &client, effect, Some(committed)).await });
                }
                () = tokio::time::sleep_until(look_again) => break,
                () = service.outbox_written() => break,
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// The periodic jobs of the loop, each done by one host at a time (the one holding its
/// lease, which it keeps while it lives).
const ORPHANS: &str = "effects.orphaned-children";
const EVENTS: &str = "effects.event-retries";

/// A periodic job's lease as this host last saw it; renewed (or looked for) once a
/// third of a lease has passed, not on every turn of the loop.
struct Job {
    name: &'static str,
    held: bool,
    next_look: tokio::time::Instant,
}

impl Job {
    async fn held(&mut self, service: &Service, settings: &Settings) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.next_look {
            self.held = service.holds_job(self.name, settings.lease).await;
            self.next_look = now + settings.lease / 3;
        }
        self.held
    }
}

/// Tries again the posted events the definition failed on (the oldest waiting of each
/// instance), one after another, and backs off those that fail again under the tasks'
/// default retry policy (without its attempt limit: an event is not given up).
async fn retry_events(service: &Service, settings: &Settings) {
    let due = match service.store().due_accepted_events(Timestamp::now(), BATCH).await {
        Ok(due) => due,
        Err(err) => return tracing::warn!(%err, "cannot look for events to apply"),
    };
    for event in due {
        let failure = match service.retry_event(&event).await {
            Ok(Retried::Applied) => {
                tracing::info!(instance = %event.instance_id, event_id = %event.event_id, "a waiting event was applied");
                continue;
            }
            Ok(Retried::Refused) => continue,
            Ok(Retried::Failed(failure)) => failure,
            Err(err) => err.to_string(),
        };
        let attempts = event.pending.as_ref().map_or(0, |pending| pending.attempts).saturating_add(1);
        let wait = settings.participants.retry.backoff(attempts, random());
        let pending = PendingEvent {
            attempts,
            next_attempt_at: Timestamp(Timestamp::now().0.saturating_add(millis(wait))),
            last_error: failure,
        };
        if let Err(err) = service.store().reschedule_event(&event, &pending).await {
            tracing::warn!(%err, "cannot reschedule the event; it is tried again at once");
        }
    }
}

/// Works on one leased effect for as long as this host holds its lease; whatever it
/// writes names the lease's token, so nothing of it counts once another host took over.
async fn keep_leased(
    service: &Service,
    settings: &Settings,
    client: &reqwest::Client,
    effect: Effect,
    committed: Option<std::time::Instant>,
) {
    let (id, token, lease) = (effect.id.clone(), effect.lease_token, settings.lease);
    let work = work(service, settings, client, effect, committed);
    let effect_id = id.as_str();
    let extend = move || service.store().extend_effect_lease(effect_id, token, lease);
    if under_lease(settings.lease, work, extend).await.is_none() {
        // Another host has it now (or it closed): leave it to that host.
        tracing::warn!(effect = %id, "the effect's lease was lost; stopped working on it");
    }
}

/// Does what is due on one leased effect; `committed` is when the commit that asked for
/// it was acknowledged, if it was handed over by this process.
#[tracing::instrument(skip_all, fields(effect = %effect.id, kind = effect.kind.as_str(), key = %effect.key))]
async fn work(
    service: &Service,
    settings: &Settings,
    client: &reqwest::Client,
    effect: Effect,
    committed: Option<std::time::Instant>,
) {
    let kept = effect.result.as_deref().and_then(kept_event);
    let attempts = effect.attempts;
    let outcome = match (effect.status, effect.kind, kept) {
        (EffectStatus::Ready, _, Some(event)) => match Received::parse(event) {
            Ok(received) => Some((received, attempts)),
            Err(rejection) => {
                tracing::error!(reason = %rejection.reason, "a kept result does not parse");
                None
            }
        },
        // The child ended: its end is reported as it stands now.
        (EffectStatus::Ready, EffectKind::Child, None) => {
            child_ended(service, &effect).await.map(|ended| (ended, attempts))
        }
        (_, EffectKind::Timer, _) => Some((Received::TimerFired { key: effect.key.clone() }, attempts)),
        // A participant that answered 202 did not report in time.
        (EffectStatus::Waiting, EffectKind::Task, _) => {
            let error = TaskError { kind: FailureKind::Timeout, status: None, body: None, attempts };
            Some((Received::TaskFailed { key: effect.key.clone(), error }, attempts))
        }
        (_, EffectKind::Task, _) => {
            if let Some(committed) = committed {
                service.task_dispatched(committed.elapsed());
            }
            task::attempt(service, settings, client, &effect).await
        }
        (_, EffectKind::Child, _) => start_child(service, settings, &effect).await,
        (_, EffectKind::Callback, _) => {
            callback::deliver(service, settings, client, &effect).await;
            None
        }
    };
    if let Some((received, attempts)) = outcome {
        match service.deliver_result(&effect, attempts, received, true).await {
            Ok(Delivered::Applied) => {}
            Ok(Delivered::Closed) => {
                tracing::info!(
                    "the result was not taken: the effect is closed, or its lease passed to another host"
                )
            }
            Ok(Delivered::Refused(reason)) => {
                tracing::info!(%reason, "the definition did not take the result")
            }
            Ok(Delivered::Kept(reason)) => tracing::warn!(%reason, "result kept, to be delivered again"),
            Err(err) => tracing::warn!(%err, "cannot deliver the result; it runs again after its lease"),
        }
    }
}

/// Starts the child `effect` asks for; a child that cannot start is a failed child.
async fn start_child(service: &Service, settings: &Settings, effect: &Effect) -> Option<(Received, u32)> {
    let attempts = effect.attempts + 1;
    let refusal = match service.start_child(effect).await {
        // The child's commit recorded it with the effect, which now waits for its end.
        Ok(_) | Err(service::Error::EffectClosed) => return None,
        Err(
            refused @ (service::Error::DefinitionNotFound(_)
            | service::Error::VersionNotFound { .. }
            | service::Error::VersionRetired { .. }
            | service::Error::Rejected { .. }
            | service::Error::Guest(_)
            | service::Error::BadOutcome(_)
            | service::Error::BadEffects(_)),
        ) => refused.to_string(),
        Err(err) => {
            let progress = Progress {
                status: EffectStatus::Pending,
                attempts,
                due_at: Timestamp(Timestamp::now().0.saturating_add(millis(settings.poll_every))),
                last_error: Some(format!("starting the child failed: {err}")),
                result: None,
            };
            record(service, effect, &progress).await;
            return None;
        }
    };
    let ended = Received::ChildEnded {
        key: effect.key.clone(),
        child_id: String::new(),
        status: TerminalStatus::Failed,
        state: String::new(),
        data: serde_json::json!({ "error": refusal }),
    };
    Some((ended, attempts))
}

/// How the child of `effect` ended, as it stands now.
async fn child_ended(service: &Service, effect: &Effect) -> Option<Received> {
    let child_id = effect.child_id?;
    let child = match service.instance(child_id).await {
        Ok(view) => view.instance,
        Err(err) => {
            tracing::warn!(%err, %child_id, "cannot read the child; its end is reported after the lease");
            return None;
        }
    };
    let status = match child.status {
        Status::Completed => TerminalStatus::Completed,
        Status::Failed => TerminalStatus::Failed,
        Status::Cancelled => TerminalStatus::Cancelled,
        Status::Running => return None,
    };
    Some(Received::ChildEnded {
        key: effect.key.clone(),
        child_id: child_id.to_string(),
        status,
        state: child.state,
        data: serde_json::from_str(&child.data).unwrap_or_default(),
    })
}

/// Records what an attempt left to do; a failure costs a repeat after the lease.
async fn record(service: &Service, effect: &Effect, progress: &Progress) {
    let leased = (effect.id.as_str(), Some(effect.lease_token));
    let recorded =
        service.store().record_effect_progress(leased, effect.status, progress, Timestamp::now()).await;
    if let Err(err) = recorded {
        tracing::warn!(%err, "cannot record the effect's progress; it runs again after its lease");
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
