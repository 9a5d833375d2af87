use super::*;
use crate::abi::seed;
use crate::definition::{ActionCall, Transition};
use alloc::string::ToString;
use alloc::vec;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Records the context of every accepted call; `refuse` rejects, naming its seed.
/// Version 2 migrates instances of version 1, to the state the data names.
#[derive(Debug)]
struct Probe<const VERSION: u32>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    instance_id: String,
    definition_version: u32,
    now_ms: i64,
    seed: u64,
}

impl From<&Context> for Seen {
    fn from(ctx: &Context) -> Seen {
        Seen {
            instance_id: ctx.instance_id.clone(),
            definition_version: ctx.definition_version,
            now_ms: ctx.now_ms,
            seed: ctx.seed,
        }
    }
}

impl<const VERSION: u32> Definition for Probe<VERSION> {
    type Input = Value;
    type Data = Vec<Seen>;

    fn manifest() -> Manifest {
        let builder = Manifest::builder("probe", VERSION)
            .state("OPEN", "")
            .terminal("DONE", TerminalStatus::Completed, "")
            .initial("OPEN")
            .action("record", &["OPEN"], &["OPEN"], "")
            .action("refuse", &["OPEN"], &["OPEN"], "")
            .action("stray", &["OPEN"], &["OPEN"], "")
            .action("finish", &["OPEN"], &["DONE"], "");
        if VERSION == 2 { builder.migrates_from(1).build() } else { builder.build() }
    }

    fn init(ctx: &Context, _input: Value) -> Result<Transition<Vec<Seen>>, Rejection> {
        Ok(Transition::to("OPEN", vec![Seen::from(ctx)]).with_message("started"))
    }

    fn on_action(ctx: &Context, call: ActionCall<Vec<Seen>>) -> Result<Transition<Vec<Seen>>, Rejection> {
        let mut data = call.data;
        data.push(Seen::from(ctx));
        match call.action.as_str() {
            "refuse" => Err(Rejection::new("refused", ctx.seed.to_string())),
            "stray" => Ok(Transition::to("DONE", data)),
            "finish" => Ok(Transition::to("DONE", data)),
            _ => Ok(Transition::to("OPEN", data).with_message(call.action)),
        }
    }

    /// `data` is `{"to": STATE, "refuse": BOOL}`; the new data is the migration's context.
    fn migrate(
        ctx: &Context,
        _from_version: u32,
        _state: String,
        data: Value,
    ) -> Result<(String, Vec<Seen>), Rejection> {
        if data["refuse"] == true {
            return Err(Rejection::new("refused", "asked to"));
        }
        let to = data["to"].as_str().unwrap_or("OPEN");
        Ok((to.into(), vec![Seen::from(ctx)]))
    }
}

const ID: [u8; 16] =
    [0x01, 0x90, 0xb7, 0xa2, 0x3c, 0x4d, 0x7e, 0x5f, 0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b];
const ID_TEXT: &str = "0190b7a2-3c4d-7e5f-8a9b-0c1d2e3f4a5b";

fn seen(revision: i64, now_ms: i64) -> Seen {
    Seen { instance_id: ID_TEXT.into(), definition_version: 1, now_ms, seed: seed(&ID, revision) }
}

#[test]
fn calls_see_the_hosts_context() {
    let mut machine = Machine::<Probe<1>>::start_with(ID, 5_000, Value::Null).expect("starts");
    assert_eq!((machine.instance_id(), machine.revision()), (ID_TEXT, 1));
    assert_eq!(machine.data(), [seen(1, 5_000)]);
    machine.act("record", Value::Null).expect("record");
    assert_eq!(machine.data(), [seen(1, 5_000), seen(2, 6_000)], "the clock ticks after a transition");

    let default = Machine::<Probe<1>>::start(Value::Null).expect("starts");
    assert_eq!(default.instance_id(), "00000000-0000-7000-8000-000000000001");
    assert_eq!(default.data()[0].now_ms, DEFAULT_NOW_MS);
    assert_eq!(default.data()[0].seed, seed(&DEFAULT_INSTANCE_ID, 1));
}

#[test]
fn the_test_sets_the_clock() {
    let mut machine = Machine::<Probe<1>>::start_with(ID, 5_000, Value::Null).expect("starts");
    machine.set_now_ms(40_000);
    machine.act("record", Value::Null).expect("record");
    machine.advance_ms(250);
    assert_eq!(machine.now_ms(), 41_250);
    machine.act("record", Value::Null).expect("record");
    assert_eq!(machine.data(), [seen(1, 5_000), seen(2, 40_000), seen(3, 41_250)]);
}

