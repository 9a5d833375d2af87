//! Deploy-time checks of a module's shape: what it imports, exports and declares.

use super::{Error, Limits};
use switchyard_guest::abi::exports;
use wasmtime::{ExternType, Module, ValType};

/// Rust guests need a small function table for indirect calls; nothing needs more.
pub(super) const MAX_TABLE_ELEMENTS: usize = 10_000;

const WASM_PAGE: u64 = 65536;

pub(super) fn module_shape(module: &Module, limits: &Limits) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidModule(reason));
    if let Some(import) = module.imports().next() {
        return invalid(format!(
            "the module imports {}::{}; definition modules must have no imports",
            import.module(),
            import.name()
        ));
    }
    let memory = match module.get_export(exports::MEMORY) {
        Some(ExternType::Memory(memory)) => memory,
        _ => return invalid(format!("the module does not export a memory named {:?}", exports::MEMORY)),
    };
    let initial_bytes = memory.minimum().saturating_mul(WASM_PAGE);
    if initial_bytes > limits.memory_bytes as u64 {
        return invalid(format!(
            "the module's memory starts at {initial_bytes} bytes; the limit is {}",
            limits.memory_bytes
        ));
    }
    use ValType::{I32, I64};
    function(module, exports::ALLOC, &[I32], I32)?;
    function(module, exports::MANIFEST, &[], I64)?;
    for name in [exports::INIT, exports::ON_ACTION, exports::ON_EVENT, exports::MIGRATE] {
        entry_point(module, name)?;
    }
    // Counts every table and memory, exported or not.
    let required = module.resources_required();
    if required.num_memories != 1 || required.num_tables > 1 {
        return invalid(format!(
            "the module declares {} memories and {} tables; definition modules have one memory and at most one table",
            required.num_memories, required.num_tables
        ));
    }
    if required.max_initial_table_size.is_some_and(|size| size > MAX_TABLE_ELEMENTS as u64) {
        return invalid(format!("the module's table starts with more than {MAX_TABLE_ELEMENTS} elements"));
    }
    Ok(())
}

/// Checks that `module` exports `name` as an entry point: `(ptr, len) -> packed`.
pub(super) fn entry_point(module: &Module, name: &str) -> Result<(), Error> {
    function(module, name, &[ValType::I32, ValType::I32], ValType::I64)
}

fn function(module: &Module, name: &str, params: &[ValType], result: ValType) -> Result<(), Error> {
    let Some(ExternType::Func(func)) = module.get_export(name) else {
        return Err(Error::InvalidModule(format!("the module does not export the function {name}")));
    };
    let params_match = func.params().len() == params.len()
        && func.params().zip(params).all(|(param, expected)| ValType::eq(&param, expected));
    let results: Vec<ValType> = func.results().collect();
    if !params_match || results.len() != 1 || !ValType::eq(&results[0], &result) {
        return Err(Error::InvalidModule(format!(
            "{name} has the signature {func}; expected {params:?} -> {result}"
        )));
    }
    Ok(())
}
