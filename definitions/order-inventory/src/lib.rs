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
//! `reservation_id`.
//!
//! A release is not this definition's work: a finished instance takes no more
//! transitions, so whoever needs reserved stock back (the parent) runs
//! `inventory.release` itself. Force-complete is refused: `COMPLETED` promises a
//! `reservation_id`, and an admin cannot give one.

use serde_json::json;
use switchyard_guest::prelude::*;

const RESERVING: &str = "RESERVING";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Effect key.
const RESERVE: &str = "reserve";

/// The definition.
#[derive(Debug)]
pub struct OrderInventory;

#[derive(Debug, Deserialize)]
pub struct Input {
    pub order_id: String,
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
    pub items: Vec<Item>,
    /// The warehouse's id for the reservation, once it succeeded.
    pub reservation_id: Option<String>,
    /// Why the reservation failed, once it has.
    pub failure: Option<String>,
    /// The task's error, when the participant failed it.
    pub error: Option<TaskError>,
    /// The reservation failed, but the stock may have been reserved all the same.
    pub outcome_unknown: bool,
}

impl Definition for OrderInventory {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("order-inventory", 1)
            .state(RESERVING, "Reserving the items.")
            .terminal(COMPLETED, TerminalStatus::Completed, "The items are reserved.")
            .terminal(FAILED, TerminalStatus::Failed, "The items could not be reserved.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the reservation.")
            .initial(RESERVING)
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
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
        let data = Data {
            order_id: order_id.into(),
            items: input.items,
            reservation_id: None,
            failure: None,
            error: None,
            outcome_unknown: false,
        };
        let reserve = json!({ "order_id": data.order_id, "items": data.items });
        Ok(Transition::to(RESERVING, data)
            .task(RESERVE, "inventory.reserve", reserve)
            .with_message("Reserving the items"))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        Err(Rejection::new("no_actions", format!("order-inventory takes no actions, not {}", call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        match (state.as_str(), event) {
            (RESERVING, Received::TaskSucceeded { key, output }) if key == RESERVE => {
                match output.get("reservation_id").and_then(|id| id.as_str()).filter(|id| !id.is_empty()) {
                    Some(reservation_id) => {
                        data.reservation_id = Some(reservation_id.into());
                        Ok(Transition::to(COMPLETED, data).with_message("Items reserved"))
                    }
                    None => {
                        data.failure = Some("inventory.reserve answered without a reservation_id".into());
                        data.outcome_unknown = true;
                        Ok(Transition::to(FAILED, data).with_message("The reservation was not confirmed"))
                    }
                }
            }
            (RESERVING, Received::TaskFailed { key, error }) if key == RESERVE => {
                data.failure = Some(format!("the items could not be reserved ({})", describe(&error)));
                data.outcome_unknown = error.kind == FailureKind::Timeout;
                data.error = Some(error);
                Ok(Transition::to(FAILED, data).with_message("The items could not be reserved"))
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
                "a reservation is completed only by the warehouse's reservation_id; cancel it instead",
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

switchyard_guest::export!(OrderInventory);
