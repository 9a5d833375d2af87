//! `order-fulfilment` and its children `order-payment`, `order-inventory` and
//! `order-shipment`: the parent's state follows its children's; what was done is undone
//! exactly once when a later step fails.

use super::{QUICK, server, stub};
use crate::support::{Backend, TestServer};
use serde_json::{Value, json};
use switchyard_stub::{Fault, Stub};

both_backends!(
    an_order_is_fulfilled_through_three_children,
    a_failed_shipment_releases_the_stock_and_refunds_the_payment_once_each,
    a_declined_payment_ships_nothing_and_releases_the_stock,
    cancelling_an_order_cancels_its_running_children,
);

const DEFINITIONS: [&str; 4] = ["order-fulfilment", "order-payment", "order-inventory", "order-shipment"];

async fn order(server: &TestServer) -> String {
    let input = json!({
        "order_id": "O-1",
        "amount": 120.5,
        "items": [{ "sku": "A-1", "qty": 2 }, { "sku": "B-7", "qty": 1 }],
        "address": { "city": "Lisbon" },
    });
    let created = server.create("order-fulfilment", input).await;
    assert_eq!(created["state"], "PROCESSING");
    created["id"].as_str().expect("id").to_owned()
}

/// The children of `id`: definition → (status, state).
async fn children(server: &TestServer, id: &str) -> Vec<(String, String, String)> {
    let page = server.get(&format!("/v1/instances?parent={id}")).await.expect(200).json();
    let mut children: Vec<(String, String, String)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|child| {
            assert_eq!(child["parent_id"], id);
            let text = |field: &str| child[field].as_str().unwrap_or_default().to_owned();
            (text("definition"), text("status"), text("state"))
        })
        .collect();
    children.sort();
    children
}

fn child(definition: &str, status: &str, state: &str) -> (String, String, String) {
    (definition.into(), status.into(), state.into())
}

/// The inputs of the work `task` did, as the stub's ledger has them.
fn inputs(stub: &Stub, task: &str) -> Vec<Value> {
    stub.ledger().done(task).into_iter().map(|work| work.input.clone()).collect()
}

async fn an_order_is_fulfilled_through_three_children(backend: Backend) {
    let stub = stub().await;
    let server = server(backend, &stub, &DEFINITIONS, "").await;
    let id = order(&server).await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("FULFILLED"), Some("completed")));
    assert_eq!(
        children(&server, &id).await,
        [
            child("order-inventory", "completed", "COMPLETED"),
            child("order-payment", "completed", "COMPLETED"),
            child("order-shipment", "completed", "COMPLETED"),
        ]
    );
    let ledger = stub.ledger();
    let answer = |task: &str, field: &str| {
        let work = ledger.done(task);
        assert_eq!(work.len(), 1, "{task} done once");
        let task_id: String = work[0].task_id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
        format!("{field}-{task_id}")
    };
    assert_eq!(done["data"]["payment_id"], answer("payments.capture", "P"));
    assert_eq!(done["data"]["reservation_id"], answer("inventory.reserve", "R"));
    assert_eq!(done["data"]["tracking_id"], answer("shipping.schedule", "T"));
    assert_eq!(inputs(&stub, "payments.capture"), [json!({ "order_id": "O-1", "amount": 120.5 })]);
    assert_eq!(
        inputs(&stub, "shipping.schedule"),
        [json!({
            "order_id": "O-1",
            "address": { "city": "Lisbon" },
            "items": [{ "sku": "A-1", "qty": 2 }, { "sku": "B-7", "qty": 1 }],
        })]
    );
    assert!(ledger.done("payments.refund").is_empty() && ledger.done("inventory.release").is_empty());
}

