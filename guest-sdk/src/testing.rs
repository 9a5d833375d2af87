//! Runs a definition natively under the rules the host enforces, for `cargo test`.
//!
//! Requests and outcomes go through the same postcard encoding and [`crate::dispatch`]
//! code as in Wasm; the harness then applies the host's checks: the action must be
//! declared and legal in the current state, the outcome must reach a state the
//! manifest allows for that call ([`Manifest::check_outcome`]), and a terminal state
//! accepts nothing more. Migrations ([`Machine::migrate`]) get the host's checks too.
//!
//! Each call's [`Context`] is the host's: the instance id, the seed the host derives for
//! the revision the call would produce ([`crate::abi::seed`]), and the machine's clock.
//! As on the host, a refused call changes nothing, so it does not use up a revision.
//!
//! The clock is the test's: [`Machine::start`] starts it at [`DEFAULT_NOW_MS`],
//! [`Machine::start_with`] wherever the test likes. It moves on by one second after
//! every applied transition, so consecutive transitions have distinct times, and
//! [`Machine::set_now_ms`] and [`Machine::advance_ms`] move it as the test needs.
//!
//! Not modelled: roles (`admin_only`), and the host's check that new data is JSON
//! (`dispatch` serializes it with `serde_json`, so it always is).

use crate::abi::{
    self, ActionRequest, CallKind, Context, Effect, EffectError, EventRequest, InitRequest, Manifest,
    ManifestError, MigrateOutcome, MigrateRequest, Outcome, OutcomeError, OverrideKind, OverrideRequest,
    Rejection, TerminalStatus,
};
use crate::definition::{Definition, FailureKind, Received, TaskError};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use core::marker::PhantomData;
use serde_json::Value;

/// The instance id of [`Machine::start`]: `00000000-0000-7000-8000-000000000001`.
pub const DEFAULT_INSTANCE_ID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1];

/// Where the clock of [`Machine::start`] starts, in ms since the Unix epoch.
pub const DEFAULT_NOW_MS: i64 = 1_700_000_000_000;

/// How far the clock moves on after an applied transition.
const TICK_MS: i64 = 1_000;

/// One instance of `D`, driven in-process.
#[derive(Debug)]
pub struct Machine<D> {
    manifest: Manifest,
    instance_id: [u8; 16],
    /// `instance_id` as the host renders it: lowercase hyphenated.
    instance_id_text: String,
    revision: i64,
    now_ms: i64,
    state: String,
    data: String,
    message: Option<String>,
    /// Effects asked for and not closed yet, oldest first.
    open: Vec<Effect>,
    /// The effects the last applied transition asked for.
    asked: Vec<Effect>,
    definition: PhantomData<D>,
}

/// An instance as the host stores it, to [`Machine::migrate`] into another version.
/// [`Machine::instance`] takes one from a machine of the old version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The UUID's 16 bytes.
    pub instance_id: [u8; 16],
    pub definition_version: u32,
    pub revision: i64,
    pub state: String,
    /// Whether `state` is terminal in `definition_version`: the instance's status.
    pub finished: bool,
    /// JSON text, passed to `migrate` as it is.
    pub data: String,
    pub message: Option<String>,
}

/// Why the harness (or the host) refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The manifest does not pass the host's deploy-time checks.
    InvalidManifest(ManifestError),
    /// The definition refused.
    Rejected(Rejection),
    UnknownAction(String),
    /// The action is not legal in the current state.
    NotAllowed {
        current_state: String,
        allowed_actions: Vec<String>,
    },
    /// The definition moved to a state its manifest does not allow.
    BadOutcome(OutcomeError),
    /// The target version does not declare a migration from the instance's version, or
    /// is the instance's version.
    NoMigrationPath {
        from_version: u32,
        to_version: u32,
    },
    /// The outcome asked for effects the host would refuse.
    BadEffects(EffectError),
    /// No open effect of that kind has this key: the host would have nothing to report.
    NoOpenEffect(String),
    /// The instance is finished and takes no more events.
    Finished,
}

