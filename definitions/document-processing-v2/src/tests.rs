use super::*;
use serde_json::json;
use switchyard_guest::testing::{DEFAULT_INSTANCE_ID, Instance, Machine, Refusal};

const URL: &str = "https://example.com/report.pdf";

/// Every declared action, in declaration order.
const ACTIONS: [&str; 8] = ["validate", "format", "submit", "approve", "reject", "fail", "retry", "cancel"];

type Path = &'static [&'static str];
type Moves = &'static [(&'static str, &'static str)];

/// Every state, the actions that reach it from the start, its terminal status and the
/// legal moves from it (in declaration order, as the harness lists allowed actions).
const STATES: &[(&str, Path, Option<TerminalStatus>, Moves)] = &[
    (UPLOADED, &[], None, &[("validate", VALIDATING), ("cancel", CANCELLED)]),
    (VALIDATING, &["validate"], None, &[("format", FORMATTING), ("fail", FAILED), ("cancel", CANCELLED)]),
    (
        FORMATTING,
        &["validate", "format"],
        None,
        &[("submit", REVIEWING), ("fail", FAILED), ("cancel", CANCELLED)],
    ),
    (
        REVIEWING,
        &["validate", "format", "submit"],
        None,
        &[("approve", PUBLISHED), ("reject", FORMATTING), ("cancel", CANCELLED)],
    ),
    (
        FORMATTING,
        &["validate", "format", "submit", "reject"],
        None,
        &[("submit", REVIEWING), ("fail", FAILED), ("cancel", CANCELLED)],
    ),
    (FAILED, &["validate", "fail"], None, &[("retry", VALIDATING), ("cancel", CANCELLED)]),
    (FAILED, &["validate", "format", "fail"], None, &[("retry", FORMATTING), ("cancel", CANCELLED)]),
    (PUBLISHED, &["validate", "format", "submit", "approve"], Some(TerminalStatus::Completed), &[]),
    (CANCELLED, &["cancel"], Some(TerminalStatus::Cancelled), &[]),
];

#[derive(Debug)]
enum Expect<'a> {
    /// Accepted, moving to this state.
    To(&'a str),
    /// Refused by the definition with this code.
    Rejected(&'a str),
    /// Refused by the harness as illegal here; these are the legal actions.
    NotAllowed(&'a [&'a str]),
    /// Refused by the harness as not declared.
    Unknown,
}

/// A payload each action accepts.
fn payload_for(action: &str) -> Value {
    match action {
        "fail" => json!({"reason": "broken link"}),
        "reject" => json!({"reason": "typo on page 2"}),
        "approve" => json!({"reviewer": "alice"}),
        _ => Value::Null,
    }
}

fn walk(path: &[&str]) -> Machine<DocumentProcessingV2> {
    let mut machine =
        Machine::start(json!({ "document_url": URL })).expect("a valid input starts an instance");
    for &action in path {
        if let Err(refusal) = machine.act(action, payload_for(action)) {
            panic!("{path:?}: {action} was refused: {refusal:?}");
        }
    }
    machine
}

/// Walks `path`, then triggers `action` with `payload` and checks the outcome. An accepted
/// action must leave a message and a log entry; a refused one must change nothing.
fn check(path: &[&str], action: &str, payload: Value, expect: Expect<'_>) -> Machine<DocumentProcessingV2> {
    let mut machine = walk(path);
    let (state, data, revision) = (machine.state().to_owned(), machine.data(), machine.revision());
    let result = machine.act(action, payload);
    let what = format!("{path:?} then {action}");
    match expect {
        Expect::To(to) => {
            assert_eq!(result, Ok(()), "{what}");
            assert_eq!(machine.state(), to, "{what}");
            assert!(machine.message().is_some_and(|message| !message.is_empty()), "{what}: no message");
            let step = machine.data().steps.pop().expect("the action is logged");
            assert_eq!(
                (step.action.as_str(), step.from.as_str(), step.to.as_str()),
                (action, state.as_str(), to)
            );
        }
        Expect::Rejected(code) => {
            assert!(
                matches!(&result, Err(Refusal::Rejected(rejection)) if rejection.code == code),
                "{what}: {result:?}"
            );
        }
        Expect::NotAllowed(allowed) => {
            let allowed_actions = allowed.iter().map(|&name| name.into()).collect();
            assert_eq!(
                result,
                Err(Refusal::NotAllowed { current_state: state.clone(), allowed_actions }),
                "{what}"
            );
        }
        Expect::Unknown => assert_eq!(result, Err(Refusal::UnknownAction(action.into())), "{what}"),
    }
    if result.is_err() {
        assert_eq!(
            (machine.state(), machine.data(), machine.revision()),
            (state.as_str(), data, revision),
            "{what}: a refusal changed the instance"
        );
    }
    machine
}

