//! Plain data shared by every layer: ids, versions, statuses, instances, history.
//!
//! Invariant: no I/O and no HTTP or SQL knowledge here.

mod caller;

pub use caller::{ApiKey, Caller, Forbidden, Role};

use std::fmt;
use std::str::FromStr;
use switchyard_guest::abi::{Manifest, TerminalStatus};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub Uuid);

impl InstanceId {
    /// Time-ordered (UUIDv7), so listing by id lists by creation.
    pub fn generate() -> Self {
        InstanceId(Uuid::now_v7())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for InstanceId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(InstanceId)
    }
}

/// Increments on every change to an instance; the ETag derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub i64);

impl Revision {
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let since_epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Lowercase hex SHA-256 of a module's bytes (or of the artifact compiled from them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleHash(pub String);

impl ModuleHash {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        ModuleHash(hex::encode(sha2::Sha256::digest(bytes)))
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an instance stands overall; `Running` until it reaches a terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Running, Status::Completed, Status::Failed, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status an instance has in a state with this terminal marker.
    pub fn of(terminal: Option<TerminalStatus>) -> Status {
        match terminal {
            None => Status::Running,
            Some(TerminalStatus::Completed) => Status::Completed,
            Some(TerminalStatus::Failed) => Status::Failed,
            Some(TerminalStatus::Cancelled) => Status::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Status::Running
    }
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| UnknownName(s.into()))
    }
}

/// What caused a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// The instance was created (`init`).
    Start,
    Action,
    Event,
    Effect,
    Admin,
}

impl TriggerKind {
    const ALL: [TriggerKind; 5] = [
        TriggerKind::Start,
        TriggerKind::Action,
        TriggerKind::Event,
        TriggerKind::Effect,
        TriggerKind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Start => "start",
            TriggerKind::Action => "action",
            TriggerKind::Event => "event",
            TriggerKind::Effect => "effect",
            TriggerKind::Admin => "admin",
        }
    }
}

impl FromStr for TriggerKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TriggerKind::ALL.into_iter().find(|kind| kind.as_str() == s).ok_or_else(|| UnknownName(s.into()))
    }
}

/// What an effect asks the host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectKind {
    Task,
    Timer,
    Child,
    /// The signed terminal callback to an instance's `callback_url`: the host's own,
    /// asked for by no definition.
    Callback,
}

impl EffectKind {
    const ALL: [EffectKind; 4] =
        [EffectKind::Task, EffectKind::Timer, EffectKind::Child, EffectKind::Callback];

    pub fn as_str(self) -> &'static str {
        match self {
            EffectKind::Task => "task",
            EffectKind::Timer => "timer",
            EffectKind::Child => "child",
            EffectKind::Callback => "callback",
        }
    }
}

impl FromStr for EffectKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EffectKind::ALL.into_iter().find(|kind| kind.as_str() == s).ok_or_else(|| UnknownName(s.into()))
    }
}

/// Where an effect stands. `Pending`, `Waiting` and `Ready` are open: the effect's key
/// is taken, and the executor has work to do once it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectStatus {
    /// To be run: a task's next attempt, a timer to fire, a child to start.
    Pending,
    /// Running elsewhere: a task's participant answered 202 and is to report by the
    /// effect's due time.
    Waiting,
    /// Its result is known and kept, to be delivered to the instance.
    Ready,
    /// Its result was delivered (or refused by the definition).
    Done,
    Cancelled,
}

impl EffectStatus {
    const ALL: [EffectStatus; 5] = [
        EffectStatus::Pending,
        EffectStatus::Waiting,
        EffectStatus::Ready,
        EffectStatus::Done,
        EffectStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EffectStatus::Pending => "pending",
            EffectStatus::Waiting => "waiting",
            EffectStatus::Ready => "ready",
            EffectStatus::Done => "done",
            EffectStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for EffectStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EffectStatus::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| UnknownName(s.into()))
    }
}

/// One effect as the outbox keeps it.
#[derive(Debug, Clone)]
pub struct Effect {
    /// Derived from (instance, transition, key): a task's `task_id`, the same on every
    /// attempt.
    pub id: String,
    pub instance_id: InstanceId,
    /// The history entry (revision) of the transition that asked for it.
    pub seq: i64,
    pub key: String,
    pub kind: EffectKind,
    /// The task name, or the child's definition.
    pub name: Option<String>,
    /// JSON text.
    pub input: Option<String>,
    /// The effect's settings as the definition gave them (JSON: retry, timeouts, child
    /// version).
    pub options: String,
    /// The instance's definition and version when the effect was asked for.
    pub definition: String,
    pub definition_version: u32,
    pub status: EffectStatus,
    pub attempts: u32,
    /// When the executor next has work on it: the next attempt, the timer, the report
    /// deadline.
    pub due_at: Timestamp,
    pub last_error: Option<String>,
    /// The event it comes back as, once known (JSON: `{"name", "id", "payload"}`).
    pub result: Option<String>,
    /// A child effect's instance, once started.
    pub child_id: Option<InstanceId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The token of the effect's lease when it was read: grows each time a host takes
    /// the effect up, and writes made under the lease name it (fencing).
    pub lease_token: i64,
}

