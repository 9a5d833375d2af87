//! The trait a definition implements, and the values its functions take and return.

use crate::abi::{self, Effect, Manifest, OverrideKind, Rejection, RetryPolicy, TerminalStatus};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::abi::Context;

/// A workflow definition: its manifest and its pure transition functions.
///
/// The host checks, before calling `on_action`, that the action is declared and legal in
/// the instance's state; after every call, that the returned state is declared and the
/// effects are well-formed. So the functions only decide *where* to go, what the data
/// becomes and what the host is to do next.
pub trait Definition {
    /// The JSON body a client starts an instance with.
    type Input: DeserializeOwned;
    /// The instance's own JSON document.
    type Data: Serialize + DeserializeOwned;

    fn manifest() -> Manifest;

    /// Where a new instance starts. An `Err` refuses to create it.
    fn init(ctx: &Context, input: Self::Input) -> Result<Transition<Self::Data>, Rejection>;

    fn on_action(ctx: &Context, call: ActionCall<Self::Data>) -> Result<Transition<Self::Data>, Rejection>;

    /// Something reported to the instance: the result of one of its effects, or an
    /// external event. By default events are refused.
    fn on_event(ctx: &Context, call: EventCall<Self::Data>) -> Result<Transition<Self::Data>, Rejection> {
        let _ = ctx;
        Err(Rejection::new(
            "unexpected_event",
            format!("state {} does not expect {}", call.state, call.event.describe()),
        ))
    }

    /// An admin's cancel or force-complete. By default ([`abi::default_override`]) the
    /// instance moves, data unchanged, to the manifest's first terminal state whose
    /// status is `cancelled` (`completed` for force-complete), and the override is
    /// refused if there is none, or if the instance has ended already (a failed one may
    /// be force-completed only by a definition that says how).
    fn on_override(
        ctx: &Context,
        call: OverrideCall<Self::Data>,
    ) -> Result<Transition<Self::Data>, Rejection> {
        let _ = ctx;
        let (state, message) =
            abi::default_override(&Self::manifest(), &call.state, call.kind, &call.reason)?;
        Ok(Transition::to(&state, call.data).with_message(message))
    }

    /// Moves an instance of `from_version` (its state and data as that version left
    /// them) to this version. Declare each accepted version with
    /// [`crate::abi::ManifestBuilder::migrates_from`]. By default nothing migrates.
    fn migrate(
        ctx: &Context,
        from_version: u32,
        state: String,
        data: Value,
    ) -> Result<(String, Self::Data), Rejection> {
        let _ = (ctx, state, data);
        Err(Rejection::new("no_migration", format!("no migration from version {from_version}")))
    }
}

/// An action as `on_action` receives it.
#[derive(Debug, Clone)]
pub struct ActionCall<D> {
    pub state: String,
    pub data: D,
    pub action: String,
    /// `null` when the client sent no payload.
    pub payload: Value,
}

/// An event as `on_event` receives it.
#[derive(Debug, Clone)]
pub struct EventCall<D> {
    pub state: String,
    pub data: D,
    pub event: Received,
}

/// An override as `on_override` receives it.
#[derive(Debug, Clone)]
pub struct OverrideCall<D> {
    pub state: String,
    pub data: D,
    pub kind: OverrideKind,
    pub reason: String,
}

/// What an event reports: the typed form of an [`abi::Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The participant of task `key` answered with success.
    TaskSucceeded {
        key: String,
        output: Value,
    },
    TaskFailed {
        key: String,
        error: TaskError,
    },
    TimerFired {
        key: String,
    },
    /// Child `key` reached a terminal state; `status` says which kind.
    ChildEnded {
        key: String,
        child_id: String,
        status: TerminalStatus,
        state: String,
        data: Value,
    },
    /// An event a client posted to the instance.
    External {
        name: String,
        id: String,
        payload: Value,
    },
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub kind: FailureKind,
    /// The participant's HTTP status, for `http` (and the last retryable one, for
    /// `exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the participant's answer, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// A final 4xx: the participant refused.
    Http,
    /// The attempt or the report timed out: the participant may have acted.
    Timeout,
    /// No connection could be made (and the retries are used up).
    Unreachable,
    /// Retryable answers until the retry policy ran out.
    Exhausted,
    /// No participant is bound to the task's name.
    Unbound,
}

/// For people: `refused`, `timed out`, `unreachable`, `retries used up` or
/// `no participant bound`.
impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Http => "refused",
            FailureKind::Timeout => "timed out",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Exhausted => "retries used up",
            FailureKind::Unbound => "no participant bound",
        })
    }
}

/// For people, as definitions put it into messages and data: the kind, the HTTP status
/// if there is one, and the attempts unless none was made, e.g.
/// `refused, HTTP 409, after 1 attempt`, `timed out, after 3 attempts` or
/// `no participant bound`. The body is left out.
impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(status) = self.status {
            write!(f, ", HTTP {status}")?;
        }
        match self.attempts {
            0 => Ok(()),
            1 => f.write_str(", after 1 attempt"),
            attempts => write!(f, ", after {attempts} attempts"),
        }
    }
}

