//! The JSON shapes of the HTTP API. Only this module decides what clients see, so
//! model and store types stay free to change.

use crate::model::{
    DefinitionVersion, Effect, EffectKind, EffectStatus, FeedItem, HistoryEntry, IdempotencyRecord, Instance,
    Migration, PostedEvent, Status, Timestamp,
};
use crate::service::{DefinitionSummary, Diagnostics, InstanceView, Posted, VersionSummary};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use switchyard_guest::abi::Manifest;
use utoipa::ToSchema;

/// RFC 3339 in UTC with milliseconds.
pub fn time(at: Timestamp) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

/// Stored JSON text, embedded as it is; anything that is not JSON becomes `null`.
fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

#[derive(Serialize, ToSchema)]
#[schema(as = Instance)]
pub struct InstanceDto<'a> {
    id: String,
    definition: &'a str,
    definition_version: u32,
    state: &'a str,
    status: &'static str,
    #[schema(value_type = serde_json::Value)]
    data: Box<RawValue>,
    revision: i64,
    allowed_actions: &'a [String],
    message: Option<&'a str>,
    error: Option<&'a str>,
    parent_id: Option<String>,
    callback_url: Option<&'a str>,
    created_at: String,
    updated_at: String,
}

impl<'a> InstanceDto<'a> {
    pub fn new(view: &'a InstanceView) -> Self {
        let instance: &Instance = &view.instance;
        InstanceDto {
            id: instance.id.to_string(),
            definition: &instance.definition,
            definition_version: instance.definition_version,
            state: &instance.state,
            status: instance.status.as_str(),
            data: json(&instance.data),
            revision: instance.revision.0,
            allowed_actions: &view.allowed_actions,
            message: instance.message.as_deref(),
            error: instance.error.as_deref(),
            parent_id: instance.parent_id.map(|id| id.to_string()),
            callback_url: instance.callback_url.as_deref(),
            created_at: time(instance.created_at),
            updated_at: time(instance.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InstancePage<'a> {
    pub items: Vec<InstanceDto<'a>>,
    /// Pass as `cursor` for the next page; absent once a page comes back short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An instance's history, oldest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryPage<'a> {
    pub instance_id: String,
    pub items: Vec<HistoryDto<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = History)]
pub struct HistoryDto<'a> {
    seq: i64,
    from_state: Option<&'a str>,
    to_state: &'a str,
    trigger: TriggerDto<'a>,
    actor: &'a str,
    definition_version: u32,
    module_sha256: &'a str,
    fuel_used: u64,
    at: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Trigger)]
struct TriggerDto<'a> {
    kind: &'static str,
    name: &'a str,
    id: Option<&'a str>,
    #[schema(value_type = serde_json::Value)]
    payload: Box<RawValue>,
}

impl<'a> HistoryDto<'a> {
    pub fn new(entry: &'a HistoryEntry) -> Self {
        HistoryDto {
            seq: entry.seq,
            from_state: entry.from_state.as_deref(),
            to_state: &entry.to_state,
            trigger: TriggerDto {
                kind: entry.trigger.kind.as_str(),
                name: &entry.trigger.name,
                id: entry.trigger.id.as_deref(),
                payload: json(&entry.trigger.payload),
            },
            actor: &entry.actor,
            definition_version: entry.definition_version,
            module_sha256: &entry.module_sha256.0,
            fuel_used: entry.fuel_used,
            at: time(entry.at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Diagnostics)]
pub struct DiagnosticsDto<'a> {
    instance: InstanceDto<'a>,
    module_sha256: Option<&'a str>,
    effects: Vec<EffectDto<'a>>,
    /// The open timers, when each falls due.
    open_timers: Vec<EffectDto<'a>>,
    children: Vec<EffectDto<'a>>,
    events: Vec<PostedEventDto<'a>>,
    /// The terminal callback, once the instance has ended with a `callback_url`.
    callback_deliveries: Vec<EffectDto<'a>>,
    recent_calls: Vec<CallDto<'a>>,
    /// The responses kept under the keys of its creation, actions and overrides.
    idempotency_records: Vec<IdempotencyRecordDto<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = IdempotencyRecord)]
struct IdempotencyRecordDto<'a> {
    scope: &'a str,
    key: &'a str,
    /// The status of the response a replay gets.
    status: u16,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Effect)]
struct EffectDto<'a> {
    /// A task's `task_id`.
    id: &'a str,
    kind: &'static str,
    key: &'a str,
    /// The task name, or the child's definition.
    name: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    /// When the executor next works on it, while it is open.
    next_attempt_at: Option<String>,
    last_error: Option<&'a str>,
    #[schema(value_type = serde_json::Value)]
    result: Option<Box<RawValue>>,
    /// The history entry of the transition that asked for it.
    seq: i64,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Call)]
