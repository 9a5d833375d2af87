//! Modules written in WAT for the tests: the ABI's exports, each answering the same
//! bytes to every call or trapping, for what the SDK would never produce.

use serde::Serialize;
use switchyard_guest::abi::{self, Accepted, Manifest, Outcome};

/// What an export of a [`wat_module`] does on every call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Executes `unreachable`.
    Traps,
    /// Answers these bytes, kept in a data segment.
    Bytes(Vec<u8>),
}

impl Answer {
    /// Answers `value`, postcard-encoded.
    pub fn encoded(value: &impl Serialize) -> Answer {
        Answer::Bytes(postcard::to_allocvec(value).expect("the value encodes"))
    }

    /// Answers an accepted outcome in `state` with `data` (JSON), asking for nothing.
    pub fn accepted(state: &str, data: serde_json::Value) -> Answer {
        let accepted =
            Accepted { state: state.into(), data: data.to_string(), message: None, effects: Vec::new() };
        Answer::encoded(&Outcome::Accepted(accepted))
    }
}

/// The entry points of ABI 2 (ABI 1 has all but `switchyard_on_override`).
pub const ENTRIES: [&str; 5] = [
    abi::exports::INIT,
    abi::exports::ON_ACTION,
    abi::exports::ON_EVENT,
    abi::exports::ON_OVERRIDE,
    abi::exports::MIGRATE,
];

/// `entries`, each trapping.
pub fn trapping<'a>(entries: &[&'a str]) -> Vec<(&'a str, Answer)> {
    entries.iter().map(|entry| (*entry, Answer::Traps)).collect()
}

/// A module that answers `manifest` encoded from `switchyard_manifest`.
pub fn module_declaring(manifest: &Manifest, entries: &[(&str, Answer)]) -> Vec<u8> {
    wat_module(&Answer::encoded(manifest), entries)
}

/// Where the first answer is kept; the next follow, 8-aligned.
const FIRST_ANSWER_AT: usize = 16;
/// Room for the requests the host writes, after the answers.
const REQUEST_ROOM: usize = 2 << 16;
const PAGE: usize = 1 << 16;

/// A module with the memory, an allocator handing out one block after the answers,
/// `switchyard_manifest` doing `manifest`, and `entries` (`(ptr, len) -> packed`).
pub fn wat_module(manifest: &Answer, entries: &[(&str, Answer)]) -> Vec<u8> {
    module(manifest, entries, Alloc::Block)
}

/// [`wat_module`] with a `switchyard_alloc` that traps.
pub fn wat_module_trapping_alloc(manifest: &Answer, entries: &[(&str, Answer)]) -> Vec<u8> {
    module(manifest, entries, Alloc::Traps)
}

enum Alloc {
    /// Hands out the block after the answers.
    Block,
    Traps,
}

fn module(manifest: &Answer, entries: &[(&str, Answer)], alloc: Alloc) -> Vec<u8> {
    let mut at = FIRST_ANSWER_AT;
    let mut data = String::new();
    let mut body = |answer: &Answer| match answer {
        Answer::Traps => "unreachable".to_owned(),
        Answer::Bytes(bytes) => {
            let escaped: String = bytes.iter().map(|byte| format!("\\{byte:02x}")).collect();
            data.push_str(&format!("(data (i32.const {at}) \"{escaped}\")\n"));
            let len = u32::try_from(bytes.len()).expect("an answer under 4 GiB");
            let packed = abi::pack(u32::try_from(at).expect("within memory"), len);
            at = (at + bytes.len()).next_multiple_of(8);
            format!("i64.const {packed}")
        }
    };
    let manifest_body = body(manifest);
    let exports: String = entries
        .iter()
        .map(|(name, answer)| {
            format!("(func (export \"{name}\") (param i32 i32) (result i64) {})\n", body(answer))
        })
        .collect();
    let request_at = at;
    let pages = (request_at + REQUEST_ROOM).div_ceil(PAGE);
    let alloc_body = match alloc {
        Alloc::Block => format!("i32.const {request_at}"),
        Alloc::Traps => "unreachable".to_owned(),
    };
    wat::parse_str(format!(
        r#"(module
            (memory (export "{memory}") {pages})
            {data}
            (func (export "{alloc}") (param i32) (result i32) {alloc_body})
            (func (export "{manifest}") (result i64) {manifest_body})
            {exports})"#,
        memory = abi::exports::MEMORY,
        alloc = abi::exports::ALLOC,
        manifest = abi::exports::MANIFEST,
    ))
    .expect("the test WAT parses")
}
