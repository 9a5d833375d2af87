use super::*;
use switchyard_guest::abi::{Effect, Task};
use switchyard_guest::testing::{Machine, Refusal};

const VENDOR_KEY: &str = "pay-P-1";

fn input(region: &str) -> Value {
    json!({
        "payment_id": "P-1",
        "amount": 1250,
        "currency": "eur",
        "region": region,
        "poll_interval_ms": 500,
        "max_polls": 3,
        "charge_timeout_ms": 4000,
    })
}

/// A payment whose primary has just been asked to charge.
fn charging(region: &str) -> Machine<PaymentRouting> {
    let mut payment = Machine::start(input(region)).expect("a payment starts");
    payment.timer_fired(INVOKE_PRIMARY).expect("the routing timer is taken");
    payment
}

/// The one task the last transition asked for.
fn asked(machine: &Machine<PaymentRouting>) -> Task {
    match machine.effects() {
        [Effect::Task(task)] => task.clone(),
        other => panic!("expected one task, got {other:?}"),
    }
}

fn input_of(task: &Task) -> Value {
    serde_json::from_str(&task.input).expect("task input is JSON")
}

/// The one timer the last transition asked for: (key, after_ms).
fn timer(machine: &Machine<PaymentRouting>) -> (String, u64) {
    match machine.effects() {
        [Effect::Timer { key, after_ms }] => (key.clone(), *after_ms),
        other => panic!("expected one timer, got {other:?}"),
    }
}

fn error(kind: FailureKind, status: Option<u16>, body: Option<&str>) -> TaskError {
    TaskError { kind, status, body: body.map(String::from), attempts: 1 }
}

fn fail(machine: &mut Machine<PaymentRouting>, key: &str, error: TaskError) {
    machine.deliver(Received::TaskFailed { key: key.into(), error }).expect("the failure is taken");
}

fn charged(id: &str) -> Value {
    json!({ "result": "charged", "charge_id": id })
}

fn result(result: &str) -> Value {
    json!({ "result": result })
}

/// Fires the poll timer of the wait and checks the status query it asks for.
fn poll(machine: &mut Machine<PaymentRouting>, poll_key: &str, gateway: &str) {
    machine.timer_fired(poll_key).expect("the poll timer is taken");
    let task = asked(machine);
    assert_eq!(task.name, format!("gateway.{gateway}.status"));
    assert_eq!(input_of(&task), json!({ "payment_id": "P-1", "vendor_key": VENDOR_KEY }));
    assert_eq!(task.retry, None, "status queries take the host's retries");
    assert_eq!(machine.message(), Some(WAITING));
}

