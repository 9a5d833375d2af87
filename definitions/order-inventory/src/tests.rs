//! What is `order-inventory`'s own: its task, input, id and texts. The behaviour it
//! shares with every single-task definition is tested in `switchyard_guest::single_task`.

use super::*;
use serde_json::{Value, json};
use switchyard_guest::abi::Effect;
use switchyard_guest::testing::{Machine, Refusal};

fn start() -> Machine<OrderInventory> {
    let input = json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }], "amount": 10 });
    Machine::start(input).expect("a reservation starts")
}

#[test]
fn a_reservation_completes_with_the_reservation_id() {
    let mut inventory = start();
    assert_eq!((inventory.state(), inventory.message()), ("RESERVING", Some("Reserving the items")));
    let [Effect::Task(task)] = inventory.effects() else { panic!("one task: {:?}", inventory.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), ("reserve", "inventory.reserve"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(input, json!({ "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }] }));

    inventory.task_succeeded("reserve", json!({ "reservation_id": "R-3" })).expect("taken");
    assert_eq!((inventory.state(), inventory.message()), ("COMPLETED", Some("Items reserved")));
    let data: Value = serde_json::from_str(inventory.data_json()).expect("data is JSON");
    assert_eq!(
        data,
        json!({
            "order_id": "O-1", "items": [{ "sku": "A", "qty": 2 }], "reservation_id": "R-3",
            "failure": null, "error": null, "outcome_unknown": false,
        }),
        "the data order-fulfilment reads"
    );
}

#[test]
fn a_failed_reservation_says_what_could_not_be_done() {
    let mut inventory = start();
    inventory.task_failed("reserve", FailureKind::Timeout).expect("taken");
    assert_eq!(inventory.message(), Some("The items could not be reserved"));
    let data = inventory.data();
    assert_eq!(data.failure.as_deref(), Some("the items could not be reserved (timed out, after 1 attempt)"));
    assert!(data.outcome_unknown, "the stock may be reserved");
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
