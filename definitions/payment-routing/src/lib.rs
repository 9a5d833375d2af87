//! `payment-routing`, version 1: a payment is charged through a primary gateway and,
//! only when the primary certainly did not charge it, through a secondary one.
//!
//! **Invariant: the gateways together charge a payment at most once, under any fault.**
//! A charge is never retried blindly, and the secondary is charged only after the
//! primary has said, in a way that cannot be misread, that it did not charge.
//!
//! # Input
//!
//! `{payment_id, amount, currency, region}`, plus optional tuning fields:
//! - `payment_id`: non-empty, at most 255 bytes (surrounding spaces are dropped);
//! - `amount`: a JSON number above 0, passed to the gateways as it was sent;
//! - `currency`: three ASCII letters, passed on in upper case;
//! - `region`: any string; `EU` (in any case) routes to `beta` first;
//! - `poll_interval_ms` (default 2000): the wait before each status query;
//! - `max_polls` (default 30, 1–1000): status queries per wait before an operator is
//!   needed;
//! - `charge_timeout_ms` (default 10000, at least 1): the charge attempt's timeout.
//!
//! # Routing
//!
//! Region `EU`: primary `beta`, secondary `alpha`; any other region: primary `alpha`,
//! secondary `beta`.
//!
//! # Tasks (the contract a deployment binds to participants)
//!
//! - `gateway.alpha.charge`, `gateway.beta.charge` `{payment_id, amount, currency,
//!   vendor_key}` → `{result: "charged" | "declined", charge_id?}`;
//! - `gateway.alpha.status`, `gateway.beta.status` `{payment_id, vendor_key}` →
//!   `{result: "charged" | "declined" | "not_found" | "pending", charge_id?}`.
//!
//! `vendor_key` is `pay-{payment_id}`: the platform's idempotency key for the vendor, the
//! same on every charge and status call about the payment, whichever gateway and however
//! often the host sends it. The charge task asks for exactly one attempt (`retry:
//! {max_attempts: 1}`); a deployment must not override `retry` in the bindings of the
//! charge tasks. Status queries take the host's normal retries.
//!
//! What the gateways must guarantee for the invariant to hold:
//! - a charge is deduplicated by `vendor_key` (the host may deliver a task again after a
//!   crash, under the same `task_id`);
//! - `not_found` is final: a gateway that answered `not_found` for a `vendor_key` never
//!   charges it afterwards (a request it has received but not finished is `pending`);
//! - a final 4xx other than `402`, `409` and `425`, or a failure it reports after a
//!   `202`, means it did not charge;
//! - every host sharing the database has the same `[tasks]` bindings (an `unbound` task
//!   with no attempt recorded is taken as never sent).
//!
//! # States
//!
//! ```text
//! ROUTING_SELECTED ──timer──▶ PRIMARY_GATEWAY_INVOKED
//! PRIMARY_GATEWAY_INVOKED ── charged ──▶ COMPLETED
//!                         ── declined (body, or HTTP 402) ──▶ FAILED
//!                         ── in doubt: timeout, exhausted, unreachable, 409/425,
//!                            an answer without a known result ──▶ AWAITING_PRIMARY_RESPONSE
//!                         ── not charged: another final 4xx, unbound ──▶ SECONDARY_GATEWAY_INVOKED
//! AWAITING_PRIMARY_RESPONSE (timer, then status query, repeated)
//!                         ── charged ──▶ COMPLETED
//!                         ── declined ──▶ FAILED
//!                         ── not_found ──▶ SECONDARY_GATEWAY_INVOKED
//!                         ── pending / query failed, max_polls times ──▶ RECONCILIATION_REQUIRED
//! SECONDARY_GATEWAY_INVOKED ── charged ──▶ COMPLETED
//!                           ── declined ──▶ FAILED
//!                           ── in doubt ──▶ AWAITING_SECONDARY_RESPONSE
//!                           ── not charged ──▶ FAILED
//! AWAITING_SECONDARY_RESPONSE: as for the primary, but not_found ──▶ FAILED
//! RECONCILIATION_REQUIRED ── recheck (admin action) ──▶ AWAITING_*_RESPONSE
//!                         ── force-complete ──▶ COMPLETED, cancel ──▶ CANCELLED
//! ```
//!
//! `ROUTING_SELECTED` is left by a timer of 0 ms, so the routing decision and the charge
//! are two entries in the history (the charge is asked for by the transition into
//! `PRIMARY_GATEWAY_INVOKED`); it costs at most one executor poll interval.
//!
//! `RECONCILIATION_REQUIRED` is not terminal: the gateway whose charge is in doubt
//! (`data.in_doubt`) did not confirm or rule it out within `max_polls` status queries,
//! so nobody knows whether the customer was charged. Ending the instance would report
//! something unknown as a fact, and charging the secondary could charge twice; an
//! operator checks with the gateway and then either runs `recheck` (admin-only: a new
//! round of up to `max_polls` status queries, the first one at once), force-completes
//! (the charge was found) or cancels (it was not, or will be refunded by hand).
//!
//! # Admin overrides
//!
//! - **force-complete** is refused with `payment_declined` once a gateway declined the
//!   payment, with `not_charged` in `ROUTING_SELECTED` (no gateway was asked to charge),
//!   and with `outcome_pending` while a charge is in flight or being confirmed by
//!   status queries (the instance finds out by itself; completing it would claim a
//!   charge nobody has confirmed). It is allowed in `RECONCILIATION_REQUIRED`, where it
//!   is how an operator records that the charge in doubt was found at the gateway:
//!   `gateway` becomes that gateway, `charge_id` stays unknown, `resolution` says so.
//! - **cancel** is allowed in every running state, since an admin must be able to stop
//!   an instance. The host cancels the open tasks, but a charge already sent may still
//!   land: when one is in doubt, `in_doubt` stays set in `CANCELLED`, and `resolution`
//!   and the message say which gateway to reconcile with and under which `vendor_key`.
//!   A cancel never causes a charge, so it cannot break the invariant.
//!
//! # Data
//!
//! The input (normalised) and tuning, `primary`, `secondary`, `vendor_key`, `gateway`
//! and `charge_id` (once charged), `in_doubt`, `polls` (status queries in the current
//! wait), `attempts` (every charge and status call in brief: gateway, call, outcome),
//! `declined`, `failure` and `resolution`.

