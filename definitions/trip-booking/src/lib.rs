//! `trip-booking`, version 1: a saga. The flight is reserved first, then the hotel;
//! when the hotel cannot be had, the flight is cancelled again (compensated) and the
//! trip fails, its history showing the whole causal chain.
//!
//! Tasks (their names are the contract a deployment binds to participants):
//! - `flights.reserve` `{trip_id, flight}` → `{reservation_id}`;
//! - `hotels.reserve` `{trip_id, hotel}` → `{reservation_id}`;
//! - `flights.cancel` `{trip_id, reservation_id}`.
//!
//! The hotel's success completes the trip in the same transition, so an instance never
//! rests with both reservations held but not completed: `FLIGHT_RESERVED` is the one
//! state between the two reservations.

use serde_json::{Value, json};
use switchyard_guest::prelude::*;

const INITIATED: &str = "INITIATED";
const FLIGHT_RESERVED: &str = "FLIGHT_RESERVED";
const COMPENSATING: &str = "COMPENSATING";
const COMPLETED: &str = "COMPLETED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// Effect keys.
const FLIGHT: &str = "flight";
const HOTEL: &str = "hotel";
const CANCEL_FLIGHT: &str = "cancel-flight";

/// The definition.
#[derive(Debug)]
pub struct TripBooking;

/// What a client starts a trip with.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub trip_id: String,
    /// What to reserve; passed to the participant as it is.
    pub flight: Value,
    pub hotel: Value,
}

/// The instance's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub trip_id: String,
    pub flight: Value,
    pub hotel: Value,
    /// Set once `flights.reserve` succeeded (and kept after a compensation, to say
    /// what was cancelled).
    pub flight_reservation: Option<String>,
    pub hotel_reservation: Option<String>,
    /// Why the trip failed, once it has.
    pub failure: Option<String>,
    /// Whether a reserved flight was cancelled again.
    pub flight_cancelled: bool,
}

impl Definition for TripBooking {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("trip-booking", 1)
            .state(INITIATED, "Reserving the flight.")
            .state(FLIGHT_RESERVED, "The flight is reserved; reserving the hotel.")
            .state(COMPENSATING, "The hotel could not be reserved; cancelling the flight.")
            .terminal(COMPLETED, TerminalStatus::Completed, "Flight and hotel are reserved.")
            .terminal(FAILED, TerminalStatus::Failed, "The trip could not be booked; nothing stays reserved.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the booking.")
            .initial(INITIATED)
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let trip_id = input.trip_id.trim();
        if trip_id.is_empty() {
            return Err(Rejection::new("invalid_input", "trip_id must not be empty"));
        }
        let data = Data {
            trip_id: trip_id.into(),
            flight: input.flight,
            hotel: input.hotel,
            flight_reservation: None,
            hotel_reservation: None,
            failure: None,
            flight_cancelled: false,
        };
        let reserve = json!({ "trip_id": data.trip_id, "flight": data.flight });
        Ok(Transition::to(INITIATED, data)
            .task(FLIGHT, "flights.reserve", reserve)
            .with_message("Reserving the flight"))
    }

    fn on_action(_ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        Err(Rejection::new("no_actions", format!("trip-booking takes no actions, not {}", call.action)))
    }

    fn on_event(_ctx: &Context, call: EventCall<Data>) -> Result<Transition<Data>, Rejection> {
        let EventCall { state, mut data, event } = call;
        match (state.as_str(), event) {
            (INITIATED, Received::TaskSucceeded { key, output }) if key == FLIGHT => {
                let Some(reservation) = reservation_id(&output) else {
                    data.failure = Some("flights.reserve answered without a reservation_id".into());
                    return Ok(
                        Transition::to(FAILED, data).with_message("The flight reservation was not confirmed")
                    );
                };
                data.flight_reservation = Some(reservation);
                let reserve = json!({ "trip_id": data.trip_id, "hotel": data.hotel });
                Ok(Transition::to(FLIGHT_RESERVED, data)
                    .task(HOTEL, "hotels.reserve", reserve)
                    .with_message("Flight reserved; reserving the hotel"))
            }
            (INITIATED, Received::TaskFailed { key, error }) if key == FLIGHT => {
                data.failure = Some(format!("the flight could not be reserved ({error})"));
                Ok(Transition::to(FAILED, data).with_message("The flight could not be reserved"))
            }
            (FLIGHT_RESERVED, Received::TaskSucceeded { key, output }) if key == HOTEL => {
                data.hotel_reservation = reservation_id(&output);
                Ok(Transition::to(COMPLETED, data).with_message("Flight and hotel reserved"))
            }
            (FLIGHT_RESERVED, Received::TaskFailed { key, error }) if key == HOTEL => {
                data.failure = Some(format!("the hotel could not be reserved ({error})"));
                let cancel = json!({ "trip_id": data.trip_id, "reservation_id": data.flight_reservation });
                Ok(Transition::to(COMPENSATING, data)
                    .task(CANCEL_FLIGHT, "flights.cancel", cancel)
                    .with_message("The hotel could not be reserved; cancelling the flight"))
            }
            (COMPENSATING, Received::TaskSucceeded { key, .. }) if key == CANCEL_FLIGHT => {
                data.flight_cancelled = true;
                Ok(Transition::to(FAILED, data)
                    .with_message("The hotel could not be reserved; the flight was cancelled"))
            }
            (COMPENSATING, Received::TaskFailed { key, error }) if key == CANCEL_FLIGHT => {
                let reservation = data.flight_reservation.clone().unwrap_or_default();
                data.failure = Some(format!(
                    "{}; and flight reservation {reservation} could not be cancelled ({error}): cancel it by hand",
                    data.failure.as_deref().unwrap_or("the hotel could not be reserved"),
                ));
                Ok(Transition::to(FAILED, data)
                    .with_message("The flight could not be cancelled: it needs attention"))
            }
            (state, event) => Err(Rejection::new(
                "unexpected_event",
                format!("{state} does not expect {}", event.describe()),
            )),
        }
    }
}

/// The `reservation_id` a participant answered with, if it is a non-empty string.
fn reservation_id(output: &Value) -> Option<String> {
    output.get("reservation_id")?.as_str().filter(|id| !id.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(TripBooking);
