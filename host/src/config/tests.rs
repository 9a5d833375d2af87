use super::*;

/// The config a TOML file gives, or the message it is refused with.
fn check(toml: &str) -> Result<Config, String> {
    layered(toml, &[], Vec::new())
}

#[track_caller]
fn refused(toml: &str, message: &str) {
    match check(toml) {
        Ok(_) => panic!("{toml:?} was accepted"),
        Err(err) => assert_eq!(err, message, "{toml:?}"),
    }
}

#[test]
fn defaults_are_taken_when_nothing_is_set() {
    let config = check("").expect("the defaults are valid");
    assert_eq!(config.request_timeout, Duration::from_secs(30));
    assert_eq!((config.max_concurrent_requests, config.max_long_polls), (1024, 1024));
    assert_eq!(config.max_wait, Duration::from_secs(60));
}

#[test]
fn limits_are_read() {
    let config =
        check("request_timeout_secs = 5\nmax_concurrent_requests = 7\nmax_long_polls = 3\n").expect("valid");
    assert_eq!(config.request_timeout, Duration::from_secs(5));
    assert_eq!((config.max_concurrent_requests, config.max_long_polls), (7, 3));
}

#[test]
fn a_zero_that_cannot_work_is_refused_by_name() {
    for name in [
        "request_timeout_secs",
        "max_concurrent_requests",
        "max_long_polls",
        "max_body_bytes",
        "idempotency_retention_secs",
        "guest.fuel_per_call",
        "guest.deadline_ms",
        "guest.memory_mib",
        "guest.max_module_bytes",
        "guest.concurrent_calls",
        "guest.concurrent_compiles",
        "guest.compile_timeout_ms",
        "guest.module_cache_bytes",
        "guest.recent_instances_bytes",
        "migrations.batch_size",
        "effects.lease_ms",
        "effects.poll_interval_ms",
        "effects.attempt_timeout_ms",
        "effects.report_timeout_ms",
        "effects.retry.max_attempts",
        "callbacks.max_attempts",
        "callbacks.timeout_ms",
        "feed.poll_interval_ms",
    ] {
        let toml = match name.rsplit_once('.') {
            Some((section, key)) => format!("[{section}]\n{key} = 0\n"),
            None => format!("{name} = 0\n"),
        };
        refused(&toml, &format!("{name} must be at least 1"));
    }
}

#[test]
fn a_zero_that_works_is_taken() {
    let config =
        check("max_wait_secs = 0\nshutdown_grace_secs = 0\n[migrations]\npause_between_batches_ms = 0\n")
            .expect("valid");
    assert_eq!((config.max_wait, config.shutdown_grace), (Duration::ZERO, Duration::ZERO));
}

#[test]
fn a_duration_beyond_a_century_is_refused_by_name() {
    let most_secs = MAX_DURATION.as_secs();
    refused(
        &format!("max_wait_secs = {}\n", i64::MAX),
        &format!("max_wait_secs must be at most {most_secs}"),
    );
    refused(
        &format!("request_timeout_secs = {}\n", most_secs + 1),
        &format!("request_timeout_secs must be at most {most_secs}"),
    );
    refused(
        &format!("[effects]\nlease_ms = {}\n", i64::MAX),
        &format!("effects.lease_ms must be at most {}", most_secs * 1000),
    );
    refused(
        &format!("[effects.retry]\nmax_interval_ms = {}\n", i64::MAX),
        &format!("effects.retry.max_interval_ms must be at most {}", most_secs * 1000),
    );
    let config = check(&format!("max_wait_secs = {most_secs}\n")).expect("a century is still taken");
    assert_eq!(config.max_wait, MAX_DURATION);
}

#[test]
fn guest_memory_beyond_what_wasm32_addresses_is_refused() {
    refused(&format!("[guest]\nmemory_mib = {}\n", i64::MAX), "guest.memory_mib must be at most 4096");
    refused("[guest]\nmemory_mib = 4097\n", "guest.memory_mib must be at most 4096");
    let config = check("[guest]\nmemory_mib = 4096\n").expect("4 GiB is taken");
    assert_eq!(config.limits.memory_bytes, 4 << 30);
}

#[test]
fn a_number_too_large_for_its_type_is_a_parse_error() {
    let err =
        check(&format!("max_concurrent_requests = {}\n", u64::from(u32::MAX) + 1)).expect_err("refused");
    assert!(err.contains("max_concurrent_requests"), "{err}");
}