use serde_json::{Number, Value, json};
use switchyard_guest::prelude::*;

const ROUTING_SELECTED: &str = "ROUTING_SELECTED";
const PRIMARY_GATEWAY_INVOKED: &str = "PRIMARY_GATEWAY_INVOKED";
const AWAITING_PRIMARY_RESPONSE: &str = "AWAITING_PRIMARY_RESPONSE";
const SECONDARY_GATEWAY_INVOKED: &str = "SECONDARY_GATEWAY_INVOKED";
const AWAITING_SECONDARY_RESPONSE: &str = "AWAITING_SECONDARY_RESPONSE";
const RECONCILIATION_REQUIRED: &str = "RECONCILIATION_REQUIRED";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Gateways.
const ALPHA: &str = "alpha";
const BETA: &str = "beta";

/// Effect keys.
const INVOKE_PRIMARY: &str = "invoke-primary";
const CHARGE_PRIMARY: &str = "charge-primary";
const POLL_PRIMARY: &str = "poll-primary";
const STATUS_PRIMARY: &str = "status-primary";
const CHARGE_SECONDARY: &str = "charge-secondary";
const POLL_SECONDARY: &str = "poll-secondary";
const STATUS_SECONDARY: &str = "status-secondary";

/// Actions.
const RECHECK: &str = "recheck";

/// Tuning defaults.
const DEFAULT_POLL_INTERVAL_MS: u64 = 2_000;
const DEFAULT_MAX_POLLS: u32 = 30;
const DEFAULT_CHARGE_TIMEOUT_MS: u64 = 10_000;
/// Bounds the data: every status query is recorded in `attempts`.
const MAX_MAX_POLLS: u32 = 1_000;
const MAX_PAYMENT_ID_LEN: usize = 255;

/// The message while a charge's outcome is being confirmed.
const WAITING: &str = "Waiting on payment processor confirmation";

/// The definition.
#[derive(Debug)]
pub struct PaymentRouting;

