//! `hostile`, version 1: a valid definition whose actions misbehave on purpose, so host
//! tests can check that a guest cannot hang, exhaust or crash the host.
//!
//! All actions are legal in IDLE. Through the SDK's typed dispatch: `spin` never
//! returns, `busy` counts down `{"turns": N}` and then stores the payload like `echo`
//! (a call that takes a known while), `hog` allocates until memory runs out, `recurse`
//! recurses until the native stack overflows, `trap` panics (an abort, so a Wasm trap),
//! `refuse` rejects with code `refused_on_purpose`, `undeclared` moves to a state the
//! manifest does not declare, `stray` moves to DONE although it declares only IDLE as
//! its target, `finish` moves to DONE and `echo` stays in IDLE, storing the payload in
//! the data; `flood` asks for `{"count": N}` timers at once. `init` accepts any JSON
//! input.
//!
//! The SDK's `Transition` cannot produce a malformed response, so `switchyard_on_action`
//! gives these answers itself (see `raw`): `oob` points outside guest memory, `huge` is a
//! well-formed outcome larger than the host accepts, `garbage` is no `Outcome` at all,
//! `not-json` is accepted with data that is not JSON and `nest` with data nested
//! deeper than recursive parsers follow.

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
    /// The payload of the last `echo` or `busy`.
    pub echo: Value,
    /// The keys of the timers that fired, in order.
    #[serde(default)]
    pub fired: Vec<String>,
    /// The payloads of the `ping` events posted to it, in order.
    #[serde(default)]
    pub pings: Vec<Value>,
    /// How its children ended: `{"key", "child_id", "status", "state"}`, in order.
    #[serde(default)]
    pub children: Vec<Value>,
}

