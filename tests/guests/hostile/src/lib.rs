//! `hostile`, version 1: a valid definition whose actions misbehave on purpose, so host
//! tests can check that a guest cannot hang, exhaust or crash the host.
//!
//! All actions are legal in IDLE: `spin` never returns, `hog` allocates until memory runs
//! out, `trap` panics (an abort, so a Wasm trap), `undeclared` moves to a state the
//! manifest does not declare, `stray` moves to DONE although it declares only IDLE as its
//! target, `finish` moves to DONE and `echo` stays in IDLE, storing the payload in the
//! data. `init` accepts any JSON input.

use core::hint::black_box;
use serde_json::Value;
use switchyard_guest::prelude::*;

/// The definition.
#[derive(Debug)]
pub struct Hostile;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// The input the instance was started with.
    pub input: Value,
    /// The payload of the last `echo`.
    pub echo: Value,
}

impl Definition for Hostile {
    type Input = Value;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("hostile", 1)
            .state("IDLE", "Waiting for the next misdeed.")
            .terminal("DONE", TerminalStatus::Completed, "Finished normally.")
            .initial("IDLE")
            .action("spin", &["IDLE"], &["IDLE"], "Loops forever.")
            .action("hog", &["IDLE"], &["IDLE"], "Allocates memory until none is left.")
            .action("trap", &["IDLE"], &["IDLE"], "Panics, which traps.")
            .action(
                "undeclared",
                &["IDLE"],
                &["IDLE"],
                "Moves to NOWHERE, a state the manifest does not declare.",
            )
            .action(
                "stray",
                &["IDLE"],
                &["IDLE"],
                "Moves to DONE, a declared state but not one of its targets.",
            )
            .action("finish", &["IDLE"], &["DONE"], "Moves to DONE.")
            .action("echo", &["IDLE"], &["IDLE"], "Stays in IDLE and stores the payload in the data.")
            .build()
    }

    fn init(_ctx: &Context, input: Value) -> Result<Transition<Data>, Rejection> {
        Ok(Transition::to("IDLE", Data { input, echo: Value::Null }))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let mut data = call.data;
        match call.action.as_str() {
            "spin" => spin(&call.payload),
            "hog" => hog(),
            "trap" => panic!("hostile guest: trap requested"),
            "undeclared" => Ok(Transition::to("NOWHERE", data)),
            "stray" => Ok(Transition::to("DONE", data)),
            "finish" => Ok(Transition::to("DONE", data).with_message("finished")),
            "echo" => {
                data.echo = call.payload;
                Ok(Transition::to("IDLE", data).with_message("echoed"))
            }
            other => Err(Rejection::new("unknown_action", format!("no action {other}"))),
        }
    }
}

/// Never returns. The counter starts from the payload and passes through `black_box`
/// on every turn, so the optimizer can neither fold nor remove the loop.
fn spin(payload: &Value) -> ! {
    let mut turns = black_box(payload.as_u64().unwrap_or(1));
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Never returns: keeps 1 MiB blocks (written, so the pages are touched) until an
/// allocation fails, which aborts.
fn hog() -> ! {
    const BLOCK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xa5; BLOCK]));
        black_box(&hoard);
    }
}

switchyard_guest::export!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_guest::abi::OutcomeError;
    use switchyard_guest::testing::{Machine, Refusal};

    fn start() -> Machine<Hostile> {
        Machine::start(json!({"any": ["input", 1]})).expect("any input starts an instance")
    }

    #[test]
    fn well_behaved_actions_work() {
        let mut machine = start();
        assert_eq!(machine.act("echo", json!({"big": "payload"})), Ok(()));
        assert_eq!((machine.state(), machine.data().echo), ("IDLE", json!({"big": "payload"})));
        assert_eq!(machine.data().input, json!({"any": ["input", 1]}));
        assert_eq!(machine.act("finish", Value::Null), Ok(()));
        assert_eq!(machine.status(), Some(TerminalStatus::Completed));
    }

    #[test]
    fn misdirected_outcomes_are_refused() {
        let undeclared = start().act("undeclared", Value::Null);
        assert_eq!(undeclared, Err(Refusal::BadOutcome(OutcomeError::Undeclared("NOWHERE".into()))));
        let stray = start().act("stray", Value::Null);
        assert!(matches!(stray, Err(Refusal::BadOutcome(OutcomeError::NotATarget { .. }))), "{stray:?}");
    }

    #[test]
    #[should_panic(expected = "trap requested")]
    fn trap_panics() {
        let _ = start().act("trap", Value::Null);
    }
}
