use super::*;

fn config(toml: &str) -> Result<Config, Error> {
    toml::from_str::<FileConfig>(toml).expect("the TOML parses").into_config()
}

#[test]
fn guest_budgets_and_compile_settings_refuse_zero() {
    for key in ["concurrent_compiles", "compile_timeout_ms", "module_cache_bytes", "recent_instances_bytes"] {
        match config(&format!("[guest]\n{key} = 0\n")) {
            Err(Error::Invalid(reason)) => assert_eq!(reason, format!("guest.{key} must be at least 1")),
            other => panic!("{key} = 0 was taken: {other:?}"),
        }
    }
    let taken =
        config("[guest]\nmodule_cache_bytes = 1\nrecent_instances_bytes = 2\ncompile_timeout_ms = 3\n")
            .expect("small budgets are taken");
    assert_eq!((taken.caches.modules, taken.caches.recent_instances), (1, 2));
    assert_eq!(taken.limits.compile_timeout, Duration::from_millis(3));
}