impl Definition for Hostile {
    type Input = Value;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("hostile", 1)
            .state("IDLE", "Waiting for the next misdeed.")
            .terminal("DONE", TerminalStatus::Completed, "Finished normally.")
            .terminal("CANCELLED", TerminalStatus::Cancelled, "An admin cancelled it.")
            .initial("IDLE")
            .action("spin", &["IDLE"], &["IDLE"], "Loops forever.")
            .action("busy", &["IDLE"], &["IDLE"], "Counts down {\"turns\": N}, then stores the payload.")
            .action("hog", &["IDLE"], &["IDLE"], "Allocates memory until none is left.")
            .action("recurse", &["IDLE"], &["IDLE"], "Recurses until the stack overflows.")
            .action("trap", &["IDLE"], &["IDLE"], "Panics, which traps.")
            .action("refuse", &["IDLE"], &["IDLE"], "Rejects the action.")
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
            .action("oob", &["IDLE"], &["IDLE"], "Answers with a location outside guest memory.")
            .action("huge", &["IDLE"], &["IDLE"], "Answers with more bytes than the host accepts.")
            .action("garbage", &["IDLE"], &["IDLE"], "Answers with bytes that are no outcome.")
            .action("not-json", &["IDLE"], &["IDLE"], "Accepts with data that is not JSON.")
            .action("nul-message", &["IDLE"], &["IDLE"], "Accepts with a message holding a NUL.")
            .action("nul-refusal", &["IDLE"], &["IDLE"], "Refuses with a reason holding a NUL.")
            .action("finish", &["IDLE"], &["DONE"], "Moves to DONE.")
            .action("echo", &["IDLE"], &["IDLE"], "Stays in IDLE and stores the payload in the data.")
            .action(
                "wake",
                &["IDLE"],
                &["IDLE"],
                "Sets timer {\"key\", \"after_ms\"}; its firing is kept in `fired`.",
            )
            .action("snooze", &["IDLE"], &["IDLE"], "Cancels timer {\"key\"}.")
            .action("spawn", &["IDLE"], &["IDLE"], "Starts child {\"key\", \"definition\", \"input\"}.")
            .action("twin-timers", &["IDLE"], &["IDLE"], "Asks for two timers under one key.")
            .action("blank-key", &["IDLE"], &["IDLE"], "Asks for a timer without a key.")
            .action("effect-not-json", &["IDLE"], &["IDLE"], "Asks for a task whose input is not JSON.")
            .action("flood", &["IDLE"], &["IDLE"], "Asks for {\"count\": N} timers at once.")
            .action("nest", &["IDLE"], &["IDLE"], "Accepts with data nested 100,000 arrays deep.")
            .build()
    }

    /// `{"turns": N}` in the input makes `init` as slow as `busy`.
    fn init(_ctx: &Context, input: Value) -> Result<Transition<Data>, Rejection> {
        busy(input.get("turns").and_then(Value::as_u64).unwrap_or(0));
        Ok(Transition::to(
            "IDLE",
            Data { input, echo: Value::Null, fired: Vec::new(), pings: Vec::new(), children: Vec::new() },
        ))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let mut data = call.data;
        match call.event {
            Received::TimerFired { key } => {
                data.fired.push(key);
                Ok(Transition::to("IDLE", data).with_message("woken"))
            }
            Received::ChildEnded { key, child_id, status, state, .. } => {
                data.children.push(serde_json::json!({
                    "key": key, "child_id": child_id, "status": format!("{status:?}"), "state": state,
                }));
                Ok(Transition::to("IDLE", data).with_message("a child ended"))
            }
            Received::External { name, payload, .. } if name == "ping" => {
                data.pings.push(payload);
                Ok(Transition::to("IDLE", data).with_message("pinged"))
            }
            // Burns fuel (`{"turns": N}`), then records the payload as a ping.
            Received::External { name, payload, .. } if name == "busy" => {
                busy(payload["turns"].as_u64().unwrap_or_default());
                data.pings.push(payload);
                Ok(Transition::to("IDLE", data).with_message("busy, then pinged"))
            }
            other => Err(Rejection::new(
                "unexpected_event",
                format!("hostile does not expect {}", other.describe()),
            )),
        }
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let mut data = call.data;
        match call.action.as_str() {
            "spin" => spin(&call.payload),
            "busy" => {
                let turns = call.payload["turns"]
                    .as_u64()
                    .ok_or_else(|| Rejection::new("invalid_payload", "busy takes {\"turns\": N}"))?;
                busy(turns);
                data.echo = call.payload;
                Ok(Transition::to("IDLE", data).with_message("busy"))
            }
            "hog" => hog(),
            "recurse" => {
                data.echo = Value::from(recurse(0));
                Ok(Transition::to("IDLE", data))
            }
            "trap" => panic!("hostile guest: trap requested"),
            "refuse" => Err(Rejection::new("refused_on_purpose", "the hostile guest refuses")),
            "undeclared" => Ok(Transition::to("NOWHERE", data)),
            "stray" => Ok(Transition::to("DONE", data)),
            "nul-message" => Ok(Transition::to("IDLE", data).with_message("a\0b")),
            "nul-refusal" => Err(Rejection::new("nul", "a\0b")),
            "finish" => Ok(Transition::to("DONE", data).with_message("finished")),
            "echo" => {
                data.echo = call.payload;
                Ok(Transition::to("IDLE", data).with_message("echoed"))
            }
            "wake" => {
                let key = call.payload["key"].as_str().unwrap_or("alarm");
                let after_ms = call.payload["after_ms"]
                    .as_u64()
                    .ok_or_else(|| Rejection::new("invalid_payload", "wake needs {\"key\", \"after_ms\"}"))?;
                Ok(Transition::to("IDLE", data).timer(key, after_ms))
            }
            "spawn" => {
                let text = |field: &str| call.payload[field].as_str().unwrap_or_default().to_owned();
                let input = call.payload["input"].clone();
                Ok(Transition::to("IDLE", data).child(&text("key"), &text("definition"), None, input))
            }
            "twin-timers" => Ok(Transition::to("IDLE", data).timer("twin", 10).timer("twin", 20)),
            "flood" => {
                let count = call.payload["count"].as_u64().unwrap_or(5000);
                let key = |idx: u64| format!("flood-{idx}");
                Ok((0..count).fold(Transition::to("IDLE", data), |flood, idx| flood.timer(&key(idx), 60_000)))
            }
            "blank-key" => Ok(Transition::to("IDLE", data).timer("", 10)),
            "snooze" => {
                let key = call.payload["key"].as_str().unwrap_or("alarm");
                Ok(Transition::to("IDLE", data).cancel_timer(key))
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

/// Counts `turns` down through `black_box`, so the fuel it burns grows with `turns`.
fn busy(turns: u64) {
    let mut left = black_box(turns);
    while left > 0 {
        left = black_box(left - 1);
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

/// Never returns: every frame uses the result of the next, so no call is a tail call,
/// and the depth passes through `black_box`, so the recursion cannot become a loop.
#[expect(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let deeper = recurse(black_box(depth + 1));
    black_box(deeper) ^ depth
}

/// The answers `switchyard_on_action` gives instead of a typed outcome; only the Wasm
/// exports (and the tests) use them.
#[cfg(any(target_arch = "wasm32", test))]
mod raw {
    use switchyard_guest::abi::{Accepted, ActionRequest, Effect, Outcome, Task};

    /// The host's `response_bytes`: `huge` answers a data string this long, plus framing.
    pub(crate) const RESPONSE_LIMIT: usize = 4 << 20;

    /// A response location that no wasm32 memory contains: it ends past 4 GiB.
    pub(crate) const OUTSIDE: (u32, u32) = (u32::MAX, 2);

    /// How deep `nest` nests its data's arrays.
    pub(crate) const NESTING: usize = 100_000;

    #[derive(Debug, PartialEq)]
    pub(crate) enum Raw {
        /// These bytes, left in guest memory.
        Bytes(Vec<u8>),
        /// [`OUTSIDE`].
        Outside,
    }

    /// The answer to an action the SDK cannot express, or `None` to go through
    /// dispatch (which also answers a request that does not decode).
    pub(crate) fn answer(request: &[u8]) -> Option<Raw> {
        let request: ActionRequest = postcard::from_bytes(request).ok()?;
        let accepted = |data: String| {
            let outcome = Outcome::Accepted(Accepted {
                state: "IDLE".into(),
                data,
                message: None,
                effects: Vec::new(),
            });
            Raw::Bytes(postcard::to_allocvec(&outcome).expect("an outcome encodes"))
        };
        match request.action.as_str() {
            "oob" => Some(Raw::Outside),
            "huge" => Some(accepted(["\"", &"a".repeat(RESPONSE_LIMIT), "\""].concat())),
            // 'g' reads as variant 103, and `Outcome` has two.
            "garbage" => Some(Raw::Bytes(b"garbage".to_vec())),
            "not-json" => Some(accepted("not JSON".into())),
            "nest" => Some(accepted(["[".repeat(NESTING), "]".repeat(NESTING)].concat())),
            "effect-not-json" => {
                let task = Task {
                    key: "t".into(),
                    name: "flights.reserve".into(),
                    input: "{not JSON".into(),
                    retry: None,
                    attempt_timeout_ms: None,
                    report_timeout_ms: None,
                };
                let outcome = Outcome::Accepted(Accepted {
                    state: "IDLE".into(),
                    data: request.data,
                    message: None,
                    effects: vec![Effect::Task(task)],
                });
                Some(Raw::Bytes(postcard::to_allocvec(&outcome).expect("an outcome encodes")))
            }
            _ => None,
        }
    }
}

/// The six exports, as `switchyard_guest::export!` writes them except for
/// `switchyard_on_action`, which gives [`raw`] answers itself.
#[cfg(target_arch = "wasm32")]
mod exports {
    use super::Hostile;
    use super::raw::{self, OUTSIDE, Raw};
    use switchyard_guest::{abi, dispatch, guest};

    /// Answers the request the host wrote at `ptr` with `dispatch`'s response. Only
    /// the exports below call it, with the host's arguments.
    fn answer(ptr: i32, len: i32, dispatch: fn(&[u8]) -> Vec<u8>) -> i64 {
        // SAFETY: the host wrote `len` bytes at `ptr`, a block from `switchyard_alloc`.
        let request = unsafe { guest::request(ptr, len) };
        guest::respond(dispatch(request))
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_alloc(len: i32) -> i32 {
        guest::alloc(len)
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_manifest() -> i64 {
        guest::respond(dispatch::manifest::<Hostile>())
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_init(ptr: i32, len: i32) -> i64 {
        answer(ptr, len, dispatch::init::<Hostile>)
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_on_action(ptr: i32, len: i32) -> i64 {
        // SAFETY: as in `answer`.
        let request = unsafe { guest::request(ptr, len) };
        match raw::answer(request) {
            Some(Raw::Outside) => abi::pack(OUTSIDE.0, OUTSIDE.1),
            Some(Raw::Bytes(bytes)) => guest::respond(bytes),
            None => guest::respond(dispatch::on_action::<Hostile>(request)),
        }
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_on_event(ptr: i32, len: i32) -> i64 {
        answer(ptr, len, dispatch::on_event::<Hostile>)
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_on_override(ptr: i32, len: i32) -> i64 {
        answer(ptr, len, dispatch::on_override::<Hostile>)
    }

    #[unsafe(no_mangle)]
    extern "C" fn switchyard_migrate(ptr: i32, len: i32) -> i64 {
        answer(ptr, len, dispatch::migrate::<Hostile>)
    }
}

#[cfg(test)]
mod tests {
    use super::raw::{self, NESTING, OUTSIDE, RESPONSE_LIMIT, Raw};
    use super::*;
    use serde_json::json;
    use switchyard_guest::abi::{Accepted, ActionRequest, EffectError, Outcome, OutcomeError};
    use switchyard_guest::testing::{Machine, Refusal};

    fn start() -> Machine<Hostile> {
        Machine::start(json!({"any": ["input", 1]})).expect("any input starts an instance")
    }

    #[test]
    fn timers_fire_once_and_can_be_cancelled() {
        let mut machine = start();
        machine.act("wake", json!({"key": "a", "after_ms": 50})).expect("set");
        machine.act("wake", json!({"key": "b", "after_ms": 90})).expect("set");
        assert!(machine.act("wake", json!({"key": "a", "after_ms": 5})).is_err(), "a is open");
        machine.act("snooze", json!({"key": "a"})).expect("cancelled");
        assert_eq!(machine.timer_fired("a"), Err(Refusal::NoOpenEffect("a".into())));
        machine.timer_fired("b").expect("fired");
        assert_eq!(machine.data().fired, ["b"]);
        assert!(machine.open_effects().is_empty());
    }

    #[test]
    fn well_behaved_actions_work() {
        let mut machine = start();
        assert_eq!(machine.act("echo", json!({"big": "payload"})), Ok(()));
        assert_eq!((machine.state(), machine.data().echo), ("IDLE", json!({"big": "payload"})));
        assert_eq!(machine.data().input, json!({"any": ["input", 1]}));
        assert_eq!(machine.act("busy", json!({"turns": 1000})), Ok(()));
        assert_eq!((machine.state(), machine.data().echo), ("IDLE", json!({"turns": 1000})));
        assert_eq!(machine.act("finish", Value::Null), Ok(()));
        assert_eq!(machine.status(), Some(TerminalStatus::Completed));
    }

    #[test]
    fn refusals_are_rejections() {
        let refused = start().act("refuse", Value::Null);
        assert!(
            matches!(&refused, Err(Refusal::Rejected(r)) if r.code == "refused_on_purpose"),
            "{refused:?}"
        );
        let idle = start().act("busy", json!({"laps": 3}));
        assert!(matches!(&idle, Err(Refusal::Rejected(r)) if r.code == "invalid_payload"), "{idle:?}");
    }

    #[test]
    fn misdirected_outcomes_are_refused() {
        let undeclared = start().act("undeclared", Value::Null);
        assert_eq!(undeclared, Err(Refusal::BadOutcome(OutcomeError::Undeclared("NOWHERE".into()))));
        let stray = start().act("stray", Value::Null);
        assert!(matches!(stray, Err(Refusal::BadOutcome(OutcomeError::NotATarget { .. }))), "{stray:?}");
    }

    #[test]
    fn a_flood_of_effects_is_refused() {
        let flooded = start().act("flood", json!({ "count": 5000 }));
        assert_eq!(flooded, Err(Refusal::BadEffects(EffectError::TooMany(5000))));
        assert_eq!(start().act("flood", json!({ "count": 3 })), Ok(()));
    }

    #[test]
    #[should_panic(expected = "trap requested")]
    fn trap_panics() {
        let _ = start().act("trap", Value::Null);
    }

    fn raw_answer(action: &str) -> Option<Raw> {
        let request = ActionRequest {
            context: switchyard_guest::abi::Context {
                instance_id: "00000000-0000-7000-8000-000000000001".into(),
                definition_version: 1,
                now_ms: 1_700_000_000_000,
                seed: 1,
            },
            state: "IDLE".into(),
            data: json!({"input": null, "echo": null}).to_string(),
            action: action.into(),
            payload: "null".into(),
        };
        raw::answer(&postcard::to_allocvec(&request).expect("a request encodes"))
    }

    fn accepted(raw: Option<Raw>) -> (usize, Accepted) {
        let Some(Raw::Bytes(bytes)) = raw else { panic!("bytes expected, got {raw:?}") };
        match postcard::from_bytes(&bytes) {
            Ok(Outcome::Accepted(accepted)) => (bytes.len(), accepted),
            other => panic!("an accepted outcome expected, got {other:?}"),
        }
    }

    #[test]
    fn raw_answers_break_exactly_one_rule_each() {
        assert_eq!(raw_answer("oob"), Some(Raw::Outside));
        assert!(u64::from(OUTSIDE.0) + u64::from(OUTSIDE.1) > 1 << 32);

        let (len, huge) = accepted(raw_answer("huge"));
        assert!(len > RESPONSE_LIMIT, "{len} bytes");
        assert!(serde_json::from_str::<Value>(&huge.data).is_ok(), "only the size is wrong");

        let Some(Raw::Bytes(garbage)) = raw_answer("garbage") else { panic!("garbage is bytes") };
        assert!(postcard::from_bytes::<Outcome>(&garbage).is_err());

        let (_, not_json) = accepted(raw_answer("not-json"));
        assert!(serde_json::from_str::<Value>(&not_json.data).is_err(), "{not_json:?}");

        let (len, nested) = accepted(raw_answer("nest"));
        assert!(len < RESPONSE_LIMIT, "{len} bytes");
        assert!(nested.data.starts_with("[[[") && nested.data.len() == 2 * NESTING);
    }

    #[test]
    fn other_actions_and_undecodable_requests_go_through_dispatch() {
        assert_eq!(raw_answer("echo"), None);
        assert_eq!(raw::answer(b"\xff"), None);
    }
}
