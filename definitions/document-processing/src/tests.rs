use super::*;
use serde_json::json;
use switchyard_guest::testing::{Machine, Refusal};

const URL: &str = "https://example.com/report.pdf";

/// Every declared action, in declaration order.
const ACTIONS: [&str; 6] = ["validate", "format", "publish", "fail", "retry", "cancel"];

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
        &[("publish", PUBLISHED), ("fail", FAILED), ("cancel", CANCELLED)],
    ),
    (FAILED, &["validate", "fail"], None, &[("retry", VALIDATING), ("cancel", CANCELLED)]),
    (FAILED, &["validate", "format", "fail"], None, &[("retry", FORMATTING), ("cancel", CANCELLED)]),
    (PUBLISHED, &["validate", "format", "publish"], Some(TerminalStatus::Completed), &[]),
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

fn payload_for(action: &str) -> Value {
    if action == "fail" { json!({"reason": "broken link"}) } else { Value::Null }
}

fn walk(path: &[&str]) -> Machine<DocumentProcessing> {
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
fn check(path: &[&str], action: &str, payload: Value, expect: Expect<'_>) -> Machine<DocumentProcessing> {
    let mut machine = walk(path);
    let (state, data) = (machine.state().to_owned(), machine.data());
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
            (machine.state(), machine.data()),
            (state.as_str(), data),
            "{what}: a refusal changed the instance"
        );
    }
    machine
}

