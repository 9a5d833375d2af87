//! What is `order-payment`'s own: its task, input, id and texts. The behaviour it shares
//! with every single-task definition is tested in `switchyard_guest::single_task`.

use super::*;
use serde_json::{Value, json};
use switchyard_guest::abi::Effect;
use switchyard_guest::testing::{Machine, Refusal};

fn start() -> Machine<OrderPayment> {
    Machine::start(json!({ "order_id": " O-1 ", "amount": 1200, "items": [] })).expect("a payment starts")
}

fn data_json(payment: &Machine<OrderPayment>) -> Value {
    serde_json::from_str(payment.data_json()).expect("data is JSON")
}

#[test]
fn a_payment_captures_and_completes_with_the_payment_id() {
    let mut payment = start();
    assert_eq!((payment.state(), payment.message()), ("CAPTURING", Some("Capturing the payment")));
    let [Effect::Task(task)] = payment.effects() else { panic!("one task: {:?}", payment.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), ("capture", "payments.capture"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(input, json!({ "order_id": "O-1", "amount": 1200 }), "the amount is passed as sent");

    payment.task_succeeded("capture", json!({ "payment_id": "P-7" })).expect("taken");
    assert_eq!((payment.state(), payment.status()), ("COMPLETED", Some(TerminalStatus::Completed)));
    assert_eq!(payment.message(), Some("Payment captured"));
    assert_eq!(
        data_json(&payment),
        json!({
            "order_id": "O-1", "amount": 1200, "payment_id": "P-7",
            "failure": null, "error": null, "outcome_unknown": false,
        }),
        "the data order-fulfilment reads"
    );
}

#[test]
fn a_decline_fails_with_the_reason_and_the_status() {
    let mut payment = start();
    let error =
        TaskError { kind: FailureKind::Http, status: Some(402), body: Some("declined".into()), attempts: 1 };
    payment.deliver(Received::TaskFailed { key: "capture".into(), error: error.clone() }).expect("taken");
    assert_eq!((payment.state(), payment.message()), ("FAILED", Some("The payment could not be captured")));
    let data = payment.data();
    assert_eq!(
        data.failure.as_deref(),
        Some("the payment could not be captured (refused, HTTP 402, after 1 attempt)")
    );
    assert_eq!((data.error, data.outcome_unknown), (Some(error), false));
}

#[test]
fn an_answer_without_a_payment_id_leaves_the_outcome_unknown() {
    let mut payment = start();
    payment.task_succeeded("capture", json!({ "payment_id": "" })).expect("taken");
    assert_eq!(payment.state(), "FAILED");
    assert_eq!(data_json(&payment)["failure"], "payments.capture answered without a payment_id");
    assert_eq!(data_json(&payment)["outcome_unknown"], true);
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
fn force_complete_is_refused_with_the_reason() {
    let refused = start().admin_override(OverrideKind::ForceComplete, "looks paid");
    let reason = "a payment is completed only by a capture with a payment_id; cancel it instead";
    assert_eq!(refused, Err(Refusal::Rejected(Rejection::new("cannot_force_complete", reason))));
}
