//! Server configuration: defaults, overridden by a TOML file, overridden by
//! environment variables, overridden by flags (`sources`); checked and completed into
//! a [`Config`] by [`FileConfig::into_config`].

mod effective;
mod sources;

pub use sources::{env_var, setting_names};

use crate::effects::{self, Binding, Callbacks, Participants, RetryOverride, RetryPolicy};
use crate::model::{ApiKey, Caller, Role};
use crate::runtime::Limits;
use crate::service::{CacheBudgets, MigrationPace};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://URL`.
    pub database: String,
    /// Every `.wasm` in this folder is deployed at start-up.
    pub modules: Option<PathBuf>,
    /// Where compiled modules are kept across restarts.
    pub module_cache: PathBuf,
    /// Memory for compiled modules and recent instances; the least recently used go first.
    pub caches: CacheBudgets,
    pub limits: Limits,
    pub idempotency_retention: Duration,
    pub max_body_bytes: usize,
    pub max_wait: Duration,
    /// How long a request may take, besides the wait a long-poll asked for.
    pub request_timeout: Duration,
    /// Requests served at once, long-polls not counted; more are refused with 503.
    pub max_concurrent_requests: u32,
    /// Long-polls held at once; more are refused with 503.
    pub max_long_polls: u32,
    /// How often a long-poll reads its instance again for other hosts' changes.
    pub long_poll_recheck: Duration,
    /// Whether hosts sharing a PostgreSQL database tell each other of their commits.
    pub notify_other_hosts: bool,
    /// How often a caught-up feed stream looks for commits of other hosts.
    pub feed_poll: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    pub migration_pace: MigrationPace,
    pub effects: effects::Settings,
    /// Whether a `callback_url` may name a loopback, private or link-local address.
    pub allow_private_callbacks: bool,
    /// PEM files of the certificate authorities in `effects.trusted`.
    pub ca_certificates: Vec<PathBuf>,
    pub auth: Auth,
}

/// Who may call the API (SPEC §6).
#[derive(Debug, Clone)]
pub struct Auth {
    /// With none, the server is open: every caller acts as admin, named `anonymous`.
    pub keys: Vec<ApiKey>,
    /// Whether `GET /metrics` answers without a key.
    pub open_metrics: bool,
    /// Whether the server may serve without keys on an address other than loopback.
    pub insecure_open: bool,
}

/// The config file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub modules: Option<PathBuf>,
    pub module_cache: Option<PathBuf>,
    pub idempotency_retention_secs: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub max_wait_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_concurrent_requests: Option<u32>,
    pub max_long_polls: Option<u32>,
    /// How often a long-poll reads its instance again, on a shared database.
    pub long_poll_recheck_ms: Option<u64>,
    /// LISTEN/NOTIFY between the hosts of a PostgreSQL database [default: true].
    pub notify_other_hosts: Option<bool>,
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub guest: GuestConfig,
    #[serde(default)]
    pub migrations: MigrationsConfig,
    /// This host's name in effect leases [default: hostname:port].
    pub host_id: Option<String>,
    /// The URL clients and participants reach this server at [default: http://LISTEN].
    pub public_url: Option<String>,
    #[serde(default)]
    pub effects: EffectsConfig,
    /// Task name → the participant bound to it.
    #[serde(default)]
    pub tasks: std::collections::HashMap<String, Binding>,
    #[serde(default)]
    pub callbacks: CallbacksConfig,
    #[serde(default)]
    pub feed: FeedConfig,
    #[serde(default)]
    pub auth: AuthConfig,
}

/// `[auth]`: API keys and what is open without one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// `GET /metrics` without a key [default: true].
    pub open_metrics: Option<bool>,
    /// Serve without keys on an address other than loopback (`--insecure-open`).
    #[serde(default)]
    pub insecure_open: bool,
}

/// `[[auth.keys]]`: one API key, stored as its SHA-256, never in clear.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub role: String,
    /// Hex of the SHA-256 of the key.
    pub sha256: String,
}

/// `[feed]`: the transition feed's live stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// How often a caught-up stream reads again for other hosts' commits (this host's
    /// own commits wake it at once).
    pub poll_interval_ms: Option<u64>,
}

