//! The `switchyard` binary: parses the command line and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard::config::FileConfig;

#[derive(Parser)]
#[command(version, about = "Durable state machines whose transitions run as versioned Wasm modules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. A flag given twice takes its last value.
    #[command(args_override_self = true)]
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "SWITCHYARD_LISTEN")]
        listen: Option<SocketAddr>,
        /// `sqlite://PATH` or `postgres://URL` [default: sqlite://switchyard.db].
        #[arg(long, env = "SWITCHYARD_DATABASE")]
        database: Option<String>,
        /// Deploy every `.wasm` file in this folder at start-up.
        #[arg(long, env = "SWITCHYARD_MODULES")]
        modules: Option<PathBuf>,
        /// Keep compiled modules here across restarts [default: .switchyard/modules].
        #[arg(long, env = "SWITCHYARD_MODULE_CACHE")]
        module_cache: Option<PathBuf>,
        /// A TOML file with these settings and more; flags and environment win over it.
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Serve without API keys on an address other than loopback: anyone who can
        /// reach it acts as admin.
        #[arg(long, env = "SWITCHYARD_INSECURE_OPEN")]
        insecure_open: bool,
    },
    #[command(flatten)]
    Client(switchyard::client::ClientCommand),
}

/// Every request allocates a little in many places; mimalloc keeps that off the
/// profile (glibc's malloc took ~9 % of the server's CPU under docflow).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { listen, database, modules, module_cache, config, insecure_open } => {
            let mut file = config.as_deref().map(FileConfig::read).transpose()?.unwrap_or_default();
            file.auth.insecure_open |= insecure_open;
            let file = FileConfig {
                listen: listen.or(file.listen),
                database: database.or(file.database),
                modules: modules.or(file.modules),
                module_cache: module_cache.or(file.module_cache),
                ..file
            };
            let config = file.into_config()?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            switchyard::server::serve(listener, config, shutdown_signal()).await?;
            Ok(())
        }
        Command::Client(command) => std::process::exit(switchyard::client::run(command).await),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
