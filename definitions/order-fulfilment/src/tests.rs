use super::*;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

fn order() -> Value {
    json!({
        "order_id": "O-1",
        "amount": 1200,
        "items": [{ "sku": "A", "qty": 2 }, { "sku": "B", "qty": 1 }],
        "address": { "city": "Lisbon" },
    })
}

fn start() -> Machine<OrderFulfilment> {
    Machine::start(order()).expect("an order starts")
}

/// The children the last transition asked for: (key, definition, version, input).
fn children(machine: &Machine<OrderFulfilment>) -> Vec<(&str, &str, Option<u32>, Value)> {
    machine
        .effects()
        .iter()
        .map(|effect| match effect {
            Effect::Child { key, definition, version, input } => {
                (key.as_str(), definition.as_str(), *version, serde_json::from_str(input).expect("JSON"))
            }
            other => panic!("expected only children, got {other:?}"),
        })
        .collect()
}

/// The tasks the last transition asked for: (key, name, input).
fn tasks(machine: &Machine<OrderFulfilment>) -> Vec<(&str, &str, Value)> {
    machine
        .effects()
        .iter()
        .map(|effect| match effect {
            Effect::Task(task) => {
                (task.key.as_str(), task.name.as_str(), serde_json::from_str(&task.input).expect("JSON"))
            }
            other => panic!("expected only tasks, got {other:?}"),
        })
        .collect()
}

/// A child's end as the host reports it, with the data its definition ends with.
fn ended(key: &str, status: TerminalStatus, data: Value) -> Received {
    let state = match status {
        TerminalStatus::Completed => "COMPLETED",
        TerminalStatus::Failed => "FAILED",
        TerminalStatus::Cancelled => "CANCELLED",
    };
    Received::ChildEnded {
        key: key.into(),
        child_id: format!("child-{key}"),
        status,
        state: state.into(),
        data,
    }
}

fn completed(key: &str, member: &str, id: &str) -> Received {
    ended(key, TerminalStatus::Completed, json!({ "order_id": "O-1", member: id, "outcome_unknown": false }))
}

fn failed(key: &str, failure: &str) -> Received {
    ended(key, TerminalStatus::Failed, json!({ "failure": failure, "outcome_unknown": false }))
}

fn captured() -> Received {
    completed(PAYMENT, "payment_id", "P-7")
}

fn reserved() -> Received {
    completed(INVENTORY, "reservation_id", "R-3")
}

fn declined() -> Received {
    failed(PAYMENT, "the payment could not be captured (refused, HTTP 402, after 1 attempt)")
}

fn out_of_stock() -> Received {
    failed(INVENTORY, "the items could not be reserved (refused, HTTP 409, after 1 attempt)")
}

fn release() -> (&'static str, &'static str, Value) {
    (RELEASE, "inventory.release", json!({ "order_id": "O-1", "reservation_id": "R-3" }))
}

fn refund() -> (&'static str, &'static str, Value) {
    (REFUND, "payments.refund", json!({ "order_id": "O-1", "payment_id": "P-7" }))
}

/// Paid and reserved, shipping.
fn shipping() -> Machine<OrderFulfilment> {
    let mut order = start();
    order.deliver(captured()).expect("payment");
    order.deliver(reserved()).expect("inventory");
    assert_eq!(order.state(), SHIPPING);
    order
}

