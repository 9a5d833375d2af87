//! `order-fulfilment`, version 1: a hierarchical order. The parent starts child
//! instances for the payment (`order-payment`) and the stock (`order-inventory`) at
//! once, then the shipment (`order-shipment`) once both succeeded; its state is a
//! function of its children's ends.
//!
//! Input: `{order_id, amount, items: [{sku, qty}], address}`: `order_id` not blank,
//! `amount` a number above 0, at least one item, every `sku` not blank and every `qty` at
//! least 1, `address` any JSON but `null`. The children get `{order_id, amount}`,
//! `{order_id, items}` and `{order_id, address, items}`.
//!
//! ```text
//! PROCESSING     the payment and inventory children run (one may have completed)
//!   both completed                    → SHIPPING, starting the shipment child
//!   one failed, the other still runs  → ABORTING
//!   one failed, the other ended       → COMPENSATING, or FAILED if nothing completed
//! ABORTING       one failed; waiting for the other to end
//!   the other completed               → COMPENSATING (undoes it)
//!   the other failed                  → FAILED, nothing to undo
//! SHIPPING       the shipment child runs
//!   shipment completed                → FULFILLED
//!   shipment failed or cancelled      → COMPENSATING (release and refund)
//! COMPENSATING   inventory.release and/or payments.refund run
//!   the last of them answered         → FAILED
//! any of these   admin cancel         → CANCELLED
//! ```
//!
//! A finished child takes no more transitions, so undoing a child that completed is
//! the parent's own work: it runs the compensating tasks itself (names are the contract
//! a deployment binds to participants):
//! - `inventory.release` `{order_id, reservation_id}`, only when the inventory child
//!   completed with a `reservation_id`;
//! - `payments.refund` `{order_id, payment_id}`, only when the payment child completed
//!   with a `payment_id`.
//!
//! Each is asked for at most once per order. A failed payment never leads to a
//! shipment; when the other child of the pair still runs, the order waits for it in
//! `ABORTING` (there is no effect that stops a running child), then undoes it if it
//! completed. A failed compensation, or a child that failed in a way that leaves open
//! whether its participant acted (a timeout, a cancel), still ends the order in
//! `FAILED`, with what needs a person in `data.attention`.
//!
//! Admin overrides: a cancel moves to `CANCELLED`; the host cancels the running
//! children and open tasks, and the cancel itself asks for the release and the refund of
//! what was reserved and captured (their answers reach a finished instance, so they are
//! not tracked: `Undo::Requested`). A cancel during `COMPENSATING` asks for nothing
//! again (that could refund twice) and notes the compensations it cut short.
//! Force-complete is refused: `FULFILLED` promises a scheduled shipment, and completing
//! the order by hand would leave its children and money as they are.

use serde_json::{Number, Value, json};
use switchyard_guest::prelude::*;

const PROCESSING: &str = "PROCESSING";
const ABORTING: &str = "ABORTING";
const SHIPPING: &str = "SHIPPING";
const COMPENSATING: &str = "COMPENSATING";
const FULFILLED: &str = "FULFILLED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Effect keys: the three children, then the two compensating tasks.
const PAYMENT: &str = "payment";
const INVENTORY: &str = "inventory";
const SHIPMENT: &str = "shipment";
const RELEASE: &str = "release";
const REFUND: &str = "refund";

/// The definition.
#[derive(Debug)]
pub struct OrderFulfilment;

/// What a client starts an order with.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub order_id: String,
    /// Passed to the payment as sent.
    pub amount: Number,
    pub items: Vec<Item>,
    /// Where to ship; passed to the shipment as sent.
    pub address: Value,
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
    pub amount: Number,
    pub items: Vec<Item>,
    pub address: Value,
    /// How each child ended, once it has.
    pub payment: Option<ChildEnd>,
    pub inventory: Option<ChildEnd>,
    pub shipment: Option<ChildEnd>,
    /// The participants' ids, from the children that completed (kept after a
    /// compensation, to say what was released or refunded).
    pub payment_id: Option<String>,
    pub reservation_id: Option<String>,
    pub tracking_id: Option<String>,
    /// `inventory.release` and `payments.refund`, once asked for.
    pub release: Option<Undo>,
    pub refund: Option<Undo>,
    /// Why the order failed, once it has.
    pub failure: Option<String>,
    /// What a person has to look at: compensations that failed or were cut short,
    /// participants that may have acted although their child failed.
    pub attention: Vec<String>,
}

/// A child's end, as `child.completed`, `child.failed` or `child.cancelled` reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEnd {
    /// Empty for a child that could not be started.
    pub child_id: String,
    pub status: Ended,
    /// The child's terminal state.
    pub state: String,
    /// Why it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    Completed,
    Failed,
    Cancelled,
}