fn actions_of(data: &Data) -> Vec<&str> {
    data.steps.iter().map(|step| step.action.as_str()).collect()
}

#[test]
fn manifest_declares_the_workflow() {
    let manifest = DocumentProcessingV2::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!((manifest.name.as_str(), manifest.version), ("document-processing", 2));
    assert_eq!(manifest.migrates_from, [1]);
    assert_eq!(manifest.initial_state, UPLOADED);
    let states: Vec<_> = manifest.states.iter().map(|state| (state.name.as_str(), state.terminal)).collect();
    let (completed, cancelled) = (Some(TerminalStatus::Completed), Some(TerminalStatus::Cancelled));
    assert_eq!(
        states,
        [
            (UPLOADED, None),
            (VALIDATING, None),
            (FORMATTING, None),
            (REVIEWING, None),
            (PUBLISHED, completed),
            (FAILED, None),
            (CANCELLED, cancelled)
        ]
    );
    assert!(
        states.iter().all(|&(name, _)| STATES.iter().any(|row| row.0 == name)),
        "the table covers every state"
    );
    assert!(manifest.states.iter().all(|state| !state.description.is_empty()));
    let actions: Vec<_> =
        manifest.actions.iter().map(|action| (action.name.as_str(), action.admin_only)).collect();
    let expected: Vec<_> = ACTIONS.iter().map(|&name| (name, name == "cancel")).collect();
    assert_eq!(actions, expected, "only cancel is admin-only");
    let targets: Vec<_> = manifest.actions.iter().map(|action| action.to.join(" ")).collect();
    let both = format!("{VALIDATING} {FORMATTING}");
    assert_eq!(targets, [VALIDATING, FORMATTING, REVIEWING, PUBLISHED, FORMATTING, FAILED, &both, CANCELLED]);
}

#[test]
fn every_action_in_every_state() {
    for &(state, path, status, moves) in STATES {
        let machine = walk(path);
        assert_eq!((machine.state(), machine.status()), (state, status), "{path:?}");
        let allowed: Vec<&str> = moves.iter().map(|&(action, _)| action).collect();
        for action in ACTIONS {
            let expect = match moves.iter().find(|&&(legal, _)| legal == action) {
                Some(&(_, to)) => Expect::To(to),
                None => Expect::NotAllowed(&allowed),
            };
            check(path, action, payload_for(action), expect);
        }
        for gone in ["publish", "delete"] {
            check(path, gone, Value::Null, Expect::Unknown);
        }
    }
}

#[test]
fn happy_path_goes_through_review() {
    let machine = check(
        &["validate", "format", "submit"],
        "approve",
        json!({"reviewer": " alice "}),
        Expect::To(PUBLISHED),
    );
    assert_eq!(machine.status(), Some(TerminalStatus::Completed));
    assert_eq!(machine.message(), Some("Approved by alice; document published"));
    let data = machine.data();
    assert_eq!(data.document, Document { url: URL.into() });
    assert_eq!(
        (data.attempts, data.rejections, data.reviewer.as_deref(), &data.failure),
        (0, 0, Some("alice"), &None)
    );
    assert_eq!(actions_of(&data), ["validate", "format", "submit", "approve"]);
    assert_eq!(data.steps.last().and_then(|step| step.detail.as_deref()), Some("alice"));
    assert!(data.steps.windows(2).all(|pair| pair[0].at_ms < pair[1].at_ms), "steps carry the host's clock");
}

#[test]
fn reject_loops_back_to_formatting_and_counts() {
    let mut machine = walk(&["validate", "format"]);
    for rejections in 1..=3 {
        machine.act("submit", Value::Null).expect("submit");
        machine.act("reject", json!({"reason": format!(" round {rejections} ")})).expect("reject");
        assert_eq!(machine.state(), FORMATTING);
        assert_eq!(
            machine.message(),
            Some(format!("Rejected in review (rejection {rejections}): round {rejections}").as_str())
        );
        let data = machine.data();
        assert_eq!((data.rejections, data.reviewer), (rejections, None));
        let detail = data.steps.last().and_then(|step| step.detail.clone());
        assert_eq!(detail, Some(format!("round {rejections}")));
    }
    // Formatting can still fail after a rejection, and a retry keeps the rejection count.
    for action in ["fail", "retry", "submit", "approve"] {
        machine.act(action, payload_for(action)).expect(action);
    }
    let data = machine.data();
    assert_eq!((machine.state(), data.rejections, data.attempts), (PUBLISHED, 3, 1));
    assert_eq!(data.reviewer.as_deref(), Some("alice"));
}