#[test]
fn an_order_pays_and_reserves_at_once_then_ships_then_is_fulfilled() {
    let mut order = start();
    assert_eq!(order.state(), PROCESSING);
    assert_eq!(order.message(), Some("Capturing the payment and reserving the items"));
    assert_eq!(
        children(&order),
        [
            (PAYMENT, "order-payment", None, json!({ "order_id": "O-1", "amount": 1200 })),
            (
                INVENTORY,
                "order-inventory",
                None,
                json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }, { "sku": "B", "qty": 1 }] })
            ),
        ]
    );

    order.deliver(captured()).expect("the payment's end is taken");
    assert_eq!(order.state(), PROCESSING);
    assert_eq!(order.message(), Some("Payment captured; waiting on the inventory reservation"));
    assert!(order.effects().is_empty());

    order.deliver(reserved()).expect("the inventory's end is taken");
    assert_eq!(order.state(), SHIPPING);
    assert_eq!(
        children(&order),
        [(
            SHIPMENT,
            "order-shipment",
            None,
            json!({
                "order_id": "O-1",
                "address": { "city": "Lisbon" },
                "items": [{ "sku": "A", "qty": 2 }, { "sku": "B", "qty": 1 }],
            })
        )]
    );

    order.deliver(completed(SHIPMENT, "tracking_id", "TRK-5")).expect("the shipment's end is taken");
    assert_eq!(order.state(), FULFILLED);
    assert_eq!(order.status(), Some(TerminalStatus::Completed));
    assert_eq!(order.message(), Some("Order fulfilled; tracking id TRK-5"));
    assert!(order.effects().is_empty() && order.open_effects().is_empty());
    let data = order.data();
    assert_eq!(
        (data.payment_id.as_deref(), data.reservation_id.as_deref(), data.tracking_id.as_deref()),
        (Some("P-7"), Some("R-3"), Some("TRK-5"))
    );
    for (end, key) in [(&data.payment, PAYMENT), (&data.inventory, INVENTORY), (&data.shipment, SHIPMENT)] {
        let expected = ChildEnd {
            child_id: format!("child-{key}"),
            status: Ended::Completed,
            state: "COMPLETED".into(),
            reason: None,
        };
        assert_eq!(end.as_ref(), Some(&expected), "{key}");
    }
    assert_eq!((data.release, data.refund, data.failure), (None, None, None));
    assert!(data.attention.is_empty());
    let json: Value = serde_json::from_str(order.data_json()).expect("JSON");
    assert_eq!(
        json["payment"],
        json!({ "child_id": "child-payment", "status": "completed", "state": "COMPLETED" })
    );
}

#[test]
fn the_inventory_may_end_first() {
    let mut order = start();
    order.deliver(reserved()).expect("inventory");
    assert_eq!(order.state(), PROCESSING);
    assert_eq!(order.message(), Some("Items reserved; waiting on the payment"));
    order.deliver(captured()).expect("payment");
    assert_eq!(order.state(), SHIPPING);
    assert!(matches!(children(&order).as_slice(), [(SHIPMENT, "order-shipment", None, _)]));
}

#[test]
fn a_failed_shipment_releases_and_refunds_once_then_fails() {
    let mut order = shipping();
    order
        .deliver(failed(SHIPMENT, "the shipment could not be scheduled (refused, HTTP 422, after 1 attempt)"))
        .expect("taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(order.message(), Some("The order failed; releasing the items and refunding the payment"));
    assert_eq!(tasks(&order), [release(), refund()]);
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Running), Some(Undo::Running)));
    assert_eq!(data.shipment.map(|end| end.status), Some(Ended::Failed));

    order.task_succeeded(REFUND, Value::Null).expect("the refund is taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(order.message(), Some("The order failed; still releasing the items"));
    assert!(order.effects().is_empty(), "nothing is asked for twice");

    order.task_succeeded(RELEASE, Value::Null).expect("the release is taken");
    assert_eq!(order.state(), FAILED);
    assert_eq!(order.status(), Some(TerminalStatus::Failed));
    assert_eq!(order.message(), Some("The order failed; nothing is left captured or reserved"));
    assert!(order.effects().is_empty() && order.open_effects().is_empty());
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Done), Some(Undo::Done)));
    assert_eq!(
        data.failure.as_deref(),
        Some("the shipment failed: the shipment could not be scheduled (refused, HTTP 422, after 1 attempt)")
    );
    assert_eq!((data.payment_id.as_deref(), data.reservation_id.as_deref()), (Some("P-7"), Some("R-3")));
    assert!(data.attention.is_empty());
}

