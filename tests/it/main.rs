//! Black-box tests: the real `switchyard` binary over real HTTP, on a real SQLite file
//! and a real PostgreSQL database, with real modules built from `definitions/`.
//!
//! Run with `cargo xtask test`, which builds the binary and the modules first.

#[macro_use]
mod support;

mod connections;
mod definitions;
mod hostile_modules;
mod hosts;
mod idempotency;
mod instances;
mod shutdown;
mod versions;
