//! Runs a definition natively under the rules the host enforces, for `cargo test`.
//!
//! Requests and outcomes go through the same postcard encoding and [`crate::dispatch`]
//! code as in Wasm; the harness then applies the host's checks: the action must be
//! declared and legal in the current state, the outcome must reach a state the
//! manifest allows for that call ([`Manifest::check_outcome`]), and a terminal state
//! accepts nothing more. Not modelled: roles (`admin_only`), and the host's check
//! that the new data is JSON (the SDK only ever produces JSON).

use crate::abi::{
    ActionRequest, CallKind, Context, InitRequest, Manifest, ManifestError, Outcome, OutcomeError, Rejection,
    TerminalStatus,
};
use crate::definition::Definition;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::marker::PhantomData;
use serde_json::Value;

/// One instance of `D`, driven in-process.
#[derive(Debug)]
pub struct Machine<D> {
    manifest: Manifest,
    instance_id: String,
    revision: u64,
    state: String,
    data: String,
    message: Option<String>,
    definition: PhantomData<D>,
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
}

impl<D: Definition> Machine<D> {
    /// Validates the manifest, then runs `init` with `input`.
    pub fn start(input: Value) -> Result<Self, Refusal> {
        let manifest = D::manifest();
        manifest.validate().map_err(Refusal::InvalidManifest)?;
        let mut machine = Machine {
            manifest,
            instance_id: "00000000-0000-7000-8000-000000000001".into(),
            revision: 0,
            state: String::new(),
            data: String::new(),
            message: None,
            definition: PhantomData,
        };
        let request = InitRequest { context: machine.next_context(), input: input.to_string() };
        let outcome = crate::dispatch::init::<D>(&encode(&request));
        machine.apply(CallKind::Init, &outcome)?;
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
        self.apply(CallKind::Action(action), &outcome)
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    /// `Some` once the instance is in a terminal state.
    pub fn status(&self) -> Option<TerminalStatus> {
        self.manifest.state(&self.state).and_then(|state| state.terminal)
    }

    pub fn data(&self) -> D::Data {
        serde_json::from_str(&self.data).expect("the definition's own data decodes")
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    pub fn allowed_actions(&self) -> Vec<String> {
        self.manifest.allowed_actions(&self.state).map(|action| action.name.clone()).collect()
    }

    fn next_context(&mut self) -> Context {
        self.revision += 1;
        Context {
            instance_id: self.instance_id.clone(),
            definition_version: self.manifest.version,
            now_ms: 1_700_000_000_000 + self.revision as i64 * 1000,
            seed: self.revision,
        }
    }

    fn apply(&mut self, call: CallKind<'_>, outcome: &[u8]) -> Result<(), Refusal> {
        let outcome: Outcome = postcard::from_bytes(outcome).expect("the dispatcher's outcome decodes");
        match outcome {
            Outcome::Rejected(rejection) => Err(Refusal::Rejected(rejection)),
            Outcome::Accepted(accepted) => {
                self.manifest.check_outcome(call, &accepted.state).map_err(Refusal::BadOutcome)?;
                self.state = accepted.state;
                self.data = accepted.data;
                self.message = accepted.message;
                Ok(())
            }
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("requests encode")
}