fn rejected(result: Result<(), Refusal>) -> Rejection {
    match result {
        Err(Refusal::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn outcomes(machine: &Machine<PaymentRouting>) -> Vec<(String, String, String)> {
    machine.data().attempts.into_iter().map(|a| (a.gateway, a.call, a.outcome)).collect()
}

fn attempt(gateway: &str, call: &str, outcome: &str) -> (String, String, String) {
    (gateway.into(), call.into(), outcome.into())
}

#[test]
fn routing_depends_on_the_region() {
    for (region, primary, secondary) in [
        ("EU", BETA, ALPHA),
        ("eu", BETA, ALPHA),
        ("US", ALPHA, BETA),
        ("APAC", ALPHA, BETA),
        ("", ALPHA, BETA),
    ] {
        let mut payment = Machine::<PaymentRouting>::start(input(region)).expect("starts");
        assert_eq!(payment.state(), ROUTING_SELECTED);
        assert_eq!(timer(&payment), (INVOKE_PRIMARY.into(), 0));
        let data = payment.data();
        assert_eq!((data.primary.as_str(), data.secondary.as_str()), (primary, secondary), "{region:?}");
        assert_eq!(data.vendor_key, VENDOR_KEY);
        assert!(payment.message().is_some_and(|m| m.contains(primary)), "{:?}", payment.message());

        payment.timer_fired(INVOKE_PRIMARY).expect("routing timer");
        assert_eq!(payment.state(), PRIMARY_GATEWAY_INVOKED);
        let task = asked(&payment);
        assert_eq!(
            (task.key.as_str(), task.name.as_str()),
            (CHARGE_PRIMARY, &*format!("gateway.{primary}.charge"))
        );
        assert_eq!(
            input_of(&task),
            json!({ "payment_id": "P-1", "amount": 1250, "currency": "EUR", "vendor_key": VENDOR_KEY })
        );
        assert_eq!(payment.data().in_doubt.as_deref(), Some(primary));
    }
}

#[test]
fn the_charge_is_attempted_once_with_its_timeout() {
    let payment = charging("US");
    let task = asked(&payment);
    let retry = task.retry.expect("the charge sets its retry policy");
    assert_eq!(retry.max_attempts, Some(1));
    assert_eq!(task.attempt_timeout_ms, Some(4000));

    let defaults = Machine::<PaymentRouting>::start(
        json!({ "payment_id": "P-2", "amount": 9.99, "currency": "USD", "region": "US" }),
    )
    .expect("starts with the default tuning");
    let data = defaults.data();
    assert_eq!(
        (data.poll_interval_ms, data.max_polls, data.charge_timeout_ms),
        (DEFAULT_POLL_INTERVAL_MS, DEFAULT_MAX_POLLS, DEFAULT_CHARGE_TIMEOUT_MS)
    );
    assert_eq!(data.amount, Number::from_f64(9.99).expect("finite"), "the amount is kept as sent");
}

#[test]
fn a_charged_primary_completes_the_payment() {
    let mut payment = charging("EU");
    payment.task_succeeded(CHARGE_PRIMARY, charged("ch_1")).expect("taken");
    assert_eq!(payment.state(), COMPLETED);
    assert_eq!(payment.status(), Some(TerminalStatus::Completed));
    let data = payment.data();
    assert_eq!((data.gateway.as_deref(), data.charge_id.as_deref()), (Some(BETA), Some("ch_1")));
    assert_eq!(data.in_doubt, None);
    assert!(!data.declined);
    assert_eq!(outcomes(&payment), [attempt(BETA, "charge", "charged")]);
    assert_eq!(payment.message(), Some("Payment charged through beta"));
    assert!(payment.open_effects().is_empty());
}

#[test]
fn a_declined_primary_fails_and_cannot_be_force_completed() {
    let mut payment = charging("US");
    payment.task_succeeded(CHARGE_PRIMARY, result("declined")).expect("taken");
    assert_eq!(payment.state(), FAILED);
    let data = payment.data();
    assert!(data.declined);
    assert!(data.failure.as_deref().is_some_and(|f| f.contains("declined by alpha")), "{data:?}");
    assert!(payment.effects().is_empty(), "a decline does not try the secondary");
    assert_eq!(payment.message(), Some("Payment declined by alpha"));

    // A failed instance may be force-completed, if its definition agrees: this one
    // refuses, with a reason.
    let refused = payment.admin_override(OverrideKind::ForceComplete, "customer insists");
    let Err(Refusal::Rejected(refusal)) = refused else { panic!("refused by the definition: {refused:?}") };
    assert_eq!(refusal.code, "payment_declined");
    assert_eq!(payment.state(), FAILED, "nothing changed");
    assert!(refusal.reason.contains("declined by alpha"), "{}", refusal.reason);
}

#[test]
fn declines_given_as_refusals_fail_too() {
    let bodies = [
        error(FailureKind::Http, Some(402), None),
        error(FailureKind::Http, Some(422), Some(r#"{"result":"declined","reason":"insufficient funds"}"#)),
        // A late failure report after a 202: no status, the reported error as the body.
        error(FailureKind::Http, None, Some(r#"{"result":"declined"}"#)),
    ];
    for refusal in bodies {
        let mut payment = charging("US");
        fail(&mut payment, CHARGE_PRIMARY, refusal.clone());
        assert_eq!(payment.state(), FAILED, "{refusal:?}");
        assert!(payment.data().declined);
        assert!(payment.effects().is_empty());
    }
}

#[test]
fn a_timeout_waits_and_polls_until_charged() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE);
    assert_eq!(payment.message(), Some(WAITING));
    assert_eq!(timer(&payment), (POLL_PRIMARY.into(), 500));
    assert_eq!(payment.data().in_doubt.as_deref(), Some(ALPHA));

    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, result("pending")).expect("pending");
    assert_eq!((payment.state(), timer(&payment)), (AWAITING_PRIMARY_RESPONSE, (POLL_PRIMARY.into(), 500)));
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, result("pending")).expect("pending");
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, charged("ch_7")).expect("charged");

    assert_eq!(payment.state(), COMPLETED);
    let data = payment.data();
    assert_eq!((data.gateway.as_deref(), data.charge_id.as_deref()), (Some(ALPHA), Some("ch_7")));
    assert_eq!(data.polls, 3);
    assert_eq!(
        outcomes(&payment),
        [
            attempt(ALPHA, "charge", "timeout"),
            attempt(ALPHA, "status", "pending"),
            attempt(ALPHA, "status", "pending"),
            attempt(ALPHA, "status", "charged"),
        ]
    );
}

#[test]
fn a_timeout_then_not_found_charges_the_secondary() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, result("not_found")).expect("not found");

    assert_eq!(payment.state(), SECONDARY_GATEWAY_INVOKED);
    let task = asked(&payment);
    assert_eq!((task.key.as_str(), task.name.as_str()), (CHARGE_SECONDARY, "gateway.beta.charge"));
    assert_eq!(task.retry.and_then(|retry| retry.max_attempts), Some(1));
    assert_eq!(payment.data().in_doubt.as_deref(), Some(BETA));

    payment.task_succeeded(CHARGE_SECONDARY, charged("b_1")).expect("charged");
    assert_eq!(payment.state(), COMPLETED);
    let data = payment.data();
    assert_eq!((data.gateway.as_deref(), data.charge_id.as_deref()), (Some(BETA), Some("b_1")));
}