#[test]
fn manifest_declares_the_workflow() {
    let manifest = DocumentProcessing::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!((manifest.name.as_str(), manifest.version), ("document-processing", 1));
    assert_eq!(manifest.initial_state, UPLOADED);
    let states: Vec<_> = manifest.states.iter().map(|state| (state.name.as_str(), state.terminal)).collect();
    let (completed, cancelled) = (Some(TerminalStatus::Completed), Some(TerminalStatus::Cancelled));
    assert_eq!(
        states,
        [
            (UPLOADED, None),
            (VALIDATING, None),
            (FORMATTING, None),
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
    assert_eq!(targets, [VALIDATING, FORMATTING, PUBLISHED, FAILED, &both, CANCELLED]);
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
        check(path, "delete", Value::Null, Expect::Unknown);
    }
}

#[test]
fn happy_path_publishes() {
    let machine = check(&["validate", "format"], "publish", Value::Null, Expect::To(PUBLISHED));
    assert_eq!(machine.status(), Some(TerminalStatus::Completed));
    assert_eq!(machine.message(), Some("Document published"));
    let data = machine.data();
    assert_eq!((data.document_url.as_str(), data.retries, &data.failure), (URL, 0, &None));
    let actions: Vec<_> = data.steps.iter().map(|step| step.action.as_str()).collect();
    assert_eq!(actions, ["validate", "format", "publish"]);
    assert!(data.steps.windows(2).all(|pair| pair[0].at_ms < pair[1].at_ms), "steps carry the host's clock");
}

#[test]
fn fail_records_the_stage_and_reason() {
    for (path, stage) in
        [(&["validate"][..], Stage::Validating), (&["validate", "format"][..], Stage::Formatting)]
    {
        let machine = check(path, "fail", json!({"reason": "  bad font "}), Expect::To(FAILED));
        let data = machine.data();
        assert_eq!(data.failure, Some(Failure { stage, reason: "bad font".into() }));
        assert_eq!(data.steps.last().and_then(|step| step.reason.as_deref()), Some("bad font"));
        let document = serde_json::to_value(&data).expect("data serializes");
        assert_eq!(document["failure"], json!({"stage": stage.state(), "reason": "bad font"}));
    }
}

#[test]
fn fail_needs_a_reason() {
    for path in [&["validate"][..], &["validate", "format"]] {
        for payload in
            [json!(null), json!({}), json!({"reason": null}), json!({"reason": ""}), json!({"reason": " \t"})]
        {
            check(path, "fail", payload, Expect::Rejected("reason_required"));
        }
        for payload in [json!({"reason": 42}), json!({"reason": ["x"]}), json!("disk full"), json!([1])] {
            check(path, "fail", payload, Expect::Rejected("invalid_payload"));
        }
    }
}

#[test]
fn retry_returns_to_the_stage_that_failed() {
    // (path, then retry goes to, retries counted so far)
    let cases: [(&[&str], &str, u32); 5] = [
        (&["validate", "fail"], VALIDATING, 1),
        (&["validate", "format", "fail"], FORMATTING, 1),
        (&["validate", "fail", "retry", "fail"], VALIDATING, 2),
        (&["validate", "format", "fail", "retry", "fail"], FORMATTING, 2),
        (&["validate", "fail", "retry", "format", "fail"], FORMATTING, 2),
    ];
    for (path, to, retries) in cases {
        let data = check(path, "retry", Value::Null, Expect::To(to)).data();
        assert_eq!((data.retries, data.failure), (retries, None), "{path:?}");
    }
    let machine = check(
        &["validate", "fail", "retry", "format", "fail", "retry"],
        "publish",
        Value::Null,
        Expect::To(PUBLISHED),
    );
    assert_eq!((machine.status(), machine.data().retries), (Some(TerminalStatus::Completed), 2));
}

#[test]
fn cancel_from_every_non_terminal_state() {
    for &(_, path, _, _) in STATES.iter().filter(|row| row.2.is_none()) {
        let machine = check(path, "cancel", Value::Null, Expect::To(CANCELLED));
        assert_eq!(machine.status(), Some(TerminalStatus::Cancelled));
        let data = machine.data();
        assert_eq!(data.failure, None, "{path:?}: a cancelled document has no pending failure");
        assert_eq!(data.steps.last().map(|step| step.reason.clone()), Some(None));

        let machine = check(path, "cancel", json!({"reason": " duplicate upload "}), Expect::To(CANCELLED));
        assert_eq!(machine.message(), Some("Cancelled: duplicate upload"));
        let reason = machine.data().steps.pop().and_then(|step| step.reason);
        assert_eq!(reason.as_deref(), Some("duplicate upload"));

        check(path, "cancel", json!({"reason": 7}), Expect::Rejected("invalid_payload"));
        check(path, "cancel", json!("duplicate"), Expect::Rejected("invalid_payload"));
    }
}

#[test]
fn bad_inputs_are_rejected() {
    let inputs = [
        json!({}),
        json!({"url": URL}),
        json!({"document_url": null}),
        json!({"document_url": 5}),
        json!({"document_url": [URL]}),
        json!({"document_url": ""}),
        json!({"document_url": " \n\t"}),
        json!(null),
        json!(URL),
    ];
    for input in inputs {
        let result = Machine::<DocumentProcessing>::start(input.clone());
        assert!(
            matches!(&result, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {result:?}"
        );
    }
    let machine = Machine::<DocumentProcessing>::start(json!({"document_url": format!("  {URL}\n")}))
        .expect("surrounding whitespace is tolerated");
    assert_eq!(
        (machine.state(), machine.status(), machine.message()),
        (UPLOADED, None, Some("Document uploaded"))
    );
    assert_eq!(
        machine.data(),
        Data { document_url: URL.into(), retries: 0, failure: None, steps: Vec::new() }
    );
}

#[test]
fn refuses_calls_the_host_never_makes() {
    let ctx = Context { instance_id: "test".into(), definition_version: 1, now_ms: 0, seed: 0 };
    let data = Data { document_url: URL.into(), retries: 0, failure: None, steps: Vec::new() };
    let call = |state: &str, action: &str| ActionCall {
        state: state.into(),
        data: data.clone(),
        action: action.into(),
        payload: payload_for(action),
    };
    let code = |call| DocumentProcessing::on_action(&ctx, call).map_err(|rejection| rejection.code);
    assert_eq!(code(call(UPLOADED, "fail")), Err("not_allowed".into()));
    assert_eq!(code(call(PUBLISHED, "publish")), Err("not_allowed".into()));
    assert_eq!(code(call(FAILED, "retry")), Err("invalid_data".into()), "FAILED without a failure");
}