/// `[callbacks]`: signing and retrying terminal callbacks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// `whsec_` + base64: the key callbacks are signed with. Without one, instances
    /// cannot be created with a `callback_url`.
    pub secret: Option<String>,
    /// Lets a `callback_url` name a loopback, private or link-local address.
    #[serde(default)]
    pub allow_private: bool,
    pub max_attempts: Option<u32>,
    pub initial_interval_ms: Option<u64>,
    pub max_interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `[effects]`: how the executor works, and the task defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectsConfig {
    pub lease_ms: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub attempt_timeout_ms: Option<u64>,
    pub report_timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry: RetryOverride,
    /// PEM files of certificate authorities trusted for `https://` participants and
    /// callbacks, besides the public roots (a private CA, say).
    #[serde(default)]
    pub ca_certificates: Vec<PathBuf>,
}

/// `[migrations]`: the pace of bulk migrations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsConfig {
    pub batch_size: Option<u32>,
    pub pause_between_batches_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub fuel_per_call: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub max_module_bytes: Option<usize>,
    pub concurrent_calls: Option<u32>,
    pub concurrent_compiles: Option<u32>,
    pub compile_timeout_ms: Option<u64>,
    /// What compiled modules may take in memory.
    pub module_cache_bytes: Option<usize>,
    /// What this process's copies of the instances it committed last may take.
    pub recent_instances_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
}

impl FileConfig {
    /// The settings of `file` (if any), this process's environment and `flags` (by
    /// dotted name), each over the one before; and the environment variables taken.
    pub fn load(
        file: Option<&Path>,
        flags: Vec<(&str, toml::Value)>,
    ) -> Result<(FileConfig, Vec<String>), Error> {
        // A variable that is not UTF-8 is no setting of ours.
        let vars = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
        sources::layered(sources::read(file)?, vars, flags)
    }