impl<D: Definition> Machine<D> {
    /// Validates the manifest, then runs `init` with `input`, as instance
    /// [`DEFAULT_INSTANCE_ID`] at [`DEFAULT_NOW_MS`].
    pub fn start(input: Value) -> Result<Self, Refusal> {
        Self::start_with(DEFAULT_INSTANCE_ID, DEFAULT_NOW_MS, input)
    }

    /// Like [`Machine::start`], as the instance with the UUID bytes `instance_id`
    /// (e.g. `uuid::Uuid::into_bytes`), with the clock at `now_ms`.
    pub fn start_with(instance_id: [u8; 16], now_ms: i64, input: Value) -> Result<Self, Refusal> {
        let mut machine = Self::new(instance_id, 0, now_ms)?;
        let request = InitRequest { context: machine.next_context(), input: input.to_string() };
        let outcome = crate::dispatch::init::<D>(&encode(&request));
        machine.apply(CallKind::Init, &outcome, Closes::Nothing)?;
        Ok(machine)
    }

    /// Migrates `from` (an instance of another version) to this definition, as an
    /// admin's migration on the host does, at `now_ms`: this version must declare
    /// `migrates_from` the instance's version, `migrate` must not refuse, and a running
    /// instance must stay running and a finished one finished. The instance keeps its id
    /// and message, and its revision moves on by one.
    pub fn migrate(from: &Instance, now_ms: i64) -> Result<Self, Refusal> {
        let mut machine = Self::new(from.instance_id, from.revision, now_ms)?;
        let (from_version, to_version) = (from.definition_version, machine.manifest.version);
        if from_version == to_version || !machine.manifest.migrates_from.contains(&from_version) {
            return Err(Refusal::NoMigrationPath { from_version, to_version });
        }
        let request = MigrateRequest {
            context: machine.next_context(),
            from_version,
            state: from.state.clone(),
            data: from.data.clone(),
        };
        let outcome = crate::dispatch::migrate::<D>(&encode(&request));
        let (state, data) = match decode(&outcome) {
            MigrateOutcome::Refused(rejection) => return Err(Refusal::Rejected(rejection)),
            MigrateOutcome::Migrated { state, data } => (state, data),
        };
        let call = CallKind::Migrate { from_terminal: from.finished };
        machine.manifest.check_outcome(call, &state).map_err(Refusal::BadOutcome)?;
        machine.advance(state, data, from.message.clone());
        Ok(machine)
    }

    /// Triggers `action` with `payload` (`Value::Null` for none).
    pub fn act(&mut self, action: &str, payload: Value) -> Result<(), Refusal> {
        if self.manifest.action(action).is_none() {
            return Err(Refusal::UnknownAction(action.into()));
        }
        if !self.manifest.allowed_actions(&self.state).any(|allowed| allowed.name == action) {
            return Err(Refusal::NotAllowed {
                current_state: self.state.clone(),
                allowed_actions: self.allowed_actions(),
            });
        }
        let request = ActionRequest {
            context: self.next_context(),
            state: self.state.clone(),
            data: self.data.clone(),
            action: action.into(),
            payload: payload.to_string(),
        };
        let outcome = crate::dispatch::on_action::<D>(&encode(&request));
        self.apply(CallKind::Action(action), &outcome, Closes::Nothing)
    }

    /// Reports `received` to the instance as the host would: an effect's result only
    /// for an effect of that kind and key that is open, which closes with it (also when
    /// the definition refuses it).
    pub fn deliver(&mut self, received: Received) -> Result<(), Refusal> {
        if self.status().is_some() {
            return Err(Refusal::Finished);
        }
        let settles = match &received {
            Received::TaskSucceeded { key, .. } | Received::TaskFailed { key, .. } => Some((key, "task")),
            Received::TimerFired { key } => Some((key, "timer")),
            Received::ChildEnded { key, .. } => Some((key, "child")),
            Received::External { .. } => None,
        };
        let settles = match settles {
            Some((key, kind))
                if !self.open.iter().any(|effect| effect.key() == key && kind_of(effect) == kind) =>
            {
                return Err(Refusal::NoOpenEffect(key.clone()));
            }
            Some((key, _)) => Some(key.clone()),
            None => None,
        };
        let id = alloc::format!("{}-{}", self.revision, settles.as_deref().unwrap_or("event"));
        let request = EventRequest {
            context: self.next_context(),
            state: self.state.clone(),
            data: self.data.clone(),
            event: received.into_event(id),
        };
        let outcome = crate::dispatch::on_event::<D>(&encode(&request));
        let closes = settles.as_deref().map_or(Closes::Nothing, Closes::Effect);
        self.apply(CallKind::Event, &outcome, closes)
    }