#[test]
fn review_payloads_are_required() {
    // (path, action, its required field)
    let cases: [(&[&str], &str, &str); 4] = [
        (&["validate", "format", "submit"], "approve", "reviewer"),
        (&["validate", "format", "submit"], "reject", "reason"),
        (&["validate"], "fail", "reason"),
        (&["validate", "format"], "fail", "reason"),
    ];
    for (path, action, field) in cases {
        let required = format!("{field}_required");
        for payload in
            [json!(null), json!({}), json!({field: null}), json!({field: ""}), json!({field: " \t"})]
        {
            check(path, action, payload, Expect::Rejected(&required));
        }
        // The other action's field does not count.
        let other = if field == "reason" { "reviewer" } else { "reason" };
        check(path, action, json!({other: "alice"}), Expect::Rejected(&required));
        for payload in [json!({field: 42}), json!({field: ["x"]}), json!("alice"), json!([1])] {
            check(path, action, payload, Expect::Rejected("invalid_payload"));
        }
    }
}

#[test]
fn fail_records_the_stage_and_reason() {
    for (path, stage) in [
        (&["validate"][..], Stage::Validating),
        (&["validate", "format", "submit", "reject"][..], Stage::Formatting),
    ] {
        let machine = check(path, "fail", json!({"reason": "  bad font "}), Expect::To(FAILED));
        let data = machine.data();
        assert_eq!(data.failure, Some(Failure { stage, reason: "bad font".into() }));
        assert_eq!(data.steps.last().and_then(|step| step.detail.as_deref()), Some("bad font"));
    }
}

#[test]
fn retry_returns_to_the_stage_that_failed() {
    // (path, then retry goes to, attempts counted so far)
    let cases: [(&[&str], &str, u32); 4] = [
        (&["validate", "fail"], VALIDATING, 1),
        (&["validate", "format", "fail"], FORMATTING, 1),
        (&["validate", "fail", "retry", "fail"], VALIDATING, 2),
        (&["validate", "fail", "retry", "format", "submit", "reject", "fail"], FORMATTING, 2),
    ];
    for (path, to, attempts) in cases {
        let data = check(path, "retry", Value::Null, Expect::To(to)).data();
        assert_eq!((data.attempts, data.failure), (attempts, None), "{path:?}");
    }
}

#[test]
fn cancel_from_every_non_terminal_state() {
    for &(_, path, _, _) in STATES.iter().filter(|row| row.2.is_none()) {
        let machine = check(path, "cancel", Value::Null, Expect::To(CANCELLED));
        assert_eq!(machine.status(), Some(TerminalStatus::Cancelled));
        let data = machine.data();
        assert_eq!(data.failure, None, "{path:?}: a cancelled document has no pending failure");
        assert_eq!(data.steps.last().map(|step| step.detail.clone()), Some(None));

        let machine = check(path, "cancel", json!({"reason": " duplicate upload "}), Expect::To(CANCELLED));
        assert_eq!(machine.message(), Some("Cancelled: duplicate upload"));
        let detail = machine.data().steps.pop().and_then(|step| step.detail);
        assert_eq!(detail.as_deref(), Some("duplicate upload"));

        check(path, "cancel", json!({"reason": 7}), Expect::Rejected("invalid_payload"));
        check(path, "cancel", json!("duplicate"), Expect::Rejected("invalid_payload"));
    }
}

#[test]
fn cancel_from_reviewing() {
    let machine = check(
        &["validate", "format", "submit", "reject", "submit"],
        "cancel",
        json!({"reason": "withdrawn"}),
        Expect::To(CANCELLED),
    );
    let data = machine.data();
    assert_eq!((data.rejections, data.reviewer, data.failure), (1, None, None));
    let last = data.steps.last().expect("logged");
    assert_eq!((last.from.as_str(), last.detail.as_deref()), (REVIEWING, Some("withdrawn")));
}

