//! Decodes requests, runs a [`Definition`], encodes the response.
//!
//! Target-independent, so the native test harness goes through exactly the code the
//! Wasm exports run.

use crate::abi::{
    Accepted, ActionRequest, EventRequest, InitRequest, MigrateOutcome, MigrateRequest, Outcome,
    OverrideRequest, Rejection,
};
use crate::definition::{ActionCall, Definition, EventCall, OverrideCall, Received, Transition};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn manifest<D: Definition>() -> Vec<u8> {
    encode(&D::manifest())
}

pub fn init<D: Definition>(request: &[u8]) -> Vec<u8> {
    let outcome = decode::<InitRequest>(request).and_then(|request| {
        let input = parse_json("invalid_input", &request.input)?;
        D::init(&request.context, input)
    });
    encode(&into_outcome(outcome))
}

pub fn on_action<D: Definition>(request: &[u8]) -> Vec<u8> {
    let outcome = decode::<ActionRequest>(request).and_then(|request| {
        let call = ActionCall {
            data: parse_json("invalid_data", &request.data)?,
            payload: parse_json("invalid_payload", &request.payload)?,
            state: request.state,
            action: request.action,
        };
        D::on_action(&request.context, call)
    });
    encode(&into_outcome(outcome))
}

pub fn on_event<D: Definition>(request: &[u8]) -> Vec<u8> {
    let outcome = decode::<EventRequest>(request).and_then(|request| {
        let call = EventCall {
            data: parse_json("invalid_data", &request.data)?,
            state: request.state,
            event: Received::parse(request.event)?,
        };
        D::on_event(&request.context, call)
    });
    encode(&into_outcome(outcome))
}

pub fn on_override<D: Definition>(request: &[u8]) -> Vec<u8> {
    let outcome = decode::<OverrideRequest>(request).and_then(|request| {
        let call = OverrideCall {
            data: parse_json("invalid_data", &request.data)?,
            state: request.state,
            kind: request.kind,
            reason: request.reason,
        };
        D::on_override(&request.context, call)
    });
    encode(&into_outcome(outcome))
}

pub fn migrate<D: Definition>(request: &[u8]) -> Vec<u8> {
    let outcome = decode::<MigrateRequest>(request).and_then(|request| {
        let data = parse_json("invalid_data", &request.data)?;
        let (state, data) = D::migrate(&request.context, request.from_version, request.state, data)?;
        Ok(MigrateOutcome::Migrated { state, data: to_json(&data)? })
    });
    encode(&outcome.unwrap_or_else(MigrateOutcome::Refused))
}

fn into_outcome<T: Serialize>(result: Result<Transition<T>, Rejection>) -> Outcome {
    let accepted = result.and_then(|transition| {
        Ok(Accepted {
            data: to_json(&transition.data)?,
            state: transition.state,
            message: transition.message,
            effects: transition.effects,
        })
    });
    match accepted {
        Ok(accepted) => Outcome::Accepted(accepted),
        Err(rejection) => Outcome::Rejected(rejection),
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    postcard::from_bytes(bytes)
        .map_err(|err| Rejection::new("abi_mismatch", format!("cannot decode the host's request: {err}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs into a growable buffer has no failure mode
    // except running out of memory, which aborts anyway.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn parse_json<T: DeserializeOwned>(code: &str, json: &str) -> Result<T, Rejection> {
    serde_json::from_str(json).map_err(|err| Rejection::new(code, err.to_string()))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Rejection> {
    serde_json::to_string(value).map_err(|err| Rejection::new("invalid_data", err.to_string()))
}
