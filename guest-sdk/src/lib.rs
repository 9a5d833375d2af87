//! The crate Switchyard workflow definitions are written against.
//!
//! A definition is a type implementing [`Definition`]: a [`Manifest`] (the closed set of
//! states, the initial state, the actions and where each is legal) plus pure transition
//! functions. [`export!`] turns it into a core Wasm module with no imports that the host
//! can load; [`testing::Machine`] runs the same definition natively under the same rules
//! the host enforces, so a definition is unit-tested with plain `cargo test`.
//!
//! ```
//! use switchyard_guest::prelude::*;
//!
//! struct Light;
//!
//! impl Definition for Light {
//!     type Input = serde_json::Value;
//!     type Data = u32;
//!
//!     fn manifest() -> Manifest {
//!         Manifest::builder("light", 1)
//!             .state("OFF", "dark")
//!             .state("ON", "lit")
//!             .terminal("BROKEN", TerminalStatus::Failed, "burnt out")
//!             .initial("OFF")
//!             .action("toggle", &["OFF", "ON"], &["OFF", "ON", "BROKEN"], "flip the switch")
//!             .build()
//!     }
//!
//!     fn init(_ctx: &Context, _input: Self::Input) -> Result<Transition<u32>, Rejection> {
//!         Ok(Transition::to("OFF", 0))
//!     }
//!
//!     fn on_action(_ctx: &Context, call: ActionCall<u32>) -> Result<Transition<u32>, Rejection> {
//!         let flips = call.data + 1;
//!         match call.state.as_str() {
//!             _ if flips > 3 => Ok(Transition::to("BROKEN", flips)),
//!             "OFF" => Ok(Transition::to("ON", flips)),
//!             _ => Ok(Transition::to("OFF", flips)),
//!         }
//!     }
//! }
//!
//! switchyard_guest::export!(Light);
//!
//! let mut light = testing::Machine::<Light>::start(serde_json::json!({})).unwrap();
//! light.act("toggle", serde_json::json!(null)).unwrap();
//! assert_eq!(light.state(), "ON");
//! ```
//!
//! A definition that only runs one task and ends with its result need not be written
//! out: [`single_task`] has it, given the names, texts and input validation.
//!
//! The wire format between host and guest is [`abi`]; `docs/abi.md` in the repository
//! describes it for implementers in other languages.
#![no_std]

extern crate alloc;

pub mod abi;
mod definition;
pub mod dispatch;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;
pub mod single_task;
pub mod testing;

pub use abi::{Manifest, Rejection, TerminalStatus};
pub use definition::{
    ActionCall, Context, Definition, EventCall, FailureKind, OverrideCall, Received, TaskError, TaskOptions,
    Transition,
};

/// Everything a definition file usually needs.
pub mod prelude {
    pub use crate::abi::{Manifest, OverrideKind, Rejection, RetryPolicy, TerminalStatus};
    pub use crate::definition::{
        ActionCall, Context, Definition, EventCall, FailureKind, OverrideCall, Received, TaskError,
        TaskOptions, Transition,
    };
    pub use crate::testing;
    pub use alloc::{string::String, vec::Vec};
    pub use serde::{Deserialize, Serialize};
}

/// Exports a [`Definition`] as the module's ABI entry points.
///
/// On `wasm32` this defines `switchyard_alloc`, `switchyard_manifest`, `switchyard_init`,
/// `switchyard_on_action`, `switchyard_on_event`, `switchyard_on_override` and
/// `switchyard_migrate`; on other targets
/// it expands to nothing, so the same file also builds for native tests.
#[macro_export]
macro_rules! export {
    ($definition:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_alloc(len: i32) -> i32 {
                $crate::guest::alloc(len)
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_manifest() -> i64 {
                $crate::guest::respond($crate::dispatch::manifest::<$definition>())
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_init(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host wrote `len` bytes at `ptr`, a block from `switchyard_alloc`.
                let request = unsafe { $crate::guest::request(ptr, len) };
                $crate::guest::respond($crate::dispatch::init::<$definition>(request))
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_on_action(ptr: i32, len: i32) -> i64 {
                // SAFETY: as in `switchyard_init`.
                let request = unsafe { $crate::guest::request(ptr, len) };
                $crate::guest::respond($crate::dispatch::on_action::<$definition>(request))
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_on_event(ptr: i32, len: i32) -> i64 {
                // SAFETY: as in `switchyard_init`.
                let request = unsafe { $crate::guest::request(ptr, len) };
                $crate::guest::respond($crate::dispatch::on_event::<$definition>(request))
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_on_override(ptr: i32, len: i32) -> i64 {
                // SAFETY: as in `switchyard_init`.
                let request = unsafe { $crate::guest::request(ptr, len) };
                $crate::guest::respond($crate::dispatch::on_override::<$definition>(request))
            }
            #[unsafe(no_mangle)]
            extern "C" fn switchyard_migrate(ptr: i32, len: i32) -> i64 {
                // SAFETY: as in `switchyard_init`.
                let request = unsafe { $crate::guest::request(ptr, len) };
                $crate::guest::respond($crate::dispatch::migrate::<$definition>(request))
            }
        };
    };
}
