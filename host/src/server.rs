//! Runs the server: store, service, start-up deploys, the API and background chores.

use crate::config::Config;
use crate::model::Caller;
use crate::service::{self, Service, Settings};
use crate::{api, effects, store};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often expired idempotency records are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the database: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Service(#[from] service::Error),
    #[error(
        "the [guest] limits do not fit this machine (guest.concurrent_calls slots of guest.memory_mib \
         each): {0}"
    )]
    Runtime(service::Error),
    #[error("cannot deploy {path}: {source}")]
    Deploy { path: PathBuf, source: service::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("serving failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves on `listener` until `shutdown` resolves, then drains requests for at most
/// `config.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Before any work, so that no count is lost to the facade's no-op recorder.
    crate::telemetry::metrics();
    let store = store::Store::connect(&config.database).await?;
    let settings = Settings {
        limits: config.limits.clone(),
        idempotency_retention: config.idempotency_retention,
        caches: config.caches,
        module_cache: Some(config.module_cache.clone()),
        migration_pace: config.migration_pace,
        leases: service::Leases { owner: config.effects.host_id.clone(), lease: config.effects.lease },
        long_poll_recheck: config.long_poll_recheck,
        callbacks: service::CallbackPolicy {
            signed: config.effects.callbacks.secret.is_some(),
            allow_private: config.allow_private_callbacks,
            render: api::instance_body,
        },
    };
    let service = Arc::new(Service::new(store, settings).map_err(Error::Runtime)?);
    if let Some(dir) = &config.modules {
        deploy_folder(&service, dir).await?;
    }
    service.release_migration_leases().await?;
    let background = tokio::spawn(background(service.clone(), config.effects.lease));
    let other_hosts = config.notify_other_hosts.then(|| {
        let service = service.clone();
        tokio::spawn(async move { service.follow_other_hosts().await })
    });
    let (stop_effects, effects_stopped) = tokio::sync::watch::channel(false);
    let executor = tokio::spawn(effects::run(service.clone(), config.effects.clone(), effects_stopped));
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let api_settings = api::Settings {
        max_body_bytes: config.max_body_bytes,
        max_module_bytes: config.limits.module_bytes,
        max_wait: config.max_wait,
        request_timeout: config.request_timeout,
        max_concurrent_requests: config.max_concurrent_requests,
        max_long_polls: config.max_long_polls,
        feed_poll: config.feed_poll,
        stopping: stopping.clone(),
        keys: api::Keys::new(&config.auth.keys, config.auth.open_metrics),
    };
    let app = api::router(service.clone(), api_settings);
    tracing::info!(listen = %listener.local_addr()?, database = %crate::config::redact_url(&config.database), "serving");

    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stopping_tx.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let grace = config.shutdown_grace;
    tokio::select! {
        served = server => served?,
        _ = async { let _ = stopping.wait_for(|stopping| *stopping).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "requests still running after the grace period; stopping anyway");
        }
    }
    background.abort();
    if let Some(other_hosts) = other_hosts {
        other_hosts.abort();
    }
    // Effects in flight stay leased to this host, which takes them back when it starts.
    let _ = stop_effects.send(true);
    executor.abort();
    let stats = service.store().commit_stats();
    tracing::info!(
        commits = stats.commits,
        batches = stats.batches,
        largest_batch = stats.largest_batch,
        "group commit"
    );
    service.store().close().await;
    Ok(())
}

/// Deploys every `.wasm` file in `dir`, in name order.
async fn deploy_folder(service: &Service, dir: &Path) -> Result<(), Error> {
    let read_error = |source| Error::Read { path: dir.into(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|extension| extension == "wasm") {
            paths.push(path);
        }
    }
    paths.sort();
    let caller = Caller::host();
    for path in paths {
        let wasm =
            tokio::fs::read(&path).await.map_err(|source| Error::Read { path: path.clone(), source })?;
        let deployed = service
            .deploy(&caller, wasm, None)
            .await
            .map_err(|source| Error::Deploy { path: path.clone(), source })?;
        let version = &deployed.version;
        tracing::info!(path = %path.display(), name = %version.name, version = version.version, created = deployed.created, "module ready");
    }
    Ok(())
}

/// The periodic work of a host besides effects: taking up bulk migrations no host holds
/// (at start, then every half lease), and sweeping expired idempotency records (one
/// host at a time: the one holding the sweep's lease, which it keeps while it lives).
async fn background(service: Arc<Service>, lease: Duration) {
    let mut adopt = tokio::time::interval((lease / 2).max(Duration::from_millis(1)));
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = adopt.tick() => {
                if let Err(err) = service.adopt_migrations().await {
                    tracing::warn!(%err, "cannot look for migrations to take up");
                }
            }
            _ = sweep.tick() => {
                if !service.holds_job("idempotency.sweep", 2 * SWEEP_EVERY).await {
                    continue;
                }
                match service.sweep_idempotency_records().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "expired idempotency records deleted"),
                    Err(err) => tracing::warn!(%err, "sweeping idempotency records failed"),
                }
            }
        }
    }
}
