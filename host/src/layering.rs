//! Checks that dependencies between the layers point one way (see ARCHITECTURE.md):
//! `api → service → {runtime, store} → model`, `effects → {service, store}`, and
//! nothing imports `api` or `effects`. The `client` talks to a server over HTTP only:
//! it uses no other module of the crate, and none uses it.
//!
//! Test files (`tests.rs`) are exempt: a test may build the inner types an error wraps.

use std::collections::BTreeSet;
use std::path::Path;

/// `(folder under src/, modules of this crate it must not use, other crates it must not use)`.
const RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "model",
        &["client", "api", "service", "runtime", "store", "effects"],
        &["sqlx", "axum", "wasmtime", "tokio"],
    ),
    ("runtime", &["client", "api", "service", "store", "effects"], &["sqlx", "axum", "tokio"]),
    ("store", &["client", "api", "service", "runtime", "effects"], &["axum", "wasmtime"]),
    ("service", &["client", "api", "effects"], &["axum", "sqlx", "wasmtime"]),
    ("api", &["client", "store", "runtime", "effects"], &["sqlx", "wasmtime"]),
    ("effects", &["client", "api", "runtime"], &["axum", "sqlx", "wasmtime"]),
    (
        "client",
        &["api", "service", "runtime", "store", "effects", "model", "config", "server"],
        &["axum", "sqlx", "wasmtime"],
    ),
];

#[test]
fn layers_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, modules, crates) in RULES {
        for file in rust_files(&src.join(layer)) {
            let text = code(&std::fs::read_to_string(&file).unwrap_or_default());
            let used = crate_modules(&text);
            for module in modules.iter().filter(|module| used.contains(**module)) {
                violations.push(format!("{} uses crate::{module}", file.display()));
            }
            for name in crates.iter().filter(|name| mentions(&text, name)) {
                violations.push(format!("{} uses {name}", file.display()));
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn grouped_and_nested_imports_are_seen() {
    let text = "use crate::{api, model::{Instance, Status}};\nuse crate :: store::Commit;";
    let expected: BTreeSet<String> = ["api", "model", "store"].map(String::from).into();
    assert_eq!(crate_modules(text), expected);
    assert!(mentions("let pool: sqlx::AnyPool;", "sqlx"));
    assert!(!mentions("let sqlx_pool = 1;", "sqlx"));
}

/// The text without comment lines.
fn code(text: &str) -> String {
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules of this crate that `text` names after `crate::`, including
/// every member of a group (`crate::{api, store::X}`).
fn crate_modules(text: &str) -> BTreeSet<String> {
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ").replace(" :: ", "::");
    let mut modules = BTreeSet::new();
    for (at, _) in squeezed.match_indices("crate::") {
        let rest = &squeezed[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => modules.extend(group_members(group)),
            None => modules.extend(first_segment(rest)),
        }
    }
    modules
}

/// The first path segment of each member of a `{...}` group (`group` starts after `{`).
fn group_members(group: &str) -> Vec<String> {
    let mut members = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, char) in group.char_indices() {
        match char {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.extend(first_segment(&group[start..index]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.extend(first_segment(&group[start..index]));
                start = index + 1;
            }
            _ => {}
        }
    }
    members
}

fn first_segment(path: &str) -> Option<String> {
    let segment: String =
        path.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!segment.is_empty()).then_some(segment)
}

/// `name` as a whole path segment (`sqlx` but not `sqlx_x`).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs")
            && path.file_name().is_some_and(|name| name != "tests.rs")
        {
            files.push(path);
        }
    }
    files
}
