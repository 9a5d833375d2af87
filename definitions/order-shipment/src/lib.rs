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
//! Data: `{order_id, address, items, tracking_id, failure, error, outcome_unknown}`.
//!
//! Force-complete is refused: `COMPLETED` promises a `tracking_id`, and an admin cannot
//! give one.
//!
//! The behaviour is the SDK's [`switchyard_guest::single_task`]; this crate gives its
//! names, texts and input.

use serde_json::Value;
use switchyard_guest::prelude::*;
use switchyard_guest::single_task::{SingleTask, SingleTaskDefinition, Texts};

/// The definition.
pub type OrderShipment = SingleTaskDefinition<Shipment>;

/// The instance's data: [`Schedule`]'s members, then `tracking_id`, `failure`, `error`
/// and `outcome_unknown`.
pub type Data = switchyard_guest::single_task::Data<Shipment>;

/// What `order-shipment` is: a [`SingleTask`].
#[derive(Debug)]
pub struct Shipment;

/// The input, and once validated, the shipment's parameters: the task's input and the
/// data's first members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub order_id: String,
    pub address: Value,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

impl SingleTask for Shipment {
    type Input = Schedule;
    type Params = Schedule;
    const NAME: &'static str = "order-shipment";
    const VERSION: u32 = 1;
    const RUNNING: &'static str = "SCHEDULING";
    const KEY: &'static str = "schedule";
    const TASK: &'static str = "shipping.schedule";
    const ID: &'static str = "tracking_id";
    const TEXTS: Texts = Texts {
        running: "Scheduling the shipment",
        completed: "The shipment is scheduled.",
        succeeded: "Shipment scheduled",
        failed: "The shipment could not be scheduled",
        unconfirmed: "The shipment was not confirmed",
        cancelled: "An admin cancelled the shipment.",
        no_force_complete: "a shipment is completed only by the carrier's tracking_id; cancel it instead",
    };

    fn validate(input: Schedule) -> Result<Schedule, Rejection> {
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
        Ok(Schedule { order_id: order_id.into(), address: input.address, items: input.items })
    }
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(OrderShipment);
