//! The wire contract between host and guest (ABI version [`ABI_VERSION`]).
//!
//! Every value crossing the boundary is one of these types, postcard-encoded. JSON
//! documents (input, data, payloads) travel as UTF-8 JSON text inside them, because
//! postcard is not self-describing. The host depends on this module too, so there is
//! exactly one definition of the wire types.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

/// Bumped on any change to the exports or to the encoding of these types.
///
/// Version 2 added effects to accepted outcomes and the `switchyard_on_override`
/// export; [`v1`] keeps the version-1 layout of what changed.
pub const ABI_VERSION: u32 = 2;

/// The versions a host built with this crate runs: modules of every earlier version
/// keep running, so instances started under them finish under their own rules.
pub const SUPPORTED_ABI_VERSIONS: [u32; 2] = [1, 2];

/// Names of the module's exports.
pub mod exports {
    pub const MEMORY: &str = "memory";
    /// `(len: i32) -> i32`: a block of `len` bytes the host may write a request into.
    pub const ALLOC: &str = "switchyard_alloc";
    /// `() -> i64`: the encoded [`super::Manifest`].
    pub const MANIFEST: &str = "switchyard_manifest";
    /// `(ptr: i32, len: i32) -> i64`: [`super::InitRequest`] in, [`super::Outcome`] out.
    pub const INIT: &str = "switchyard_init";
    /// `(ptr: i32, len: i32) -> i64`: [`super::ActionRequest`] in, [`super::Outcome`] out.
    pub const ON_ACTION: &str = "switchyard_on_action";
    /// `(ptr: i32, len: i32) -> i64`: [`super::EventRequest`] in, [`super::Outcome`] out.
    pub const ON_EVENT: &str = "switchyard_on_event";
    /// `(ptr: i32, len: i32) -> i64`: [`super::MigrateRequest`] in,
    /// [`super::MigrateOutcome`] out.
    pub const MIGRATE: &str = "switchyard_migrate";
    /// `(ptr: i32, len: i32) -> i64`: [`super::OverrideRequest`] in, [`super::Outcome`]
    /// out. From ABI version 2.
    pub const ON_OVERRIDE: &str = "switchyard_on_override";
}

/// The names of the events the host itself reports to `on_event`; their payloads are
/// JSON objects (see `docs/abi.md`). Any other name is an external event.
pub mod events {
    /// `{"key", "output"}`: a task's participant answered with success.
    pub const TASK_SUCCEEDED: &str = "task.succeeded";
    /// `{"key", "error": {"kind", "status"?, "body"?, "attempts"}}`.
    pub const TASK_FAILED: &str = "task.failed";
    /// `{"key"}`.
    pub const TIMER_FIRED: &str = "timer.fired";
    /// `{"key", "child_id", "state", "data"}`: a child reached a terminal state of
    /// this status.
    pub const CHILD_COMPLETED: &str = "child.completed";
    pub const CHILD_FAILED: &str = "child.failed";
    pub const CHILD_CANCELLED: &str = "child.cancelled";

    /// Whether `name` is one of the host's own events, which no client may post.
    pub fn is_host_event(name: &str) -> bool {
        [TASK_SUCCEEDED, TASK_FAILED, TIMER_FIRED, CHILD_COMPLETED, CHILD_FAILED, CHILD_CANCELLED]
            .contains(&name)
    }
}

/// Packs a response location as every entry point returns it: `ptr << 32 | len`.
pub fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// The inverse of [`pack`]: `(ptr, len)`.
pub fn unpack(packed: i64) -> (u32, u32) {
    let packed = packed as u64;
    ((packed >> 32) as u32, packed as u32)
}

