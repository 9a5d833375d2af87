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