struct CallDto<'a> {
    seq: i64,
    trigger: &'static str,
    name: &'a str,
    module_sha256: &'a str,
    fuel_used: u64,
    at: String,
}

impl<'a> DiagnosticsDto<'a> {
    pub fn new(diagnostics: &'a Diagnostics, records: &'a [IdempotencyRecord]) -> Self {
        let effects: Vec<&Effect> = diagnostics.effects.iter().collect();
        let open = |effect: &&Effect| {
            matches!(effect.status, EffectStatus::Pending | EffectStatus::Waiting | EffectStatus::Ready)
        };
        DiagnosticsDto {
            instance: InstanceDto::new(&diagnostics.instance),
            module_sha256: diagnostics.module_sha256.as_ref().map(|sha256| sha256.0.as_str()),
            effects: effects.iter().map(|effect| EffectDto::new(effect)).collect(),
            open_timers: effects
                .iter()
                .filter(|effect| effect.kind == EffectKind::Timer && open(effect))
                .map(|effect| EffectDto::new(effect))
                .collect(),
            children: effects
                .iter()
                .filter(|effect| effect.kind == EffectKind::Child)
                .map(|effect| EffectDto::new(effect))
                .collect(),
            events: diagnostics.events.iter().map(PostedEventDto::new).collect(),
            callback_deliveries: effects
                .iter()
                .filter(|effect| effect.kind == EffectKind::Callback)
                .map(|effect| EffectDto::new(effect))
                .collect(),
            recent_calls: diagnostics
                .recent_calls
                .iter()
                .map(|entry| CallDto {
                    seq: entry.seq,
                    trigger: entry.trigger.kind.as_str(),
                    name: &entry.trigger.name,
                    module_sha256: &entry.module_sha256.0,
                    fuel_used: entry.fuel_used,
                    at: time(entry.at),
                })
                .collect(),
            idempotency_records: records
                .iter()
                .map(|record| IdempotencyRecordDto {
                    scope: &record.key.scope,
                    key: &record.key.key,
                    status: record.response.status,
                    created_at: time(record.created_at),
                })
                .collect(),
        }
    }
}

impl<'a> EffectDto<'a> {
    fn new(effect: &'a Effect) -> Self {
        let open =
            matches!(effect.status, EffectStatus::Pending | EffectStatus::Waiting | EffectStatus::Ready);
        EffectDto {
            id: &effect.id,
            kind: effect.kind.as_str(),
            key: &effect.key,
            name: effect.name.as_deref(),
            status: effect.status.as_str(),
            attempts: effect.attempts,
            next_attempt_at: open.then(|| time(effect.due_at)),
            last_error: effect.last_error.as_deref(),
            result: effect.result.as_deref().map(json),
            seq: effect.seq,
            created_at: time(effect.created_at),
            updated_at: time(effect.updated_at),
        }
    }
}

/// The events posted to an instance, oldest first.
#[derive(Serialize, ToSchema)]
pub struct PostedEventList<'a> {
    pub instance_id: String,
    pub items: Vec<PostedEventDto<'a>>,
}

/// The answer to posting an event, by what became of it.
#[derive(Serialize, ToSchema)]
#[schema(as = EventOutcome)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum EventOutcomeDto<'a> {
    /// Applied now: the instance after it.
    Applied { event_id: &'a str, instance: InstanceDto<'a> },
    /// The definition refused it (or the instance had finished); nothing changed.
    Refused { event_id: &'a str, code: &'a str, reason: &'a str },
    /// An event with this id was received before: what became of that one.
    Duplicate { event_id: &'a str, received: PostedEventDto<'a> },
    /// Kept, to be applied later (202).
    Accepted { event_id: &'a str, received: PostedEventDto<'a> },
}

impl<'a> EventOutcomeDto<'a> {
    pub fn new(event_id: &'a str, posted: &'a Posted) -> Self {
        match posted {
            Posted::Applied(view) => EventOutcomeDto::Applied { event_id, instance: InstanceDto::new(view) },
            Posted::Refused { code, reason } => EventOutcomeDto::Refused { event_id, code, reason },
            Posted::Duplicate(kept) => {
                EventOutcomeDto::Duplicate { event_id, received: PostedEventDto::new(kept) }
            }
            Posted::Accepted(kept) => {
                EventOutcomeDto::Accepted { event_id, received: PostedEventDto::new(kept) }
            }
        }
    }
}

