//! The harness: [`TestServer`] runs the binary on a free port against its own
//! database; [`Response`] and the `assert_*` helpers read what it answers.

pub mod participant;
pub mod private_postgres;
pub mod proxy;
mod server;
pub mod tls;
pub mod wat;

pub use participant::{Participant, Received, Reply};

pub use server::{Backend, TestServer, postgres_address, postgres_server};

use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;

/// Runs each named scenario `async fn(Backend)` once on SQLite and once on PostgreSQL.
macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A module built by `cargo xtask modules`: an example definition or a test guest.
pub fn module(name: &str) -> Vec<u8> {
    let path = module_path(name);
    std::fs::read(&path).unwrap_or_else(|err| {
        panic!("{}: {err}; build the modules with `cargo xtask modules`", path.display())
    })
}

/// Where [`module`] reads `name` from.
pub fn module_path(name: &str) -> PathBuf {
    let (variable, fallback) = if name.ends_with("-guest") {
        ("SWITCHYARD_TEST_MODULES", "test-modules")
    } else {
        ("SWITCHYARD_EXAMPLE_MODULES", "modules")
    };
    let folder = std::env::var_os(variable).map_or_else(|| target_dir().join(fallback), PathBuf::from);
    folder.join(format!("{name}.wasm"))
}

/// The `switchyard` binary under test (`cargo xtask test` names it in `SWITCHYARD_BIN`).
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_BIN")
        .map_or_else(|| target_dir().join("debug").join("switchyard"), PathBuf::from)
}

/// `target/` of this build, found from the test executable (`target/debug/deps/it-…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.ancestors().nth(3).expect("the test executable lives in target/<profile>/deps").to_path_buf()
}

/// What the server answered.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// Asserts a problem+json response with `status` and problem type `kind` (the part
/// after `urn:switchyard:problem:`) whose correlation id matches the header.
#[track_caller]
pub fn assert_problem(response: &Response, status: u16, kind: &str) -> Value {
    assert_eq!(
        response.status.as_u16(),
        status,
        "unexpected status; body: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("content-type"), Some("application/problem+json"));
    let problem = response.json();
    assert_eq!(problem["status"], status);
    assert_eq!(problem["type"], format!("urn:switchyard:problem:{kind}"), "{problem}");
    assert!(problem["title"].is_string() && problem["detail"].is_string(), "{problem}");
    let correlation_id = response.header("x-correlation-id").expect("every response has X-Correlation-Id");
    assert_eq!(problem["correlation_id"], correlation_id);
    problem
}
