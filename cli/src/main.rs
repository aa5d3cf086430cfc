//! `weft`: the proxy, a demo, and the tools around them.
#![forbid(unsafe_code)]

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weft_config::Config;

/// Weft: a sidecar proxy programmable with WebAssembly filters.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from a configuration file.
    Proxy {
        /// The YAML configuration.
        #[arg(short, long, default_value = "weft.yaml")]
        config: PathBuf,
        /// Check the configuration (and load every filter), then exit.
        #[arg(long)]
        check: bool,
    },
    /// Run a demo on loopback: two backends behind a proxy with the router and fault
    /// filters, on embedded defaults.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo admin listener (/ready, /metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Print the demo's configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy { config, check } => run_proxy(config, check).await,
            Command::Demo {
                listen,
                admin,
                print_config,
            } => demo::run(&listen, &admin, print_config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_proxy(path: PathBuf, check: bool) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    if check {
        // Loading every filter is the real check: it compiles them and runs `init`.
        let states = weft_proxy::check(&config)?;
        println!("{}: ok ({states} listeners)", path.display());
        return Ok(());
    }
    let proxy = weft_proxy::start(config).await?;
    serve_until_signal(proxy, Some(path)).await
}

/// Serve until SIGTERM or SIGINT, then drain. SIGHUP re-reads the configuration
/// file; a bad one is reported and the running configuration stays.
pub(crate) async fn serve_until_signal(
    proxy: weft_proxy::RunningProxy,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let Some(path) = &config_path else { continue };
                match Config::from_file(path).map_err(anyhow::Error::from)
                    .and_then(|c| proxy.reload(&c).map_err(anyhow::Error::from))
                {
                    Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                    Err(e) => tracing::error!(config = %path.display(), "reload refused, keeping the running configuration: {e:#}"),
                }
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    proxy.shutdown_within(Duration::from_secs(60)).await;
    tracing::info!("stopped");
    Ok(())
}