/// What a client starts a payment with.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub payment_id: String,
    pub amount: Number,
    pub currency: String,
    pub region: String,
    pub poll_interval_ms: Option<u64>,
    pub max_polls: Option<u32>,
    pub charge_timeout_ms: Option<u64>,
}

/// The instance's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub payment_id: String,
    pub amount: Number,
    /// Upper case.
    pub currency: String,
    pub region: String,
    /// The gateway charged first, and the one charged only if the primary did not.
    pub primary: String,
    pub secondary: String,
    /// The idempotency key sent to the gateways on every call about this payment.
    pub vendor_key: String,
    pub poll_interval_ms: u64,
    pub max_polls: u32,
    pub charge_timeout_ms: u64,
    /// The gateway that charged the payment, once one has.
    pub gateway: Option<String>,
    /// The gateway's id for the charge, if it gave one.
    pub charge_id: Option<String>,
    /// The gateway whose charge is in doubt: asked for, and neither confirmed nor ruled
    /// out yet. Kept in `CANCELLED` when an admin cancelled while it was.
    pub in_doubt: Option<String>,
    /// Status queries made in the current wait (compared with `max_polls`).
    pub polls: u32,
    /// Every call to a gateway about the payment, oldest first.
    pub attempts: Vec<Attempt>,
    /// Whether a gateway declined the payment.
    pub declined: bool,
    /// Why the payment failed, once it has.
    pub failure: Option<String>,
    /// What an admin's override decided, and what is left to check by hand.
    pub resolution: Option<String>,
}

/// One call to a gateway, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub gateway: String,
    /// `charge` or `status`.
    pub call: String,
    /// `charged`, `declined`, `not_found`, `pending`, or what went wrong, e.g. `timeout`,
    /// `exhausted (HTTP 503)`, `refused (HTTP 400)`, `unbound`, `no known result`.
    pub outcome: String,
}

