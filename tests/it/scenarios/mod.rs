//! The seed's scenarios (SPEC §7) end to end: the example definitions on the real
//! server, their tasks answered by the participant stub (`stub/`), whose ledger of the
//! work it did is what the tests assert on.

mod orders;
mod payments;
mod pipeline;

use crate::support::{Backend, TestServer, module};
use std::time::Duration;
use switchyard_stub::Stub;

/// The stub, with pipeline jobs that report 20 ms after they were accepted.
async fn stub() -> Stub {
    Stub::start(([127, 0, 0, 1], 0).into(), Duration::from_millis(20)).await.expect("the stub starts")
}

/// A server with every example task bound to `stub`, short timeouts and retries, and
/// `definitions` deployed.
async fn server(backend: Backend, stub: &Stub, definitions: &[&str], effects: &str) -> TestServer {
    let toml = format!("[effects]\npoll_interval_ms = 50\n{effects}\n{}", stub.bindings());
    let server = TestServer::start_with_config(backend, &toml).await;
    for definition in definitions {
        server.deploy(module(definition)).await.expect(201);
    }
    server
}

/// Short attempts and quick retries, for tasks that fail or hang on purpose.
const QUICK: &str =
    "attempt_timeout_ms = 300\nretry = { max_attempts = 3, initial_interval_ms = 20, max_interval_ms = 50 }";