/// What a module declares about itself; checked by the host at deploy time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub abi: u32,
    pub name: String,
    pub version: u32,
    pub states: Vec<StateDecl>,
    pub initial_state: String,
    pub actions: Vec<ActionDecl>,
    /// Versions whose instances this module's `migrate` accepts.
    pub migrates_from: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDecl {
    pub name: String,
    pub description: String,
    /// `Some` for a terminal state: the status an instance ends with there.
    pub terminal: Option<TerminalStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminalStatus {
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDecl {
    pub name: String,
    /// The states in which the action is legal.
    pub from: Vec<String>,
    /// The states the action may lead to; the host refuses any other outcome.
    pub to: Vec<String>,
    pub admin_only: bool,
    pub description: String,
}

/// Facts the host gives every call, since a module cannot read a clock or randomness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub instance_id: String,
    pub definition_version: u32,
    /// Milliseconds since the Unix epoch, fixed for the whole transition.
    pub now_ms: i64,
    /// Pseudo-random, distinct per transition.
    pub seed: u64,
}

/// [`Context::seed`] of the call that produces `revision` of the instance whose UUID has
/// the 16 bytes `instance_id`: the first 8 bytes, little-endian, of
/// SHA-256(`instance_id` || `revision` as i64 little-endian). Host and test harness both
/// use this, so a replayed transition and a native test see the host's seed.
pub fn seed(instance_id: &[u8; 16], revision: i64) -> u64 {
    use sha2::Digest;
    let digest =
        sha2::Sha256::new().chain_update(instance_id).chain_update(revision.to_le_bytes()).finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    pub context: Context,
    pub input: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub context: Context,
    pub state: String,
    pub data: String,
    pub action: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRequest {
    pub context: Context,
    pub state: String,
    pub data: String,
    pub event: Event,
}

/// Something that happened outside the instance and is reported to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event's type, e.g. `payment.settled`.
    pub name: String,
    /// Unique per event; the host delivers each id once.
    pub id: String,
    pub payload: String,
}

/// An admin's override of where an instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRequest {
    pub context: Context,
    pub state: String,
    pub data: String,
    pub kind: OverrideKind,
    /// The admin's reason, as recorded in history.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverrideKind {
    Cancel,
    ForceComplete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    pub context: Context,
    pub from_version: u32,
    pub state: String,
    pub data: String,
}

/// The result of `init`, `on_action`, `on_event` and `on_override`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted(Accepted),
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub state: String,
    pub data: String,
    pub message: Option<String>,
    /// What the host is to do once the transition is committed.
    pub effects: Vec<Effect>,
}

/// Work a transition asks the host to do after its commit. Each has a `key`, unique
/// among the instance's open effects, that its result names when it comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// An HTTP request to the participant bound to `name`.
    Task(Task),
    /// `timer.fired` once, at or after `after_ms` from the transition.
    Timer { key: String, after_ms: u64 },
    /// Cancels the open timer `key`, if it has not fired.
    CancelTimer { key: String },
    /// Starts one child instance of `definition`.
    Child { key: String, definition: String, version: Option<u32>, input: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub key: String,
    /// The task name a deployment binds to a participant's URL.
    pub name: String,
    /// JSON text.
    pub input: String,
    pub retry: Option<RetryPolicy>,
    /// How long one attempt may take.
    pub attempt_timeout_ms: Option<u64>,
    /// After a `202 Accepted`, how long the participant has to report.
    pub report_timeout_ms: Option<u64>,
}

/// How a task is retried; each field left out takes the host's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: Option<u32>,
    pub initial_interval_ms: Option<u64>,
    pub backoff_coefficient: Option<f64>,
    pub max_interval_ms: Option<u64>,
}

impl Effect {
    /// The key the effect's result will name.
    pub fn key(&self) -> &str {
        match self {
            Effect::Task(task) => &task.key,
            Effect::Timer { key, .. } | Effect::CancelTimer { key } | Effect::Child { key, .. } => key,
        }
    }
}

/// Checks the effects of one outcome, in order: at most [`MAX_EFFECTS`]; keys are
/// symbols; an effect opens only a key that is free (not `is_open` from earlier
/// transitions, unless a `CancelTimer` before it in the list closed it, and not opened
/// earlier in the list); a timer is not cancelled after the list set it; task and child
/// names are well-formed; inputs are JSON. The host refuses an outcome that fails this.
/// Linear in the effects: a guest chooses how many it asks for.
pub fn check_effects(effects: &[Effect], is_open: impl Fn(&str) -> bool) -> Result<(), EffectError> {
    if effects.len() > MAX_EFFECTS {
        return Err(EffectError::TooMany(effects.len()));
    }
    // Keys opened, and timers cancelled, by the effects before the current one.
    let mut opened = HashSet::with_capacity(effects.len());
    let mut cancelled = HashSet::new();
    for effect in effects {
        let key = effect.key();
        if !is_symbol(key) {
            return Err(EffectError::BadKey(key.into()));
        }
        let taken = match effect {
            Effect::CancelTimer { .. } => opened.contains(key),
            _ => opened.contains(key) || (is_open(key) && !cancelled.contains(key)),
        };
        if taken {
            return Err(EffectError::KeyInUse(key.into()));
        }
        let (name, input) = match effect {
            Effect::Task(task) => (Some(task.name.as_str()), Some(task.input.as_str())),
            Effect::Child { definition, input, .. } => {
                if !is_definition_name(definition) {
                    return Err(EffectError::BadName(definition.clone()));
                }
                (None, Some(input.as_str()))
            }
            Effect::Timer { .. } | Effect::CancelTimer { .. } => (None, None),
        };
        if let Some(name) = name
            && !is_task_name(name)
        {
            return Err(EffectError::BadName(name.into()));
        }
        if let Some(input) = input
            && serde_json::from_str::<serde::de::IgnoredAny>(input).is_err()
        {
            return Err(EffectError::InputNotJson(key.into()));
        }
        match effect {
            Effect::CancelTimer { .. } => cancelled.insert(key),
            _ => opened.insert(key),
        };
    }
    Ok(())
}

