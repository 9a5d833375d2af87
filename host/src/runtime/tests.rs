use super::*;

fn runtime() -> Runtime {
    Runtime::new(Limits::DEFAULT).expect("engine")
}

fn refusal_of_bytes(bytes: &[u8]) -> String {
    match runtime().compile(bytes) {
        Err(Error::InvalidModule(reason)) => reason,
        other => panic!("expected an invalid module, got {other:?}"),
    }
}

fn refusal(wat: &str) -> String {
    refusal_of_bytes(&wat::parse_str(wat).expect("test WAT parses"))
}

#[test]
fn refuses_bytes_that_are_not_wasm() {
    assert!(refusal_of_bytes(b"definitely not wasm").contains("not a valid WebAssembly module"));
}

#[test]
fn refuses_imports() {
    let reason = refusal(r#"(module (import "env" "clock" (func)) (memory (export "memory") 1))"#);
    assert!(reason.contains("imports env::clock"), "{reason}");
}

#[test]
fn refuses_missing_and_mistyped_exports() {
    assert!(refusal("(module)").contains("memory"));
    let reason = refusal(
        r#"(module (memory (export "memory") 1) (func (export "switchyard_alloc") (param i64) (result i32) i32.const 0))"#,
    );
    assert!(reason.contains("switchyard_alloc has the signature"), "{reason}");
}

#[test]
fn refuses_oversized_memory() {
    let reason = refusal(r#"(module (memory (export "memory") 4096))"#);
    assert!(reason.contains("memory"), "{reason}");
}

/// A module of the right shape whose manifest call spins until its fuel runs out.
const SPINNER: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "switchyard_alloc") (param i32) (result i32) i32.const 16)
    (func (export "switchyard_manifest") (result i64) (loop $forever (br $forever)) unreachable)
    (func (export "switchyard_init") (param i32 i32) (result i64) unreachable)
    (func (export "switchyard_on_action") (param i32 i32) (result i64) unreachable)
    (func (export "switchyard_on_event") (param i32 i32) (result i64) unreachable)
    (func (export "switchyard_migrate") (param i32 i32) (result i64) unreachable))"#;

#[test]
fn a_full_pool_is_the_hosts_failure_not_the_guests() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let runtime = Runtime::new(Limits { concurrent_calls: 1, ..Limits::DEFAULT }).expect("engine");
    let compiled = runtime.compile(&wat::parse_str(SPINNER).expect("test WAT parses")).expect("compiles");
    let instance_pre = runtime.linker.instantiate_pre(&compiled.module).expect("links");
    let mut context = Context::from_waker(Waker::noop());
    // Polled once, the spinner runs until its first yield and keeps the only slot.
    let mut spinning = std::pin::pin!(runtime.call_raw(&instance_pre, abi::exports::MANIFEST, None));
    assert!(spinning.as_mut().poll(&mut context).is_pending());
    let refused =
        std::pin::pin!(runtime.call_raw(&instance_pre, abi::exports::MANIFEST, None)).poll(&mut context);
    match refused {
        Poll::Ready(Err(Error::Host(reason))) => assert!(reason.contains("concurrent"), "{reason}"),
        other => panic!("expected the host's failure, got {other:?}"),
    }
}
