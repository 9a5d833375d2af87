//! A definition that runs one task and ends with its result.
//!
//! Many definitions are one step of a larger workflow (often a parent's child): check
//! the input, ask one participant to do one thing, and end completed when it answers
//! with the id that proves it did. [`SingleTask`] holds what differs between them
//! (names, texts, the input and its validation); [`SingleTaskDefinition`] is the
//! [`Definition`] they share:
//!
//! - `init` validates the input ([`SingleTask::validate`]), waits in
//!   [`SingleTask::RUNNING`] and asks for task [`SingleTask::TASK`] under effect key
//!   [`SingleTask::KEY`], with [`SingleTask::task_input`] (by default the validated
//!   parameters).
//! - A success whose output has a non-empty string member [`SingleTask::ID`] ends in
//!   [`COMPLETED`], the id kept in the data. A success without one ends in [`FAILED`]
//!   with `outcome_unknown`: the participant answered, but not as agreed, so it may have
//!   acted.
//! - A failure ends in [`FAILED`] with the [`TaskError`] and a `failure` for people;
//!   `outcome_unknown` when it timed out, ran out of retries or lost its connection (the
//!   participant may have acted); a final refusal or no participant proves it did not.
//! - An admin's cancel ends in [`CANCELLED`]. Force-complete is refused
//!   (`cannot_force_complete`): `COMPLETED` promises an id, and an admin cannot give one.
//! - There are no actions (`no_actions`), and any other event is refused
//!   (`unexpected_event`).
//!
//! The data ([`Data`]) is, in JSON, the validated parameters' members, then
//! `ID` (a string or `null`), `failure` (a string or `null`), `error` (a `TaskError` or
//! `null`) and `outcome_unknown` (a boolean).
//!
//! ```
//! use serde_json::{Value, json};
//! use switchyard_guest::abi::Effect;
//! use switchyard_guest::prelude::*;
//! use switchyard_guest::single_task::{SingleTask, SingleTaskDefinition, Texts};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct Letter {
//!     pub to: String,
//! }
//!
//! #[derive(Debug)]
//! pub struct Post;
//!
//! impl SingleTask for Post {
//!     type Input = Letter;
//!     type Params = Letter;
//!     const NAME: &'static str = "post-letter";
//!     const VERSION: u32 = 1;
//!     const RUNNING: &'static str = "POSTING";
//!     const KEY: &'static str = "post";
//!     const TASK: &'static str = "mail.post";
//!     const ID: &'static str = "receipt_id";
//!     const TEXTS: Texts = Texts {
//!         running: "Posting the letter",
//!         completed: "The letter is posted.",
//!         succeeded: "Letter posted",
//!         failed: "The letter could not be posted",
//!         unconfirmed: "The post office did not confirm",
//!         cancelled: "An admin cancelled the letter.",
//!         no_force_complete: "a letter is posted only with a receipt_id; cancel it instead",
//!     };
//!
//!     fn validate(letter: Letter) -> Result<Letter, Rejection> {
//!         if letter.to.trim().is_empty() {
//!             return Err(Rejection::new("invalid_input", "to must not be empty"));
//!         }
//!         Ok(letter)
//!     }
//!
//!     // Optional: by default the task gets the parameters as they are.
//!     fn task_input(letter: &Letter) -> Result<Value, Rejection> {
//!         Ok(json!({ "recipient": letter.to, "signed": true }))
//!     }
//! }
//!
//! pub type PostLetter = SingleTaskDefinition<Post>;
//! switchyard_guest::export!(PostLetter);
//!
//! let mut letter = testing::Machine::<PostLetter>::start(json!({ "to": "Ann" })).unwrap();
//! assert_eq!(letter.state(), "POSTING");
//! let [Effect::Task(task)] = letter.effects() else { panic!("one task") };
//! let sent: Value = serde_json::from_str(&task.input).unwrap();
//! assert_eq!(sent, json!({ "recipient": "Ann", "signed": true }));
//! letter.task_succeeded("post", json!({ "receipt_id": "R-1" })).unwrap();
//! assert_eq!(letter.state(), "COMPLETED");
//! assert_eq!(letter.data().id.as_deref(), Some("R-1"));
//! assert_eq!(letter.data().params.to, "Ann", "the data keeps the parameters");
//! ```

use crate::abi::{Manifest, OverrideKind, Rejection, TerminalStatus};
use crate::definition::{
    ActionCall, Context, Definition, EventCall, FailureKind, OverrideCall, Received, TaskError, Transition,
};
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;
use core::marker::PhantomData;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The state where the task succeeded, with its id: status `completed`.
pub const COMPLETED: &str = "COMPLETED";
/// The state where the task failed or answered without an id: status `failed`.
pub const FAILED: &str = "FAILED";
/// The state an admin's cancel leads to: status `cancelled`.
pub const CANCELLED: &str = "CANCELLED";