#[test]
fn bad_inputs_are_rejected() {
    let inputs = [
        json!({}),
        json!({"url": URL}),
        json!({"document": {"url": URL}}),
        json!({"document_url": null}),
        json!({"document_url": 5}),
        json!({"document_url": [URL]}),
        json!({"document_url": ""}),
        json!({"document_url": " \n\t"}),
        json!(null),
        json!(URL),
    ];
    for input in inputs {
        let result = Machine::<DocumentProcessingV2>::start(input.clone());
        assert!(
            matches!(&result, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {result:?}"
        );
    }
    let machine = Machine::<DocumentProcessingV2>::start(json!({"document_url": format!("  {URL}\n")}))
        .expect("surrounding whitespace is tolerated");
    assert_eq!(
        (machine.state(), machine.status(), machine.message()),
        (UPLOADED, None, Some("Document uploaded"))
    );
    let expected = json!({
        "document": {"url": URL}, "attempts": 0, "rejections": 0, "reviewer": null, "failure": null, "steps": []
    });
    assert_eq!(serde_json::to_value(machine.data()).expect("data serializes"), expected);
}

#[test]
fn refuses_calls_the_host_never_makes() {
    let data = walk(&[]).data();
    let cases = [
        (UPLOADED, "fail", "not_allowed"),
        (REVIEWING, "fail", "not_allowed"),
        (FORMATTING, "approve", "not_allowed"),
        (FORMATTING, "publish", "not_allowed"),
        (PUBLISHED, "approve", "not_allowed"),
        (PUBLISHED, "cancel", "not_allowed"),
        (CANCELLED, "cancel", "not_allowed"),
        (FAILED, "retry", "invalid_data"),
    ];
    for (state, action, code) in cases {
        let call = ActionCall {
            state: state.into(),
            data: data.clone(),
            action: action.into(),
            payload: payload_for(action),
        };
        let result = DocumentProcessingV2::on_action(&ctx(), call).map_err(|rejection| rejection.code);
        assert_eq!(result, Err(code.into()), "{action} in {state}");
    }
}

// --- migration from version 1 ----------------------------------------------------------

const MIGRATED_AT: i64 = 1_800_000_000_000;

/// The revision of the version 1 instances migrated below.
const V1_REVISION: i64 = 4;

const V1_MESSAGE: &str = "left by version 1";

fn ctx() -> Context {
    Context {
        instance_id: "00000000-0000-7000-8000-000000000001".into(),
        definition_version: 2,
        now_ms: MIGRATED_AT,
        seed: 42,
    }
}

/// A version 1 instance in `state` with `data`, as the host stores it.
fn v1_instance(state: &str, data: Value) -> Instance {
    Instance {
        instance_id: DEFAULT_INSTANCE_ID,
        definition_version: 1,
        revision: V1_REVISION,
        state: state.into(),
        // Version 1's terminal states.
        finished: [PUBLISHED, CANCELLED].contains(&state),
        data: data.to_string(),
        message: Some(V1_MESSAGE.into()),
    }
}

/// Migrates a version 1 instance as an admin does on the host, at `MIGRATED_AT`.
fn migrate(state: &str, data: Value) -> Result<Machine<DocumentProcessingV2>, Refusal> {
    Machine::migrate(&v1_instance(state, data), MIGRATED_AT)
}

/// What `migrate` refused with; any other outcome fails the test.
fn rejection(state: &str, data: Value) -> Rejection {
    match migrate(state, data.clone()) {
        Err(Refusal::Rejected(rejection)) => rejection,
        other => panic!("{state} with {data}: {other:?}"),
    }
}

/// The code `migrate` refuses with, or the state it accepted with.
fn migrate_code(state: &str, data: Value) -> Result<String, String> {
    match migrate(state, data.clone()) {
        Ok(machine) => Ok(machine.state().into()),
        Err(_) => Err(rejection(state, data).code),
    }
}

/// Calls `migrate` without the host's checks, as the host never does.
fn migrate_unchecked(from_version: u32, state: &str, data: Value) -> Result<String, String> {
    DocumentProcessingV2::migrate(&ctx(), from_version, state.into(), data)
        .map(|(state, _)| state)
        .map_err(|rejection| rejection.code)
}

/// Version 1 data with no steps and this `failure` (`null` for none).
fn v1_data(failure: Value) -> Value {
    json!({"document_url": URL, "retries": 1, "failure": failure, "steps": []})
}

fn v1_failure(stage: &str) -> Value {
    json!({"stage": stage, "reason": "timeout"})
}

/// The `migrate` step that ends every migrated log.
fn migrate_step(state: &str) -> Step {
    Step {
        action: "migrate".into(),
        from: state.into(),
        to: state.into(),
        at_ms: MIGRATED_AT,
        detail: Some("from version 1 to version 2".into()),
    }
}

#[test]
fn migrate_keeps_every_v1_state_but_failed() {
    // (version 1 state, terminal in version 1)
    let cases =
        [(UPLOADED, false), (VALIDATING, false), (FORMATTING, false), (PUBLISHED, true), (CANCELLED, true)];
    for (state, from_terminal) in cases {
        let machine = migrate(state, v1_data(Value::Null)).unwrap_or_else(|err| panic!("{state}: {err:?}"));
        assert_eq!(machine.state(), state);
        assert_eq!(machine.status().is_some(), from_terminal, "{state}: finished exactly when it was");
        assert_eq!(
            (machine.revision(), machine.message()),
            (V1_REVISION + 1, Some(V1_MESSAGE)),
            "{state}: a new revision; the message is kept"
        );
        let data = machine.data();
        assert_eq!(data.failure, None, "{state}");
        assert_eq!(data.steps, [migrate_step(state)], "{state}");
    }
}

#[test]
fn migrate_refuses_failed_instances() {
    let v2_shaped = serde_json::to_value(walk(&[]).data()).expect("data serializes");
    let mut empty_url = v1_data(v1_failure(VALIDATING));
    empty_url["document_url"] = json!(" ");
    // Refused whatever the data: well-formed, inconsistent or not version 1 data at all.
    let cases = [
        v1_data(v1_failure(VALIDATING)),
        v1_data(v1_failure(FORMATTING)),
        v1_data(Value::Null),
        v1_data(json!({"reason": "timeout"})),
        v1_data(json!({"stage": null, "reason": "timeout"})),
        v1_data(json!({"stage": FORMATTING})),
        v1_data(v1_failure(REVIEWING)),
        empty_url,
        v2_shaped,
        json!(null),
    ];
    for data in cases {
        let rejection = rejection(FAILED, data.clone());
        assert_eq!(rejection.code, "failed_on_v1", "{data}");
        assert!(rejection.reason.contains("version 1"), "{data}: {}", rejection.reason);
    }
}

#[test]
fn migrate_converts_the_data() {
    // (action, from, to, reason) of a version 1 instance that failed twice and was retried twice.
    let log = [
        ("validate", UPLOADED, VALIDATING, None),
        ("fail", VALIDATING, FAILED, Some("timeout")),
        ("retry", FAILED, VALIDATING, None),
        ("format", VALIDATING, FORMATTING, None),
        ("fail", FORMATTING, FAILED, Some("bad font")),
        ("retry", FAILED, FORMATTING, None),
    ];
    let at = |idx: usize| 1_000 * (idx as i64 + 1);
    let v1_steps: Vec<Value> = log
        .iter()
        .enumerate()
        .map(|(idx, &(action, from, to, reason))| {
            json!({"action": action, "from": from, "to": to, "at_ms": at(idx), "reason": reason})
        })
        .collect();
    let old = json!({
        "document_url": URL,
        "retries": 2,
        "failure": null,
        "steps": v1_steps,
    });

    let machine = migrate(FORMATTING, old).expect("migrates");
    assert_eq!(machine.state(), FORMATTING);
    let mut steps: Vec<Step> = log
        .iter()
        .enumerate()
        .map(|(idx, &(action, from, to, reason))| Step {
            action: action.into(),
            from: from.into(),
            to: to.into(),
            at_ms: at(idx),
            detail: reason.map(Into::into),
        })
        .collect();
    steps.push(migrate_step(FORMATTING));
    let expected = Data {
        document: Document { url: URL.into() },
        attempts: 2,
        rejections: 0,
        reviewer: None,
        failure: None,
        steps,
    };
    assert_eq!(machine.data(), expected);

    let document: Value = serde_json::from_str(machine.data_json()).expect("the stored data is JSON");
    assert_eq!(document["document"], json!({"url": URL}));
    assert_eq!(
        (&document["attempts"], &document["rejections"], &document["reviewer"]),
        (&json!(2), &json!(0), &Value::Null)
    );
    assert_eq!(document["failure"], Value::Null);
    assert_eq!(document["steps"][1]["detail"], "timeout");
    assert!(document.get("document_url").is_none() && document.get("retries").is_none());
}

#[test]
fn migrated_instances_carry_on_under_v2() {
    // (version 1 state, version 2 actions, where they lead, attempts then counted)
    let cases: [(&str, &[&str], &str, u32); 5] = [
        (UPLOADED, &["validate"], VALIDATING, 1),
        (VALIDATING, &["format"], FORMATTING, 1),
        (FORMATTING, &["submit"], REVIEWING, 1),
        (FORMATTING, &["submit", "approve"], PUBLISHED, 1),
        (VALIDATING, &["fail", "retry"], VALIDATING, 2),
    ];
    for (from, actions, to, attempts) in cases {
        let mut machine = migrate(from, v1_data(Value::Null)).expect("migrates");
        for &action in actions {
            if let Err(refusal) = machine.act(action, payload_for(action)) {
                panic!("{action} after migrating from {from}: {refusal:?}");
            }
        }
        assert_eq!(machine.state(), to, "{actions:?} from {from}");
        let data = machine.data();
        assert_eq!(actions_of(&data)[1..], *actions, "{from}");
        assert_eq!((data.attempts, data.failure), (attempts, None), "retries carry on counting");
    }
}

#[test]
fn migrate_refuses_other_versions() {
    for from_version in [0, 2, 3, 99] {
        for state in [UPLOADED, FAILED] {
            // The host does not even ask: version 2 declares a migration from version 1 only.
            let mut instance = v1_instance(state, v1_data(Value::Null));
            instance.definition_version = from_version;
            let refused = Machine::<DocumentProcessingV2>::migrate(&instance, MIGRATED_AT).map(drop);
            let no_path = Refusal::NoMigrationPath { from_version, to_version: 2 };
            assert_eq!(refused, Err(no_path), "{state} from version {from_version}");
            // Were it asked, the definition would refuse as well.
            let code = migrate_unchecked(from_version, state, v1_data(Value::Null));
            assert_eq!(code, Err("no_migration".into()), "{state} from version {from_version}");
        }
    }
    assert_eq!(migrate_unchecked(3, "NOWHERE", json!(null)), Err("no_migration".into()), "checked first");
}

#[test]
fn migrate_refuses_unknown_states() {
    for state in [REVIEWING, "ARCHIVED", "uploaded", " UPLOADED", ""] {
        let code = migrate_code(state, v1_data(Value::Null));
        assert_eq!(code, Err("unknown_state".into()), "{state:?}");
    }
    assert_eq!(migrate_code("ARCHIVED", json!(null)), Err("unknown_state".into()), "checked before the data");
}

#[test]
fn migrate_refuses_bad_data() {
    let with = |field: &str, value: Value| {
        let mut data = v1_data(Value::Null);
        data[field] = value;
        data
    };
    let without = |field: &str| {
        let mut data = v1_data(Value::Null);
        data.as_object_mut().expect("an object").remove(field);
        data
    };
    let v2_shaped = serde_json::to_value(walk(&[]).data()).expect("data serializes");
    let cases = [
        // Version 1 could not have written these.
        (FORMATTING, v1_data(v1_failure(FORMATTING)), "inconsistent_data"),
        (VALIDATING, v1_data(v1_failure(VALIDATING)), "inconsistent_data"),
        (CANCELLED, v1_data(v1_failure(VALIDATING)), "inconsistent_data"),
        (UPLOADED, with("document_url", json!(" ")), "inconsistent_data"),
        // Not version 1 data at all.
        (UPLOADED, json!(null), "invalid_data"),
        (UPLOADED, json!([]), "invalid_data"),
        (UPLOADED, v2_shaped, "invalid_data"),
        (UPLOADED, without("document_url"), "invalid_data"),
        (UPLOADED, without("steps"), "invalid_data"),
        (UPLOADED, with("retries", json!(-1)), "invalid_data"),
        (UPLOADED, with("extra", json!(true)), "invalid_data"),
        (FORMATTING, v1_data(v1_failure(REVIEWING)), "invalid_data"),
        (FORMATTING, v1_data(json!({"stage": FORMATTING})), "invalid_data"),
        (FORMATTING, v1_data(json!({"reason": "timeout"})), "invalid_data"),
        (UPLOADED, with("steps", json!([{"action": "validate"}])), "invalid_data"),
    ];
    for (state, data, code) in cases {
        let result = migrate_code(state, data.clone());
        assert_eq!(result, Err(code.into()), "{state} with {data}");
    }
}