#[test]
fn a_refused_call_changes_nothing() {
    let mut machine = Machine::<Probe<1>>::start_with(ID, 5_000, Value::Null).expect("starts");
    let refused = machine.act("refuse", Value::Null);
    // The refused call was made for revision 2, as on the host.
    let expected = Rejection::new("refused", seed(&ID, 2).to_string());
    assert_eq!(refused, Err(Refusal::Rejected(expected)));
    assert_eq!(machine.act("gone", Value::Null), Err(Refusal::UnknownAction("gone".into())));
    assert!(matches!(machine.act("stray", Value::Null), Err(Refusal::BadOutcome(_))));
    assert_eq!((machine.revision(), machine.now_ms(), machine.message()), (1, 6_000, Some("started")));

    machine.act("record", Value::Null).expect("record");
    assert_eq!(machine.data(), [seen(1, 5_000), seen(2, 6_000)], "no refusal used up revision 2");
    machine.act("finish", Value::Null).expect("finish");
    let not_allowed = machine.act("record", Value::Null);
    assert_eq!(
        not_allowed,
        Err(Refusal::NotAllowed { current_state: "DONE".into(), allowed_actions: Vec::new() })
    );
    assert_eq!((machine.revision(), machine.now_ms()), (3, 8_000));
}

/// A version 1 instance at revision 7 whose data asks `Probe<2>::migrate` for `to`.
fn v1_instance(state: &str, finished: bool, to: &str) -> Instance {
    Instance {
        instance_id: ID,
        definition_version: 1,
        revision: 7,
        state: state.into(),
        finished,
        data: json!({ "to": to }).to_string(),
        message: Some("kept".into()),
    }
}

#[test]
fn migrate_runs_the_target_version_with_the_hosts_checks() {
    let migrated =
        Machine::<Probe<2>>::migrate(&v1_instance("OPEN", false, "OPEN"), 90_000).expect("migrates");
    let context = Seen { definition_version: 2, ..seen(8, 90_000) };
    assert_eq!((migrated.state(), migrated.status(), migrated.data()), ("OPEN", None, vec![context]));
    assert_eq!((migrated.revision(), migrated.message(), migrated.now_ms()), (8, Some("kept"), 91_000));

    let finished =
        Machine::<Probe<2>>::migrate(&v1_instance("DONE", true, "DONE"), 90_000).expect("migrates");
    assert_eq!(finished.status(), Some(TerminalStatus::Completed), "a finished instance stays finished");
    for (state, finished, to) in [("DONE", true, "OPEN"), ("OPEN", false, "DONE")] {
        let refused = Machine::<Probe<2>>::migrate(&v1_instance(state, finished, to), 90_000);
        assert!(matches!(refused, Err(Refusal::BadOutcome(OutcomeError::NotATarget { .. }))), "{refused:?}");
    }
    let undeclared = Machine::<Probe<2>>::migrate(&v1_instance("OPEN", false, "LIMBO"), 90_000);
    assert_eq!(undeclared.map(drop), Err(Refusal::BadOutcome(OutcomeError::Undeclared("LIMBO".into()))));

    let mut asked = v1_instance("OPEN", false, "OPEN");
    asked.data = json!({ "refuse": true }).to_string();
    let refused = Machine::<Probe<2>>::migrate(&asked, 90_000).map(drop);
    assert_eq!(refused, Err(Refusal::Rejected(Rejection::new("refused", "asked to"))));
}

#[test]
fn migrate_needs_a_declared_path() {
    let path = |from_version, to_version| Err(Refusal::NoMigrationPath { from_version, to_version });
    let mut v2 = v1_instance("OPEN", false, "OPEN");
    v2.definition_version = 2;
    assert_eq!(Machine::<Probe<2>>::migrate(&v2, 0).map(drop), path(2, 2), "not to its own version");
    assert_eq!(Machine::<Probe<1>>::migrate(&v2, 0).map(drop), path(2, 1), "v1 declares no migration");
    v2.definition_version = 3;
    assert_eq!(Machine::<Probe<2>>::migrate(&v2, 0).map(drop), path(3, 2), "only from version 1");

    // A machine's own instance migrates like a stored one.
    let mut v1 = Machine::<Probe<1>>::start_with(ID, 5_000, Value::Null).expect("starts");
    v1.act("finish", Value::Null).expect("finish");
    let instance = Instance {
        instance_id: ID,
        definition_version: 1,
        revision: 2,
        state: "DONE".into(),
        finished: true,
        data: v1.data_json().into(),
        message: None,
    };
    assert_eq!(v1.instance(), instance);
    let refused = Machine::<Probe<2>>::migrate(&v1.instance(), 0);
    assert!(matches!(refused, Err(Refusal::BadOutcome(_))), "Probe<2> moves it to OPEN: {refused:?}");
}