#[test]
fn retry_policies_are_checked_wherever_they_are_given() {
    refused(
        "[effects.retry]\nbackoff_coefficient = 0.5\n",
        "effects.retry.backoff_coefficient must be a number of at least 1, not 0.5",
    );
    refused(
        "[effects.retry]\nbackoff_coefficient = nan\n",
        "effects.retry.backoff_coefficient must be a number of at least 1, not NaN",
    );
    refused(
        "[tasks.\"flights.reserve\"]\nurl = \"http://127.0.0.1:1\"\nretry = { max_attempts = 0 }\n",
        "tasks.\"flights.reserve\".retry.max_attempts must be at least 1",
    );
    refused(
        "[tasks.\"flights.reserve\"]\nurl = \"http://127.0.0.1:1\"\nattempt_timeout_ms = 0\n",
        "tasks.\"flights.reserve\".attempt_timeout_ms must be at least 1",
    );
    refused(
        &format!("[callbacks]\ninitial_interval_ms = {}\n", i64::MAX),
        &format!("callbacks.initial_interval_ms must be at most {}", MAX_DURATION.as_millis()),
    );
}

#[test]
fn guest_budgets_and_compile_settings_are_read() {
    let taken =
        check("[guest]\nmodule_cache_bytes = 1\nrecent_instances_bytes = 2\ncompile_timeout_ms = 3\n")
            .expect("small budgets are taken");
    assert_eq!((taken.caches.modules, taken.caches.recent_instances), (1, 2));
    assert_eq!(taken.limits.compile_timeout, Duration::from_millis(3));
}

/// The config `file` (TOML), `vars` and `flags` give, or the message it is refused with.
fn layered(file: &str, vars: &[(&str, &str)], flags: Vec<(&str, toml::Value)>) -> Result<Config, String> {
    let vars = vars.iter().map(|(name, value)| (name.to_string(), value.to_string()));
    let (settings, _) = sources::layered(file.parse().map_err(|err| format!("{err}"))?, vars, flags)
        .map_err(|err| err.to_string())?;
    settings.into_config().map_err(|err| err.to_string())
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let file = "max_long_polls = 1\nmax_wait_secs = 2\n[guest]\nfuel_per_call = 3\n";
    let config = layered(file, &[], Vec::new()).expect("valid");
    assert_eq!(
        (config.max_long_polls, config.max_wait, config.limits.fuel_per_call),
        (1, Duration::from_secs(2), 3)
    );
    let vars = [("SWITCHYARD_MAX_LONG_POLLS", "10"), ("SWITCHYARD_GUEST__FUEL_PER_CALL", "30")];
    let config = layered(file, &vars, Vec::new()).expect("valid");
    assert_eq!(
        (config.max_long_polls, config.max_wait, config.limits.fuel_per_call),
        (10, Duration::from_secs(2), 30)
    );
    let config = layered(file, &vars, vec![("max_long_polls", 100.into())]).expect("valid");
    assert_eq!((config.max_long_polls, config.limits.fuel_per_call), (100, 30));
}

#[test]
fn every_setting_has_an_environment_variable() {
    let names = setting_names();
    for name in [
        "listen",
        "guest.fuel_per_call",
        "effects.retry.max_attempts",
        "callbacks.secret",
        "auth.keys",
        "tasks",
    ] {
        assert!(names.iter().any(|known| known == name), "{name} in {names:?}");
    }
    assert_eq!(env_var("effects.retry.max_attempts"), "SWITCHYARD_EFFECTS__RETRY__MAX_ATTEMPTS");
    // Values keep their TOML type: booleans, floats, strings, tables and arrays.
    let vars = [
        ("SWITCHYARD_CALLBACKS__ALLOW_PRIVATE", "true"),
        ("SWITCHYARD_EFFECTS__RETRY__BACKOFF_COEFFICIENT", "1.5"),
        ("SWITCHYARD_DATABASE", "postgres://app:secret@db/switchyard"),
        ("SWITCHYARD_HOST_ID", "\"42\""),
        ("SWITCHYARD_TASKS", "{ \"flights.reserve\" = { url = \"http://127.0.0.1:9\" } }"),
        (
            "SWITCHYARD_AUTH__KEYS",
            &format!("[{{ name = \"ops\", role = \"admin\", sha256 = \"{}\" }}]", "ab".repeat(32)),
        ),
    ];
    let config = layered("", &vars, Vec::new()).expect("valid");
    assert!(config.allow_private_callbacks);
    assert_eq!(config.effects.participants.retry.backoff_coefficient, 1.5);
    assert_eq!(config.database, "postgres://app:secret@db/switchyard");
    assert_eq!(config.effects.host_id, "42");
    assert_eq!(config.effects.participants.bindings["flights.reserve"].url, "http://127.0.0.1:9");
    assert_eq!((config.auth.keys[0].name.as_str(), config.auth.keys[0].role), ("ops", Role::Admin));
}