impl Definition for PaymentRouting {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("payment-routing", 1)
            .state(ROUTING_SELECTED, "The gateways are chosen; the primary is about to be charged.")
            .state(PRIMARY_GATEWAY_INVOKED, "The primary gateway is asked to charge the payment.")
            .state(
                AWAITING_PRIMARY_RESPONSE,
                "The primary's charge may or may not have happened; its status is polled.",
            )
            .state(
                SECONDARY_GATEWAY_INVOKED,
                "The primary did not charge the payment; the secondary gateway is asked to.",
            )
            .state(
                AWAITING_SECONDARY_RESPONSE,
                "The secondary's charge may or may not have happened; its status is polled.",
            )
            .state(
                RECONCILIATION_REQUIRED,
                "A charge stayed in doubt after every status query: an operator must reconcile it \
                 with the gateway (recheck, force-complete or cancel).",
            )
            .terminal(COMPLETED, TerminalStatus::Completed, "One gateway charged the payment.")
            .terminal(FAILED, TerminalStatus::Failed, "The payment was declined, or no gateway charged it.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the payment.")
            .initial(ROUTING_SELECTED)
            .admin_action(
                RECHECK,
                &[RECONCILIATION_REQUIRED],
                &[AWAITING_PRIMARY_RESPONSE, AWAITING_SECONDARY_RESPONSE],
                "Query the status of the charge in doubt again, for up to max_polls more queries.",
            )
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let invalid = |reason: &str| Err(Rejection::new("invalid_input", reason));
        let payment_id = input.payment_id.trim();
        if payment_id.is_empty() {
            return invalid("payment_id must not be empty");
        }
        if payment_id.len() > MAX_PAYMENT_ID_LEN {
            return invalid("payment_id must be at most 255 bytes");
        }
        if !input.amount.as_f64().is_some_and(|amount| amount > 0.0) {
            return invalid("amount must be a number above 0");
        }
        let currency = input.currency.trim();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return invalid("currency must be three letters, e.g. EUR");
        }
        let max_polls = input.max_polls.unwrap_or(DEFAULT_MAX_POLLS);
        if !(1..=MAX_MAX_POLLS).contains(&max_polls) {
            return invalid("max_polls must be between 1 and 1000");
        }
        let charge_timeout_ms = input.charge_timeout_ms.unwrap_or(DEFAULT_CHARGE_TIMEOUT_MS);
        if charge_timeout_ms == 0 {
            return invalid("charge_timeout_ms must be at least 1");
        }
        let region = input.region.trim();
        let (primary, secondary) = route(region);
        let data = Data {
            payment_id: payment_id.into(),
            amount: input.amount,
            currency: currency.to_ascii_uppercase(),
            region: region.into(),
            primary: primary.into(),
            secondary: secondary.into(),
            vendor_key: format!("pay-{payment_id}"),
            poll_interval_ms: input.poll_interval_ms.unwrap_or(DEFAULT_POLL_INTERVAL_MS),
            max_polls,
            charge_timeout_ms,
            gateway: None,
            charge_id: None,
            in_doubt: None,
            polls: 0,
            attempts: Vec::new(),
            declined: false,
            failure: None,
            resolution: None,
        };
        Ok(Transition::to(ROUTING_SELECTED, data).timer(INVOKE_PRIMARY, 0).with_message(format!(
            "Routing selected: charging through {primary}, then {secondary} if needed"
        )))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let ActionCall { state, mut data, action, .. } = call;
        match (action.as_str(), state.as_str()) {
            (RECHECK, RECONCILIATION_REQUIRED) => {
                let leg = data.in_doubt.as_deref().and_then(|gateway| Leg::of_gateway(&data, gateway));
                let Some(leg) = leg else {
                    return Err(Rejection::new("nothing_in_doubt", "no charge is in doubt"));
                };
                data.polls = 0;
                Ok(poll(data, leg))
            }
            (action, state) => {
                Err(Rejection::new("not_allowed", format!("{action} is not possible in {state}")))
            }
        }
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, data, event } = call;
        let leg = Leg::of_state(&state);
        match (state.as_str(), leg, event) {
            (ROUTING_SELECTED, _, Received::TimerFired { key }) if key == INVOKE_PRIMARY => {
                Ok(invoke(data, Leg::Primary))
            }
            (
                PRIMARY_GATEWAY_INVOKED | SECONDARY_GATEWAY_INVOKED,
                Some(leg),
                Received::TaskSucceeded { key, output },
            ) if key == leg.charge_key() => Ok(charge_answered(data, leg, charge_answer(&output))),
            (
                PRIMARY_GATEWAY_INVOKED | SECONDARY_GATEWAY_INVOKED,
                Some(leg),
                Received::TaskFailed { key, error },
            ) if key == leg.charge_key() => Ok(charge_answered(data, leg, charge_failure(&error))),
            (
                AWAITING_PRIMARY_RESPONSE | AWAITING_SECONDARY_RESPONSE,
                Some(leg),
                Received::TimerFired { key },
            ) if key == leg.poll_key() => Ok(poll(data, leg)),
            (
                AWAITING_PRIMARY_RESPONSE | AWAITING_SECONDARY_RESPONSE,
                Some(leg),
                Received::TaskSucceeded { key, output },
            ) if key == leg.status_key() => Ok(status_answered(data, leg, status_answer(&output))),
            (
                AWAITING_PRIMARY_RESPONSE | AWAITING_SECONDARY_RESPONSE,
                Some(leg),
                Received::TaskFailed { key, error },
            ) if key == leg.status_key() => {
                Ok(status_answered(data, leg, StatusAnswer::Unknown(describe(&error))))
            }
            (state, _, event) => Err(Rejection::new(
                "unexpected_event",
                format!("{state} does not expect {}", event.describe()),
            )),
        }
    }

    fn on_override(_ctx: &Context, call: OverrideCall<Data>) -> Result<Transition<Data>, Rejection> {
        let OverrideCall { state, mut data, kind, reason } = call;
        if kind == OverrideKind::ForceComplete && data.declined {
            let by = data.gateway_of_decline();
            return Err(Rejection::new(
                "payment_declined",
                format!(
                    "payment {} was declined by {by}: a declined payment cannot be force-completed",
                    data.payment_id
                ),
            ));
        }
        if matches!(state.as_str(), COMPLETED | FAILED | CANCELLED) {
            return Err(Rejection::new("instance_finished", format!("the payment is finished ({state})")));
        }
        match kind {
            OverrideKind::ForceComplete => match state.as_str() {
                RECONCILIATION_REQUIRED => {
                    let gateway = data.in_doubt.take().unwrap_or_else(|| data.primary.clone());
                    data.resolution = Some(format!(
                        "force-completed by an admin ({reason}): the charge at {gateway} was confirmed by hand; \
                         its charge_id is not known here"
                    ));
                    data.gateway = Some(gateway.clone());
                    Ok(Transition::to(COMPLETED, data).with_message(format!(
                        "completed by an admin: {reason} (the charge at {gateway} was confirmed by hand)"
                    )))
                }
                ROUTING_SELECTED => Err(Rejection::new(
                    "not_charged",
                    "no gateway has been asked to charge the payment yet: it cannot be completed; cancel it instead",
                )),
                _ => {
                    let gateway = data.in_doubt.as_deref().unwrap_or(&data.primary);
                    Err(Rejection::new(
                        "outcome_pending",
                        format!(
                            "the charge at {gateway} is still being confirmed ({state}): wait until the payment \
                             settles or needs reconciliation, or cancel it"
                        ),
                    ))
                }
            },
            OverrideKind::Cancel => {
                let message = match data.in_doubt.clone() {
                    None => format!("cancelled by an admin: {reason}"),
                    Some(gateway) => {
                        let note = format!(
                            "a charge at {gateway} may still have been made: reconcile with {gateway} under \
                             vendor_key {} and refund it if it charged",
                            data.vendor_key
                        );
                        data.resolution = Some(format!("cancelled by an admin ({reason}) while {note}"));
                        format!("cancelled by an admin: {reason}; {note}")
                    }
                };
                Ok(Transition::to(CANCELLED, data).with_message(message))
            }
        }
    }
}

