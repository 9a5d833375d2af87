use super::*;
use serde_json::Value;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

fn start() -> Machine<OrderPayment> {
    Machine::start(json!({ "order_id": "O-1", "amount": 1200, "items": [] })).expect("a payment starts")
}

#[test]
fn a_payment_captures_and_completes_with_the_payment_id() {
    let mut payment = start();
    assert_eq!(payment.state(), CAPTURING);
    let [Effect::Task(task)] = payment.effects() else { panic!("one task: {:?}", payment.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), (CAPTURE, "payments.capture"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(input, json!({ "order_id": "O-1", "amount": 1200 }), "the amount is passed as sent");

    payment.task_succeeded(CAPTURE, json!({ "payment_id": "P-7" })).expect("taken");
    assert_eq!(payment.state(), COMPLETED);
    assert_eq!(payment.status(), Some(TerminalStatus::Completed));
    let data = payment.data();
    assert_eq!(data.payment_id.as_deref(), Some("P-7"));
    assert_eq!((data.failure, data.error, data.outcome_unknown), (None, None, false));
    assert!(payment.effects().is_empty() && payment.open_effects().is_empty());
}

#[test]
fn a_failed_capture_fails_with_the_reason() {
    for kind in [
        FailureKind::Http,
        FailureKind::Timeout,
        FailureKind::Unreachable,
        FailureKind::Exhausted,
        FailureKind::Unbound,
    ] {
        let mut payment = start();
        payment.task_failed(CAPTURE, kind).expect("taken");
        assert_eq!(payment.status(), Some(TerminalStatus::Failed), "{kind:?}");
        let data = payment.data();
        assert_eq!(data.payment_id, None);
        assert!(data.failure.is_some_and(|failure| failure.starts_with("the payment could not be captured")));
        assert_eq!(data.error.map(|error| error.kind), Some(kind));
        assert_eq!(data.outcome_unknown, kind == FailureKind::Timeout, "only a timeout may have acted");
        assert!(payment.effects().is_empty());
    }
}

#[test]
fn a_decline_keeps_the_status() {
    let mut payment = start();
    let error =
        TaskError { kind: FailureKind::Http, status: Some(402), body: Some("declined".into()), attempts: 1 };
    payment.deliver(Received::TaskFailed { key: CAPTURE.into(), error: error.clone() }).expect("taken");
    let data = payment.data();
    assert_eq!(
        data.failure.as_deref(),
        Some("the payment could not be captured (refused, HTTP 402, after 1 attempts)")
    );
    assert_eq!(data.error, Some(error));
}

#[test]
fn an_answer_without_a_payment_id_fails_with_the_outcome_unknown() {
    let mut payment = start();
    payment.task_succeeded(CAPTURE, json!({ "payment_id": "" })).expect("taken");
    assert_eq!(payment.state(), FAILED);
    assert!(payment.data().outcome_unknown);
}

#[test]
fn bad_input_is_refused() {
    for input in [
        json!({ "order_id": " ", "amount": 10 }),
        json!({ "order_id": "O-1", "amount": 0 }),
        json!({ "order_id": "O-1", "amount": -5.5 }),
        json!({ "order_id": "O-1", "amount": "10" }),
        json!({ "order_id": "O-1" }),
    ] {
        let refused = Machine::<OrderPayment>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}

#[test]
fn other_events_are_refused() {
    let mut payment = start();
    let external = payment.deliver(Received::External {
        name: "payment.settled".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert!(matches!(external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"));
    assert_eq!(payment.task_succeeded("refund", json!({})), Err(Refusal::NoOpenEffect("refund".into())));
    assert_eq!(payment.state(), CAPTURING, "nothing changed");
}

#[test]
fn an_admin_may_cancel_but_not_force_complete() {
    let mut payment = start();
    let refused = payment.admin_override(OverrideKind::ForceComplete, "looks paid");
    assert!(
        matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "cannot_force_complete")
    );
    payment.admin_override(OverrideKind::Cancel, "order withdrawn").expect("cancelled");
    assert_eq!(payment.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(payment.message(), Some("cancelled by an admin: order withdrawn"));
    assert_eq!(payment.task_succeeded(CAPTURE, json!({ "payment_id": "P-7" })), Err(Refusal::Finished));
}