#[test]
fn other_unknown_outcomes_are_reconciled_not_retried() {
    let unknown = [
        Received::TaskFailed {
            key: CHARGE_PRIMARY.into(),
            error: error(FailureKind::Exhausted, Some(503), None),
        },
        Received::TaskFailed {
            key: CHARGE_PRIMARY.into(),
            error: error(FailureKind::Unreachable, None, Some("connection reset")),
        },
        Received::TaskFailed { key: CHARGE_PRIMARY.into(), error: error(FailureKind::Http, Some(409), None) },
        Received::TaskSucceeded { key: CHARGE_PRIMARY.into(), output: json!({ "ok": true }) },
        Received::TaskSucceeded { key: CHARGE_PRIMARY.into(), output: result("not_found") },
        Received::TaskSucceeded { key: CHARGE_PRIMARY.into(), output: Value::Null },
    ];
    for received in unknown {
        let mut payment = charging("US");
        payment.deliver(received.clone()).expect("taken");
        assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE, "{received:?}");
        assert_eq!(timer(&payment), (POLL_PRIMARY.into(), 500), "only a timer, no charge: {received:?}");
        assert_eq!(payment.message(), Some(WAITING));
    }
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Exhausted, Some(503), None));
    assert_eq!(outcomes(&payment), [attempt(ALPHA, "charge", "exhausted (HTTP 503)")]);
}

#[test]
fn a_final_refusal_or_no_binding_goes_to_the_secondary() {
    let refusals = [
        error(FailureKind::Http, Some(400), Some(r#"{"error":"bad currency"}"#)),
        error(FailureKind::Http, Some(404), None),
        TaskError { kind: FailureKind::Unbound, status: None, body: None, attempts: 0 },
    ];
    for refusal in refusals {
        let mut payment = charging("EU");
        fail(&mut payment, CHARGE_PRIMARY, refusal.clone());
        assert_eq!(payment.state(), SECONDARY_GATEWAY_INVOKED, "{refusal:?}");
        assert_eq!(asked(&payment).name, "gateway.alpha.charge");
        assert!(payment.message().is_some_and(|m| m.contains("beta did not charge it")));
    }
}

#[test]
fn both_unbound_fails() {
    let unbound = TaskError { kind: FailureKind::Unbound, status: None, body: None, attempts: 0 };
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, unbound.clone());
    fail(&mut payment, CHARGE_SECONDARY, unbound);
    assert_eq!(payment.state(), FAILED);
    let data = payment.data();
    assert!(!data.declined);
    assert_eq!(data.in_doubt, None);
    assert!(data.failure.as_deref().is_some_and(|f| f.contains("neither gateway")), "{data:?}");
}

#[test]
fn an_unbound_charge_after_an_attempt_is_in_doubt() {
    let mut payment = charging("US");
    let unbound = TaskError { kind: FailureKind::Unbound, status: None, body: None, attempts: 1 };
    fail(&mut payment, CHARGE_PRIMARY, unbound);
    assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE);
}