/// Letters, digits and `.`, `_`, `-`: task names such as `flights.reserve`.
pub fn is_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Effects an outcome may not ask for: a definition bug, reported, never applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectError {
    /// More than [`MAX_EFFECTS`], so many.
    TooMany(usize),
    BadKey(String),
    KeyInUse(String),
    /// As found by the store, which does not say which key.
    OpenKey,
    BadName(String),
    InputNotJson(String),
}

impl fmt::Display for EffectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EffectError::TooMany(count) => {
                write!(f, "the outcome asks for {count} effects; at most {MAX_EFFECTS} are allowed")
            }
            EffectError::BadKey(key) => write!(
                f,
                "effect key {key:?} is not valid (letters, digits, '_' and '-', at most {MAX_NAME_LEN} bytes)"
            ),
            EffectError::KeyInUse(key) => write!(f, "effect key {key:?} is used by another open effect"),
            EffectError::OpenKey => {
                write!(f, "one of its effect keys is used by another open effect of the instance")
            }
            EffectError::BadName(name) => write!(f, "{name:?} is not a valid task or definition name"),
            EffectError::InputNotJson(key) => write!(f, "the input of effect {key:?} is not JSON"),
        }
    }
}

impl core::error::Error for EffectError {}

/// The version-1 layout of the types version 2 changed: the host decodes an ABI-1
/// module's answers with these.
pub mod v1 {
    use super::Rejection;
    use alloc::string::String;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Outcome {
        Accepted(Accepted),
        Rejected(Rejection),
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Accepted {
        pub state: String,
        pub data: String,
        pub message: Option<String>,
    }

    /// An ABI-1 module asks for no effects.
    impl From<Outcome> for super::Outcome {
        fn from(outcome: Outcome) -> Self {
            match outcome {
                Outcome::Accepted(Accepted { state, data, message }) => {
                    super::Outcome::Accepted(super::Accepted {
                        state,
                        data,
                        message,
                        effects: Default::default(),
                    })
                }
                Outcome::Rejected(rejection) => super::Outcome::Rejected(rejection),
            }
        }
    }
}

/// A refusal: a machine-readable `code` and a reason for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection { code: code.into(), reason: reason.into() }
    }
}

/// The result of `migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateOutcome {
    Migrated { state: String, data: String },
    Refused(Rejection),
}

/// The longest name a definition, state or action may have.
pub const MAX_NAME_LEN: usize = 64;

// Caps on a manifest, so that what a module declares costs the host a bounded
// effort to read, check and keep (every deployed version's manifest is held in
// memory). Generous: the examples use a tenth of each at most.

/// The largest manifest, encoded, that a host reads.
pub const MAX_MANIFEST_BYTES: usize = 256 << 10;
/// The most states a manifest may declare.
pub const MAX_STATES: usize = 256;
/// The most actions a manifest may declare.
pub const MAX_ACTIONS: usize = 256;
/// The most edges a manifest may declare: the entries of every action's `from` and
/// `to` lists, together.
pub const MAX_EDGES: usize = 4096;
/// The longest description of a state or action, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// The most effects one outcome may ask for.
pub const MAX_EFFECTS: usize = 1024;

impl Manifest {
    pub fn builder(name: &str, version: u32) -> ManifestBuilder {
        ManifestBuilder(Manifest {
            abi: ABI_VERSION,
            name: name.into(),
            version,
            states: Vec::new(),
            initial_state: String::new(),
            actions: Vec::new(),
            migrates_from: Vec::new(),
        })
    }

