//! Checks that dependencies between the layers point one way (see ARCHITECTURE.md):
//! `api → service → {runtime, store} → model`, and nothing imports `api`.

use std::path::Path;

/// `(folder under src/, paths its files must not use)`.
const RULES: &[(&str, &[&str])] = &[
    (
        "model",
        &["crate::api", "crate::service", "crate::runtime", "crate::store", "sqlx", "axum", "wasmtime"],
    ),
    ("runtime", &["crate::api", "crate::service", "crate::store", "sqlx", "axum", "tokio"]),
    ("store", &["crate::api", "crate::service", "crate::runtime", "axum", "wasmtime"]),
    ("service", &["crate::api", "axum"]),
];

#[test]
fn layers_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, forbidden) in RULES {
        for file in rust_files(&src.join(layer)) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for path in *forbidden {
                if text.lines().any(|line| !line.trim_start().starts_with("//") && mentions(line, path)) {
                    violations.push(format!("{} uses {path}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

/// `path` as a whole path segment (`sqlx` but not `sqlx_x`).
fn mentions(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + path.len()..].chars().next();
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
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}
