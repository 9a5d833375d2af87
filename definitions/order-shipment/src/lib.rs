//! `order-shipment`, version 1: schedules an order's shipment. `order-fulfilment` starts
//! it as a child, once the payment is captured and the items are reserved; it also runs
//! on its own.
//!
//! Input: `{order_id, address, items: [{sku, qty}]}` (other members are ignored):
//! `order_id` not blank, `address` any JSON but `null` (passed to the participant as
//! sent), at least one item, every `sku` not blank and every `qty` at least 1.
//!
//! Task (its name is the contract a deployment binds to a participant):
//! `shipping.schedule` `{order_id, address, items}` → `{tracking_id}`.
//!
//! States: `SCHEDULING` → `COMPLETED` (completed, `data.tracking_id` set) or `FAILED`
//! (failed, `data.failure` and `data.error` say why), or `CANCELLED` by an admin.
//! `data.outcome_unknown` is set when scheduling failed in a way that leaves open
//! whether a shipment was scheduled: it timed out, or answered without a `tracking_id`.
//!
//! Force-complete is refused: `COMPLETED` promises a `tracking_id`, and an admin cannot
//! give one.

use serde_json::{Value, json};
use switchyard_guest::prelude::*;

const SCHEDULING: &str = "SCHEDULING";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Effect key.
const SCHEDULE: &str = "schedule";

/// The definition.
#[derive(Debug)]
pub struct OrderShipment;

#[derive(Debug, Deserialize)]
pub struct Input {
    pub order_id: String,
    pub address: Value,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

/// The instance's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub order_id: String,
    pub address: Value,
    pub items: Vec<Item>,
    /// The carrier's tracking id, once the shipment is scheduled.
    pub tracking_id: Option<String>,
    /// Why scheduling failed, once it has.
    pub failure: Option<String>,
    /// The task's error, when the participant failed it.
    pub error: Option<TaskError>,
    /// Scheduling failed, but a shipment may have been scheduled all the same.
    pub outcome_unknown: bool,
}

impl Definition for OrderShipment {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("order-shipment", 1)
            .state(SCHEDULING, "Scheduling the shipment.")
            .terminal(COMPLETED, TerminalStatus::Completed, "The shipment is scheduled.")
            .terminal(FAILED, TerminalStatus::Failed, "The shipment could not be scheduled.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the shipment.")
            .initial(SCHEDULING)
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let order_id = input.order_id.trim();
        if order_id.is_empty() {
            return Err(Rejection::new("invalid_input", "order_id must not be empty"));
        }
        if input.address.is_null() {
            return Err(Rejection::new("invalid_input", "address must be given"));
        }
        if input.items.is_empty() {
            return Err(Rejection::new("invalid_input", "items must not be empty"));
        }
        if let Some(item) = input.items.iter().find(|item| item.sku.trim().is_empty() || item.qty == 0) {
            let reason =
                format!("item {:?} (qty {}) needs a sku and a qty of at least 1", item.sku, item.qty);
            return Err(Rejection::new("invalid_input", reason));
        }
        let data = Data {
            order_id: order_id.into(),
            address: input.address,
            items: input.items,
            tracking_id: None,
            failure: None,
            error: None,
            outcome_unknown: false,
        };
        let schedule = json!({ "order_id": data.order_id, "address": data.address, "items": data.items });
        Ok(Transition::to(SCHEDULING, data)
            .task(SCHEDULE, "shipping.schedule", schedule)
            .with_message("Scheduling the shipment"))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        Err(Rejection::new("no_actions", format!("order-shipment takes no actions, not {}", call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        match (state.as_str(), event) {
            (SCHEDULING, Received::TaskSucceeded { key, output }) if key == SCHEDULE => {
                match output.get("tracking_id").and_then(|id| id.as_str()).filter(|id| !id.is_empty()) {
                    Some(tracking_id) => {
                        data.tracking_id = Some(tracking_id.into());
                        Ok(Transition::to(COMPLETED, data).with_message("Shipment scheduled"))
                    }
                    None => {
                        data.failure = Some("shipping.schedule answered without a tracking_id".into());
                        data.outcome_unknown = true;
                        Ok(Transition::to(FAILED, data).with_message("The shipment was not confirmed"))
                    }
                }
            }
            (SCHEDULING, Received::TaskFailed { key, error }) if key == SCHEDULE => {
                data.failure = Some(format!("the shipment could not be scheduled ({})", describe(&error)));
                data.outcome_unknown = error.kind == FailureKind::Timeout;
                data.error = Some(error);
                Ok(Transition::to(FAILED, data).with_message("The shipment could not be scheduled"))
            }
            (state, event) => Err(Rejection::new(
                "unexpected_event",
                format!("{state} does not expect {}", event.describe()),
            )),
        }
    }

    fn on_override(_ctx: &Context, call: OverrideCall<Data>) -> Result<Transition<Data>, Rejection> {
        match call.kind {
            OverrideKind::Cancel => Ok(Transition::to(CANCELLED, call.data)
                .with_message(format!("cancelled by an admin: {}", call.reason))),
            OverrideKind::ForceComplete => Err(Rejection::new(
                "cannot_force_complete",
                "a shipment is completed only by the carrier's tracking_id; cancel it instead",
            )),
        }
    }
}

fn describe(error: &TaskError) -> String {
    let kind = match error.kind {
        FailureKind::Http => "refused",
        FailureKind::Timeout => "timed out",
        FailureKind::Unreachable => "unreachable",
        FailureKind::Exhausted => "retries used up",
        FailureKind::Unbound => "no participant bound",
    };
    match error.status {
        Some(status) => format!("{kind}, HTTP {status}, after {} attempts", error.attempts),
        None => format!("{kind}, after {} attempts", error.attempts),
    }
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(OrderShipment);