    pub fn state(&self, name: &str) -> Option<&StateDecl> {
        self.states.iter().find(|state| state.name == name)
    }

    pub fn action(&self, name: &str) -> Option<&ActionDecl> {
        self.actions.iter().find(|action| action.name == name)
    }

    /// The actions legal in `state`, in declaration order.
    pub fn allowed_actions<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'a ActionDecl> {
        self.actions.iter().filter(move |action| action.from.iter().any(|from| from == state))
    }

    /// Checks where a call led: `init` must reach the initial state, an action one of
    /// its declared targets, an event any declared state, a migration a declared state
    /// that is terminal exactly when the instance's was. Returns the reached state.
    pub fn check_outcome(&self, call: CallKind<'_>, to: &str) -> Result<&StateDecl, OutcomeError> {
        let state = self.state(to).ok_or_else(|| OutcomeError::Undeclared(to.into()))?;
        let legal = match call {
            CallKind::Init => to == self.initial_state,
            CallKind::Action(action) => {
                self.action(action).is_some_and(|action| action.to.iter().any(|target| target == to))
            }
            CallKind::Event | CallKind::Override => true,
            CallKind::Migrate { from_terminal } => from_terminal == state.terminal.is_some(),
        };
        if legal {
            Ok(state)
        } else {
            Err(OutcomeError::NotATarget { call: call.describe(), state: to.into() })
        }
    }

    /// Checks everything the host relies on: a supported ABI, the caps
    /// ([`MAX_STATES`], [`MAX_ACTIONS`], [`MAX_EDGES`], [`MAX_DESCRIPTION_LEN`]),
    /// well-formed unique names, a declared non-terminal initial state, and actions
    /// legal only in declared, non-terminal states. Linear in the manifest's size.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !SUPPORTED_ABI_VERSIONS.contains(&self.abi) {
            return Err(ManifestError::UnsupportedAbi(self.abi));
        }
        self.check_caps()?;
        if !is_definition_name(&self.name) {
            return Err(ManifestError::BadName(self.name.clone()));
        }
        if self.version == 0 {
            return Err(ManifestError::ZeroVersion);
        }
        if self.states.is_empty() {
            return Err(ManifestError::NoStates);
        }
        let mut states = HashMap::with_capacity(self.states.len());
        for state in &self.states {
            if !is_symbol(&state.name) {
                return Err(ManifestError::BadName(state.name.clone()));
            }
            if states.insert(state.name.as_str(), state).is_some() {
                return Err(ManifestError::DuplicateState(state.name.clone()));
            }
        }
        match states.get(self.initial_state.as_str()) {
            None => return Err(ManifestError::UnknownInitialState(self.initial_state.clone())),
            Some(initial) if initial.terminal.is_some() => {
                return Err(ManifestError::TerminalInitialState(self.initial_state.clone()));
            }
            Some(_) => {}
        }
        let mut actions = HashSet::with_capacity(self.actions.len());
        for action in &self.actions {
            if !is_symbol(&action.name) {
                return Err(ManifestError::BadName(action.name.clone()));
            }
            if !actions.insert(action.name.as_str()) {
                return Err(ManifestError::DuplicateAction(action.name.clone()));
            }
            if action.from.is_empty() {
                return Err(ManifestError::ActionWithoutSource(action.name.clone()));
            }
            if action.to.is_empty() {
                return Err(ManifestError::ActionWithoutTarget(action.name.clone()));
            }
            for from in &action.from {
                let bad = |reason| ManifestError::BadActionSource {
                    action: action.name.clone(),
                    state: from.clone(),
                    reason,
                };
                match states.get(from.as_str()) {
                    None => return Err(bad("is not declared")),
                    Some(state) if state.terminal.is_some() => return Err(bad("is terminal")),
                    Some(_) => {}
                }
            }
            if let Some(to) = action.to.iter().find(|to| !states.contains_key(to.as_str())) {
                return Err(ManifestError::UndeclaredTarget {
                    action: action.name.clone(),
                    state: to.clone(),
                });
            }
        }
        if let Some(&from) = self.migrates_from.iter().find(|&&from| from == 0 || from == self.version) {
            return Err(ManifestError::BadMigrationSource(from));
        }
        Ok(())
    }

    /// The caps on counts and descriptions, checked before anything is looked up.
    fn check_caps(&self) -> Result<(), ManifestError> {
        let edges = self.actions.iter().map(|action| action.from.len() + action.to.len()).sum();
        for (what, count, limit) in [
            ("states", self.states.len(), MAX_STATES),
            ("actions", self.actions.len(), MAX_ACTIONS),
            ("edges", edges, MAX_EDGES),
        ] {
            if count > limit {
                return Err(ManifestError::TooMany { what, count, limit });
            }
        }
        let described = self.states.iter().map(|state| (&state.name, &state.description));
        let described =
            described.chain(self.actions.iter().map(|action| (&action.name, &action.description)));
        for (name, description) in described {
            if description.len() > MAX_DESCRIPTION_LEN {
                return Err(ManifestError::DescriptionTooLong { name: name.clone(), len: description.len() });
            }
        }
        Ok(())
    }
}

