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
//! `payment_id`. Data: `{order_id, amount, payment_id, failure, error,
//! outcome_unknown}`.
//!
//! A refund is not this definition's work: a finished instance takes no more
//! transitions, so whoever needs a captured payment back (the parent) runs
//! `payments.refund` itself. Force-complete is refused: `COMPLETED` promises a
//! `payment_id`, and an admin cannot give one.
//!
//! The behaviour is the SDK's [`switchyard_guest::single_task`]; this crate gives its
//! names, texts and input.

use serde_json::Number;
use switchyard_guest::prelude::*;
use switchyard_guest::single_task::{SingleTask, SingleTaskDefinition, Texts};

/// The definition.
pub type OrderPayment = SingleTaskDefinition<Payment>;

/// The instance's data: [`Capture`]'s members, then `payment_id`, `failure`, `error`
/// and `outcome_unknown`.
pub type Data = switchyard_guest::single_task::Data<Payment>;

/// What `order-payment` is: a [`SingleTask`].
#[derive(Debug)]
pub struct Payment;

/// The input, and once validated, the capture's parameters: the task's input and the
/// data's first members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub order_id: String,
    pub amount: Number,
}

impl SingleTask for Payment {
    type Input = Capture;
    type Params = Capture;
    const NAME: &'static str = "order-payment";
    const VERSION: u32 = 1;
    const RUNNING: &'static str = "CAPTURING";
    const KEY: &'static str = "capture";
    const TASK: &'static str = "payments.capture";
    const ID: &'static str = "payment_id";
    const TEXTS: Texts = Texts {
        running: "Capturing the payment",
        completed: "The payment is captured.",
        succeeded: "Payment captured",
        failed: "The payment could not be captured",
        unconfirmed: "The capture was not confirmed",
        cancelled: "An admin cancelled the capture.",
        no_force_complete: "a payment is completed only by a capture with a payment_id; cancel it instead",
    };

    fn validate(input: Capture) -> Result<Capture, Rejection> {
        let order_id = input.order_id.trim();
        if order_id.is_empty() {
            return Err(Rejection::new("invalid_input", "order_id must not be empty"));
        }
        if !input.amount.as_f64().is_some_and(|amount| amount > 0.0) {
            return Err(Rejection::new("invalid_input", "amount must be above 0"));
        }
        Ok(Capture { order_id: order_id.into(), amount: input.amount })
    }
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(OrderPayment);