#[test]
fn polls_that_run_out_need_an_operator_and_never_charge_the_secondary() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, result("pending")).expect("pending");
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    fail(&mut payment, STATUS_PRIMARY, error(FailureKind::Exhausted, Some(502), None));
    assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE, "a failed query polls again");
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, json!({ "state": "?" })).expect("malformed");

    assert_eq!(payment.state(), RECONCILIATION_REQUIRED);
    assert_eq!(payment.status(), None, "not terminal: it waits for an operator");
    assert!(payment.effects().is_empty() && payment.open_effects().is_empty(), "no secondary charge");
    assert_eq!(payment.allowed_actions(), [RECHECK]);
    let message = payment.message().unwrap_or_default();
    assert!(message.contains("operator") && message.contains(VENDOR_KEY), "{message}");
    let data = payment.data();
    assert_eq!((data.in_doubt.as_deref(), data.polls), (Some(ALPHA), 3));
    assert_eq!(
        outcomes(&payment)[1..],
        [
            attempt(ALPHA, "status", "pending"),
            attempt(ALPHA, "status", "exhausted (HTTP 502)"),
            attempt(ALPHA, "status", "no known result"),
        ]
    );

    // The operator asks again once the gateway's status works: a new round, at once.
    payment.act(RECHECK, Value::Null).expect("recheck");
    assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE);
    assert_eq!(asked(&payment).key, STATUS_PRIMARY);
    assert_eq!(payment.data().polls, 1);
    payment.task_succeeded(STATUS_PRIMARY, result("not_found")).expect("not found");
    assert_eq!(payment.state(), SECONDARY_GATEWAY_INVOKED);
}

#[test]
fn an_unknown_secondary_is_polled_too() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Http, Some(400), None));
    fail(&mut payment, CHARGE_SECONDARY, error(FailureKind::Timeout, None, None));
    assert_eq!(payment.state(), AWAITING_SECONDARY_RESPONSE);
    assert_eq!(payment.message(), Some(WAITING));
    assert_eq!(timer(&payment), (POLL_SECONDARY.into(), 500));
    poll(&mut payment, POLL_SECONDARY, BETA);
    payment.task_succeeded(STATUS_SECONDARY, charged("b_9")).expect("charged");
    assert_eq!(payment.state(), COMPLETED);
    assert_eq!(payment.data().gateway.as_deref(), Some(BETA));
}

#[test]
fn a_secondary_not_found_fails_since_neither_charged() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Unreachable, None, None));
    poll(&mut payment, POLL_PRIMARY, ALPHA);
    payment.task_succeeded(STATUS_PRIMARY, result("not_found")).expect("primary not found");
    fail(&mut payment, CHARGE_SECONDARY, error(FailureKind::Exhausted, Some(500), None));
    poll(&mut payment, POLL_SECONDARY, BETA);
    payment.task_succeeded(STATUS_SECONDARY, result("not_found")).expect("secondary not found");
    assert_eq!(payment.state(), FAILED);
    let data = payment.data();
    assert!(!data.declined);
    assert_eq!(data.in_doubt, None);
    assert!(payment.effects().is_empty());
}

#[test]
fn a_refused_secondary_fails() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Http, Some(400), None));
    fail(&mut payment, CHARGE_SECONDARY, error(FailureKind::Http, Some(403), None));
    assert_eq!(payment.state(), FAILED);
    assert!(payment.effects().is_empty());
}