#[test]
fn a_shipment_that_may_have_gone_out_or_was_cancelled_is_compensated_and_flagged() {
    let timed_out = ended(
        SHIPMENT,
        TerminalStatus::Failed,
        json!({ "failure": "the shipment could not be scheduled (timed out, after 5 attempts)", "outcome_unknown": true }),
    );
    let cancelled = ended(SHIPMENT, TerminalStatus::Cancelled, json!({ "outcome_unknown": false }));
    for end in [timed_out, cancelled] {
        let mut order = shipping();
        order.deliver(end).expect("taken");
        assert_eq!(order.state(), COMPENSATING);
        assert_eq!(tasks(&order), [release(), refund()]);
        let attention = order.data().attention;
        assert!(
            matches!(attention.as_slice(), [note] if note.starts_with("the shipment (child child-shipment)") && note.contains("check with the carrier")),
            "{attention:?}"
        );
        order.task_succeeded(RELEASE, Value::Null).expect("release");
        order.task_succeeded(REFUND, Value::Null).expect("refund");
        assert_eq!(order.state(), FAILED);
        assert_eq!(order.message(), Some("The order failed and needs attention (see attention in its data)"));
    }
}

#[test]
fn a_payment_declined_while_the_inventory_runs_waits_then_releases_it() {
    let mut order = start();
    order.deliver(declined()).expect("taken");
    assert_eq!(order.state(), ABORTING);
    assert_eq!(
        order.message(),
        Some(
            "Not shipping: the payment failed; waiting for the inventory reservation to end, to undo it if it succeeds"
        )
    );
    assert!(order.effects().is_empty(), "no shipment, no refund");

    order.deliver(reserved()).expect("taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(order.message(), Some("The order failed; releasing the items"));
    assert_eq!(tasks(&order), [release()]);

    order.task_succeeded(RELEASE, Value::Null).expect("taken");
    assert_eq!(order.state(), FAILED);
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Done), None));
    assert_eq!(
        data.failure.as_deref(),
        Some("the payment failed: the payment could not be captured (refused, HTTP 402, after 1 attempt)")
    );
    assert_eq!(data.shipment, None);
    assert!(data.attention.is_empty());
}