/// An event a client posted, and what became of it.
#[derive(Serialize, ToSchema)]
#[schema(as = PostedEvent)]
pub struct PostedEventDto<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    name: &'a str,
    #[schema(value_type = serde_json::Value)]
    payload: Box<RawValue>,
    status: &'static str,
    code: Option<&'a str>,
    reason: Option<&'a str>,
    /// The history entry of the transition that applied it.
    seq: Option<i64>,
    received_at: String,
    /// While `accepted`: tries so far, when the next is due and why the last failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

impl<'a> PostedEventDto<'a> {
    pub fn new(event: &'a PostedEvent) -> Self {
        let refused = event.refused.as_ref();
        let pending = event.pending.as_ref();
        let status = match (refused, pending) {
            (Some(_), _) => "refused",
            (None, Some(_)) => "accepted",
            (None, None) => "applied",
        };
        PostedEventDto {
            event_id: &event.event_id,
            name: &event.name,
            payload: json(&event.payload),
            status,
            code: refused.map(|(code, _)| code.as_str()),
            reason: refused.map(|(_, reason)| reason.as_str()),
            seq: event.seq,
            received_at: time(event.received_at),
            attempts: pending.map(|pending| pending.attempts),
            next_attempt_at: pending.map(|pending| time(pending.next_attempt_at)),
            last_error: pending.map(|pending| pending.last_error.as_str()),
        }
    }
}

/// Every deployed definition.
#[derive(Serialize, ToSchema)]
pub struct DefinitionList<'a> {
    pub items: Vec<DefinitionDto<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Definition)]
pub struct DefinitionDto<'a> {
    name: &'a str,
    /// The version new instances get.
    default_version: Option<u32>,
    pinned_version: Option<u32>,
    versions: Vec<VersionSummaryDto<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = VersionSummary)]
struct VersionSummaryDto<'a> {
    version: u32,
    sha256: &'a str,
    deployed_at: String,
    retired: bool,
    retired_at: Option<String>,
    instances: BTreeMap<&'static str, i64>,
}

impl<'a> DefinitionDto<'a> {
    pub fn new(summary: &'a DefinitionSummary) -> Self {
        DefinitionDto {
            name: &summary.name,
            default_version: summary.default_version,
            pinned_version: summary.pinned_version,
            versions: summary.versions.iter().map(VersionSummaryDto::new).collect(),
        }
    }
}

impl<'a> VersionSummaryDto<'a> {
    fn new(summary: &'a VersionSummary) -> Self {
        let version = &summary.version;
        VersionSummaryDto {
            version: version.version,
            sha256: &version.sha256.0,
            deployed_at: time(version.deployed_at),
            retired: version.retired_at.is_some(),
            retired_at: version.retired_at.map(time),
            instances: summary
                .instances
                .iter()
                .map(|(status, count)| (Status::as_str(*status), *count))
                .collect(),
        }
    }
}

/// A deployed version with its whole manifest and transition graph.
#[derive(Serialize, ToSchema)]
#[schema(as = Version)]
pub struct VersionDto<'a> {
    name: &'a str,
    version: u32,
    sha256: &'a str,
    deployed_at: String,
    retired_at: Option<String>,
    abi: u32,
    initial_state: &'a str,
    states: Vec<StateDto<'a>>,
    actions: Vec<ActionDto<'a>>,
    /// Every declared edge: `from` --`action`--> `to`.
    transitions: Vec<TransitionDto<'a>>,
    migrates_from: &'a [u32],
}

#[derive(Serialize, ToSchema)]
#[schema(as = State)]
struct StateDto<'a> {
    name: &'a str,
    description: &'a str,
    terminal: bool,
    /// The instance status in this state.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Action)]
struct ActionDto<'a> {
    name: &'a str,
    description: &'a str,
    from: &'a [String],
    to: &'a [String],
    admin_only: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Transition)]
struct TransitionDto<'a> {
    from: &'a str,
    action: &'a str,
    to: &'a str,
}