#[test]
fn other_variables_are_not_settings_and_bad_values_name_their_variable() {
    let config =
        layered("", &[("SWITCHYARD_BIN", "/bin/true"), ("SWITCHYARD_SERVER", "http://x")], Vec::new());
    assert!(config.is_ok(), "{config:?}");
    let err = layered("", &[("SWITCHYARD_MAX_LONG_POLLS", "many")], Vec::new()).expect_err("refused");
    assert!(err.contains("max_long_polls") && err.contains("SWITCHYARD_MAX_LONG_POLLS"), "{err}");
    // A zero refused by name, also when the environment gives it.
    let err = layered("", &[("SWITCHYARD_GUEST__CONCURRENT_CALLS", "0")], Vec::new()).expect_err("refused");
    assert_eq!(err, "guest.concurrent_calls must be at least 1");
}

/// The example config in the repository: valid, naming every setting, and each value it
/// sets is the default, as its comments say.
#[test]
fn the_example_config_is_valid_complete_and_true_to_the_defaults() {
    let example = include_str!("../../../switchyard.example.toml");
    let config = layered(example, &[], Vec::new()).expect("the example is valid");
    for name in setting_names() {
        let key = name.rsplit('.').next().unwrap_or_default();
        assert!(
            example.contains(&format!("{key} =")) || example.contains(&format!("[{name}")),
            "{name} is documented"
        );
    }
    let defaults = layered("", &[], Vec::new()).expect("the defaults are valid").effective();
    let example_settings = config.effective();
    for (name, value) in flattened(&example.parse().expect("TOML")) {
        assert_eq!(Some(&value), flattened(&defaults).get(&name), "{name} in the example is its default");
        assert_eq!(Some(&value), flattened(&example_settings).get(&name), "{name} is in force as written");
    }
}

#[test]
fn the_effective_config_redacts_secrets_and_reads_back_alike() {
    let file = "database = \"postgres://app:secret@db/x\"\n[callbacks]\nsecret = \"whsec_c2VjcmV0\"\n\
                [tasks.\"a\"]\nurl = \"http://127.0.0.1:9\"\nheaders = { authorization = \"Bearer t0ken\" }\n";
    let effective = layered(file, &[], Vec::new()).expect("valid").effective();
    let text = toml::to_string(&effective).expect("TOML");
    for secret in ["secret@", "c2VjcmV0", "t0ken"] {
        assert!(!text.contains(secret), "{secret} is redacted:\n{text}");
    }
    // Every setting but the redacted ones reads back to the same config.
    let defaults = layered("", &[], Vec::new()).expect("valid").effective();
    let again = layered(&toml::to_string(&defaults).expect("TOML"), &[], Vec::new()).expect("valid");
    assert_eq!(again.effective(), defaults);
    let described: Vec<String> = flattened(&defaults).into_keys().collect();
    for name in setting_names().into_iter().filter(|name| name != "modules" && name != "callbacks.secret") {
        assert!(
            described.iter().any(|shown| *shown == name || shown.starts_with(&format!("{name}."))),
            "{name} is shown"
        );
    }
}

/// `table`'s values by dotted name, tables walked into (empty ones kept).
fn flattened(table: &toml::Table) -> std::collections::BTreeMap<String, toml::Value> {
    let mut flat = std::collections::BTreeMap::new();
    for (name, value) in table {
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => {
                flat.extend(
                    flattened(inner).into_iter().map(|(inner, value)| (format!("{name}.{inner}"), value)),
                );
            }
            value => {
                flat.insert(name.clone(), value.clone());
            }
        }
    }
    flat
}

#[test]
fn an_integer_beyond_what_toml_holds_is_refused_where_it_is_written() {
    let err = check(&format!("max_wait_secs = {}\n", u64::MAX)).expect_err("refused");
    assert!(err.contains("line 1") && err.contains("max_wait_secs"), "{err}");
}
