use super::*;

/// The config a TOML file gives, or the message it is refused with.
fn check(toml: &str) -> Result<Config, String> {
    let file: FileConfig = toml::from_str(toml).map_err(|err| err.to_string())?;
    file.into_config().map_err(|err| err.to_string())
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
        &format!("max_wait_secs = {}\n", u64::MAX),
        &format!("max_wait_secs must be at most {most_secs}"),
    );
    refused(
        &format!("request_timeout_secs = {}\n", most_secs + 1),
        &format!("request_timeout_secs must be at most {most_secs}"),
    );
    refused(
        &format!("[effects]\nlease_ms = {}\n", u64::MAX),
        &format!("effects.lease_ms must be at most {}", most_secs * 1000),
    );
    refused(
        &format!("[effects.retry]\nmax_interval_ms = {}\n", u64::MAX),
        &format!("effects.retry.max_interval_ms must be at most {}", most_secs * 1000),
    );
    let config = check(&format!("max_wait_secs = {most_secs}\n")).expect("a century is still taken");
    assert_eq!(config.max_wait, MAX_DURATION);
}

#[test]
fn guest_memory_beyond_what_wasm32_addresses_is_refused() {
    refused(&format!("[guest]\nmemory_mib = {}\n", usize::MAX), "guest.memory_mib must be at most 4096");
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
        &format!("[callbacks]\ninitial_interval_ms = {}\n", u64::MAX),
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
