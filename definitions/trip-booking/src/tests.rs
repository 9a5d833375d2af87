use super::*;
use switchyard_guest::abi::{Effect, OverrideKind};
use switchyard_guest::testing::{Machine, Refusal};

fn start() -> Machine<TripBooking> {
    let input =
        json!({ "trip_id": "T-1", "flight": { "from": "ZRH", "to": "LIS" }, "hotel": { "city": "Lisbon" } });
    Machine::start(input).expect("a trip starts")
}

/// The one task the last transition asked for: (key, name, input).
fn asked(machine: &Machine<TripBooking>) -> (String, String, Value) {
    match machine.effects() {
        [Effect::Task(task)] => {
            let input = serde_json::from_str(&task.input).expect("task input is JSON");
            (task.key.clone(), task.name.clone(), input)
        }
        other => panic!("expected one task, got {other:?}"),
    }
}

fn reserved(id: &str) -> Value {
    json!({ "reservation_id": id })
}

#[test]
fn a_trip_reserves_the_flight_then_the_hotel() {
    let mut trip = start();
    assert_eq!(trip.state(), INITIATED);
    let (key, name, input) = asked(&trip);
    assert_eq!((key.as_str(), name.as_str()), (FLIGHT, "flights.reserve"));
    assert_eq!(input, json!({ "trip_id": "T-1", "flight": { "from": "ZRH", "to": "LIS" } }));

    trip.task_succeeded(FLIGHT, reserved("F-9")).expect("the flight result is taken");
    assert_eq!(trip.state(), FLIGHT_RESERVED);
    let (key, name, input) = asked(&trip);
    assert_eq!((key.as_str(), name.as_str()), (HOTEL, "hotels.reserve"));
    assert_eq!(input, json!({ "trip_id": "T-1", "hotel": { "city": "Lisbon" } }));

    trip.task_succeeded(HOTEL, reserved("H-3")).expect("the hotel result is taken");
    assert_eq!(trip.state(), COMPLETED);
    assert_eq!(trip.status(), Some(TerminalStatus::Completed));
    let data = trip.data();
    assert_eq!(
        (data.flight_reservation.as_deref(), data.hotel_reservation.as_deref()),
        (Some("F-9"), Some("H-3"))
    );
    assert!(trip.open_effects().is_empty());
}

#[test]
fn a_failed_hotel_cancels_the_flight_then_fails() {
    let mut trip = start();
    trip.task_succeeded(FLIGHT, reserved("F-9")).expect("flight");
    trip.task_failed(HOTEL, FailureKind::Http).expect("the hotel failure is taken");
    assert_eq!(trip.state(), COMPENSATING);
    let (key, name, input) = asked(&trip);
    assert_eq!((key.as_str(), name.as_str()), (CANCEL_FLIGHT, "flights.cancel"));
    assert_eq!(input, json!({ "trip_id": "T-1", "reservation_id": "F-9" }));

    trip.task_succeeded(CANCEL_FLIGHT, Value::Null).expect("the cancellation is taken");
    assert_eq!(trip.status(), Some(TerminalStatus::Failed));
    let data = trip.data();
    assert!(data.flight_cancelled);
    assert!(data.failure.as_deref().is_some_and(|failure| failure.contains("hotel")), "{data:?}");
    assert_eq!(trip.message(), Some("The hotel could not be reserved; the flight was cancelled"));
}

#[test]
fn a_failed_flight_fails_with_nothing_to_compensate() {
    for kind in [FailureKind::Http, FailureKind::Timeout, FailureKind::Exhausted, FailureKind::Unbound] {
        let mut trip = start();
        trip.task_failed(FLIGHT, kind).expect("the flight failure is taken");
        assert_eq!(trip.state(), FAILED, "{kind:?}");
        assert!(trip.effects().is_empty(), "nothing to compensate after {kind:?}");
        assert!(trip.open_effects().is_empty());
    }
}

#[test]
fn a_cancellation_that_fails_says_so() {
    let mut trip = start();
    trip.task_succeeded(FLIGHT, reserved("F-9")).expect("flight");
    trip.task_failed(HOTEL, FailureKind::Exhausted).expect("hotel");
    trip.task_failed(CANCEL_FLIGHT, FailureKind::Timeout).expect("cancellation failure");
    assert_eq!(trip.state(), FAILED);
    let failure = trip.data().failure.unwrap_or_default();
    assert!(failure.contains("F-9") && failure.contains("by hand"), "{failure}");
}

#[test]
fn a_flight_answer_without_a_reservation_fails_the_trip() {
    let mut trip = start();
    trip.task_succeeded(FLIGHT, json!({ "ok": true })).expect("taken");
    assert_eq!(trip.state(), FAILED);
    assert!(trip.effects().is_empty());
}

#[test]
fn results_of_other_effects_are_refused() {
    let mut trip = start();
    assert_eq!(trip.task_succeeded(HOTEL, reserved("H-3")), Err(Refusal::NoOpenEffect(HOTEL.into())));
    let external = trip.deliver(Received::External {
        name: "hotel.cheaper".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert!(matches!(external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"));
    assert_eq!(trip.state(), INITIATED, "nothing changed");
}

#[test]
fn bad_input_is_refused() {
    let refused = Machine::<TripBooking>::start(json!({ "trip_id": " ", "flight": {}, "hotel": {} }));
    assert!(matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"));
    let missing = Machine::<TripBooking>::start(json!({ "trip_id": "T" }));
    assert!(matches!(missing, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"));
}

#[test]
fn an_admin_may_cancel_a_trip_in_flight() {
    let mut trip = start();
    trip.admin_override(OverrideKind::Cancel, "customer called").expect("cancelled");
    assert_eq!(trip.status(), Some(TerminalStatus::Cancelled));
    assert_eq!(trip.message(), Some("cancelled by an admin: customer called"));
    assert_eq!(trip.task_succeeded(FLIGHT, reserved("F-9")), Err(Refusal::Finished));
}
