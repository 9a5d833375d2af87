//! Switchyard: a durable state-machine runtime whose transition logic runs as
//! versioned WebAssembly modules.
//!
//! Layout (dependencies point down the list, never up):
//! - [`api`]: the HTTP API (axum): routes, extractors, problem+json, idempotency keys.
//! - [`service`]: the use cases (deploy, start, act, read); the only layer that runs a
//!   guest and commits its result.
//! - [`effects`]: the executor of what transitions ask for (tasks, timers), beside
//!   `api` above `service`.
//! - [`runtime`]: wasmtime: validating, compiling and calling definition modules.
//! - [`store`]: SQLite and PostgreSQL persistence.
//! - [`model`]: plain data shared by all of them.
//!
//! [`client`], beside them all, is the command-line client: it knows the server only
//! through HTTP.
//!
//! [`server::serve`] runs the whole server on a bound listener until a shutdown signal.

pub mod api;
pub mod client;
pub mod config;
pub mod effects;
pub mod model;
pub mod runtime;
pub mod service;
pub mod store;
pub mod telemetry;

pub mod server;

#[cfg(test)]
mod layering;
