//! `cargo xtask <command>`: the project's chores, with no dependencies of their own.
//!
//! - `modules`: build every definition (and test guest) to Wasm, into `target/modules`
//!   and `target/test-modules`.
//! - `serve [ARGS]`: build the modules and run `switchyard serve` on SQLite with the
//!   example definitions deployed, every example task bound to the participant stub
//!   (`switchyard-stub`, started beside it on [`STUB_LISTEN`]), so every example runs
//!   end to end. Extra arguments go to `serve`; with `--config`, the stub is not started
//!   and the config's bindings count.
//! - `test`: build the modules and the server, then run the whole test suite.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where the quick start's participant stub listens.
const STUB_LISTEN: &str = "127.0.0.1:9090";

/// Crates under `definitions/` are the examples the quick start deploys; the test
/// guests only ever reach the tests.
const TEST_GUESTS: &[&str] = &["hostile-guest", "parity-guest"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("modules") => modules().map(drop),
        Some("serve") => serve(&args[1..]),
        Some("test") => test(&args[1..]),
        _ => Err("usage: cargo xtask <modules | serve [ARGS] | test [CARGO TEST ARGS]>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

struct Paths {
    root: PathBuf,
    target: PathBuf,
}

fn paths() -> Paths {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Paths { root, target }
}

/// Builds the Wasm modules; returns (examples folder, test-guests folder).
fn modules() -> Result<(PathBuf, PathBuf)> {
    let paths = paths();
    ensure_wasm_target()?;
    let mut packages = Vec::new();
    for entry in std::fs::read_dir(paths.root.join("definitions")).map_err(|err| err.to_string())? {
        let manifest = entry.map_err(|err| err.to_string())?.path().join("Cargo.toml");
        if manifest.exists() {
            packages.push(package_name(&manifest)?);
        }
    }
    packages.sort();
    let all: Vec<&str> = packages.iter().map(String::as_str).chain(TEST_GUESTS.iter().copied()).collect();
    let mut build = cargo();
    build.args(["build", "--profile", "wasm", "--target", WASM_TARGET]);
    for package in &all {
        build.args(["--package", package]);
    }
    run(&mut build)?;

    let built = paths.target.join(WASM_TARGET).join("wasm");
    let examples = paths.target.join("modules");
    let test_guests = paths.target.join("test-modules");
    for (folder, names) in [(&examples, &packages[..]), (&test_guests, &owned(TEST_GUESTS)[..])] {
        std::fs::create_dir_all(folder).map_err(|err| err.to_string())?;
        for name in names {
            let file = format!("{}.wasm", name.replace('-', "_"));
            std::fs::copy(built.join(&file), folder.join(format!("{name}.wasm")))
                .map_err(|err| format!("copying {file}: {err}"))?;
        }
    }
    Ok((examples, test_guests))
}

fn serve(args: &[String]) -> Result {
    let (examples, _) = modules()?;
    let mut serve = cargo();
    serve.args(["run", "--release", "--package", "switchyard", "--", "serve", "--modules"]).arg(&examples);
    if !args.iter().any(|arg| arg.starts_with("--database"))
        && std::env::var_os("SWITCHYARD_DATABASE").is_none()
    {
        serve.args(["--database", "sqlite://switchyard.db"]);
    }
    let mut stub = None;
    if !args.iter().any(|arg| arg.starts_with("--config")) && std::env::var_os("SWITCHYARD_CONFIG").is_none()
    {
        let (child, config) = start_stub()?;
        stub = Some(child);
        serve.arg("--config").arg(config);
    }
    let served = run(serve.args(args));
    if let Some(mut stub) = stub {
        let _ = stub.kill();
        let _ = stub.wait();
    }
    served
}

/// Builds and starts the participant stub; returns it and a config file binding every
/// example task to it.
fn start_stub() -> Result<(std::process::Child, PathBuf)> {
    run(cargo().args(["build", "--release", "--package", "switchyard-stub"]))?;
    let binary =
        paths().target.join("release").join(format!("switchyard-stub{}", std::env::consts::EXE_SUFFIX));
    let printed = Command::new(&binary)
        .args(["--listen", STUB_LISTEN, "--print-config"])
        .output()
        .map_err(|err| format!("{}: {err}", binary.display()))?;
    if !printed.status.success() {
        return Err(format!(
            "the stub cannot listen on {STUB_LISTEN}: {}",
            String::from_utf8_lossy(&printed.stderr)
        ));
    }
    let config = paths().target.join("quickstart.toml");
    std::fs::write(&config, &printed.stdout).map_err(|err| format!("{}: {err}", config.display()))?;
    let child = Command::new(&binary)
        .args(["--listen", STUB_LISTEN])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|err| format!("{}: {err}", binary.display()))?;
    Ok((child, config))
}

fn test(args: &[String]) -> Result {
    let (examples, test_guests) = modules()?;
    run(cargo().args(["build", "--package", "switchyard", "--bin", "switchyard"]))?;
    let binary = paths().target.join("debug").join(format!("switchyard{}", std::env::consts::EXE_SUFFIX));
    let mut test = cargo();
    test.args(["test", "--workspace"])
        .args(args)
        .env("SWITCHYARD_BIN", binary)
        .env("SWITCHYARD_EXAMPLE_MODULES", examples)
        .env("SWITCHYARD_TEST_MODULES", test_guests);
    run(&mut test)
}

/// `rustup target add` is idempotent and quick when the target is there already.
fn ensure_wasm_target() -> Result {
    let installed = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .is_ok_and(|output| {
            output.status.success() && Path::new(String::from_utf8_lossy(&output.stdout).trim()).exists()
        });
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest).map_err(|err| format!("{}: {err}", manifest.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("name = "))
        .map(|name| name.trim_matches('"').to_owned())
        .ok_or_else(|| format!("{}: no package name", manifest.display()))
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(paths().root);
    command
}

fn run(command: &mut Command) -> Result {
    let status = command.status().map_err(|err| format!("{command:?}: {err}"))?;
    if status.success() { Ok(()) } else { Err(format!("{command:?} failed: {status}")) }
}
