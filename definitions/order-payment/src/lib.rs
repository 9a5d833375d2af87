//! `order-payment`, version 1: captures an order's payment. `order-fulfilment` starts it
//! as a child; it also runs on its own.
//!
//! Input: `{order_id, amount}` (other members are ignored): `order_id` not blank,
//! `amount` a number above 0, passed to the participant as sent.
//!
//! Task (its name is the contract a deployment binds to a participant):
//! `payments.capture` `{order_id, amount}` → `{payment_id}`.
//!
//! States: `CAPTURING` → `COMPLETED` (completed, `data.payment_id` set) or `FAILED`
//! (failed, `data.failure` and `data.error` say why), or `CANCELLED` by an admin.
//! `data.outcome_unknown` is set when the capture failed in a way that leaves open
//! whether the processor took the money: it timed out, or answered without a
//! `payment_id`.
//!
//! A refund is not this definition's work: a finished instance takes no more
//! transitions, so whoever needs a captured payment back (the parent) runs
//! `payments.refund` itself. Force-complete is refused: `COMPLETED` promises a
//! `payment_id`, and an admin cannot give one.

use serde_json::{Number, json};
use switchyard_guest::prelude::*;

const CAPTURING: &str = "CAPTURING";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Effect key.
const CAPTURE: &str = "capture";

/// The definition.
#[derive(Debug)]
pub struct OrderPayment;

#[derive(Debug, Deserialize)]
pub struct Input {
    pub order_id: String,
    pub amount: Number,
}

/// The instance's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub order_id: String,
    pub amount: Number,
    /// The processor's id for the capture, once it succeeded.
    pub payment_id: Option<String>,
    /// Why the capture failed, once it has.
    pub failure: Option<String>,
    /// The task's error, when the participant failed it.
    pub error: Option<TaskError>,
    /// The capture failed, but the processor may have taken the money all the same.
    pub outcome_unknown: bool,
}

impl Definition for OrderPayment {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("order-payment", 1)
            .state(CAPTURING, "Capturing the payment.")
            .terminal(COMPLETED, TerminalStatus::Completed, "The payment is captured.")
            .terminal(FAILED, TerminalStatus::Failed, "The payment could not be captured.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the capture.")
            .initial(CAPTURING)
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
        let data = Data {
            order_id: order_id.into(),
            amount: input.amount,
            payment_id: None,
            failure: None,
            error: None,
            outcome_unknown: false,
        };
        let capture = json!({ "order_id": data.order_id, "amount": data.amount });
        Ok(Transition::to(CAPTURING, data)
            .task(CAPTURE, "payments.capture", capture)
            .with_message("Capturing the payment"))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        Err(Rejection::new("no_actions", format!("order-payment takes no actions, not {}", call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        match (state.as_str(), event) {
            (CAPTURING, Received::TaskSucceeded { key, output }) if key == CAPTURE => {
                match output.get("payment_id").and_then(|id| id.as_str()).filter(|id| !id.is_empty()) {
                    Some(payment_id) => {
                        data.payment_id = Some(payment_id.into());
                        Ok(Transition::to(COMPLETED, data).with_message("Payment captured"))
                    }
                    None => {
                        data.failure = Some("payments.capture answered without a payment_id".into());
                        data.outcome_unknown = true;
                        Ok(Transition::to(FAILED, data).with_message("The capture was not confirmed"))
                    }
                }
            }
            (CAPTURING, Received::TaskFailed { key, error }) if key == CAPTURE => {
                data.failure = Some(format!("the payment could not be captured ({})", describe(&error)));
                data.outcome_unknown = error.kind == FailureKind::Timeout;
                data.error = Some(error);
                Ok(Transition::to(FAILED, data).with_message("The payment could not be captured"))
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
                "a payment is completed only by a capture with a payment_id; cancel it instead",
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

switchyard_guest::export!(OrderPayment);