/// What one single-task definition is: implement it on a marker type `T` and export
/// [`SingleTaskDefinition<T>`]. See the [module](self) for the behaviour.
pub trait SingleTask {
    /// The JSON body a client starts an instance with.
    type Input: DeserializeOwned;
    /// The validated input: the data's first members, and by default the task's input.
    type Params: Serialize + DeserializeOwned;

    /// The manifest's name and version.
    const NAME: &'static str;
    const VERSION: u32;
    /// The initial state, where the instance waits for the task, e.g. `CAPTURING`.
    const RUNNING: &'static str;
    /// The task's effect key, e.g. `capture`.
    const KEY: &'static str;
    /// The task's name, the contract a deployment binds to a participant, e.g.
    /// `payments.capture`.
    const TASK: &'static str;
    /// The member of the task's output that proves success, a non-empty string, kept in
    /// the data under the same name, e.g. `payment_id`.
    const ID: &'static str;
    /// The states' descriptions and the messages.
    const TEXTS: Texts;

    /// Checks the input and makes it the parameters, or refuses to start the instance
    /// (by convention with code `invalid_input`).
    fn validate(input: Self::Input) -> Result<Self::Params, Rejection>;

    /// The task's input: by default the parameters as JSON.
    fn task_input(params: &Self::Params) -> Result<Value, Rejection> {
        serde_json::to_value(params).map_err(|err| Rejection::new("invalid_input", err.to_string()))
    }
}

/// The texts of a [`SingleTask`], for people. Shown with a payment capture's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Texts {
    /// What happens while the task runs, `Capturing the payment`: with a full stop, the
    /// description of [`SingleTask::RUNNING`]; as it is, the message `init` leaves.
    pub running: &'static str,
    /// The description of [`COMPLETED`], `The payment is captured.`
    pub completed: &'static str,
    /// The message on completing, `Payment captured`.
    pub succeeded: &'static str,
    /// That the task failed, `The payment could not be captured`: with a full stop, the
    /// description of [`FAILED`]; as it is, the message of a failed task; with a lowercase
    /// first letter and the error, the data's `failure`:
    /// `the payment could not be captured (refused, HTTP 402, after 1 attempt)`.
    pub failed: &'static str,
    /// The message when the task answered without an id, `The capture was not
    /// confirmed`. The data's `failure` is then `payments.capture answered without a
    /// payment_id`.
    pub unconfirmed: &'static str,
    /// The description of [`CANCELLED`], `An admin cancelled the capture.`
    pub cancelled: &'static str,
    /// The reason force-complete is refused, `a payment is completed only by a capture
    /// with a payment_id; cancel it instead`.
    pub no_force_complete: &'static str,
}

/// The [`Definition`] of a [`SingleTask`]; never constructed, only named, e.g.
/// `pub type OrderPayment = SingleTaskDefinition<Payment>;` and
/// `switchyard_guest::export!(OrderPayment);`.
pub struct SingleTaskDefinition<T>(PhantomData<T>);

impl<T> fmt::Debug for SingleTaskDefinition<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleTaskDefinition")
    }
}

/// The data of a [`SingleTaskDefinition`]. In JSON the members of `params` come first,
/// then `id` as the member named [`SingleTask::ID`], `failure`, `error` and
/// `outcome_unknown`.
pub struct Data<T: SingleTask> {
    pub params: T::Params,
    /// The id the task answered with, once it succeeded.
    pub id: Option<String>,
    /// Why the instance failed, once it has.
    pub failure: Option<String>,
    /// The task's error, when the participant failed it.
    pub error: Option<TaskError>,
    /// The task failed, but the participant may have acted all the same: it timed out,
    /// or answered without an id.
    pub outcome_unknown: bool,
}

impl<T: SingleTask> Definition for SingleTaskDefinition<T> {
    type Input = T::Input;
    type Data = Data<T>;

    fn manifest() -> Manifest {
        let texts = T::TEXTS;
        Manifest::builder(T::NAME, T::VERSION)
            .state(T::RUNNING, &format!("{}.", texts.running))
            .terminal(COMPLETED, TerminalStatus::Completed, texts.completed)
            .terminal(FAILED, TerminalStatus::Failed, &format!("{}.", texts.failed))
            .terminal(CANCELLED, TerminalStatus::Cancelled, texts.cancelled)
            .initial(T::RUNNING)
            .build()
    }

