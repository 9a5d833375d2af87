//! The hot path of one transition inside the host: encoding the request, a guest call
//! in a fresh instance (instantiate + `on_action` + copy out) and decoding the outcome.
//!
//! `cargo xtask modules && cargo bench -p switchyard --bench guest_call`
//! (reads `target/modules/document-processing.wasm`; prints one JSON line).

mod support;

use std::time::Duration;
use support::median;
use switchyard::runtime::{Entry, Limits, Runtime};
use switchyard_guest::abi::{self, ActionRequest, Context, Outcome};

const ROUNDS: usize = 5_000;

fn main() {
    let path = support::modules_folder().join("document-processing.wasm");
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|err| panic!("{}: {err}; run `cargo xtask modules` first", path.display()));
    let runtime = Runtime::new(Limits::DEFAULT).expect("runtime");
    let executor = support::executor();
    let compiled = runtime.compile(&wasm).expect("compiles");
    let declared = executor.block_on(runtime.declared(compiled)).expect("declares a manifest");
    let module = runtime.load(declared).expect("loads");
    let request = ActionRequest {
        context: Context {
            instance_id: "01a21ef7-2be5-766e-bcfa-89a7335b4754".into(),
            definition_version: 1,
            now_ms: 1_800_000_000_000,
            seed: 7,
        },
        state: "UPLOADED".into(),
        data: r#"{"document_url":"s3://bench/1.pdf","retries":0,"failure":null,"steps":[]}"#.into(),
        action: "validate".into(),
        payload: "null".into(),
    };

    let encoded = postcard::to_allocvec(&request).expect("encodes");
    let encode = median(ROUNDS, || drop(postcard::to_allocvec(&request)));
    let decode = median(ROUNDS, || drop(postcard::from_bytes::<ActionRequest>(&encoded)));
    let mut fuel_used = 0;
    // A module is decoded as its ABI encodes, as the host does: so an ABI-1 build (say
    // tests/fixtures) can be measured against the current one.
    let abi = module.manifest.abi;
    let call = median(ROUNDS, || {
        let (accepted, fuel) = if abi == 1 {
            let called = executor
                .block_on(runtime.call::<_, abi::v1::Outcome>(&module, Entry::OnAction, &request))
                .expect("the call succeeds");
            (matches!(called.response, abi::v1::Outcome::Accepted(_)), called.fuel_used)
        } else {
            let called = executor
                .block_on(runtime.call::<_, Outcome>(&module, Entry::OnAction, &request))
                .expect("the call succeeds");
            (matches!(called.response, Outcome::Accepted(_)), called.fuel_used)
        };
        assert!(accepted);
        fuel_used = fuel;
    });
    println!(
        "{{\"bench\":\"guest_call\",\"abi\":{abi},\"rounds\":{ROUNDS},\"request_bytes\":{},\"encode_us\":{:.2},\"decode_us\":{:.2},\"call_us\":{:.2},\"fuel_used\":{fuel_used}}}",
        encoded.len(),
        micros(encode),
        micros(decode),
        micros(call),
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
