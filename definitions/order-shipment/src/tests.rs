use super::*;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

fn input() -> Value {
    json!({
        "order_id": "O-1",
        "address": { "city": "Lisbon" },
        "items": [{ "sku": "A", "qty": 2 }],
        "amount": 10,
    })
}

fn start() -> Machine<OrderShipment> {
    Machine::start(input()).expect("a shipment starts")
}

#[test]
fn a_shipment_completes_with_the_tracking_id() {
    let mut shipment = start();
    assert_eq!(shipment.state(), SCHEDULING);
    let [Effect::Task(task)] = shipment.effects() else { panic!("one task: {:?}", shipment.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), (SCHEDULE, "shipping.schedule"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(
        input,
        json!({ "order_id": "O-1", "address": { "city": "Lisbon" }, "items": [{ "sku": "A", "qty": 2 }] })
    );

    shipment.task_succeeded(SCHEDULE, json!({ "tracking_id": "TRK-5" })).expect("taken");
    assert_eq!(shipment.state(), COMPLETED);
    assert_eq!(shipment.status(), Some(TerminalStatus::Completed));
    let data = shipment.data();
    assert_eq!(data.tracking_id.as_deref(), Some("TRK-5"));
    assert_eq!((data.failure, data.error, data.outcome_unknown), (None, None, false));
    assert!(shipment.effects().is_empty() && shipment.open_effects().is_empty());
}

#[test]
fn a_failed_schedule_fails_with_the_reason() {
    for kind in [
        FailureKind::Http,
        FailureKind::Timeout,
        FailureKind::Unreachable,
        FailureKind::Exhausted,
        FailureKind::Unbound,
    ] {
        let mut shipment = start();
        shipment.task_failed(SCHEDULE, kind).expect("taken");
        assert_eq!(shipment.status(), Some(TerminalStatus::Failed), "{kind:?}");
        let data = shipment.data();
        assert_eq!(data.tracking_id, None);
        assert!(
            data.failure.is_some_and(|failure| failure.starts_with("the shipment could not be scheduled"))
        );
        assert_eq!(data.error.map(|error| error.kind), Some(kind));
        assert_eq!(data.outcome_unknown, kind == FailureKind::Timeout, "only a timeout may have acted");
        assert!(shipment.effects().is_empty());
    }
}

#[test]
fn an_answer_without_a_tracking_id_fails_with_the_outcome_unknown() {
    let mut shipment = start();
    shipment.task_succeeded(SCHEDULE, Value::Null).expect("taken");
    assert_eq!(shipment.state(), FAILED);
    assert!(shipment.data().outcome_unknown);
}

#[test]
fn bad_input_is_refused() {
    let with = |member: &str, value: Value| {
        let mut input = input();
        input[member] = value;
        input
    };
    for input in [
        with("order_id", json!(" ")),
        with("address", Value::Null),
        with("items", json!([])),
        with("items", json!([{ "sku": "A", "qty": 0 }])),
        with("items", json!([{ "sku": "", "qty": 1 }])),
        json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 1 }] }),
    ] {
        let refused = Machine::<OrderShipment>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}

#[test]
fn other_events_are_refused() {
    let mut shipment = start();
    let external = shipment.deliver(Received::External {
        name: "carrier.update".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert!(matches!(external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"));
    assert_eq!(shipment.timer_fired("schedule"), Err(Refusal::NoOpenEffect("schedule".into())));
    assert_eq!(shipment.state(), SCHEDULING, "nothing changed");
}

#[test]
fn an_admin_may_cancel_but_not_force_complete() {
    let mut shipment = start();
    let refused = shipment.admin_override(OverrideKind::ForceComplete, "shipped by hand");
    assert!(
        matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "cannot_force_complete")
    );
    shipment.admin_override(OverrideKind::Cancel, "order withdrawn").expect("cancelled");
    assert_eq!(shipment.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(shipment.message(), Some("cancelled by an admin: order withdrawn"));
    assert_eq!(shipment.task_succeeded(SCHEDULE, json!({ "tracking_id": "T" })), Err(Refusal::Finished));
}