#[test]
fn a_payment_declined_after_the_reservation_releases_it_at_once() {
    let mut order = start();
    order.deliver(reserved()).expect("taken");
    order.deliver(declined()).expect("taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(tasks(&order), [release()]);
    order.task_succeeded(RELEASE, Value::Null).expect("taken");
    assert_eq!(order.state(), FAILED);
    assert_eq!(
        order.data().payment.map(|end| (end.status, end.state)),
        Some((Ended::Failed, "FAILED".into()))
    );
}

#[test]
fn a_failed_reservation_refunds_a_captured_payment_only() {
    // The payment captured first, then the reservation failed.
    let mut order = start();
    order.deliver(captured()).expect("taken");
    order.deliver(out_of_stock()).expect("taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(order.message(), Some("The order failed; refunding the payment"));
    assert_eq!(tasks(&order), [refund()]);
    order.task_succeeded(REFUND, Value::Null).expect("taken");
    assert_eq!(order.state(), FAILED);
    assert_eq!((order.data().release, order.data().refund), (None, Some(Undo::Done)));

    // The reservation failed first: the order waits for the payment.
    let mut order = start();
    order.deliver(out_of_stock()).expect("taken");
    assert_eq!(order.state(), ABORTING);
    assert!(order.effects().is_empty());
    order.deliver(captured()).expect("taken");
    assert_eq!(order.state(), COMPENSATING);
    assert_eq!(tasks(&order), [refund()]);
}

#[test]
fn both_failing_fails_with_nothing_to_compensate() {
    for (first, second) in [(declined(), out_of_stock()), (out_of_stock(), declined())] {
        let mut order = start();
        order.deliver(first).expect("taken");
        assert_eq!(order.state(), ABORTING);
        order.deliver(second).expect("taken");
        assert_eq!(order.state(), FAILED);
        assert_eq!(order.message(), Some("The order failed; nothing is left captured or reserved"));
        assert!(order.effects().is_empty() && order.open_effects().is_empty());
        let data = order.data();
        assert_eq!((data.release, data.refund), (None, None));
        let failure = data.failure.unwrap_or_default();
        assert!(
            failure.contains("captured") && failure.contains("reserved") && failure.contains("; and "),
            "{failure}"
        );
    }
}

#[test]
fn a_child_that_could_not_start_fails_the_order() {
    let mut order = start();
    let not_started = Received::ChildEnded {
        key: PAYMENT.into(),
        child_id: String::new(),
        status: TerminalStatus::Failed,
        state: String::new(),
        data: json!({ "error": "definition order-payment is not deployed" }),
    };
    order.deliver(not_started).expect("taken");
    assert_eq!(order.state(), ABORTING);
    let data = order.data();
    assert_eq!(data.failure.as_deref(), Some("the payment failed: definition order-payment is not deployed"));
    assert_eq!(data.payment.map(|end| end.child_id), Some(String::new()));
}

#[test]
fn a_capture_that_timed_out_is_flagged_not_refunded() {
    let mut order = start();
    order.deliver(reserved()).expect("taken");
    let timed_out = ended(
        PAYMENT,
        TerminalStatus::Failed,
        json!({ "failure": "the payment could not be captured (timed out, after 1 attempt)", "outcome_unknown": true }),
    );
    order.deliver(timed_out).expect("taken");
    assert_eq!(tasks(&order), [release()], "no refund for a payment without a payment_id");
    order.task_succeeded(RELEASE, Value::Null).expect("taken");
    assert_eq!(order.state(), FAILED);
    let attention = order.data().attention;
    assert!(matches!(attention.as_slice(), [note] if note.contains("payment processor")), "{attention:?}");
}

#[test]
fn a_failed_compensation_still_fails_and_says_what_needs_a_person() {
    let mut order = shipping();
    order.deliver(failed(SHIPMENT, "no carrier")).expect("taken");
    order.task_failed(RELEASE, FailureKind::Timeout).expect("taken");
    assert_eq!(order.state(), COMPENSATING, "the refund is still awaited");
    order.task_failed(REFUND, FailureKind::Http).expect("taken");
    assert_eq!(order.state(), FAILED);
    assert_eq!(order.message(), Some("The order failed and needs attention (see attention in its data)"));
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Failed), Some(Undo::Failed)));
    assert_eq!(
        data.attention,
        [
            "reservation R-3 could not be released (timed out, after 1 attempt): release it by hand",
            "payment P-7 could not be refunded (refused, HTTP 409, after 1 attempt): refund it by hand",
        ]
    );
    assert_eq!(data.failure.as_deref(), Some("the shipment failed: no carrier"));
}

#[test]
fn an_admin_cancel_of_a_running_order_asks_for_nothing() {
    let mut order = start();
    order.admin_override(OverrideKind::Cancel, "customer called").expect("cancelled");
    assert_eq!(order.state(), CANCELLED);
    assert_eq!(order.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(order.message(), Some("cancelled by an admin: customer called"));
    assert!(order.effects().is_empty());
    let attention = order.data().attention;
    assert!(
        matches!(attention.as_slice(), [note] if note.starts_with("cancelled while the payment and the inventory reservation still ran")),
        "{attention:?}"
    );
    assert_eq!(order.deliver(captured()), Err(Refusal::Finished));
}

#[test]
fn an_admin_cancel_undoes_what_completed() {
    // Paid, the reservation still running: the payment is refunded.
    let mut order = start();
    order.deliver(captured()).expect("taken");
    order.admin_override(OverrideKind::Cancel, "fraud").expect("cancelled");
    assert_eq!(order.state(), CANCELLED);
    assert_eq!(tasks(&order), [refund()]);
    assert_eq!((order.data().release, order.data().refund), (None, Some(Undo::Requested)));

    // Shipping: both are undone.
    let mut order = shipping();
    order.admin_override(OverrideKind::Cancel, "fraud").expect("cancelled");
    assert_eq!(order.state(), CANCELLED);
    assert_eq!(tasks(&order), [release(), refund()]);
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Requested), Some(Undo::Requested)));
    assert!(
        matches!(data.attention.as_slice(), [note] if note.starts_with("cancelled while the shipment still ran"))
    );
}

