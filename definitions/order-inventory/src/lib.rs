//! `order-inventory`, version 1: reserves an order's items in stock. `order-fulfilment`
//! starts it as a child; it also runs on its own.
//!
//! Input: `{order_id, items: [{sku, qty}]}` (other members are ignored): `order_id` not
//! blank, at least one item, every `sku` not blank and every `qty` at least 1.
//!
//! Task (its name is the contract a deployment binds to a participant):
//! `inventory.reserve` `{order_id, items}` → `{reservation_id}`.
//!
//! States: `RESERVING` → `COMPLETED` (completed, `data.reservation_id` set) or `FAILED`
//! (failed, `data.failure` and `data.error` say why), or `CANCELLED` by an admin.
//! `data.outcome_unknown` is set when the reservation failed in a way that leaves open
//! whether the stock was reserved: it timed out, or answered without a
//! `reservation_id`. Data: `{order_id, items, reservation_id, failure, error,
//! outcome_unknown}`.
//!
//! A release is not this definition's work: a finished instance takes no more
//! transitions, so whoever needs reserved stock back (the parent) runs
//! `inventory.release` itself. Force-complete is refused: `COMPLETED` promises a
//! `reservation_id`, and an admin cannot give one.
//!
//! The behaviour is the SDK's [`switchyard_guest::single_task`]; this crate gives its
//! names, texts and input.

use switchyard_guest::prelude::*;
use switchyard_guest::single_task::{SingleTask, SingleTaskDefinition, Texts};

/// The definition.
pub type OrderInventory = SingleTaskDefinition<Inventory>;

/// The instance's data: [`Reserve`]'s members, then `reservation_id`, `failure`,
/// `error` and `outcome_unknown`.
pub type Data = switchyard_guest::single_task::Data<Inventory>;

/// What `order-inventory` is: a [`SingleTask`].
#[derive(Debug)]
pub struct Inventory;

/// The input, and once validated, the reservation's parameters: the task's input and
/// the data's first members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    pub order_id: String,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

impl SingleTask for Inventory {
    type Input = Reserve;
    type Params = Reserve;
    const NAME: &'static str = "order-inventory";
    const VERSION: u32 = 1;
    const RUNNING: &'static str = "RESERVING";
    const KEY: &'static str = "reserve";
    const TASK: &'static str = "inventory.reserve";
    const ID: &'static str = "reservation_id";
    const TEXTS: Texts = Texts {
        running: "Reserving the items",
        completed: "The items are reserved.",
        succeeded: "Items reserved",
        failed: "The items could not be reserved",
        unconfirmed: "The reservation was not confirmed",
        cancelled: "An admin cancelled the reservation.",
        no_force_complete: "a reservation is completed only by the warehouse's reservation_id; cancel it instead",
    };

    fn validate(input: Reserve) -> Result<Reserve, Rejection> {
        let order_id = input.order_id.trim();
        if order_id.is_empty() {
            return Err(Rejection::new("invalid_input", "order_id must not be empty"));
        }
        if input.items.is_empty() {
            return Err(Rejection::new("invalid_input", "items must not be empty"));
        }
        if let Some(item) = input.items.iter().find(|item| item.sku.trim().is_empty() || item.qty == 0) {
            let reason =
                format!("item {:?} (qty {}) needs a sku and a qty of at least 1", item.sku, item.qty);
            return Err(Rejection::new("invalid_input", reason));
        }
        Ok(Reserve { order_id: order_id.into(), items: input.items })
    }
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(OrderInventory);
