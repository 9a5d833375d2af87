//! `parity`, version 1: records the context of every call it accepts, so a test can
//! compare what the native test harness and the host give a definition.
//!
//! `init` and `record` (OPEN -> OPEN) append the call, its payload and its context to
//! the data; `close` (OPEN -> CLOSED, terminal) does too. `refuse` (OPEN -> OPEN) always
//! rejects, with code `refused` and the seed it was given as the reason, so that the
//! context of a refused call can be compared as well. `init` accepts any JSON input.

use serde_json::Value;
use switchyard_guest::prelude::*;

/// The definition.
#[derive(Debug)]
pub struct Parity;

/// One accepted call, as the definition saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// `init` or the action.
    pub call: String,
    /// The input or the payload.
    pub payload: Value,
    pub instance_id: String,
    pub definition_version: u32,
    pub now_ms: i64,
    pub seed: u64,
}

impl Call {
    fn new(ctx: &Context, call: &str, payload: Value) -> Call {
        Call {
            call: call.into(),
            payload,
            instance_id: ctx.instance_id.clone(),
            definition_version: ctx.definition_version,
            now_ms: ctx.now_ms,
            seed: ctx.seed,
        }
    }
}

impl Definition for Parity {
    type Input = Value;
    type Data = Vec<Call>;

    fn manifest() -> Manifest {
        Manifest::builder("parity", 1)
            .state("OPEN", "Records calls.")
            .terminal("CLOSED", TerminalStatus::Completed, "Closed; records nothing more.")
            .initial("OPEN")
            .action("record", &["OPEN"], &["OPEN"], "Records this call.")
            .action("refuse", &["OPEN"], &["OPEN"], "Rejects, naming the seed it was given.")
            .action("close", &["OPEN"], &["CLOSED"], "Records this call and closes.")
            .build()
    }

    fn init(ctx: &Context, input: Value) -> Result<Transition<Vec<Call>>, Rejection> {
        Ok(Transition::to("OPEN", vec![Call::new(ctx, "init", input)]).with_message("call 1"))
    }

    fn on_action(ctx: &Context, call: ActionCall<Vec<Call>>) -> Result<Transition<Vec<Call>>, Rejection> {
        let to = match call.action.as_str() {
            "record" => "OPEN",
            "close" => "CLOSED",
            _ => return Err(Rejection::new("refused", format!("refused with seed {}", ctx.seed))),
        };
        let mut calls = call.data;
        calls.push(Call::new(ctx, &call.action, call.payload));
        let message = format!("call {}", calls.len());
        Ok(Transition::to(to, calls).with_message(message))
    }
}

switchyard_guest::export!(Parity);