/// Lowercase letters, digits and `-`, starting with a letter: safe in URLs and file names.
pub fn is_definition_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Letters, digits, `_` and `-`: state and action names.
pub fn is_symbol(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The override a definition gets by default: the instance moves to the manifest's
/// first terminal state of the override's status (`cancelled`, or `completed` for a
/// force-complete), with the message "cancelled by an admin: REASON". An instance that
/// has ended already (a failed one, for a force-complete) is refused: resolving a
/// finished instance is a definition's own decision. Both the SDK's default
/// `on_override` and the host (for ABI-1 modules) use this. Returns (state, message).
pub fn default_override(
    manifest: &Manifest,
    state: &str,
    kind: OverrideKind,
    reason: &str,
) -> Result<(String, String), Rejection> {
    if manifest.state(state).is_some_and(|state| state.terminal.is_some()) {
        return Err(Rejection::new(
            "instance_finished",
            alloc::format!(
                "the instance has ended in {state}; its definition does not resolve finished instances"
            ),
        ));
    }
    let (status, verb) = match kind {
        OverrideKind::Cancel => (TerminalStatus::Cancelled, "cancelled"),
        OverrideKind::ForceComplete => (TerminalStatus::Completed, "completed"),
    };
    let target = manifest.states.iter().find(|state| state.terminal == Some(status)).ok_or_else(|| {
        Rejection::new(
            "no_terminal_state",
            alloc::format!("the definition has no state where it ends {verb}"),
        )
    })?;
    Ok((target.name.clone(), alloc::format!("{verb} by an admin: {reason}")))
}

/// The guest call an outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind<'a> {
    Init,
    Action(&'a str),
    /// `on_event` and `on_override` may lead to any declared state.
    Event,
    Override,
    /// `migrate`, from a terminal state or not: a running instance stays running and a
    /// finished one stays finished.
    Migrate {
        from_terminal: bool,
    },
}

impl CallKind<'_> {
    fn describe(self) -> String {
        match self {
            CallKind::Init => "init".into(),
            CallKind::Action(action) => alloc::format!("action {action:?}"),
            CallKind::Event => "an event".into(),
            CallKind::Override => "an admin override".into(),
            CallKind::Migrate { from_terminal: false } => "a migration of a running instance".into(),
            CallKind::Migrate { from_terminal: true } => "a migration of a finished instance".into(),
        }
    }
}

/// An outcome the manifest does not allow: a definition bug, reported, never applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeError {
    Undeclared(String),
    NotATarget { call: String, state: String },
}

impl fmt::Display for OutcomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutcomeError::Undeclared(state) => {
                write!(f, "the definition moved to undeclared state {state:?}")
            }
            OutcomeError::NotATarget { call, state } => {
                write!(
                    f,
                    "the definition moved to state {state:?}, which its manifest does not allow for {call}"
                )
            }
        }
    }
}

