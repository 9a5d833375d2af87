//! The `switchyard` binary: parses the command line and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard::config::FileConfig;
use switchyard::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(version, about = "Durable state machines whose transitions run as versioned Wasm modules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text` for people, `json` for log collectors.
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Settings come from the flags, over the environment
    /// (`SWITCHYARD_...`), over the `--config` file, over the defaults; a flag given
    /// twice takes its last value.
    #[command(args_override_self = true)]
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// `sqlite://PATH` or `postgres://URL` [default: sqlite://switchyard.db].
        #[arg(long)]
        database: Option<String>,
        /// Deploy every `.wasm` file in this folder at start-up.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Keep compiled modules here across restarts [default: .switchyard/modules].
        #[arg(long)]
        module_cache: Option<PathBuf>,
        /// A TOML file with every setting (see switchyard.example.toml).
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Serve without API keys on an address other than loopback: anyone who can
        /// reach it acts as admin.
        #[arg(long, env = "SWITCHYARD_INSECURE_OPEN")]
        insecure_open: bool,
    },
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    #[command(flatten)]
    Client(switchyard::client::ClientCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE, with the environment's `SWITCHYARD_...` settings over it, and print
    /// the settings in force (secrets redacted); exit 1 if it would not serve.
    Check { file: PathBuf },
}

/// Every request allocates a little in many places; mimalloc keeps that off the
/// profile (glibc's malloc took ~9 % of the server's CPU under docflow).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = telemetry::init_logs(cli.log_format);
    match cli.command {
        Command::Serve { listen, database, modules, module_cache, config, insecure_open } => {
            let text = |value: String| Some(toml::Value::String(value));
            let flags = [
                ("listen", listen.and_then(|listen| text(listen.to_string()))),
                ("database", database.and_then(text)),
                ("modules", modules.and_then(|path| text(path.display().to_string()))),
                ("module_cache", module_cache.and_then(|path| text(path.display().to_string()))),
                ("auth.insecure_open", insecure_open.then_some(toml::Value::Boolean(true))),
            ];
            let flags = flags.into_iter().filter_map(|(name, value)| Some((name, value?))).collect();
            let (file, _) = FileConfig::load(config.as_deref(), flags)?;
            let config = file.into_config()?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            switchyard::server::serve(listener, config, shutdown_signal()).await?;
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let (settings, taken) = FileConfig::load(Some(&file), Vec::new())?;
            let config = settings.into_config()?;
            println!("# {}: valid. The settings in force, secrets redacted.", file.display());
            if !taken.is_empty() {
                println!("# From the environment: {}.", taken.join(", "));
            }
            print!("{}", toml::to_string(&config.effective())?);
            Ok(())
        }
        Command::Client(command) => {
            let code = switchyard::client::run(command).await;
            // `exit` runs no destructors: write what is logged first.
            drop(logs);
            std::process::exit(code)
        }
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
