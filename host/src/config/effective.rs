//! The settings in force, written back in the file's form, secrets redacted: what
//! `switchyard config check` prints.

use super::sources::set;
use super::{Config, redact_url};
use crate::effects::RetryPolicy;
use std::time::Duration;
use toml::{Table, Value};

const REDACTED: &str = "<redacted>";

impl Config {
    /// Every setting as it is in force, under the name the file gives it.
    pub fn effective(&self) -> Table {
        let mut table = Table::new();
        let mut put = |name: &str, value: Value| set(&mut table, name, value);
        put("listen", text(self.listen));
        put("database", Value::String(redact_url(&self.database)));
        if let Some(modules) = &self.modules {
            put("modules", text(modules.display()));
        }
        put("module_cache", text(self.module_cache.display()));
        put("idempotency_retention_secs", secs(self.idempotency_retention));
        put("max_body_bytes", number(self.max_body_bytes));
        put("max_wait_secs", secs(self.max_wait));
        put("request_timeout_secs", secs(self.request_timeout));
        put("max_concurrent_requests", number(self.max_concurrent_requests));
        put("max_long_polls", number(self.max_long_polls));
        put("long_poll_recheck_ms", millis(self.long_poll_recheck));
        put("notify_other_hosts", Value::Boolean(self.notify_other_hosts));
        put("shutdown_grace_secs", secs(self.shutdown_grace));
        put("host_id", text(&self.effects.host_id));
        put("public_url", text(&self.effects.participants.public_url));
        put("feed.poll_interval_ms", millis(self.feed_poll));
        put("migrations.batch_size", number(self.migration_pace.batch));
        put("migrations.pause_between_batches_ms", millis(self.migration_pace.pause));

        let limits = &self.limits;
        put("guest.fuel_per_call", number(limits.fuel_per_call));
        put("guest.deadline_ms", millis(limits.deadline));
        put("guest.memory_mib", number(limits.memory_bytes >> 20));
        put("guest.max_module_bytes", number(limits.module_bytes));
        put("guest.concurrent_calls", number(limits.concurrent_calls));
        put("guest.concurrent_compiles", number(limits.concurrent_compiles));
        put("guest.compile_timeout_ms", millis(limits.compile_timeout));
        put("guest.module_cache_bytes", number(self.caches.modules));
        put("guest.recent_instances_bytes", number(self.caches.recent_instances));

        let effects = &self.effects;
        put("effects.lease_ms", millis(effects.lease));
        put("effects.poll_interval_ms", millis(effects.poll_every));
        put("effects.attempt_timeout_ms", millis(effects.participants.attempt_timeout));
        put("effects.report_timeout_ms", millis(effects.participants.report_timeout));
        put("effects.retry", retry(&effects.participants.retry));
        let certificates = self.ca_certificates.iter().map(|path| text(path.display())).collect();
        put("effects.ca_certificates", Value::Array(certificates));
        let tasks = effects.participants.bindings.iter().map(|(task, binding)| {
            let mut binding = Table::try_from(binding).unwrap_or_default();
            // Headers carry credentials (an Authorization, say).
            if let Some(Value::Table(headers)) = binding.get_mut("headers") {
                headers.iter_mut().for_each(|(_, value)| *value = text(REDACTED));
            }
            (task.clone(), Value::Table(binding))
        });
        put("tasks", Value::Table(tasks.collect()));

        let callbacks = &effects.callbacks;
        if callbacks.secret.is_some() {
            put("callbacks.secret", text(REDACTED));
        }
        put("callbacks.allow_private", Value::Boolean(self.allow_private_callbacks));
        put("callbacks.timeout_ms", millis(callbacks.timeout));
        if let Value::Table(retry) = retry(&callbacks.retry) {
            // The callbacks' backoff doubles; only these three are settings.
            for (name, value) in retry.into_iter().filter(|(name, _)| name != "backoff_coefficient") {
                put(&format!("callbacks.{name}"), value);
            }
        }

        let auth = &self.auth;
        let keys = auth.keys.iter().map(|key| {
            let mut table = Table::new();
            table.insert("name".into(), text(&key.name));
            table.insert("role".into(), text(key.role.as_str()));
            table.insert("sha256".into(), text(hex::encode(key.sha256)));
            Value::Table(table)
        });
        put("auth.keys", Value::Array(keys.collect()));
        put("auth.open_metrics", Value::Boolean(auth.open_metrics));
        put("auth.insecure_open", Value::Boolean(auth.insecure_open));
        table
    }
}

fn text(value: impl std::fmt::Display) -> Value {
    Value::String(value.to_string())
}

/// A count as TOML's integer (which is signed).
fn number(value: impl TryInto<i64>) -> Value {
    Value::Integer(value.try_into().unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> Value {
    number(duration.as_millis())
}

fn secs(duration: Duration) -> Value {
    number(duration.as_secs())
}

fn retry(policy: &RetryPolicy) -> Value {
    let mut table = Table::new();
    table.insert("max_attempts".into(), number(policy.max_attempts));
    table.insert("initial_interval_ms".into(), millis(policy.initial_interval));
    table.insert("backoff_coefficient".into(), Value::Float(policy.backoff_coefficient));
    table.insert("max_interval_ms".into(), millis(policy.max_interval));
    Value::Table(table)
}