/// The routing rules: (primary, secondary) for a region.
fn route(region: &str) -> (&'static str, &'static str) {
    if region.eq_ignore_ascii_case("EU") { (BETA, ALPHA) } else { (ALPHA, BETA) }
}

/// Which of the two gateways a step is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Primary,
    Secondary,
}

impl Leg {
    fn of_state(state: &str) -> Option<Leg> {
        match state {
            PRIMARY_GATEWAY_INVOKED | AWAITING_PRIMARY_RESPONSE => Some(Leg::Primary),
            SECONDARY_GATEWAY_INVOKED | AWAITING_SECONDARY_RESPONSE => Some(Leg::Secondary),
            _ => None,
        }
    }

    fn of_gateway(data: &Data, gateway: &str) -> Option<Leg> {
        if gateway == data.primary {
            Some(Leg::Primary)
        } else if gateway == data.secondary {
            Some(Leg::Secondary)
        } else {
            None
        }
    }

    fn gateway(self, data: &Data) -> String {
        match self {
            Leg::Primary => data.primary.clone(),
            Leg::Secondary => data.secondary.clone(),
        }
    }

    fn invoked_state(self) -> &'static str {
        match self {
            Leg::Primary => PRIMARY_GATEWAY_INVOKED,
            Leg::Secondary => SECONDARY_GATEWAY_INVOKED,
        }
    }

    fn awaiting_state(self) -> &'static str {
        match self {
            Leg::Primary => AWAITING_PRIMARY_RESPONSE,
            Leg::Secondary => AWAITING_SECONDARY_RESPONSE,
        }
    }

    fn charge_key(self) -> &'static str {
        match self {
            Leg::Primary => CHARGE_PRIMARY,
            Leg::Secondary => CHARGE_SECONDARY,
        }
    }

    fn poll_key(self) -> &'static str {
        match self {
            Leg::Primary => POLL_PRIMARY,
            Leg::Secondary => POLL_SECONDARY,
        }
    }

    fn status_key(self) -> &'static str {
        match self {
            Leg::Primary => STATUS_PRIMARY,
            Leg::Secondary => STATUS_SECONDARY,
        }
    }
}

/// What a charge call tells about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChargeAnswer {
    Charged {
        charge_id: Option<String>,
    },
    Declined,
    /// Certainly not charged, and why (for `attempts`).
    NotCharged(String),
    /// The gateway may have charged: why it is not known.
    InDoubt(String),
}

/// What a status query tells about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StatusAnswer {
    Charged {
        charge_id: Option<String>,
    },
    Declined,
    NotFound,
    /// `pending`, a failed query or an answer without a known result.
    Unknown(String),
}

