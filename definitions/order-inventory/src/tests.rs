use super::*;
use serde_json::Value;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

fn start() -> Machine<OrderInventory> {
    let input = json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }], "amount": 10 });
    Machine::start(input).expect("a reservation starts")
}

#[test]
fn a_reservation_completes_with_the_reservation_id() {
    let mut inventory = start();
    assert_eq!(inventory.state(), RESERVING);
    let [Effect::Task(task)] = inventory.effects() else { panic!("one task: {:?}", inventory.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), (RESERVE, "inventory.reserve"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(input, json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }] }));

    inventory.task_succeeded(RESERVE, json!({ "reservation_id": "R-3" })).expect("taken");
    assert_eq!(inventory.state(), COMPLETED);
    assert_eq!(inventory.status(), Some(TerminalStatus::Completed));
    let data = inventory.data();
    assert_eq!(data.reservation_id.as_deref(), Some("R-3"));
    assert_eq!((data.failure, data.error, data.outcome_unknown), (None, None, false));
    assert!(inventory.effects().is_empty() && inventory.open_effects().is_empty());
}

#[test]
fn a_failed_reservation_fails_with_the_reason() {
    for kind in [
        FailureKind::Http,
        FailureKind::Timeout,
        FailureKind::Unreachable,
        FailureKind::Exhausted,
        FailureKind::Unbound,
    ] {
        let mut inventory = start();
        inventory.task_failed(RESERVE, kind).expect("taken");
        assert_eq!(inventory.status(), Some(TerminalStatus::Failed), "{kind:?}");
        let data = inventory.data();
        assert_eq!(data.reservation_id, None);
        assert!(data.failure.is_some_and(|failure| failure.starts_with("the items could not be reserved")));
        assert_eq!(data.error.map(|error| error.kind), Some(kind));
        assert_eq!(data.outcome_unknown, kind == FailureKind::Timeout, "only a timeout may have acted");
        assert!(inventory.effects().is_empty());
    }
}

#[test]
fn an_answer_without_a_reservation_id_fails_with_the_outcome_unknown() {
    let mut inventory = start();
    inventory.task_succeeded(RESERVE, json!({ "ok": true })).expect("taken");
    assert_eq!(inventory.state(), FAILED);
    assert!(inventory.data().outcome_unknown);
}

#[test]
fn bad_input_is_refused() {
    for input in [
        json!({ "order_id": "", "items": [{ "sku": "A", "qty": 1 }] }),
        json!({ "order_id": "O-1", "items": [] }),
        json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 0 }] }),
        json!({ "order_id": "O-1", "items": [{ "sku": " ", "qty": 1 }] }),
        json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": -1 }] }),
        json!({ "order_id": "O-1" }),
    ] {
        let refused = Machine::<OrderInventory>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}

#[test]
fn other_events_are_refused() {
    let mut inventory = start();
    let external = inventory.deliver(Received::External {
        name: "stock.changed".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert!(matches!(external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"));
    assert_eq!(inventory.task_succeeded("release", json!({})), Err(Refusal::NoOpenEffect("release".into())));
    assert_eq!(inventory.state(), RESERVING, "nothing changed");
}

#[test]
fn an_admin_may_cancel_but_not_force_complete() {
    let mut inventory = start();
    let refused = inventory.admin_override(OverrideKind::ForceComplete, "reserved by phone");
    assert!(
        matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "cannot_force_complete")
    );
    inventory.admin_override(OverrideKind::Cancel, "order withdrawn").expect("cancelled");
    assert_eq!(inventory.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(inventory.message(), Some("cancelled by an admin: order withdrawn"));
    assert_eq!(inventory.task_failed(RESERVE, FailureKind::Http), Err(Refusal::Finished));
}