#[test]
fn the_vendor_key_is_the_same_on_every_call() {
    let mut payment = charging("EU");
    let mut tasks = vec![asked(&payment)];
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    payment.timer_fired(POLL_PRIMARY).expect("poll");
    tasks.push(asked(&payment));
    payment.task_succeeded(STATUS_PRIMARY, result("pending")).expect("pending");
    payment.timer_fired(POLL_PRIMARY).expect("poll");
    tasks.push(asked(&payment));
    payment.task_succeeded(STATUS_PRIMARY, result("not_found")).expect("not found");
    tasks.push(asked(&payment));
    fail(&mut payment, CHARGE_SECONDARY, error(FailureKind::Timeout, None, None));
    payment.timer_fired(POLL_SECONDARY).expect("poll");
    tasks.push(asked(&payment));
    payment.task_succeeded(STATUS_SECONDARY, charged("a_1")).expect("charged");
    assert_eq!(payment.state(), COMPLETED);

    let names: Vec<&str> = tasks.iter().map(|task| task.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gateway.beta.charge",
            "gateway.beta.status",
            "gateway.beta.status",
            "gateway.alpha.charge",
            "gateway.alpha.status"
        ]
    );
    for task in &tasks {
        assert_eq!(input_of(task)["vendor_key"], VENDOR_KEY, "{}", task.name);
        assert_eq!(input_of(task)["payment_id"], "P-1", "{}", task.name);
    }
}

