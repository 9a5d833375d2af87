//! What a compiled module costs: a cold compile against loading its kept artifact, and
//! the memory each loaded version holds.
//!
//! `cargo xtask modules && cargo bench -p switchyard --bench modules`
//! (reads `target/modules/*.wasm`; prints one JSON line per module).

mod support;

use support::median;
use switchyard::model::ModuleHash;
use switchyard::runtime::{Limits, Runtime};

const ROUNDS: usize = 20;
/// Copies loaded at once to measure memory per loaded version.
const COPIES: usize = 50;

fn main() {
    let folder = support::modules_folder();
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|err| panic!("{}: {err}; run `cargo xtask modules` first", folder.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "wasm"))
        .collect();
    paths.sort();
    let runtime = Runtime::new(Limits::DEFAULT).expect("runtime");
    let executor = support::executor();
    let load = |compiled| {
        runtime.load(executor.block_on(runtime.declared(compiled)).expect("declares")).expect("loads")
    };
    for path in paths {
        let wasm = std::fs::read(&path).expect("module");
        let sha256 = ModuleHash::of(&wasm);
        let compiled = || load(runtime.compile(&wasm).expect("compiles"));
        let compile = median(ROUNDS, || drop(compiled()));
        let artifact = runtime.artifact(&compiled()).expect("serializes");
        // SAFETY: `artifact` was produced just above by this runtime.
        let from_artifact =
            || load(unsafe { runtime.deserialize(&artifact, sha256.clone()) }.expect("loads"));
        let load_time = median(ROUNDS, || drop(from_artifact()));
        let before = resident_bytes();
        let loaded: Vec<_> = (0..COPIES).map(|_| from_artifact()).collect();
        let per_version = resident_bytes().saturating_sub(before) / COPIES as u64;
        drop(loaded);
        println!(
            "{{\"module\":{:?},\"wasm_bytes\":{},\"artifact_bytes\":{},\"compile_ms\":{:.2},\"artifact_load_ms\":{:.3},\"resident_bytes_per_loaded_version\":{}}}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            wasm.len(),
            artifact.len(),
            compile.as_secs_f64() * 1e3,
            load_time.as_secs_f64() * 1e3,
            per_version,
        );
    }
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    pages * 4096
}
