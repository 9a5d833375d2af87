//! `payment-routing`: a payment is charged through the primary gateway its region
//! routes to, reconciled by status queries under the same `vendor_key` when the
//! charge's outcome is unknown, failed over only when the primary certainly did not
//! charge — and never charged twice, whatever the gateways do.

use super::{QUICK, server, stub};
use crate::support::{Backend, TestServer, assert_problem};
use serde_json::{Value, json};
use switchyard_stub::Fault;

both_backends!(
    a_payment_is_charged_once_through_the_gateway_its_region_routes_to,
    a_primary_that_charged_but_timed_out_is_reconciled_not_charged_again,
    a_primary_that_timed_out_without_charging_fails_over_to_the_secondary,
    a_declined_payment_fails_and_cannot_be_force_completed,
    under_every_fault_the_gateways_charge_a_payment_at_most_once,
);

const WAITING: &str = "Waiting on payment processor confirmation";

async fn pay(server: &TestServer, payment_id: &str, region: &str) -> String {
    let input = json!({
        "payment_id": payment_id,
        "amount": 25,
        "currency": "EUR",
        "region": region,
        "poll_interval_ms": 30,
        "max_polls": 5,
        "charge_timeout_ms": 200,
    });
    server.create("payment-routing", input).await["id"].as_str().expect("id").to_owned()
}

/// Where the payment rests: finished, or waiting for an operator.
async fn settled(server: &TestServer, id: &str) -> Value {
    server
        .wait_until(id, |payment| {
            payment["status"] != "running" || payment["state"] == "RECONCILIATION_REQUIRED"
        })
        .await
}

async fn a_payment_is_charged_once_through_the_gateway_its_region_routes_to(backend: Backend) {
    let stub = stub().await;
    let server = server(backend, &stub, &["payment-routing"], "").await;
    for (payment, region, gateway) in [("P-US", "US", "alpha"), ("P-EU", "EU", "beta")] {
        let id = pay(&server, payment, region).await;
        let done = server.finished(&id).await;
        assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("COMPLETED"), Some("completed")));
        let vendor_key = done["data"]["vendor_key"].as_str().expect("vendor_key");
        let ledger = stub.ledger();
        let charge = &ledger.charges[gateway][vendor_key];
        assert_eq!(done["data"]["charge_id"], charge.as_str());
        assert_eq!(done["data"]["gateway"], gateway);
        assert_eq!(ledger.charges_for(vendor_key), 1);
        let charged = ledger.done(&format!("gateway.{gateway}.charge"));
        let charged: Vec<&Value> =
            charged.iter().map(|work| &work.input).filter(|input| input["payment_id"] == payment).collect();
        assert_eq!(
            charged,
            [&json!({ "payment_id": payment, "amount": 25, "currency": "EUR", "vendor_key": vendor_key })]
        );
    }
    assert_eq!(
        server.steps(&pay(&server, "P-STEPS", "US").await).await.iter().map(|(_, _, to)| to.as_str()).next(),
        Some("ROUTING_SELECTED")
    );
}

async fn a_primary_that_charged_but_timed_out_is_reconciled_not_charged_again(backend: Backend) {
    let stub = stub().await;
    stub.fault("gateway.alpha.charge", Fault::ActThenHang { ms: 1_000 });
    stub.fault("gateway.alpha.status", Fault::Pending { times: 2 });
    let server = server(backend, &stub, &["payment-routing"], "").await;
    let id = pay(&server, "P-1", "US").await;
    let waiting = server.wait_until(&id, |payment| payment["state"] == "AWAITING_PRIMARY_RESPONSE").await;
    assert_eq!(waiting["message"], WAITING);
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    let vendor_key = done["data"]["vendor_key"].as_str().expect("vendor_key");
    let ledger = stub.ledger();
    assert_eq!(ledger.charges_for(vendor_key), 1, "charged once, at alpha");
    assert_eq!(done["data"]["charge_id"], ledger.charges["alpha"][vendor_key].as_str());
    assert_eq!(ledger.requests_for("gateway.alpha.charge"), 1, "the charge is not retried");
    assert_eq!(ledger.requests_for("gateway.beta.charge"), 0, "no failover");
    let statuses = ledger.done("gateway.alpha.status");
    assert!(statuses.len() >= 3, "pending twice, then charged: {statuses:?}");
    assert!(
        statuses.iter().all(|work| work.input == json!({ "payment_id": "P-1", "vendor_key": vendor_key }))
    );
}