#[test]
fn unexpected_events_are_refused() {
    let mut payment = Machine::<PaymentRouting>::start(input("US")).expect("starts");
    let external = payment.deliver(Received::External {
        name: "payment.settled".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert_eq!(rejected(external).code, "unexpected_event");
    assert_eq!(
        payment.task_succeeded(CHARGE_PRIMARY, charged("x")),
        Err(Refusal::NoOpenEffect(CHARGE_PRIMARY.into()))
    );
    assert_eq!(payment.state(), ROUTING_SELECTED, "nothing changed");

    payment.timer_fired(INVOKE_PRIMARY).expect("routing timer");
    let late_report = payment.deliver(Received::External {
        name: "charge.succeeded".into(),
        id: "e2".into(),
        payload: charged("x"),
    });
    assert_eq!(rejected(late_report).code, "unexpected_event");
    assert_eq!(payment.state(), PRIMARY_GATEWAY_INVOKED);
    assert_eq!(payment.open_effects().len(), 1, "the charge is still open");

    // The definition's own check, for an event the harness would let through.
    let ctx =
        Context { instance_id: payment.instance_id().into(), definition_version: 1, now_ms: 0, seed: 1 };
    let call = EventCall {
        state: AWAITING_PRIMARY_RESPONSE.into(),
        data: payment.data(),
        event: Received::TaskSucceeded { key: STATUS_SECONDARY.into(), output: result("not_found") },
    };
    let refusal = PaymentRouting::on_event(&ctx, call).expect_err("the secondary's status is not awaited");
    assert_eq!(refusal.code, "unexpected_event");
}

#[test]
fn bad_input_is_refused() {
    let base = input("US");
    let with = |field: &str, value: Value| {
        let mut input = base.clone();
        input[field] = value;
        input
    };
    let bad = [
        with("payment_id", json!("  ")),
        with("payment_id", json!("x".repeat(256))),
        with("amount", json!(0)),
        with("amount", json!(-5)),
        with("amount", json!("12.50")),
        with("currency", json!("EURO")),
        with("currency", json!("E1R")),
        with("currency", json!("")),
        with("max_polls", json!(0)),
        with("max_polls", json!(1001)),
        with("charge_timeout_ms", json!(0)),
        with("poll_interval_ms", json!(-1)),
        json!({ "payment_id": "P-1", "amount": 10, "currency": "EUR" }),
        json!("P-1"),
    ];
    for input in bad {
        let refused = Machine::<PaymentRouting>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}

#[test]
fn cancel_before_any_charge_is_clean() {
    let mut payment = Machine::<PaymentRouting>::start(input("US")).expect("starts");
    payment.admin_override(OverrideKind::Cancel, "duplicate order").expect("cancelled");
    assert_eq!(payment.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(payment.message(), Some("cancelled by an admin: duplicate order"));
    assert_eq!(payment.data().in_doubt, None);
    assert_eq!(payment.data().resolution, None);
}

#[test]
fn cancel_while_a_charge_is_in_doubt_says_what_to_reconcile() {
    let mut payment = charging("US");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    payment.admin_override(OverrideKind::Cancel, "customer gave up").expect("cancelled");
    assert_eq!(payment.status(), Some(TerminalStatus::Cancelled));
    let data = payment.data();
    assert_eq!(data.in_doubt.as_deref(), Some(ALPHA));
    let resolution = data.resolution.unwrap_or_default();
    assert!(resolution.contains(ALPHA) && resolution.contains(VENDOR_KEY), "{resolution}");
    let message = payment.message().unwrap_or_default();
    assert!(message.starts_with("cancelled by an admin: customer gave up; a charge at alpha"), "{message}");
}

#[test]
fn force_complete_waits_for_the_outcome() {
    let mut payment = Machine::<PaymentRouting>::start(input("US")).expect("starts");
    let refusal = rejected(payment.admin_override(OverrideKind::ForceComplete, "ship it"));
    assert_eq!(refusal.code, "not_charged");

    payment.timer_fired(INVOKE_PRIMARY).expect("routing timer");
    assert_eq!(
        rejected(payment.admin_override(OverrideKind::ForceComplete, "ship it")).code,
        "outcome_pending"
    );
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    let refusal = rejected(payment.admin_override(OverrideKind::ForceComplete, "ship it"));
    assert_eq!(refusal.code, "outcome_pending");
    assert!(refusal.reason.contains(ALPHA), "{}", refusal.reason);
    assert_eq!(payment.state(), AWAITING_PRIMARY_RESPONSE, "nothing changed");
}

#[test]
fn force_complete_records_a_charge_confirmed_by_an_operator() {
    let mut payment = charging("EU");
    fail(&mut payment, CHARGE_PRIMARY, error(FailureKind::Timeout, None, None));
    for _ in 0..3 {
        payment.timer_fired(POLL_PRIMARY).expect("poll");
        payment.task_succeeded(STATUS_PRIMARY, result("pending")).expect("pending");
    }
    assert_eq!(payment.state(), RECONCILIATION_REQUIRED);
    payment.admin_override(OverrideKind::ForceComplete, "found ch_5 in beta's dashboard").expect("completed");
    assert_eq!(payment.status(), Some(TerminalStatus::Completed));
    let data = payment.data();
    assert_eq!((data.gateway.as_deref(), data.in_doubt.as_deref()), (Some(BETA), None));
    assert!(data.resolution.as_deref().is_some_and(|r| r.contains("confirmed by hand")), "{data:?}");
}

#[test]
fn actions_other_than_recheck_are_refused() {
    let mut payment = charging("US");
    assert!(matches!(payment.act(RECHECK, Value::Null), Err(Refusal::NotAllowed { .. })));
    assert_eq!(payment.act("retry", Value::Null), Err(Refusal::UnknownAction("retry".into())));
}

/// A gateway's possible answers, consistent with whether it really charged.
mod model {
    use super::*;
    use std::collections::BTreeMap;

    /// What the gateways really did: charges made per gateway.
    #[derive(Debug, Default)]
    struct World {
        charges: BTreeMap<String, u32>,
    }

    /// One possible next event: the gateway that charges by it (if any), and the event.
    type Choice = (Option<String>, Received);

    fn failed(key: &str, kind: FailureKind, status: Option<u16>) -> Received {
        let attempts = u32::from(kind != FailureKind::Unbound);
        Received::TaskFailed { key: key.into(), error: TaskError { kind, status, body: None, attempts } }
    }

    fn succeeded(key: &str, output: Value) -> Received {
        Received::TaskSucceeded { key: key.into(), output }
    }

    fn choices(machine: &Machine<PaymentRouting>, world: &World) -> Vec<Choice> {
        if machine.status().is_some() || machine.state() == RECONCILIATION_REQUIRED {
            return Vec::new();
        }
        let [effect] = machine.open_effects() else {
            panic!("one open effect at a time in {}: {:?}", machine.state(), machine.open_effects());
        };
        let task = match effect {
            Effect::Timer { key, .. } => return vec![(None, Received::TimerFired { key: key.clone() })],
            Effect::Task(task) => task,
            other => panic!("unexpected effect {other:?}"),
        };
        assert_eq!(input_of(task)["vendor_key"], VENDOR_KEY);
        let key = task.key.as_str();
        let mut parts = task.name.split('.');
        let (Some("gateway"), Some(gateway), Some(call)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("unexpected task {}", task.name);
        };
        let charges = Some(gateway.to_string());
        match call {
            "charge" => {
                let if_charged = [
                    succeeded(key, charged("c")),
                    succeeded(key, json!({ "result": "??" })),
                    failed(key, FailureKind::Timeout, None),
                    failed(key, FailureKind::Exhausted, Some(503)),
                    failed(key, FailureKind::Unreachable, None),
                    failed(key, FailureKind::Http, Some(409)),
                ];
                let if_not = [
                    succeeded(key, result("declined")),
                    succeeded(key, Value::Null),
                    failed(key, FailureKind::Timeout, None),
                    failed(key, FailureKind::Unreachable, None),
                    failed(key, FailureKind::Http, Some(400)),
                    failed(key, FailureKind::Http, Some(402)),
                    failed(key, FailureKind::Unbound, None),
                ];
                let yes = if_charged.into_iter().map(|event| (charges.clone(), event));
                yes.chain(if_not.into_iter().map(|event| (None, event))).collect()
            }
            "status" => {
                let did = world.charges.get(gateway).copied().unwrap_or(0) > 0;
                let answers = if did {
                    vec![succeeded(key, charged("c")), succeeded(key, result("pending"))]
                } else {
                    vec![
                        succeeded(key, result("not_found")),
                        succeeded(key, result("declined")),
                        succeeded(key, result("pending")),
                    ]
                };
                let mut answers: Vec<Choice> = answers.into_iter().map(|event| (None, event)).collect();
                answers.push((None, failed(key, FailureKind::Exhausted, Some(500))));
                answers
            }
            other => panic!("unexpected call {other}"),
        }
    }

    /// Replays `path` (an index into the choices at each step) from the start.
    fn replay(path: &[usize]) -> (Machine<PaymentRouting>, World) {
        let mut start = input("US");
        start["max_polls"] = json!(2);
        let mut machine = Machine::start(start).expect("starts");
        let mut world = World::default();
        for &idx in path {
            let (charges, event) = choices(&machine, &world).swap_remove(idx);
            if let Some(gateway) = charges {
                *world.charges.entry(gateway).or_default() += 1;
            }
            machine.deliver(event).expect("every event the model sends is taken");
        }
        (machine, world)
    }

    fn check(machine: &Machine<PaymentRouting>, world: &World, path: &[usize]) {
        let total: u32 = world.charges.values().sum();
        assert!(total <= 1, "charged {total} times: {world:?} via {path:?}");
        let data = machine.data();
        match machine.state() {
            COMPLETED => {
                let gateway = data.gateway.clone().unwrap_or_default();
                assert_eq!(world.charges.get(&gateway), Some(&1), "completed without that charge: {path:?}");
            }
            FAILED => assert_eq!(total, 0, "failed although charged: {path:?}"),
            RECONCILIATION_REQUIRED => assert!(data.in_doubt.is_some(), "{path:?}"),
            other => panic!("a path ends in {other}: {path:?}"),
        }
    }

    /// Every sequence of answers the gateways could give, within two polls per wait:
    /// the payment is charged at most once, completes only when charged and fails only
    /// when not.
    #[test]
    fn no_sequence_of_faults_charges_twice() {
        let mut stack = vec![Vec::new()];
        let mut leaves = 0;
        while let Some(path) = stack.pop() {
            let (machine, world) = replay(&path);
            let next = choices(&machine, &world).len();
            if next == 0 {
                check(&machine, &world, &path);
                leaves += 1;
            }
            for idx in 0..next {
                let mut longer = path.clone();
                longer.push(idx);
                stack.push(longer);
            }
        }
        assert!(leaves > 500, "explored {leaves} paths");
    }
}
