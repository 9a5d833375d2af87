//! What a guest's entry points hand the host: a packed `(ptr, len)` and, at that place,
//! the bytes of an outcome envelope. The host decodes them as this target does
//! (`runtime::Runtime::call`, `service::engine`), so no bytes may panic it, and what
//! decodes must encode back to bytes that decode the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_guest::abi::{self, MigrateOutcome, Outcome, check_effects};

fuzz_target!(|data: &[u8]| {
    if let Some(packed) = data.first_chunk::<8>() {
        let packed = i64::from_le_bytes(*packed);
        let (ptr, len) = abi::unpack(packed);
        assert_eq!(abi::pack(ptr, len), packed);
    }
    if let Some(Outcome::Accepted(accepted)) = decoded::<Outcome>(data) {
        // The host's check of the effects an outcome asks for, against no open effects
        // and against every key being open.
        let _ = check_effects(&accepted.effects, |_| false);
        let _ = check_effects(&accepted.effects, |_| true);
    }
    decoded::<abi::v1::Outcome>(data);
    decoded::<MigrateOutcome>(data);
});

/// `data` decoded as the host decodes a guest's response, checking that it encodes
/// back to bytes that decode and encode alike.
fn decoded<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = postcard::from_bytes(data).ok()?;
    let encoded = postcard::to_allocvec(&value).expect("a decoded value encodes");
    let again: T = postcard::from_bytes(&encoded).expect("an encoded value decodes");
    assert_eq!(postcard::to_allocvec(&again).expect("encodes"), encoded);
    Some(value)
}