async fn a_failed_shipment_releases_the_stock_and_refunds_the_payment_once_each(backend: Backend) {
    let stub = stub().await;
    stub.fault("shipping.schedule", Fault::Refuse { status: 422, times: None });
    let server = server(backend, &stub, &DEFINITIONS, QUICK).await;
    let id = order(&server).await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("FAILED"), Some("failed")));
    let reservation = done["data"]["reservation_id"].as_str().expect("the stock was reserved");
    let payment = done["data"]["payment_id"].as_str().expect("the payment was captured");
    assert_eq!(
        inputs(&stub, "inventory.release"),
        [json!({ "order_id": "O-1", "reservation_id": reservation })]
    );
    assert_eq!(inputs(&stub, "payments.refund"), [json!({ "order_id": "O-1", "payment_id": payment })]);
    let ledger = stub.ledger();
    assert_eq!((ledger.requests_for("inventory.release"), ledger.requests_for("payments.refund")), (1, 1));
    assert!(
        children(&server, &id).await.contains(&child("order-shipment", "failed", "FAILED")),
        "the shipment child failed"
    );
    let states: Vec<String> = server.steps(&id).await.into_iter().map(|(_, _, to)| to).collect();
    assert_eq!(states, ["PROCESSING", "PROCESSING", "SHIPPING", "COMPENSATING", "COMPENSATING", "FAILED"]);
}

async fn a_declined_payment_ships_nothing_and_releases_the_stock(backend: Backend) {
    let stub = stub().await;
    stub.fault("payments.capture", Fault::Decline);
    let server = server(backend, &stub, &DEFINITIONS, QUICK).await;
    let id = order(&server).await;
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "FAILED");
    let ledger =
        stub.wait_for("the stock released", |ledger| !ledger.done("inventory.release").is_empty()).await;
    assert_eq!(ledger.requests_for("shipping.schedule"), 0, "nothing shipped");
    assert!(ledger.done("payments.refund").is_empty(), "nothing to refund");
    assert_eq!(ledger.done("inventory.release").len(), 1);
    assert_eq!(
        children(&server, &id).await,
        [child("order-inventory", "completed", "COMPLETED"), child("order-payment", "failed", "FAILED")]
    );
}

async fn cancelling_an_order_cancels_its_running_children(backend: Backend) {
    let stub = stub().await;
    // The capture hangs (without charging) well past the test, inside a long attempt.
    stub.fault("payments.capture", Fault::Hang { ms: 5_000 });
    let server = server(backend, &stub, &DEFINITIONS, "attempt_timeout_ms = 10000").await;
    let id = order(&server).await;
    stub.wait_for("the capture in flight", |ledger| ledger.requests_for("payments.capture") == 1).await;
    // The parent has heard that the stock is reserved (and so has something to undo).
    server.wait_until(&id, |order| order["data"]["reservation_id"].is_string()).await;
    let cancelled =
        server.admin(&id, "cancel", json!({ "reason": "customer called" })).await.expect(200).json();
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["status"].as_str()),
        (Some("CANCELLED"), Some("cancelled"))
    );
    assert_eq!(
        children(&server, &id).await,
        [
            child("order-inventory", "completed", "COMPLETED"),
            child("order-payment", "cancelled", "CANCELLED")
        ]
    );
    // What was reserved is released; nothing was captured, so nothing is refunded: once
    // every task the cancel asked for has closed, the ledger is final.
    let diagnostics = format!("/v1/instances/{id}/diagnostics");
    for _ in 0..3000 {
        let effects = server.get(&diagnostics).await.expect(200).json()["effects"].clone();
        let open = effects
            .as_array()
            .expect("effects")
            .iter()
            .any(|effect| matches!(effect["status"].as_str(), Some("pending" | "waiting" | "ready")));
        if !open {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ledger = stub.ledger();
    assert_eq!(ledger.done("inventory.release").len(), 1);
    assert!(ledger.done("payments.refund").is_empty());
    assert_eq!(ledger.requests_for("shipping.schedule"), 0);
    let (kind, name, to) = server.steps(&id).await.pop().expect("history");
    assert_eq!((kind.as_str(), name.as_str(), to.as_str()), ("admin", "cancel", "CANCELLED"));
}