    fn init(_ctx: &Context, input: T::Input) -> Result<Transition<Data<T>>, Rejection> {
        let params = T::validate(input)?;
        let task = T::task_input(&params)?;
        let data = Data { params, id: None, failure: None, error: None, outcome_unknown: false };
        Ok(Transition::to(T::RUNNING, data).task(T::KEY, T::TASK, task).with_message(T::TEXTS.running))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data<T>>) -> Result<Transition<Data<T>>, Rejection> {
        Err(Rejection::new("no_actions", format!("{} takes no actions, not {}", T::NAME, call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data<T>>) -> Result<Transition<Data<T>>, Rejection> {
        let EventCall { state, mut data, event } = call;
        let texts = T::TEXTS;
        match event {
            Received::TaskSucceeded { key, output } if state == T::RUNNING && key == T::KEY => {
                match output.get(T::ID).and_then(Value::as_str).filter(|id| !id.is_empty()) {
                    Some(id) => {
                        data.id = Some(id.into());
                        Ok(Transition::to(COMPLETED, data).with_message(texts.succeeded))
                    }
                    None => {
                        data.failure = Some(format!("{} answered without a {}", T::TASK, T::ID));
                        data.outcome_unknown = true;
                        Ok(Transition::to(FAILED, data).with_message(texts.unconfirmed))
                    }
                }
            }
            Received::TaskFailed { key, error } if state == T::RUNNING && key == T::KEY => {
                data.failure = Some(format!("{} ({error})", lowercase_first(texts.failed)));
                // Only a final refusal (or no participant at all) proves nothing was done:
                // a timeout, a retryable answer after an earlier attempt, or a connection
                // broken mid-request may all follow work the participant did.
                data.outcome_unknown = may_have_acted(error.kind);
                data.error = Some(error);
                Ok(Transition::to(FAILED, data).with_message(texts.failed))
            }
            event => Err(Rejection::new(
                "unexpected_event",
                format!("{state} does not expect {}", event.describe()),
            )),
        }
    }

    fn on_override(_ctx: &Context, call: OverrideCall<Data<T>>) -> Result<Transition<Data<T>>, Rejection> {
        match call.kind {
            OverrideKind::Cancel => Ok(Transition::to(CANCELLED, call.data)
                .with_message(format!("cancelled by an admin: {}", call.reason))),
            OverrideKind::ForceComplete => {
                Err(Rejection::new("cannot_force_complete", T::TEXTS.no_force_complete))
            }
        }
    }
}

/// `text` with its first letter in lowercase, to go on after other words.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_lowercase().chain(chars).collect())
}

impl<T: SingleTask> Serialize for Data<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The parameters' members, then the ending's, in this order.
        #[derive(Serialize)]
        struct Members<'a, P> {
            #[serde(flatten)]
            params: &'a P,
            #[serde(flatten)]
            ending: Ending<'a>,
        }
        struct Ending<'a> {
            id_member: &'static str,
            id: &'a Option<String>,
            failure: &'a Option<String>,
            error: &'a Option<TaskError>,
            outcome_unknown: bool,
        }
        impl Serialize for Ending<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry(self.id_member, self.id)?;
                map.serialize_entry("failure", self.failure)?;
                map.serialize_entry("error", self.error)?;
                map.serialize_entry("outcome_unknown", &self.outcome_unknown)?;
                map.end()
            }
        }
        let ending = Ending {
            id_member: T::ID,
            id: &self.id,
            failure: &self.failure,
            error: &self.error,
            outcome_unknown: self.outcome_unknown,
        };
        Members { params: &self.params, ending }.serialize(serializer)
    }
}

impl<'de, T: SingleTask> Deserialize<'de> for Data<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut members = serde_json::Map::deserialize(deserializer)?;
        let mut take = |name: &str| members.remove(name).unwrap_or(Value::Null);
        let (id, failure, error, outcome_unknown) =
            (take(T::ID), take("failure"), take("error"), take("outcome_unknown"));
        Ok(Data {
            id: from_json(id)?,
            failure: from_json(failure)?,
            error: from_json(error)?,
            outcome_unknown: from_json(outcome_unknown)?,
            params: from_json(Value::Object(members))?,
        })
    }
}

fn from_json<T: DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
    serde_json::from_value(value).map_err(E::custom)
}

impl<T: SingleTask> fmt::Debug for Data<T>
where
    T::Params: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("params", &self.params)
            .field(T::ID, &self.id)
            .field("failure", &self.failure)
            .field("error", &self.error)
            .field("outcome_unknown", &self.outcome_unknown)
            .finish()
    }
}

impl<T: SingleTask> Clone for Data<T>
where
    T::Params: Clone,
{
    fn clone(&self) -> Self {
        Data {
            params: self.params.clone(),
            id: self.id.clone(),
            failure: self.failure.clone(),
            error: self.error.clone(),
            outcome_unknown: self.outcome_unknown,
        }
    }
}

impl<T: SingleTask> PartialEq for Data<T>
where
    T::Params: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.id == other.id
            && self.failure == other.failure
            && self.error == other.error
            && self.outcome_unknown == other.outcome_unknown
    }
}

#[cfg(test)]
mod tests;

/// Whether a task that failed this way may still have done its work.
fn may_have_acted(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::Timeout | FailureKind::Exhausted | FailureKind::Unreachable)
}
