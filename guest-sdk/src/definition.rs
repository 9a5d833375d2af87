//! The trait a definition implements, and the values its functions take and return.

use crate::abi::{Manifest, Rejection};
use alloc::string::String;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::abi::{Context, Event};

/// A workflow definition: its manifest and its pure transition functions.
///
/// The host checks, before calling `on_action`, that the action is declared and legal in
/// the instance's state; after every call, that the returned state is declared. So the
/// functions only decide *where* to go and what the data becomes.
pub trait Definition {
    /// The JSON body a client starts an instance with.
    type Input: DeserializeOwned;
    /// The instance's own JSON document.
    type Data: Serialize + DeserializeOwned;

    fn manifest() -> Manifest;

    /// Where a new instance starts. An `Err` refuses to create it.
    fn init(ctx: &Context, input: Self::Input) -> Result<Transition<Self::Data>, Rejection>;

    fn on_action(ctx: &Context, call: ActionCall<Self::Data>) -> Result<Transition<Self::Data>, Rejection>;

    /// An external event reported to the instance. By default events are refused.
    fn on_event(ctx: &Context, call: EventCall<Self::Data>) -> Result<Transition<Self::Data>, Rejection> {
        let _ = ctx;
        Err(Rejection::new(
            "unexpected_event",
            alloc::format!("state {} does not expect event {}", call.state, call.event.name),
        ))
    }

    /// Moves an instance of `from_version` (its state and data as that version left
    /// them) to this version. Declare each accepted version with
    /// [`crate::abi::ManifestBuilder::migrates_from`]. By default nothing migrates.
    fn migrate(
        ctx: &Context,
        from_version: u32,
        state: String,
        data: serde_json::Value,
    ) -> Result<(String, Self::Data), Rejection> {
        let _ = (ctx, state, data);
        Err(Rejection::new("no_migration", alloc::format!("no migration from version {from_version}")))
    }
}

/// An action as `on_action` receives it.
#[derive(Debug, Clone)]
pub struct ActionCall<D> {
    pub state: String,
    pub data: D,
    pub action: String,
    /// `null` when the client sent no payload.
    pub payload: serde_json::Value,
}

/// An event as `on_event` receives it.
#[derive(Debug, Clone)]
pub struct EventCall<D> {
    pub state: String,
    pub data: D,
    pub event: Event,
}

/// An accepted outcome: the state to move to, the new data and an optional status message.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<D> {
    pub state: String,
    pub data: D,
    pub message: Option<String>,
}

impl<D> Transition<D> {
    pub fn to(state: &str, data: D) -> Self {
        Transition { state: state.into(), data, message: None }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}