    /// `task.succeeded` for the open task `key`.
    pub fn task_succeeded(&mut self, key: &str, output: Value) -> Result<(), Refusal> {
        self.deliver(Received::TaskSucceeded { key: key.into(), output })
    }

    /// `task.failed` for the open task `key`, after one attempt (`kind` `http`: 409).
    pub fn task_failed(&mut self, key: &str, kind: FailureKind) -> Result<(), Refusal> {
        let status = (kind == FailureKind::Http).then_some(409);
        let error = TaskError { kind, status, body: None, attempts: 1 };
        self.deliver(Received::TaskFailed { key: key.into(), error })
    }

    /// `timer.fired` for the open timer `key`.
    pub fn timer_fired(&mut self, key: &str) -> Result<(), Refusal> {
        self.deliver(Received::TimerFired { key: key.into() })
    }

    /// An admin's cancel or force-complete.
    /// As on the host: a failed instance can still be force-completed, and an accepted
    /// cancel closes every open effect before the effects it asks for open.
    pub fn admin_override(&mut self, kind: OverrideKind, reason: &str) -> Result<(), Refusal> {
        let resolvable = kind == OverrideKind::ForceComplete && self.status() == Some(TerminalStatus::Failed);
        if self.status().is_some() && !resolvable {
            return Err(Refusal::Finished);
        }
        let request = OverrideRequest {
            context: self.next_context(),
            state: self.state.clone(),
            data: self.data.clone(),
            kind,
            reason: reason.into(),
        };
        let outcome = crate::dispatch::on_override::<D>(&encode(&request));
        let closes = if kind == OverrideKind::Cancel { Closes::Everything } else { Closes::Nothing };
        self.apply(CallKind::Override, &outcome, closes)
    }

    /// The effects the last applied transition asked for.
    pub fn effects(&self) -> &[Effect] {
        &self.asked
    }