impl Received {
    /// Reads a wire event: the host's own events by their names, anything else as an
    /// external event. A host event whose payload does not fit is refused.
    pub fn parse(event: abi::Event) -> Result<Received, Rejection> {
        let payload: Value = serde_json::from_str(&event.payload)
            .map_err(|err| Rejection::new("invalid_event", format!("{} payload: {err}", event.name)))?;
        let field = |name: &str| -> Result<Value, Rejection> {
            payload
                .get(name)
                .cloned()
                .ok_or_else(|| Rejection::new("invalid_event", format!("{} has no {name:?}", event.name)))
        };
        let text = |name: &str| -> Result<String, Rejection> {
            field(name)?.as_str().map(String::from).ok_or_else(|| {
                Rejection::new("invalid_event", format!("{}: {name:?} is not a string", event.name))
            })
        };
        let child = |status| -> Result<Received, Rejection> {
            Ok(Received::ChildEnded {
                key: text("key")?,
                child_id: text("child_id")?,
                status,
                state: text("state")?,
                data: field("data")?,
            })
        };
        Ok(match event.name.as_str() {
            abi::events::TASK_SUCCEEDED => {
                Received::TaskSucceeded { key: text("key")?, output: field("output")? }
            }
            abi::events::TASK_FAILED => Received::TaskFailed {
                key: text("key")?,
                error: serde_json::from_value(field("error")?)
                    .map_err(|err| Rejection::new("invalid_event", format!("task.failed error: {err}")))?,
            },
            abi::events::TIMER_FIRED => Received::TimerFired { key: text("key")? },
            abi::events::CHILD_COMPLETED => child(TerminalStatus::Completed)?,
            abi::events::CHILD_FAILED => child(TerminalStatus::Failed)?,
            abi::events::CHILD_CANCELLED => child(TerminalStatus::Cancelled)?,
            _ => Received::External { name: event.name, id: event.id, payload },
        })
    }

    /// The wire event, with `id` unless it is an external event (which has its own).
    pub fn into_event(self, id: String) -> abi::Event {
        let (name, payload) = match self {
            Received::TaskSucceeded { key, output } => {
                (abi::events::TASK_SUCCEEDED, json!({ "key": key, "output": output }))
            }
            Received::TaskFailed { key, error } => {
                (abi::events::TASK_FAILED, json!({ "key": key, "error": error }))
            }
            Received::TimerFired { key } => (abi::events::TIMER_FIRED, json!({ "key": key })),
            Received::ChildEnded { key, child_id, status, state, data } => {
                let name = match status {
                    TerminalStatus::Completed => abi::events::CHILD_COMPLETED,
                    TerminalStatus::Failed => abi::events::CHILD_FAILED,
                    TerminalStatus::Cancelled => abi::events::CHILD_CANCELLED,
                };
                (name, json!({ "key": key, "child_id": child_id, "state": state, "data": data }))
            }
            Received::External { name, id, payload } => {
                return abi::Event { name, id, payload: payload.to_string() };
            }
        };
        abi::Event { name: name.into(), id, payload: payload.to_string() }
    }

    /// For messages: the event's name and the key it is about.
    pub fn describe(&self) -> String {
        match self {
            Received::TaskSucceeded { key, .. } => format!("task.succeeded for {key}"),
            Received::TaskFailed { key, .. } => format!("task.failed for {key}"),
            Received::TimerFired { key } => format!("timer.fired for {key}"),
            Received::ChildEnded { key, .. } => format!("the end of child {key}"),
            Received::External { name, .. } => format!("event {name}"),
        }
    }
}

/// An accepted outcome: the state to move to, the new data, an optional status message
/// and the effects to run once it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<D> {
    pub state: String,
    pub data: D,
    pub message: Option<String>,
    pub effects: Vec<Effect>,
}

/// The optional settings of a task; each left out takes the host's default (or the
/// deployment's binding).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    pub retry: Option<RetryPolicy>,
    pub attempt_timeout_ms: Option<u64>,
    pub report_timeout_ms: Option<u64>,
}

impl<D> Transition<D> {
    pub fn to(state: &str, data: D) -> Self {
        Transition { state: state.into(), data, message: None, effects: Vec::new() }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Asks the host to run task `name` (bound by the deployment to a participant)
    /// with `input`; its result comes back as [`Received::TaskSucceeded`] or
    /// [`Received::TaskFailed`] naming `key`.
    pub fn task(self, key: &str, name: &str, input: Value) -> Self {
        self.task_with(key, name, input, TaskOptions::default())
    }

    pub fn task_with(mut self, key: &str, name: &str, input: Value, options: TaskOptions) -> Self {
        self.effects.push(Effect::Task(abi::Task {
            key: key.into(),
            name: name.into(),
            input: input.to_string(),
            retry: options.retry,
            attempt_timeout_ms: options.attempt_timeout_ms,
            report_timeout_ms: options.report_timeout_ms,
        }));
        self
    }

    /// [`Received::TimerFired`] naming `key`, once, `after_ms` from now or later.
    pub fn timer(mut self, key: &str, after_ms: u64) -> Self {
        self.effects.push(Effect::Timer { key: key.into(), after_ms });
        self
    }

    /// Cancels the open timer `key`; nothing happens if it has fired already.
    pub fn cancel_timer(mut self, key: &str) -> Self {
        self.effects.push(Effect::CancelTimer { key: key.into() });
        self
    }

    /// Starts a child instance of `definition` (the version new instances get, or
    /// `version`); its end comes back as [`Received::ChildEnded`] naming `key`.
    pub fn child(mut self, key: &str, definition: &str, version: Option<u32>, input: Value) -> Self {
        self.effects.push(Effect::Child {
            key: key.into(),
            definition: definition.into(),
            version,
            input: input.to_string(),
        });
        self
    }
}

#[cfg(test)]
mod tests;