/// Where a compensating task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Undo {
    /// Asked for in `COMPENSATING`; its answer is awaited.
    Running,
    Done,
    Failed,
    /// Asked for by an admin's cancel; its answer is not delivered to the finished order.
    Requested,
    /// Was running when an admin cancelled the order, which cancelled it too.
    Cancelled,
}

impl Definition for OrderFulfilment {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("order-fulfilment", 1)
            .state(PROCESSING, "Capturing the payment and reserving the items, in two children.")
            .state(
                ABORTING,
                "The payment or the reservation failed; waiting for the other to end, to undo it.",
            )
            .state(SHIPPING, "Paid and reserved; scheduling the shipment in a child.")
            .state(COMPENSATING, "The order failed; releasing the items and refunding the payment.")
            .terminal(FULFILLED, TerminalStatus::Completed, "Paid, reserved and the shipment scheduled.")
            .terminal(FAILED, TerminalStatus::Failed, "The order failed; what succeeded was undone.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the order.")
            .initial(PROCESSING)
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let order_id = input.order_id.trim();
        if order_id.is_empty() {
            return Err(Rejection::new("invalid_input", "order_id must not be empty"));
        }
        if !input.amount.as_f64().is_some_and(|amount| amount > 0.0) {
            return Err(Rejection::new("invalid_input", "amount must be above 0"));
        }
        if input.items.is_empty() {
            return Err(Rejection::new("invalid_input", "items must not be empty"));
        }
        if let Some(item) = input.items.iter().find(|item| item.sku.trim().is_empty() || item.qty == 0) {
            let reason =
                format!("item {:?} (qty {}) needs a sku and a qty of at least 1", item.sku, item.qty);
            return Err(Rejection::new("invalid_input", reason));
        }
        if input.address.is_null() {
            return Err(Rejection::new("invalid_input", "address must be given"));
        }
        let data = Data {
            order_id: order_id.into(),
            amount: input.amount,
            items: input.items,
            address: input.address,
            payment: None,
            inventory: None,
            shipment: None,
            payment_id: None,
            reservation_id: None,
            tracking_id: None,
            release: None,
            refund: None,
            failure: None,
            attention: Vec::new(),
        };
        let payment = json!({ "order_id": data.order_id, "amount": data.amount });
        let inventory = json!({ "order_id": data.order_id, "items": data.items });
        Ok(Transition::to(PROCESSING, data)
            .child(PAYMENT, "order-payment", None, payment)
            .child(INVENTORY, "order-inventory", None, inventory)
            .with_message("Capturing the payment and reserving the items"))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        Err(Rejection::new("no_actions", format!("order-fulfilment takes no actions, not {}", call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        match (state.as_str(), event) {
            (PROCESSING | ABORTING, Received::ChildEnded { key, child_id, status, state, data: child })
                if (key == PAYMENT && data.payment.is_none())
                    || (key == INVENTORY && data.inventory.is_none()) =>
            {
                let leg = if key == PAYMENT { Leg::Payment } else { Leg::Inventory };
                let completed = leg.record(&mut data, child_id, status, state, &child);
                let other = if key == PAYMENT { Leg::Inventory } else { Leg::Payment };
                Ok(match (completed, other.end(&data).map(|end| end.status)) {
                    (true, None) => Transition::to(PROCESSING, data).with_message(format!(
                        "{}; waiting on {}",
                        leg.done(),
                        other.label()
                    )),
                    (false, None) => Transition::to(ABORTING, data).with_message(format!(
                        "Not shipping: {} failed; waiting for {} to end, to undo it if it succeeds",
                        leg.label(),
                        other.label()
                    )),
                    (true, Some(Ended::Completed)) => ship(data),
                    (_, Some(_)) => compensate(data),
                })
            }
            (SHIPPING, Received::ChildEnded { key, child_id, status, state, data: child })
                if key == SHIPMENT =>
            {
                if Leg::Shipment.record(&mut data, child_id, status, state, &child) {
                    Ok(fulfilled(data))
                } else {
                    Ok(compensate(data))
                }
            }
            (COMPENSATING, Received::TaskSucceeded { key, .. }) if awaited(&data, &key) => {
                settle(&mut data, &key, Undo::Done);
                Ok(compensated(data))
            }
            (COMPENSATING, Received::TaskFailed { key, error }) if awaited(&data, &key) => {
                settle(&mut data, &key, Undo::Failed);
                let note = if key == RELEASE {
                    let id = data.reservation_id.as_deref().unwrap_or_default();
                    format!("reservation {id} could not be released ({error}): release it by hand")
                } else {
                    let id = data.payment_id.as_deref().unwrap_or_default();
                    format!("payment {id} could not be refunded ({error}): refund it by hand")
                };
                data.attention.push(note);
                Ok(compensated(data))
            }
            (state, event) => Err(Rejection::new(
                "unexpected_event",
                format!("{state} does not expect {}", event.describe()),
            )),
        }
    }

    fn on_override(_ctx: &Context, call: OverrideCall<Data>) -> Result<Transition<Data>, Rejection> {
        let OverrideCall { state, mut data, kind, reason } = call;
        if kind == OverrideKind::ForceComplete {
            return Err(Rejection::new(
                "cannot_force_complete",
                "an order is fulfilled only by a scheduled shipment; cancel it instead",
            ));
        }
        // The host cancels the running children and the open tasks after this commit.
        let running: Vec<&str> = match state.as_str() {
            PROCESSING | ABORTING => [Leg::Payment, Leg::Inventory]
                .into_iter()
                .filter(|leg| leg.end(&data).is_none())
                .map(Leg::label)
                .collect(),
            SHIPPING => vec![Leg::Shipment.label()],
            _ => Vec::new(),
        };
        if !running.is_empty() {
            data.attention.push(format!(
                "cancelled while {} still ran: a request in flight may have gone through all the same; check by hand",
                running.join(" and ")
            ));
        }
        let message = format!("cancelled by an admin: {reason}");
        if state == COMPENSATING {
            if data.release == Some(Undo::Running) {
                data.release = Some(Undo::Cancelled);
                let id = data.reservation_id.as_deref().unwrap_or_default();
                data.attention
                    .push(format!("the release of reservation {id} was cut short: release it by hand"));
            }
            if data.refund == Some(Undo::Running) {
                data.refund = Some(Undo::Cancelled);
                let id = data.payment_id.as_deref().unwrap_or_default();
                data.attention.push(format!("the refund of payment {id} was cut short: refund it by hand"));
            }
            return Ok(Transition::to(CANCELLED, data).with_message(message));
        }
        let tasks = undo(&mut data, Undo::Requested);
        Ok(with_tasks(Transition::to(CANCELLED, data), tasks).with_message(message))
    }
}

/// The three children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Payment,
    Inventory,
    Shipment,
}

impl Leg {
    fn label(self) -> &'static str {
        match self {
            Leg::Payment => "the payment",
            Leg::Inventory => "the inventory reservation",
            Leg::Shipment => "the shipment",
        }
    }