    /// The effects asked for and not closed yet, oldest first.
    pub fn open_effects(&self) -> &[Effect] {
        &self.open
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    /// `Some` once the instance is in a terminal state.
    pub fn status(&self) -> Option<TerminalStatus> {
        self.manifest.state(&self.state).and_then(|state| state.terminal)
    }

    /// # Panics
    /// If the data the definition returned does not decode as its own `Data`.
    pub fn data(&self) -> D::Data {
        serde_json::from_str(&self.data).expect("the definition's own data decodes")
    }

    /// The data as the definition returned it, and as the host would store it.
    pub fn data_json(&self) -> &str {
        &self.data
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    pub fn allowed_actions(&self) -> Vec<String> {
        self.manifest.allowed_actions(&self.state).map(|action| action.name.clone()).collect()
    }

    /// 1 after `init`, one more for every applied transition.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The instance id as the host renders it and the definition sees it.
    pub fn instance_id(&self) -> &str {
        &self.instance_id_text
    }

    /// The time the next call is made at.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    /// The instance as the host would store it, e.g. to migrate it to another version.
    pub fn instance(&self) -> Instance {
        Instance {
            instance_id: self.instance_id,
            definition_version: self.manifest.version,
            revision: self.revision,
            state: self.state.clone(),
            finished: self.status().is_some(),
            data: self.data.clone(),
            message: self.message.clone(),
        }
    }

    fn new(instance_id: [u8; 16], revision: i64, now_ms: i64) -> Result<Self, Refusal> {
        let manifest = D::manifest();
        let encoded = crate::dispatch::manifest::<D>().len();
        if encoded > abi::MAX_MANIFEST_BYTES {
            return Err(Refusal::InvalidManifest(ManifestError::TooLarge(encoded)));
        }
        manifest.validate().map_err(Refusal::InvalidManifest)?;
        Ok(Machine {
            manifest,
            instance_id,
            instance_id_text: hyphenated(&instance_id),
            revision,
            now_ms,
            state: String::new(),
            data: String::new(),
            message: None,
            open: Vec::new(),
            asked: Vec::new(),
            definition: PhantomData,
        })
    }

    /// The context of the call that would produce the next revision.
    fn next_context(&self) -> Context {
        let revision = self.revision + 1;
        Context {
            instance_id: self.instance_id_text.clone(),
            definition_version: self.manifest.version,
            now_ms: self.now_ms,
            seed: crate::abi::seed(&self.instance_id, revision),
        }
    }

    /// Applies an outcome as the host does; `settles` is the key of the effect whose
    /// result the call reported.
    fn apply(&mut self, call: CallKind<'_>, outcome: &[u8], closes: Closes<'_>) -> Result<(), Refusal> {
        match decode(outcome) {
            Outcome::Rejected(rejection) => {
                // The host closes an effect whose result the definition refused.
                if let Closes::Effect(key) = closes {
                    self.close(key);
                }
                Err(Refusal::Rejected(rejection))
            }
            Outcome::Accepted(accepted) => {
                self.manifest.check_outcome(call, &accepted.state).map_err(Refusal::BadOutcome)?;
                let still_open = |key: &str| match closes {
                    Closes::Everything => false,
                    Closes::Effect(closed) if closed == key => false,
                    _ => self.open.iter().any(|effect| effect.key() == key),
                };
                abi::check_effects(&accepted.effects, still_open).map_err(Refusal::BadEffects)?;
                match closes {
                    Closes::Nothing => {}
                    Closes::Effect(key) => self.close(key),
                    Closes::Everything => self.open.clear(),
                }
                // As the store does: cancels close open timers, then the new effects open.
                for effect in &accepted.effects {
                    if let Effect::CancelTimer { key } = effect {
                        self.open.retain(|open| !(matches!(open, Effect::Timer { .. }) && open.key() == key));
                    }
                }
                self.open.extend(
                    accepted
                        .effects
                        .iter()
                        .filter(|effect| !matches!(effect, Effect::CancelTimer { .. }))
                        .cloned(),
                );
                self.asked = accepted.effects;
                self.advance(accepted.state, accepted.data, accepted.message);
                Ok(())
            }
        }
    }

    fn close(&mut self, key: &str) {
        self.open.retain(|effect| effect.key() != key);
    }

    /// Applies an accepted, checked transition.
    fn advance(&mut self, state: String, data: String, message: Option<String>) {
        self.state = state;
        self.data = data;
        self.message = message;
        self.revision += 1;
        self.now_ms += TICK_MS;
    }
}

/// The open effects a transition closes, before the ones it asks for open.
#[derive(Debug, Clone, Copy)]
enum Closes<'a> {
    Nothing,
    /// The effect whose result it consumed.
    Effect(&'a str),
    /// An admin's cancel closes them all.
    Everything,
}

fn kind_of(effect: &Effect) -> &'static str {
    match effect {
        Effect::Task(_) => "task",
        Effect::Timer { .. } | Effect::CancelTimer { .. } => "timer",
        Effect::Child { .. } => "child",
    }
}

/// Lowercase hyphenated, as `uuid` displays a UUID.
fn hyphenated(id: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (idx, byte) in id.iter().enumerate() {
        if matches!(idx, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("requests encode")
}

fn decode<T: serde::de::DeserializeOwned>(outcome: &[u8]) -> T {
    postcard::from_bytes(outcome).expect("the dispatcher's outcome decodes")
}

#[cfg(test)]
mod tests;