#[test]
fn an_admin_cancel_while_compensating_asks_for_nothing_twice() {
    let mut order = shipping();
    order.deliver(failed(SHIPMENT, "no carrier")).expect("taken");
    order.task_succeeded(REFUND, Value::Null).expect("taken");
    order.admin_override(OverrideKind::Cancel, "stuck").expect("cancelled");
    assert_eq!(order.state(), CANCELLED);
    assert!(order.effects().is_empty());
    let data = order.data();
    assert_eq!((data.release, data.refund), (Some(Undo::Cancelled), Some(Undo::Done)));
    assert_eq!(data.attention, ["the release of reservation R-3 was cut short: release it by hand"]);
}

#[test]
fn force_complete_is_refused() {
    for mut order in [start(), shipping()] {
        let refused = order.admin_override(OverrideKind::ForceComplete, "shipped by hand");
        assert!(
            matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "cannot_force_complete")
        );
        assert_ne!(order.status(), Some(TerminalStatus::Completed));
    }
}

#[test]
fn bad_input_is_refused() {
    let with = |member: &str, value: Value| {
        let mut input = order();
        input[member] = value;
        input
    };
    for input in [
        with("order_id", json!("  ")),
        with("amount", json!(0)),
        with("amount", json!(-1)),
        with("amount", json!("12.50")),
        with("items", json!([])),
        with("items", json!([{ "sku": "A", "qty": 0 }])),
        with("items", json!([{ "sku": "A", "qty": -2 }])),
        with("items", json!([{ "sku": "", "qty": 1 }])),
        with("items", json!([{ "qty": 1 }])),
        with("address", Value::Null),
        json!({ "order_id": "O-1", "amount": 10, "items": [{ "sku": "A", "qty": 1 }] }),
    ] {
        let refused = Machine::<OrderFulfilment>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
    assert!(
        Machine::<OrderFulfilment>::start(with("amount", json!(12.5))).is_ok(),
        "a fractional amount is fine"
    );
}

#[test]
fn events_that_do_not_fit_the_state_are_refused() {
    let mut order = start();
    let external =
        order.deliver(Received::External { name: "order.paid".into(), id: "e1".into(), payload: json!({}) });
    assert!(matches!(external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"));
    assert_eq!(order.task_succeeded(REFUND, Value::Null), Err(Refusal::NoOpenEffect(REFUND.into())));
    assert_eq!(
        order.deliver(completed(SHIPMENT, "tracking_id", "T")),
        Err(Refusal::NoOpenEffect(SHIPMENT.into()))
    );
    assert_eq!(order.state(), PROCESSING, "nothing changed");

    // What the host would not deliver, the definition refuses all the same.
    let ctx = Context { instance_id: "i".into(), definition_version: 1, now_ms: 0, seed: 0 };
    let data = shipping().data();
    for (state, event) in [
        (SHIPPING, captured()),
        (SHIPPING, Received::TaskSucceeded { key: REFUND.into(), output: Value::Null }),
        (COMPENSATING, Received::TaskSucceeded { key: RELEASE.into(), output: Value::Null }),
        (PROCESSING, reserved()),
    ] {
        let call = EventCall { state: state.into(), data: data.clone(), event };
        let refused = OrderFulfilment::on_event(&ctx, call);
        assert!(
            matches!(&refused, Err(rejection) if rejection.code == "unexpected_event"),
            "{state}: {refused:?}"
        );
    }
}