/// An event a client posted to an instance, as it is kept.
#[derive(Debug, Clone)]
pub struct PostedEvent {
    pub instance_id: InstanceId,
    /// The sender's id for it: the same id again is a duplicate.
    pub event_id: String,
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// `Some` once refused: the definition's code and reason.
    pub refused: Option<(String, String)>,
    /// The revision of the transition that applied it.
    pub seq: Option<i64>,
    /// `Some` while it waits to be applied: the definition failed on it so far.
    pub pending: Option<PendingEvent>,
    pub received_at: Timestamp,
}

/// A kept event not applied yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Tries to apply it so far, the one at posting included.
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: String,
}

/// A stored name that no enum variant spells.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// One deployed module of a definition.
#[derive(Debug, Clone)]
pub struct DefinitionVersion {
    pub name: String,
    pub version: u32,
    pub sha256: ModuleHash,
    pub manifest: Manifest,
    pub deployed_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// A running or finished state machine.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: InstanceId,
    pub definition: String,
    pub definition_version: u32,
    /// The module it runs: that of its version when it started or was last migrated.
    /// Empty for a finished instance whose version was deleted before instances
    /// recorded it.
    pub module_sha256: ModuleHash,
    pub state: String,
    pub status: Status,
    /// The instance's JSON document, as text.
    pub data: String,
    pub revision: Revision,
    pub message: Option<String>,
    pub error: Option<String>,
    pub parent_id: Option<InstanceId>,
    pub callback_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
impl Instance {
    /// An instance of definition `d` version 1 in state `S`, for unit tests.
    pub(crate) fn sample(id: InstanceId, revision: i64, status: Status) -> Instance {
        Instance {
            id,
            definition: "d".into(),
            definition_version: 1,
            module_sha256: ModuleHash("sha".into()),
            state: "S".into(),
            status,
            data: "{}".into(),
            revision: Revision(revision),
            message: None,
            error: None,
            parent_id: None,
            callback_url: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }
}

/// Which instances to list, newest first.
#[derive(Debug, Clone)]
pub struct InstanceFilter {
    pub definition: Option<String>,
    pub version: Option<u32>,
    pub state: Option<String>,
    pub status: Option<Status>,
    /// Only the children of this instance.
    pub parent: Option<InstanceId>,
    /// Only instances older than this one (the previous page's last id).
    pub before: Option<InstanceId>,
    pub limit: u32,
}

/// One append-only record of a change, with enough to replay it: the trigger and its
/// payload, the module that ran (version and hash) and what the call cost.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub instance_id: InstanceId,
    /// Equal to the revision the change produced.
    pub seq: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub trigger: Trigger,
    pub actor: String,
    pub definition_version: u32,
    pub module_sha256: ModuleHash,
    pub fuel_used: u64,
    pub at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The action or event name (`init` for a start).
    pub name: String,
    /// The client's idempotency key or the event id, where there is one.
    pub id: Option<String>,
    /// The JSON input or payload, as text.
    pub payload: String,
}

/// A response kept under an idempotency key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An idempotency key in its scope (the endpoint and target).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
}

/// A key with the request it was first used for and the response that request got.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub fingerprint: String,
    pub response: StoredResponse,
    pub created_at: Timestamp,
}

/// A bulk migration: moves the running instances of one version to another, in
/// batches, as an operation of its own.
#[derive(Debug, Clone)]
pub struct Migration {
    pub id: Uuid,
    pub definition: String,
    pub from_version: u32,
    pub to_version: u32,
    /// Only instances in these states; `None` for all.
    pub states: Option<Vec<String>>,
    /// Report what would happen without writing any instance.
    pub dry_run: bool,
    pub reason: String,
    pub actor: String,
    pub status: MigrationStatus,
    /// Instances in scope when the migration was created.
    pub total: i64,
    pub migrated: i64,
    pub failed: i64,
    /// Instances that left the scope (moved on, finished) before their turn.
    pub skipped: i64,
    /// The last instance handled; instances are taken in id order.
    pub cursor: Option<InstanceId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStatus {
    Running,
    Completed,
}

impl MigrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Running => "running",
            MigrationStatus::Completed => "completed",
        }
    }
}

impl FromStr for MigrationStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [MigrationStatus::Running, MigrationStatus::Completed]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownName(s.into()))
    }
}

/// What happened to one instance in a bulk migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStep {
    Migrated,
    Skipped,
    Failed(String),
}

/// One committed transition as the feed lists it.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Its place in commit order; the cursor of a consumer that has read it.
    pub position: i64,
    pub definition: String,
    /// The instance's status right after the transition.
    pub status: Status,
    pub entry: HistoryEntry,
}