    /// Says that it completed.
    fn done(self) -> &'static str {
        match self {
            Leg::Payment => "Payment captured",
            Leg::Inventory => "Items reserved",
            Leg::Shipment => "Shipment scheduled",
        }
    }

    /// The member of the child's data, and of the parent's, with the participant's id.
    fn id_member(self) -> &'static str {
        match self {
            Leg::Payment => "payment_id",
            Leg::Inventory => "reservation_id",
            Leg::Shipment => "tracking_id",
        }
    }

    /// What a person does when it is unclear whether the participant acted.
    fn check(self) -> &'static str {
        match self {
            Leg::Payment => "check with the payment processor and refund it by hand",
            Leg::Inventory => "check with the warehouse and release it by hand",
            Leg::Shipment => "check with the carrier and cancel it by hand",
        }
    }

    fn end(self, data: &Data) -> Option<&ChildEnd> {
        match self {
            Leg::Payment => data.payment.as_ref(),
            Leg::Inventory => data.inventory.as_ref(),
            Leg::Shipment => data.shipment.as_ref(),
        }
    }

    /// Records the child's end in `data`: its id, or why it failed. Whether it completed.
    fn record(
        self,
        data: &mut Data,
        child_id: String,
        status: TerminalStatus,
        state: String,
        child: &Value,
    ) -> bool {
        let text = |member: &str| child.get(member).and_then(Value::as_str).filter(|text| !text.is_empty());
        let (status, ended) = match status {
            TerminalStatus::Completed => (Ended::Completed, "completed"),
            TerminalStatus::Failed => (Ended::Failed, "failed"),
            TerminalStatus::Cancelled => (Ended::Cancelled, "was cancelled"),
        };
        let mut reason = None;
        if status == Ended::Completed {
            let id = text(self.id_member()).map(String::from);
            match self {
                Leg::Payment => data.payment_id = id,
                Leg::Inventory => data.reservation_id = id,
                Leg::Shipment => data.tracking_id = id,
            }
        } else {
            // A child's own `failure`; the host's `error` for a child that could not start.
            let why = text("failure").or_else(|| text("error")).map_or_else(
                || format!("{} {ended} in state {state}", self.label()),
                |why| format!("{} {ended}: {why}", self.label()),
            );
            data.failure = Some(match data.failure.take() {
                Some(first) => format!("{first}; and {why}"),
                None => why.clone(),
            });
            if status == Ended::Cancelled || child.get("outcome_unknown") == Some(&Value::Bool(true)) {
                data.attention.push(format!(
                    "{} (child {child_id}) {ended} but may have gone through: {}",
                    self.label(),
                    self.check()
                ));
            }
            reason = Some(why);
        }
        let end = Some(ChildEnd { child_id, status, state, reason });
        match self {
            Leg::Payment => data.payment = end,
            Leg::Inventory => data.inventory = end,
            Leg::Shipment => data.shipment = end,
        }
        status == Ended::Completed
    }
}

