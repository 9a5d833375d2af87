//! A module's manifest as the host reads it at deploy (`runtime::Runtime::load`): the
//! ABI version alone first, then the whole manifest, then `Manifest::validate`. No bytes
//! may panic it, and a manifest that validates must hold what the host then relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_guest::abi::{self, CallKind, Manifest, OverrideKind};

fuzz_target!(|data: &[u8]| {
    let Ok((abi, _)) = postcard::take_from_bytes::<u32>(data) else { return };
    let Ok(manifest) = postcard::from_bytes::<Manifest>(data) else { return };
    assert_eq!(manifest.abi, abi, "the ABI version is the manifest's first field");
    if manifest.validate().is_err() {
        return;
    }
    assert!(abi::SUPPORTED_ABI_VERSIONS.contains(&manifest.abi));
    let initial = manifest
        .check_outcome(CallKind::Init, &manifest.initial_state)
        .expect("init reaches the initial state");
    assert!(initial.terminal.is_none(), "an instance starts running");
    for action in &manifest.actions {
        for from in &action.from {
            let state = manifest.state(from).expect("an action's sources are declared");
            assert!(state.terminal.is_none(), "no action is legal in a terminal state");
            assert!(manifest.allowed_actions(from).any(|allowed| allowed.name == action.name));
        }
        for to in &action.to {
            manifest
                .check_outcome(CallKind::Action(&action.name), to)
                .expect("an action's targets are legal");
        }
    }
    for state in &manifest.states {
        for kind in [OverrideKind::Cancel, OverrideKind::ForceComplete] {
            let _ = abi::default_override(&manifest, &state.name, kind, "fuzzing");
        }
    }
});
