//! What is `order-shipment`'s own: its task, input, id and texts. The behaviour it
//! shares with every single-task definition is tested in `switchyard_guest::single_task`.

use super::*;
use serde_json::json;
use switchyard_guest::abi::Effect;
use switchyard_guest::testing::{Machine, Refusal};

fn input() -> Value {
    json!({
        "order_id": "O-1",
        "address": { "city": "Lisbon" },
        "items": [{ "sku": "A", "qty": 2 }],
        "amount": 10,
    })
}

#[test]
fn a_shipment_completes_with_the_tracking_id() {
    let mut shipment = Machine::<OrderShipment>::start(input()).expect("a shipment starts");
    assert_eq!((shipment.state(), shipment.message()), ("SCHEDULING", Some("Scheduling the shipment")));
    let [Effect::Task(task)] = shipment.effects() else { panic!("one task: {:?}", shipment.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), ("schedule", "shipping.schedule"));
    let sent: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    let order =
        json!({ "order_id": "O-1", "address": { "city": "Lisbon" }, "items": [{ "sku": "A", "qty": 2 }] });
    assert_eq!(sent, order, "the address is passed as sent");

    shipment.task_succeeded("schedule", json!({ "tracking_id": "TRK-5" })).expect("taken");
    assert_eq!((shipment.state(), shipment.message()), ("COMPLETED", Some("Shipment scheduled")));
    let mut expected = order;
    expected["tracking_id"] = json!("TRK-5");
    expected["failure"] = Value::Null;
    expected["error"] = Value::Null;
    expected["outcome_unknown"] = json!(false);
    let data: Value = serde_json::from_str(shipment.data_json()).expect("data is JSON");
    assert_eq!(data, expected, "the data order-fulfilment reads");
}

#[test]
fn an_answer_without_a_tracking_id_says_so() {
    let mut shipment = Machine::<OrderShipment>::start(input()).expect("a shipment starts");
    shipment.task_succeeded("schedule", Value::Null).expect("taken");
    assert_eq!((shipment.state(), shipment.message()), ("FAILED", Some("The shipment was not confirmed")));
    let data = shipment.data();
    assert_eq!(data.failure.as_deref(), Some("shipping.schedule answered without a tracking_id"));
    assert!(data.outcome_unknown);
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