impl<'a> VersionDto<'a> {
    pub fn new(version: &'a DefinitionVersion) -> Self {
        let manifest: &Manifest = &version.manifest;
        VersionDto {
            name: &version.name,
            version: version.version,
            sha256: &version.sha256.0,
            deployed_at: time(version.deployed_at),
            retired_at: version.retired_at.map(time),
            abi: manifest.abi,
            initial_state: &manifest.initial_state,
            states: manifest
                .states
                .iter()
                .map(|state| StateDto {
                    name: &state.name,
                    description: &state.description,
                    terminal: state.terminal.is_some(),
                    status: Status::of(state.terminal).as_str(),
                })
                .collect(),
            actions: manifest
                .actions
                .iter()
                .map(|action| ActionDto {
                    name: &action.name,
                    description: &action.description,
                    from: &action.from,
                    to: &action.to,
                    admin_only: action.admin_only,
                })
                .collect(),
            transitions: manifest
                .actions
                .iter()
                .flat_map(|action| {
                    action.from.iter().flat_map(move |from| {
                        action.to.iter().map(move |to| TransitionDto { from, action: &action.name, to })
                    })
                })
                .collect(),
            migrates_from: &manifest.migrates_from,
        }
    }
}

/// A bulk migration and its progress.
#[derive(Serialize, ToSchema)]
#[schema(as = Migration)]
pub struct MigrationDto<'a> {
    id: String,
    definition: &'a str,
    from_version: u32,
    to_version: u32,
    states: Option<&'a [String]>,
    dry_run: bool,
    reason: &'a str,
    actor: &'a str,
    status: &'static str,
    total: i64,
    migrated: i64,
    failed: i64,
    skipped: i64,
    failures: Vec<FailureDto<'a>>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Failure)]
struct FailureDto<'a> {
    instance_id: &'a str,
    reason: &'a str,
}

impl<'a> MigrationDto<'a> {
    pub fn new(migration: &'a Migration, failures: &'a [(String, String)]) -> Self {
        MigrationDto {
            id: migration.id.to_string(),
            definition: &migration.definition,
            from_version: migration.from_version,
            to_version: migration.to_version,
            states: migration.states.as_deref(),
            dry_run: migration.dry_run,
            reason: &migration.reason,
            actor: &migration.actor,
            status: migration.status.as_str(),
            total: migration.total,
            migrated: migration.migrated,
            failed: migration.failed,
            skipped: migration.skipped,
            failures: failures
                .iter()
                .map(|(instance_id, reason)| FailureDto { instance_id, reason })
                .collect(),
            created_at: time(migration.created_at),
            updated_at: time(migration.updated_at),
            finished_at: migration.finished_at.map(time),
        }
    }
}

/// A committed transition as a CloudEvents 1.0 event (JSON format).
#[derive(Serialize, ToSchema)]
#[schema(as = FeedEvent)]
pub struct FeedEventDto<'a> {
    specversion: &'static str,
    /// Unique per transition: the instance and its sequence number.
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    subject: String,
    datacontenttype: &'static str,
    data: FeedDataDto<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = FeedData)]
struct FeedDataDto<'a> {
    /// The feed's cursor after this event.
    cursor: String,
    definition: &'a str,
    version: u32,
    seq: i64,
    from_state: Option<&'a str>,
    to_state: &'a str,
    status: &'static str,
    trigger: FeedTriggerDto<'a>,
    actor: &'a str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = FeedTrigger)]
struct FeedTriggerDto<'a> {
    kind: &'static str,
    name: &'a str,
    id: Option<&'a str>,
}

impl<'a> FeedEventDto<'a> {
    pub const TYPE: &'static str = "switchyard.transition";

    pub fn new(item: &'a FeedItem) -> Self {
        let entry = &item.entry;
        let instance = entry.instance_id.to_string();
        FeedEventDto {
            specversion: "1.0",
            id: format!("{instance}/{}", entry.seq),
            source: format!("/v1/instances/{instance}"),
            kind: Self::TYPE,
            time: time(entry.at),
            subject: instance,
            datacontenttype: "application/json",
            data: FeedDataDto {
                cursor: item.position.to_string(),
                definition: &item.definition,
                version: entry.definition_version,
                seq: entry.seq,
                from_state: entry.from_state.as_deref(),
                to_state: &entry.to_state,
                status: item.status.as_str(),
                trigger: FeedTriggerDto {
                    kind: entry.trigger.kind.as_str(),
                    name: &entry.trigger.name,
                    id: entry.trigger.id.as_deref(),
                },
                actor: &entry.actor,
            },
        }
    }
}

/// What became of a participant's report.
#[derive(Serialize, ToSchema)]
#[schema(as = TaskReported)]
pub struct TaskReportedDto<'a> {
    pub task_id: &'a str,
    pub status: ReportedStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    /// The task's result, applied to its instance.
    Applied,
    /// Refused by the definition (or the instance had finished).
    Refused,
    /// Kept, to be delivered later.
    Accepted,
    /// The same report again.
    Duplicate,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthDto {
    /// `ok` (alive) or `ready` (the database answers).
    pub status: &'static str,
}