    /// Fills what the file leaves out with defaults; refuses settings that cannot work:
    /// a zero where nothing would ever happen (or a loop would spin), and numbers
    /// beyond what the server can represent.
    pub fn into_config(self) -> Result<Config, Error> {
        let defaults = Limits::DEFAULT;
        let guest = self.guest;
        let listen = self.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let effects = self.effects;
        let callbacks = self.callbacks;
        check_retry("effects.retry", &effects.retry)?;
        for (task, binding) in &self.tasks {
            check_retry(&format!("tasks.{task:?}.retry"), &binding.retry)?;
            positive_duration(&format!("tasks.{task:?}.attempt_timeout_ms"), binding.attempt_timeout_ms, MS)?;
        }
        let callback_retry = RetryOverride {
            max_attempts: callbacks.max_attempts.or(Some(10)),
            initial_interval_ms: callbacks.initial_interval_ms,
            backoff_coefficient: None,
            max_interval_ms: callbacks.max_interval_ms.or(Some(10 * 60 * 1000)),
        };
        check_retry("callbacks", &callback_retry)?;
        let secret =
            callbacks.secret.as_deref().map(Callbacks::secret).transpose().map_err(Error::Invalid)?;
        let allow_private_callbacks = callbacks.allow_private;
        let auth = self.auth.check(listen)?;
        let ca_certificates = effects.ca_certificates;
        let trusted = ca_certificates
            .iter()
            .map(|path| {
                let pem = std::fs::read(path)
                    .map_err(|err| Error::Invalid(format!("{}: {err}", path.display())))?;
                reqwest::Certificate::from_pem(&pem).map_err(|err| {
                    Error::Invalid(format!("{}: not a PEM certificate: {err}", path.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A zero period would spin (or panic, for the lease's extension timer).
        let lease = positive_duration("effects.lease_ms", effects.lease_ms, MS)?;
        let poll_every = positive_duration("effects.poll_interval_ms", effects.poll_interval_ms, MS)?;
        let attempt_timeout =
            positive_duration("effects.attempt_timeout_ms", effects.attempt_timeout_ms, MS)?;
        let report_timeout = positive_duration("effects.report_timeout_ms", effects.report_timeout_ms, MS)?;
        let callback_timeout = positive_duration("callbacks.timeout_ms", callbacks.timeout_ms, MS)?;
        let effects = effects::Settings {
            trusted,
            host_id: self.host_id.unwrap_or_else(|| format!("{}:{}", hostname(), listen.port())),
            lease: lease.unwrap_or(Duration::from_secs(30)),
            poll_every: poll_every.unwrap_or(Duration::from_secs(1)),
            participants: Participants {
                bindings: self.tasks,
                public_url: self.public_url.unwrap_or_else(|| default_public_url(listen)),
                attempt_timeout: attempt_timeout.unwrap_or(Duration::from_secs(30)),
                report_timeout: report_timeout.unwrap_or(Duration::from_secs(60 * 60)),
                retry: RetryPolicy::DEFAULT.overridden(&effects.retry),
            },
            callbacks: Callbacks {
                secret,
                retry: RetryPolicy::DEFAULT.overridden(&callback_retry),
                timeout: callback_timeout.unwrap_or(Duration::from_secs(10)),
            },
        };
        let memory_mib = positive("guest.memory_mib", guest.memory_mib)?;
        if memory_mib.is_some_and(|mib| mib > MAX_MEMORY_MIB) {
            return Err(Error::Invalid(format!("guest.memory_mib must be at most {MAX_MEMORY_MIB}")));
        }
        let limits = Limits {
            fuel_per_call: positive("guest.fuel_per_call", guest.fuel_per_call)?
                .unwrap_or(defaults.fuel_per_call),
            deadline: positive_duration("guest.deadline_ms", guest.deadline_ms, MS)?
                .unwrap_or(defaults.deadline),
            memory_bytes: memory_mib.map_or(defaults.memory_bytes, |mib| mib << 20),
            module_bytes: positive("guest.max_module_bytes", guest.max_module_bytes)?
                .unwrap_or(defaults.module_bytes),
            // None would leave every guest call waiting for a slot forever.
            concurrent_calls: positive("guest.concurrent_calls", guest.concurrent_calls)?
                .unwrap_or(defaults.concurrent_calls),
            concurrent_compiles: positive("guest.concurrent_compiles", guest.concurrent_compiles)?
                .unwrap_or(defaults.concurrent_compiles),
            compile_timeout: positive_duration("guest.compile_timeout_ms", guest.compile_timeout_ms, MS)?
                .unwrap_or(defaults.compile_timeout),
            ..defaults
        };
        let retention =
            positive_duration("idempotency_retention_secs", self.idempotency_retention_secs, SECS)?;
        let request_timeout = positive_duration("request_timeout_secs", self.request_timeout_secs, SECS)?;
        let feed_poll = positive_duration("feed.poll_interval_ms", self.feed.poll_interval_ms, MS)?;
        let long_poll_recheck = positive_duration("long_poll_recheck_ms", self.long_poll_recheck_ms, MS)?;
        let pause =
            duration("migrations.pause_between_batches_ms", self.migrations.pause_between_batches_ms, MS)?;
        Ok(Config {
            listen,
            auth,
            allow_private_callbacks,
            ca_certificates,
            database: self.database.unwrap_or_else(|| "sqlite://switchyard.db".into()),
            modules: self.modules,
            module_cache: self.module_cache.unwrap_or_else(|| PathBuf::from(".switchyard/modules")),
            caches: CacheBudgets {
                modules: positive("guest.module_cache_bytes", guest.module_cache_bytes)?.unwrap_or(128 << 20),
                recent_instances: positive("guest.recent_instances_bytes", guest.recent_instances_bytes)?
                    .unwrap_or(64 << 20),
            },
            limits,
            idempotency_retention: retention.unwrap_or(Duration::from_secs(24 * 3600)),
            max_body_bytes: positive("max_body_bytes", self.max_body_bytes)?.unwrap_or(1 << 20),
            max_wait: duration("max_wait_secs", self.max_wait_secs, SECS)?.unwrap_or(Duration::from_secs(60)),
            request_timeout: request_timeout.unwrap_or(Duration::from_secs(30)),
            max_concurrent_requests: positive("max_concurrent_requests", self.max_concurrent_requests)?
                .unwrap_or(1024),
            max_long_polls: positive("max_long_polls", self.max_long_polls)?.unwrap_or(1024),
            long_poll_recheck: long_poll_recheck.unwrap_or(Duration::from_secs(1)),
            notify_other_hosts: self.notify_other_hosts.unwrap_or(true),
            feed_poll: feed_poll.unwrap_or(Duration::from_millis(500)),
            shutdown_grace: duration("shutdown_grace_secs", self.shutdown_grace_secs, SECS)?
                .unwrap_or(Duration::from_secs(10)),
            migration_pace: MigrationPace {
                // A batch of none would never get anywhere.
                batch: positive("migrations.batch_size", self.migrations.batch_size)?
                    .unwrap_or(MigrationPace::DEFAULT.batch),
                pause: pause.unwrap_or(MigrationPace::DEFAULT.pause),
            },
            effects,
        })
    }
}

impl AuthConfig {
    /// Checks the keys, and that a server without keys listens on loopback only
    /// (unless `insecure_open`).
    fn check(self, listen: SocketAddr) -> Result<Auth, Error> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(self.keys.len());
        for key in self.keys {
            let invalid = |what: String| Error::Invalid(format!("auth.keys {:?}: {what}", key.name));
            let name_ok = !key.name.is_empty()
                && key.name.len() <= 64
                && key.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
            if !name_ok {
                return Err(invalid("a name is 1 to 64 letters, digits, '.', '_', '@' or '-'".into()));
            }
            if key.name == Caller::ANONYMOUS || key.name == Caller::HOST {
                return Err(invalid("that name is reserved".into()));
            }
            let role = key
                .role
                .parse::<Role>()
                .map_err(|_| invalid(format!("role {:?} is none of client, deployer, admin", key.role)))?;
            let sha256 = hex::decode(key.sha256.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| invalid("sha256 must be 64 hex digits: the SHA-256 of the key".into()))?;
            if keys.iter().any(|other| other.name == key.name) {
                return Err(invalid("the name is given twice".into()));
            }
            if keys.iter().any(|other| other.sha256 == sha256) {
                return Err(invalid("the same key is listed twice".into()));
            }
            keys.push(ApiKey { name: key.name, role, sha256 });
        }
        if keys.is_empty() && !listen.ip().is_loopback() && !self.insecure_open {
            return Err(Error::Invalid(format!(
                "no API keys are configured ([[auth.keys]]) and the server would listen on {listen}, \
                 not on loopback: anyone who reaches it could deploy, migrate and cancel; configure keys, \
                 listen on 127.0.0.1, or pass --insecure-open"
            )));
        }
        Ok(Auth { keys, open_metrics: self.open_metrics.unwrap_or(true), insecure_open: self.insecure_open })
    }
}

/// The longest any duration setting may be: far beyond any sensible value, and far
/// from where adding it to a clock reading overflows (which panics).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A Wasm32 memory ends at 4 GiB.
const MAX_MEMORY_MIB: usize = 4096;

/// The units of duration settings, by the suffix of their names.
const SECS: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Duration setting `name`, `value` in `unit`s: at most [`MAX_DURATION`].
fn duration(name: &str, value: Option<u64>, unit: fn(u64) -> Duration) -> Result<Option<Duration>, Error> {
    match value.map(unit) {
        Some(duration) if duration > MAX_DURATION => {
            let max = MAX_DURATION.as_millis() / unit(1).as_millis();
            Err(Error::Invalid(format!("{name} must be at most {max}")))
        }
        duration => Ok(duration),
    }
}

/// [`duration`] for a setting that cannot be zero: a period that would spin, or a
/// timeout nothing could meet.
fn positive_duration(
    name: &str,
    value: Option<u64>,
    unit: fn(u64) -> Duration,
) -> Result<Option<Duration>, Error> {
    positive(name, value)?;
    duration(name, value, unit)
}

/// Setting `name`, refused if zero.
fn positive<T: PartialEq + Default>(name: &str, value: Option<T>) -> Result<Option<T>, Error> {
    match value {
        Some(value) if value == T::default() => Err(Error::Invalid(format!("{name} must be at least 1"))),
        value => Ok(value),
    }
}

/// A retry policy of the config file: at least one attempt, a coefficient that does
/// not shrink the backoff, and intervals within [`MAX_DURATION`].
fn check_retry(section: &str, retry: &RetryOverride) -> Result<(), Error> {
    positive(&format!("{section}.max_attempts"), retry.max_attempts)?;
    duration(&format!("{section}.initial_interval_ms"), retry.initial_interval_ms, MS)?;
    duration(&format!("{section}.max_interval_ms"), retry.max_interval_ms, MS)?;
    match retry.backoff_coefficient {
        Some(coefficient) if !(coefficient.is_finite() && coefficient >= 1.0) => Err(Error::Invalid(
            format!("{section}.backoff_coefficient must be a number of at least 1, not {coefficient}"),
        )),
        _ => Ok(()),
    }
}

/// `url` without the password it may carry (`postgres://user:password@host/db`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => match url[scheme_end + 3..at].split_once(':') {
            Some((user, _password)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `http://` + the listen address; a wildcard address (every interface) is reached at
/// loopback on this machine, which is what a participant beside the server can use.
fn default_public_url(listen: SocketAddr) -> String {
    let reachable = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    format!("http://{reachable}")
}

/// This machine's name, for the default host id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;
