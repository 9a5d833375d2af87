//! Settings from flags over the environment over the config file, and `switchyard
//! config check`, run as the real binary.

use crate::support::{Backend, TestServer, assert_problem, binary};
use reqwest::Method;
use sha2::Digest;
use std::path::{Path, PathBuf};

/// The environment wins over the file, and a flag over the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_win_over_the_environment_which_wins_over_the_file() {
    let key_sha256 = hex::encode(sha2::Sha256::digest(b"metrics-reader"));
    let keys = format!("[{{ name = \"prometheus\", role = \"client\", sha256 = \"{key_sha256}\" }}]");
    let scratch = scratch();
    let file = scratch.join("switchyard.toml");
    std::fs::write(&file, "[auth]\nopen_metrics = true\n").expect("config file");
    let env = [
        ("SWITCHYARD_AUTH__OPEN_METRICS", "false"),
        ("SWITCHYARD_AUTH__KEYS", keys.as_str()),
        // The harness's --database flag wins over this.
        ("SWITCHYARD_DATABASE", "sqlite:///no/such/folder/switchyard.db"),
    ];
    let config = file.display().to_string();
    let server = TestServer::start_with_env(Backend::Sqlite, &["--config", &config], &env).await;
    assert_problem(&server.get("/metrics").await, 401, "unauthorized");
    let with_key = [("authorization", "Bearer metrics-reader")];
    server.request(Method::GET, "/metrics", &with_key, None).await.expect(200);
}

#[test]
fn config_check_prints_the_settings_in_force_with_secrets_redacted() {
    let scratch = scratch();
    let file = scratch.join("switchyard.toml");
    std::fs::write(
        &file,
        "database = \"postgres://app:hunter2@db.internal/switchyard\"\n\
         [callbacks]\nsecret = \"whsec_c2VjcmV0LWtleQ==\"\n\
         [tasks.\"charge\"]\nurl = \"https://pay.internal/charge\"\nheaders = { authorization = \"Bearer s3cr3t\" }\n",
    )
    .expect("config file");
    let (code, out, err) = check(&file, &[("SWITCHYARD_GUEST__FUEL_PER_CALL", "123456")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("valid") && out.contains("SWITCHYARD_GUEST__FUEL_PER_CALL"), "{out}");
    let settings: toml::Table = out.parse().expect("the settings are TOML");
    assert_eq!(settings["guest"]["fuel_per_call"].as_integer(), Some(123456));
    assert_eq!(settings["database"].as_str(), Some("postgres://app:***@db.internal/switchyard"));
    assert_eq!(settings["tasks"]["charge"]["url"].as_str(), Some("https://pay.internal/charge"));
    assert_eq!(settings["max_wait_secs"].as_integer(), Some(60), "defaults are shown");
    for secret in ["hunter2", "c2VjcmV0", "s3cr3t"] {
        assert!(!out.contains(secret), "{secret} is redacted:\n{out}");
    }
}

#[test]
fn config_check_refuses_what_serve_would_refuse_naming_the_setting() {
    let scratch = scratch();
    let file = scratch.join("switchyard.toml");
    for (toml, env, message) in [
        ("[guest]\nconcurrent_calls = 0\n", None, "guest.concurrent_calls must be at least 1"),
        ("[guest]\nfuel_per_cal = 1\n", None, "unknown field `fuel_per_cal`"),
        ("", Some(("SWITCHYARD_MAX_WAIT_SECS", "soon")), "max_wait_secs: invalid type"),
        ("listen = \"0.0.0.0:8080\"\n", None, "no API keys are configured"),
    ] {
        std::fs::write(&file, toml).expect("config file");
        let (code, out, err) = check(&file, env.as_slice());
        assert_eq!(code, Some(1), "{toml:?} is refused: {out}");
        assert!(err.contains(message), "{toml:?}: {err}");
    }
    let (code, _, err) = check(&scratch.join("missing.toml"), &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn the_example_config_checks() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard.example.toml");
    let (code, out, err) = check(&example, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("[guest]"), "{out}");
}

/// Runs `switchyard config check FILE` with `env`: its exit code, stdout and stderr.
fn check(file: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(binary())
        .args(["config", "check"])
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// A folder of the test's own, deleted when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let scratch = std::env::temp_dir().join(format!("switchyard-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    Scratch(scratch)
}