impl core::error::Error for OutcomeError {}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    UnsupportedAbi(u32),
    /// Encoded, the manifest is so many bytes, more than [`MAX_MANIFEST_BYTES`].
    TooLarge(usize),
    /// More `what` (states, actions, edges) than `limit`.
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    /// The description of the state or action `name` is `len` bytes.
    DescriptionTooLong {
        name: String,
        len: usize,
    },
    BadName(String),
    ZeroVersion,
    NoStates,
    DuplicateState(String),
    UnknownInitialState(String),
    TerminalInitialState(String),
    DuplicateAction(String),
    ActionWithoutSource(String),
    ActionWithoutTarget(String),
    UndeclaredTarget {
        action: String,
        state: String,
    },
    BadActionSource {
        action: String,
        state: String,
        reason: &'static str,
    },
    BadMigrationSource(u32),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::UnsupportedAbi(abi) => {
                write!(
                    f,
                    "manifest: ABI version {abi} is not supported (versions {SUPPORTED_ABI_VERSIONS:?} are)"
                )
            }
            ManifestError::TooLarge(len) => {
                write!(f, "manifest: is {len} bytes encoded; at most {MAX_MANIFEST_BYTES} are allowed")
            }
            ManifestError::TooMany { what, count, limit } => {
                write!(f, "manifest: declares {count} {what}; at most {limit} are allowed")
            }
            ManifestError::DescriptionTooLong { name, len } => write!(
                f,
                "manifest: the description of {name:?} is {len} bytes; at most {MAX_DESCRIPTION_LEN} are allowed"
            ),
            ManifestError::BadName(name) => write!(
                f,
                "manifest: {name:?} is not a valid name (definitions: lowercase letters, digits and '-'; \
                 states and actions: letters, digits, '_' and '-'; at most {MAX_NAME_LEN} bytes)"
            ),
            ManifestError::ZeroVersion => write!(f, "manifest: version must be a positive integer"),
            ManifestError::NoStates => write!(f, "manifest: declares no states"),
            ManifestError::DuplicateState(name) => write!(f, "manifest: state {name:?} is declared twice"),
            ManifestError::UnknownInitialState(name) => {
                write!(f, "manifest: initial state {name:?} is not declared")
            }
            ManifestError::TerminalInitialState(name) => {
                write!(f, "manifest: initial state {name:?} is terminal")
            }
            ManifestError::DuplicateAction(name) => write!(f, "manifest: action {name:?} is declared twice"),
            ManifestError::ActionWithoutSource(name) => {
                write!(f, "manifest: action {name:?} is legal in no state")
            }
            ManifestError::ActionWithoutTarget(name) => {
                write!(f, "manifest: action {name:?} leads to no state")
            }
            ManifestError::UndeclaredTarget { action, state } => {
                write!(f, "manifest: action {action:?} leads to state {state:?}, which is not declared")
            }
            ManifestError::BadActionSource { action, state, reason } => {
                write!(f, "manifest: action {action:?} is legal in state {state:?}, which {reason}")
            }
            ManifestError::BadMigrationSource(version) => {
                write!(f, "manifest: cannot migrate from version {version}")
            }
        }
    }
}

impl core::error::Error for ManifestError {}

/// Builds a [`Manifest`]; see the crate example.
#[derive(Debug)]
pub struct ManifestBuilder(Manifest);

impl ManifestBuilder {
    /// A non-terminal state.
    pub fn state(self, name: &str, description: &str) -> Self {
        self.push_state(name, description, None)
    }

    /// A terminal state, where an instance ends with `status`.
    pub fn terminal(self, name: &str, status: TerminalStatus, description: &str) -> Self {
        self.push_state(name, description, Some(status))
    }

    pub fn initial(mut self, name: &str) -> Self {
        self.0.initial_state = name.into();
        self
    }

    /// An action any client may trigger in the `from` states, leading to one of `to`.
    pub fn action(self, name: &str, from: &[&str], to: &[&str], description: &str) -> Self {
        self.push_action(name, from, to, description, false)
    }

    /// An action only admins may trigger.
    pub fn admin_action(self, name: &str, from: &[&str], to: &[&str], description: &str) -> Self {
        self.push_action(name, from, to, description, true)
    }

    /// Declares that `migrate` accepts instances of `version`.
    pub fn migrates_from(mut self, version: u32) -> Self {
        self.0.migrates_from.push(version);
        self
    }

    pub fn build(self) -> Manifest {
        self.0
    }

    fn push_state(mut self, name: &str, description: &str, terminal: Option<TerminalStatus>) -> Self {
        self.0.states.push(StateDecl { name: name.into(), description: description.into(), terminal });
        self
    }

    fn push_action(
        mut self,
        name: &str,
        from: &[&str],
        to: &[&str],
        description: &str,
        admin_only: bool,
    ) -> Self {
        let names = |states: &[&str]| states.iter().map(|&state| state.into()).collect();
        self.0.actions.push(ActionDecl {
            name: name.into(),
            from: names(from),
            to: names(to),
            admin_only,
            description: description.into(),
        });
        self
    }
}

#[cfg(test)]
mod tests;