/// A charge answered with `2xx`: only a known `result` settles it.
fn charge_answer(output: &Value) -> ChargeAnswer {
    match result(output) {
        Some("charged") => ChargeAnswer::Charged { charge_id: charge_id(output) },
        Some("declined") => ChargeAnswer::Declined,
        _ => ChargeAnswer::InDoubt("no known result".into()),
    }
}

/// A charge that failed: whether the gateway may have acted.
fn charge_failure(error: &TaskError) -> ChargeAnswer {
    let why = describe(error);
    match error.kind {
        // The request may have reached the gateway and been acted on.
        FailureKind::Timeout | FailureKind::Exhausted | FailureKind::Unreachable => {
            ChargeAnswer::InDoubt(why)
        }
        // Nothing was sent, unless some host made an attempt before this one found no binding.
        FailureKind::Unbound if error.attempts == 0 => ChargeAnswer::NotCharged(why),
        FailureKind::Unbound => ChargeAnswer::InDoubt(format!("{why} after {} attempts", error.attempts)),
        FailureKind::Http if is_decline(error) => ChargeAnswer::Declined,
        // A conflict (e.g. the same idempotency key still being processed) or "too early"
        // says nothing about whether the charge happens.
        FailureKind::Http if matches!(error.status, Some(409 | 425)) => ChargeAnswer::InDoubt(why),
        FailureKind::Http => ChargeAnswer::NotCharged(why),
    }
}

/// A final refusal that is a decline: `402 Payment Required`, or a body (an answer's, or
/// a late report's error) `{"result": "declined"}`.
fn is_decline(error: &TaskError) -> bool {
    error.status == Some(402)
        || error
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<Value>(body).ok())
            .is_some_and(|body| result(&body) == Some("declined"))
}

fn status_answer(output: &Value) -> StatusAnswer {
    match result(output) {
        Some("charged") => StatusAnswer::Charged { charge_id: charge_id(output) },
        Some("declined") => StatusAnswer::Declined,
        Some("not_found") => StatusAnswer::NotFound,
        Some("pending") => StatusAnswer::Unknown("pending".into()),
        _ => StatusAnswer::Unknown("no known result".into()),
    }
}

fn result(output: &Value) -> Option<&str> {
    output.get("result")?.as_str()
}

/// The `charge_id` a gateway answered with, if it is a non-empty string.
fn charge_id(output: &Value) -> Option<String> {
    output.get("charge_id")?.as_str().filter(|id| !id.is_empty()).map(String::from)
}

/// Asks `leg`'s gateway to charge the payment: one attempt, never retried by the host.
fn invoke(mut data: Data, leg: Leg) -> Transition<Data> {
    let gateway = leg.gateway(&data);
    data.in_doubt = Some(gateway.clone());
    let input = json!({
        "payment_id": data.payment_id,
        "amount": data.amount,
        "currency": data.currency,
        "vendor_key": data.vendor_key,
    });
    let options = TaskOptions {
        retry: Some(RetryPolicy { max_attempts: Some(1), ..Default::default() }),
        attempt_timeout_ms: Some(data.charge_timeout_ms),
        report_timeout_ms: None,
    };
    let message = match leg {
        Leg::Primary => format!("Charging the payment through {gateway}"),
        Leg::Secondary => {
            format!("Charging the payment through {gateway}: {} did not charge it", data.primary)
        }
    };
    Transition::to(leg.invoked_state(), data)
        .task_with(leg.charge_key(), &format!("gateway.{gateway}.charge"), input, options)
        .with_message(message)
}

fn charge_answered(mut data: Data, leg: Leg, answer: ChargeAnswer) -> Transition<Data> {
    let gateway = leg.gateway(&data);
    let outcome = match &answer {
        ChargeAnswer::Charged { .. } => "charged".into(),
        ChargeAnswer::Declined => "declined".into(),
        ChargeAnswer::NotCharged(why) | ChargeAnswer::InDoubt(why) => why.clone(),
    };
    data.record(&gateway, "charge", outcome);
    match answer {
        ChargeAnswer::Charged { charge_id } => completed(data, gateway, charge_id),
        ChargeAnswer::Declined => declined(data, gateway),
        ChargeAnswer::NotCharged(why) => not_charged(data, leg, &why),
        ChargeAnswer::InDoubt(_) => {
            data.polls = 0;
            let after_ms = data.poll_interval_ms;
            Transition::to(leg.awaiting_state(), data).timer(leg.poll_key(), after_ms).with_message(WAITING)
        }
    }
}