/// Paid and reserved: the shipment.
fn ship(data: Data) -> Transition<Data> {
    let shipment = json!({ "order_id": data.order_id, "address": data.address, "items": data.items });
    Transition::to(SHIPPING, data)
        .child(SHIPMENT, "order-shipment", None, shipment)
        .with_message("Payment captured and items reserved; scheduling the shipment")
}

fn fulfilled(mut data: Data) -> Transition<Data> {
    let message = match &data.tracking_id {
        Some(tracking_id) => format!("Order fulfilled; tracking id {tracking_id}"),
        None => {
            data.attention.push("the shipment completed without a tracking_id".into());
            "Order fulfilled, without a tracking id".into()
        }
    };
    Transition::to(FULFILLED, data).with_message(message)
}

/// The order failed: undo what completed, or fail at once if nothing did.
fn compensate(mut data: Data) -> Transition<Data> {
    let tasks = undo(&mut data, Undo::Running);
    let message = match (data.release.is_some(), data.refund.is_some()) {
        (false, false) => return failed(data),
        (true, true) => "The order failed; releasing the items and refunding the payment",
        (true, false) => "The order failed; releasing the items",
        (false, true) => "The order failed; refunding the payment",
    };
    with_tasks(Transition::to(COMPENSATING, data), tasks).with_message(message)
}

/// The compensating tasks `data` calls for, marked `mark` in it: a release of a
/// completed reservation and a refund of a completed payment. One that completed
/// without its id cannot be undone here, and is noted instead.
fn undo(data: &mut Data, mark: Undo) -> Vec<(&'static str, &'static str, Value)> {
    let completed = |end: &Option<ChildEnd>| end.as_ref().is_some_and(|end| end.status == Ended::Completed);
    let mut tasks = Vec::new();
    if completed(&data.inventory) {
        match &data.reservation_id {
            Some(id) => {
                tasks.push((
                    RELEASE,
                    "inventory.release",
                    json!({ "order_id": data.order_id, "reservation_id": id }),
                ));
                data.release = Some(mark);
            }
            None => data
                .attention
                .push("the items were reserved without a reservation_id: release them by hand".into()),
        }
    }
    if completed(&data.payment) {
        match &data.payment_id {
            Some(id) => {
                tasks.push((
                    REFUND,
                    "payments.refund",
                    json!({ "order_id": data.order_id, "payment_id": id }),
                ));
                data.refund = Some(mark);
            }
            None => {
                data.attention.push("the payment was captured without a payment_id: refund it by hand".into())
            }
        }
    }
    tasks
}

fn with_tasks(transition: Transition<Data>, tasks: Vec<(&str, &str, Value)>) -> Transition<Data> {
    tasks.into_iter().fold(transition, |transition, (key, name, input)| transition.task(key, name, input))
}

/// Whether `key` is a compensating task whose answer is awaited.
fn awaited(data: &Data, key: &str) -> bool {
    match key {
        RELEASE => data.release == Some(Undo::Running),
        REFUND => data.refund == Some(Undo::Running),
        _ => false,
    }
}

fn settle(data: &mut Data, key: &str, to: Undo) {
    match key {
        RELEASE => data.release = Some(to),
        _ => data.refund = Some(to),
    }
}

/// A compensation answered: fail once none is awaited any more.
fn compensated(data: Data) -> Transition<Data> {
    match (data.release == Some(Undo::Running), data.refund == Some(Undo::Running)) {
        (true, _) => {
            Transition::to(COMPENSATING, data).with_message("The order failed; still releasing the items")
        }
        (_, true) => {
            Transition::to(COMPENSATING, data).with_message("The order failed; still refunding the payment")
        }
        _ => failed(data),
    }
}

fn failed(data: Data) -> Transition<Data> {
    let message = if data.attention.is_empty() {
        "The order failed; nothing is left captured or reserved"
    } else {
        "The order failed and needs attention (see attention in its data)"
    };
    Transition::to(FAILED, data).with_message(message)
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(OrderFulfilment);