async fn a_primary_that_timed_out_without_charging_fails_over_to_the_secondary(backend: Backend) {
    let stub = stub().await;
    stub.fault("gateway.alpha.charge", Fault::Hang { ms: 1_000 });
    let server = server(backend, &stub, &["payment-routing"], "").await;
    let id = pay(&server, "P-2", "US").await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["data"]["gateway"].as_str()), (Some("COMPLETED"), Some("beta")));
    let vendor_key = done["data"]["vendor_key"].as_str().expect("vendor_key");
    let ledger = stub.ledger();
    assert_eq!(ledger.charges_for(vendor_key), 1);
    assert!(ledger.charges["beta"].contains_key(vendor_key));
    let states: Vec<String> = server.steps(&id).await.into_iter().map(|(_, _, to)| to).collect();
    let before_secondary: Vec<&str> =
        states.iter().map(String::as_str).take_while(|state| *state != "SECONDARY_GATEWAY_INVOKED").collect();
    assert!(
        before_secondary.contains(&"AWAITING_PRIMARY_RESPONSE"),
        "the secondary only after alpha said not_found: {states:?}"
    );
}

async fn a_declined_payment_fails_and_cannot_be_force_completed(backend: Backend) {
    let stub = stub().await;
    stub.fault("gateway.alpha.charge", Fault::Decline);
    let server = server(backend, &stub, &["payment-routing"], "").await;
    let id = pay(&server, "P-3", "US").await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("FAILED"), Some("failed")));
    assert_eq!(stub.ledger().requests_for("gateway.beta.charge"), 0, "a decline is not failed over");
    let refused = server.admin(&id, "force-complete", json!({ "reason": "the customer insists" })).await;
    let problem = assert_problem(&refused, 422, "rejected");
    assert_eq!(problem["code"], "payment_declined");
    assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("declined")), "{problem}");
    let after = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(
        (after["state"].as_str(), after["revision"].as_i64()),
        (Some("FAILED"), done["revision"].as_i64())
    );
}

/// Every fault of the primary's charge (and of its status queries), one payment each:
/// whatever happens, the payment is charged at most once across both gateways, it ends
/// COMPLETED exactly when it was charged, FAILED only when it was not.
async fn under_every_fault_the_gateways_charge_a_payment_at_most_once(backend: Backend) {
    let stub = stub().await;
    let server = server(backend, &stub, &["payment-routing"], QUICK).await;
    let charge_faults = [
        None,
        Some(Fault::Refuse { status: 503, times: None }),
        Some(Fault::Refuse { status: 400, times: None }),
        Some(Fault::Refuse { status: 409, times: None }),
        Some(Fault::Hang { ms: 1_000 }),
        Some(Fault::ActThenHang { ms: 1_000 }),
        Some(Fault::Decline),
    ];
    let status_faults =
        [None, Some(Fault::Refuse { status: 503, times: Some(2) }), Some(Fault::Pending { times: 20 })];
    let mut case = 0;
    for charge_fault in &charge_faults {
        for status_fault in &status_faults {
            case += 1;
            for (task, fault) in
                [("gateway.alpha.charge", charge_fault), ("gateway.alpha.status", status_fault)]
            {
                match fault {
                    Some(fault) => stub.fault(task, fault.clone()),
                    None => stub.clear_fault(task),
                }
            }
            let id = pay(&server, &format!("P-CASE-{case}"), "US").await;
            let payment = settled(&server, &id).await;
            let vendor_key = payment["data"]["vendor_key"].as_str().expect("vendor_key");
            let charges = stub.ledger().charges_for(vendor_key);
            // The gateway dedups by vendor_key; the host must not even ask twice.
            assert!(
                stub.ledger().requests_from("gateway.alpha.charge", &id) <= 1,
                "case {case}: alpha asked twice"
            );
            let what = format!("case {case}: charge {charge_fault:?}, status {status_fault:?}: {payment}");
            assert!(charges <= 1, "charged {charges} times; {what}");
            match payment["state"].as_str() {
                Some("COMPLETED") => assert_eq!(charges, 1, "{what}"),
                Some("FAILED") => assert_eq!(charges, 0, "{what}"),
                Some("RECONCILIATION_REQUIRED") => {
                    assert!(payment["data"]["in_doubt"].is_string(), "{what}");
                    let beta = stub
                        .ledger()
                        .charges
                        .get("beta")
                        .is_some_and(|charges| charges.contains_key(vendor_key));
                    assert!(!beta, "the secondary is not charged while the primary is in doubt; {what}");
                }
                other => panic!("settled in {other:?}; {what}"),
            }
        }
    }
}