/// Queries the status of `leg`'s charge.
fn poll(mut data: Data, leg: Leg) -> Transition<Data> {
    let gateway = leg.gateway(&data);
    data.polls += 1;
    let input = json!({ "payment_id": data.payment_id, "vendor_key": data.vendor_key });
    Transition::to(leg.awaiting_state(), data)
        .task(leg.status_key(), &format!("gateway.{gateway}.status"), input)
        .with_message(WAITING)
}

fn status_answered(mut data: Data, leg: Leg, answer: StatusAnswer) -> Transition<Data> {
    let gateway = leg.gateway(&data);
    let outcome = match &answer {
        StatusAnswer::Charged { .. } => "charged".into(),
        StatusAnswer::Declined => "declined".into(),
        StatusAnswer::NotFound => "not_found".into(),
        StatusAnswer::Unknown(why) => why.clone(),
    };
    data.record(&gateway, "status", outcome);
    match answer {
        StatusAnswer::Charged { charge_id } => completed(data, gateway, charge_id),
        StatusAnswer::Declined => declined(data, gateway),
        StatusAnswer::NotFound => not_charged(data, leg, "its status is not_found"),
        StatusAnswer::Unknown(_) if data.polls < data.max_polls => {
            let after_ms = data.poll_interval_ms;
            Transition::to(leg.awaiting_state(), data).timer(leg.poll_key(), after_ms).with_message(WAITING)
        }
        StatusAnswer::Unknown(why) => {
            let message = format!(
                "Payment status unknown: {gateway} neither confirmed nor ruled out the charge after {} status \
                 queries (last: {why}); an operator must reconcile it under vendor_key {}",
                data.polls, data.vendor_key
            );
            Transition::to(RECONCILIATION_REQUIRED, data).with_message(message)
        }
    }
}

/// `leg`'s gateway certainly did not charge the payment: the secondary is tried after the
/// primary; after the secondary nothing is left.
fn not_charged(mut data: Data, leg: Leg, why: &str) -> Transition<Data> {
    data.in_doubt = None;
    match leg {
        Leg::Primary => invoke(data, Leg::Secondary),
        Leg::Secondary => {
            data.failure = Some(format!(
                "neither gateway charged the payment: {} did not, and {} did not ({why})",
                data.primary, data.secondary
            ));
            Transition::to(FAILED, data)
                .with_message("The payment could not be charged: neither gateway charged it")
        }
    }
}

fn completed(mut data: Data, gateway: String, charge_id: Option<String>) -> Transition<Data> {
    data.in_doubt = None;
    let message = format!("Payment charged through {gateway}");
    data.gateway = Some(gateway);
    data.charge_id = charge_id;
    Transition::to(COMPLETED, data).with_message(message)
}

fn declined(mut data: Data, gateway: String) -> Transition<Data> {
    data.in_doubt = None;
    data.declined = true;
    data.failure = Some(format!("the payment was declined by {gateway}"));
    Transition::to(FAILED, data).with_message(format!("Payment declined by {gateway}"))
}

impl Data {
    fn record(&mut self, gateway: &str, call: &str, outcome: String) {
        self.attempts.push(Attempt { gateway: gateway.into(), call: call.into(), outcome });
    }

    /// The gateway whose answer was the decline.
    fn gateway_of_decline(&self) -> String {
        self.attempts
            .iter()
            .rev()
            .find(|attempt| attempt.outcome == "declined")
            .map_or_else(|| "a gateway".into(), |attempt| attempt.gateway.clone())
    }
}

fn describe(error: &TaskError) -> String {
    let kind = match error.kind {
        FailureKind::Http => "refused",
        FailureKind::Timeout => "timeout",
        FailureKind::Unreachable => "unreachable",
        FailureKind::Exhausted => "exhausted",
        FailureKind::Unbound => "unbound",
    };
    match error.status {
        Some(status) => format!("{kind} (HTTP {status})"),
        None => kind.into(),
    }
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(PaymentRouting);
