//! Server configuration: defaults, overridden by a TOML file, overridden by
//! environment variables and flags (which `main` resolves with clap).

use crate::effects::{self, Binding, Callbacks, Participants, RetryOverride, RetryPolicy};
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
    /// How often a caught-up feed stream looks for commits of other hosts.
    pub feed_poll: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    pub migration_pace: MigrationPace,
    pub effects: effects::Settings,
    /// Whether a `callback_url` may name a loopback, private or link-local address.
    pub allow_private_callbacks: bool,
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

impl GuestConfig {
    /// Refuses zeros where they cannot work: no compile could run or finish, and a
    /// cache of nothing keeps nothing.
    fn check(&self) -> Result<(), Error> {
        let zero = [
            ("guest.concurrent_compiles", self.concurrent_compiles == Some(0)),
            ("guest.compile_timeout_ms", self.compile_timeout_ms == Some(0)),
            ("guest.module_cache_bytes", self.module_cache_bytes == Some(0)),
            ("guest.recent_instances_bytes", self.recent_instances_bytes == Some(0)),
        ];
        match zero.into_iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(Error::Invalid(format!("{name} must be at least 1"))),
            None => Ok(()),
        }
    }
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
    pub fn read(path: &Path) -> Result<FileConfig, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| Error::Parse { path: path.into(), source })
    }

    /// Fills what the file leaves out with defaults; refuses settings that cannot work.
    pub fn into_config(self) -> Result<Config, Error> {
        let defaults = Limits::DEFAULT;
        let guest = self.guest;
        guest.check()?;
        let listen = self.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let effects = self.effects;
        let millis = |ms: Option<u64>, default: u64| Duration::from_millis(ms.unwrap_or(default));
        let callbacks = self.callbacks;
        let callback_retry = RetryOverride {
            max_attempts: callbacks.max_attempts.or(Some(10)),
            initial_interval_ms: callbacks.initial_interval_ms,
            backoff_coefficient: None,
            max_interval_ms: callbacks.max_interval_ms.or(Some(10 * 60 * 1000)),
        };
        let secret =
            callbacks.secret.as_deref().map(Callbacks::secret).transpose().map_err(Error::Invalid)?;
        let allow_private_callbacks = callbacks.allow_private;
        // A zero period would spin (or panic, for the lease's extension timer).
        for (name, value) in
            [("effects.lease_ms", effects.lease_ms), ("feed.poll_interval_ms", self.feed.poll_interval_ms)]
        {
            if value == Some(0) {
                return Err(Error::Invalid(format!("{name} must be at least 1")));
            }
        }
        let trusted = effects
            .ca_certificates
            .iter()
            .map(|path| {
                let pem = std::fs::read(path)
                    .map_err(|err| Error::Invalid(format!("{}: {err}", path.display())))?;
                reqwest::Certificate::from_pem(&pem).map_err(|err| {
                    Error::Invalid(format!("{}: not a PEM certificate: {err}", path.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let effects = effects::Settings {
            trusted,
            host_id: self.host_id.unwrap_or_else(|| format!("{}:{}", hostname(), listen.port())),
            lease: millis(effects.lease_ms, 5 * 60 * 1000),
            poll_every: millis(effects.poll_interval_ms, 1000),
            participants: Participants {
                bindings: self.tasks,
                public_url: self.public_url.unwrap_or_else(|| default_public_url(listen)),
                attempt_timeout: millis(effects.attempt_timeout_ms, 30_000),
                report_timeout: millis(effects.report_timeout_ms, 60 * 60 * 1000),
                retry: RetryPolicy::DEFAULT.overridden(&effects.retry),
            },
            callbacks: Callbacks {
                secret,
                retry: RetryPolicy::DEFAULT.overridden(&callback_retry),
                timeout: millis(callbacks.timeout_ms, 10_000),
            },
        };
        Ok(Config {
            listen,
            allow_private_callbacks,
            database: self.database.unwrap_or_else(|| "sqlite://switchyard.db".into()),
            modules: self.modules,
            module_cache: self.module_cache.unwrap_or_else(|| PathBuf::from(".switchyard/modules")),
            caches: CacheBudgets {
                modules: guest.module_cache_bytes.unwrap_or(128 << 20),
                recent_instances: guest.recent_instances_bytes.unwrap_or(64 << 20),
            },
            limits: Limits {
                fuel_per_call: guest.fuel_per_call.unwrap_or(defaults.fuel_per_call),
                deadline: guest.deadline_ms.map_or(defaults.deadline, Duration::from_millis),
                memory_bytes: guest.memory_mib.map_or(defaults.memory_bytes, |mib| mib << 20),
                module_bytes: guest.max_module_bytes.unwrap_or(defaults.module_bytes),
                concurrent_calls: guest.concurrent_calls.unwrap_or(defaults.concurrent_calls),
                concurrent_compiles: guest.concurrent_compiles.unwrap_or(defaults.concurrent_compiles),
                compile_timeout: guest
                    .compile_timeout_ms
                    .map_or(defaults.compile_timeout, Duration::from_millis),
                ..defaults
            },
            idempotency_retention: Duration::from_secs(self.idempotency_retention_secs.unwrap_or(24 * 3600)),
            max_body_bytes: self.max_body_bytes.unwrap_or(1 << 20),
            max_wait: Duration::from_secs(self.max_wait_secs.unwrap_or(60)),
            feed_poll: millis(self.feed.poll_interval_ms, 500),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs.unwrap_or(10)),
            migration_pace: MigrationPace {
                // A batch of none would never get anywhere.
                batch: self.migrations.batch_size.unwrap_or(MigrationPace::DEFAULT.batch).max(1),
                pause: self
                    .migrations
                    .pause_between_batches_ms
                    .map_or(MigrationPace::DEFAULT.pause, Duration::from_millis),
            },
            effects,
        })
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
