//! Black-box tests: the real `switchyard` binary over real HTTP, on a real SQLite file
//! and a real PostgreSQL database, with real modules built from `definitions/`.
//!
//! Run with `cargo xtask test`, which builds the binary and the modules first.

#[macro_use]
mod support;

mod auth;
mod cli;
mod config;
mod connections;
mod console;
mod crash;
mod definitions;
mod effects;
mod faults;
mod feed;
mod guest_limits;
mod harness_parity;
mod hostile_modules;
mod hosts;
mod http_contract;
mod idempotency;
mod instances;
mod leases;
mod limits;
mod malformed;
mod modules;
mod openapi;
mod readiness;
mod scenarios;
mod shutdown;
mod telemetry;
mod version_races;
mod versions;
