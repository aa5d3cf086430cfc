//! `weft`: the proxy, a demo, and the tools around them.
#![forbid(unsafe_code)]

mod access;
mod certs;
mod check;
mod client;
mod demo;
mod filter_test;
mod https;
mod init;
mod inject;
mod inspect;
mod keys;
mod new;
mod paths;
mod stat;

use std::collections::BTreeMap;
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

/// How many threads serve: for the commands that serve (the proxy, the config
/// server, the demo), not for those that only ask a server something.
#[derive(clap::Args)]
struct Runtime {
    /// Threads that serve traffic [default: the cores this process may use]. With one,
    /// a single-threaded scheduler runs everything on it, with no hand-offs between
    /// threads: the cheapest way to serve on one core, as a sidecar usually does.
    #[arg(long, value_name = "N", env = "WEFT_WORKERS")]
    workers: Option<std::num::NonZeroUsize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, from a configuration file or fed by a config server.
    Proxy {
        /// The YAML configuration (when not fed by a config server).
        #[arg(short, long, conflicts_with = "config_server")]
        config: Option<PathBuf>,
        /// Check the configuration (and load every filter), then exit.
        #[arg(long, requires = "config")]
        check: bool,
        /// Subscribe to this config server (e.g. http://127.0.0.1:7070) for listeners,
        /// clusters and filters.
        #[arg(long, value_name = "URL")]
        config_server: Option<String>,
        /// After SIGTERM, keep serving this long with `connection: close` and `/ready`
        /// answering 503 before stopping, so balancers move away first (default: the
        /// configuration's `shutdown.drain_delay`, else 0s). SIGINT stops at once.
        #[arg(long, env = "WEFT_DRAIN_DELAY", value_parser = weft_config::units::parse_duration)]
        drain_delay: Option<Duration>,
        #[command(flatten)]
        identity: Identity,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Run the config server: stores filters and mesh configs, pushes them to proxies.
    ConfigServer(ConfigServerArgs),
    /// Push a filter module (.wasm component) to the config server under a name.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// The name mesh configs use (`module: filter:NAME`).
        #[arg(long)]
        name: String,
        /// Sign the module with this private key (`weft keys new`); a server with
        /// --trusted-keys takes only signed filters.
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Apply a mesh config (YAML) on the config server; warn (or with --strict,
    /// refuse) when a group selects no connected proxy or a connected proxy has no
    /// group; with --wait, exit 0 only once every selected proxy applied it.
    Apply {
        #[command(flatten)]
        args: client::ApplyArgs,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Show the current version and every proxy: what it applied, or why it refused.
    /// Exits 1 while a proxy refuses the current version or has not applied it
    /// after --grace.
    Status {
        /// Print the server's JSON as it is (exits 0 whatever the proxies say; read
        /// each proxy's `state`).
        #[arg(long)]
        json: bool,
        /// How long a proxy may take to apply the current version before it counts
        /// as late.
        #[arg(long, default_value = "10s", value_parser = weft_config::units::parse_duration)]
        grace: Duration,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Every version: its number, when, what made it (apply, push, rollback), the
    /// file, and who.
    History(inspect::HistoryArgs),
    /// Print the mesh config (YAML) of a version, the current one by default (it
    /// holds filter configs as written, so it needs the API token).
    Get(inspect::GetArgs),
    /// A unified diff of two versions' mesh configs, and the filter versions that
    /// changed between them.
    Diff(inspect::DiffArgs),
    /// The configuration the current version gives one proxy: its listeners with
    /// their filter chains, the clusters with their endpoints and weights, a
    /// router's routes and split weights; secrets in filter configs redacted.
    ProxyConfig(inspect::ProxyConfigArgs),
    /// Check a mesh file offline, a running config server and its proxies, or both:
    /// one line per check (ok, warn, fail); exits 1 on any fail.
    Check(check::CheckArgs),
    /// Success rate, requests per second and latency (p50, p95, p99) per service and
    /// route across the mesh, from the traffic proxies report to the config server;
    /// redrawn live in a terminal.
    Stat(stat::StatArgs),
    /// Make a development CA and workload certificates (SPIFFE IDs) in one folder,
    /// for demos and tests; a CA already there is reused.
    Certs(certs::CertsArgs),
    /// Capture this network namespace's TCP for a sidecar (iptables, as an init
    /// container does): inbound to its port 15006, outbound to 15001, the sidecar's
    /// own traffic left alone; `--remove` undoes it, `--dry-run` prints it.
    Init(init::InitArgs),
    /// Filter tools: `weft filter test FILE` runs a built filter on one request in
    /// the proxy's engine, without a proxy, and prints what it did.
    Filter(filter_test::FilterArgs),
    /// Signing keys for pushes and applies: `weft keys new --out DIR`.
    Keys(keys::KeysArgs),
    /// Make a new filter crate of its own: `weft new filter NAME`.
    New(new::NewArgs),
    /// Add the Weft sidecar to the pods of a Kubernetes manifest (Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, Pod): `weft inject -f app.yaml | kubectl
    /// apply -f -`.
    Inject(inject::InjectArgs),
    /// Make an earlier version current again (as a new version).
    Rollback {
        /// The version to return to.
        version: u64,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Run a demo on loopback: a config server, two proxies it feeds with the
    /// telemetry, fault, retry and router filters, and the backends blue (with a slow
    /// second replica) and green, on embedded defaults.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo admin listener (/ready, /live, /metrics, /config, /filters, /clusters) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Where the demo config server listens.
        #[arg(long, default_value = "127.0.0.1:7070")]
        server_listen: std::net::SocketAddr,
        /// Print the demo's mesh config and exit.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        runtime: Runtime,
    },
}

/// `weft config-server`.
#[derive(clap::Args)]
struct ConfigServerArgs {
    /// Where the HTTP API and the proxies' gRPC stream listen.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// Where filters, versions and the tokens are kept; the other commands find
    /// the tokens there too when WEFT_DATA_DIR names it
    /// [default: $XDG_DATA_HOME/weft/config-server or ~/.local/share/weft/config-server].
    #[arg(long, env = "WEFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Largest filter module accepted, in bytes.
    #[arg(long, default_value_t = weft_config_server::Options::DEFAULT_MAX_FILTER_SIZE)]
    max_filter_size: usize,
    /// Connections served at once; more wait in the kernel's queue.
    #[arg(long, default_value_t = weft_config_server::Limits::default().max_connections)]
    max_connections: usize,
    /// Proxies (node ids) kept, connected or recently gone; past it, new nodes are
    /// refused unless one disconnected long enough ago to be forgotten.
    #[arg(long, default_value_t = weft_config_server::Limits::default().max_proxies)]
    max_proxies: usize,
    /// How often proxies report their traffic, for `weft stat`; 0s: never.
    #[arg(long, default_value = "5s", value_parser = weft_config::units::parse_duration)]
    report_interval: Duration,
    /// A name requests may give the server as their Host, besides localhost and IP
    /// addresses (repeat for more). Without it, a server on loopback answers only
    /// to those, so that no web page can reach it by a name made to resolve here.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Take only pushes and applies signed by a key of this file (one ed25519 public
    /// key per line, 64 hex digits, as `weft keys new` writes; `#` comments); others
    /// are refused (403).
    #[arg(long, value_name = "FILE")]
    trusted_keys: Option<PathBuf>,
    /// The mesh CA's certificate (PEM), which signs the proxies' workload
    /// certificates [default: ca.pem in the data folder, made on first start].
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The mesh CA's private key (PKCS#8 PEM) [default: ca-key.pem in the data folder].
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// More CA certificates (PEM) for the trust bundle proxies get: the old CA while
    /// the trust anchor is rotated (see docs/identity.md).
    #[arg(long, value_name = "FILE")]
    trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    tls: https::ServeArgs,
    #[command(flatten)]
    runtime: Runtime,
}

impl ConfigServerArgs {
    /// The server's options: these limits, the others at their defaults.
    fn options(self) -> weft_config_server::Options {
        let mut options = weft_config_server::Options::new(
            self.listen,
            self.data_dir.unwrap_or_else(paths::server_data_dir),
        );
        options.max_filter_size = self.max_filter_size;
        options.limits = weft_config_server::Limits {
            max_connections: self.max_connections,
            max_proxies: self.max_proxies,
            ..Default::default()
        };
        options.report_interval = self.report_interval;
        options.allowed_hosts = self.allow_hosts;
        options.trusted_keys = self.trusted_keys;
        options.ca_cert = self.ca_cert;
        options.ca_key = self.ca_key;
        options.trust_bundle = self.trust_bundle;
        self.tls.apply(&mut options);
        options
    }
}

/// Who a proxy fed by a config server is.
#[derive(clap::Args)]
struct Identity {
    /// Unique id of this proxy [default: the host name].
    #[arg(long)]
    node: Option<String>,
    /// The service this proxy sits beside; mesh configs select proxies by it.
    #[arg(long, default_value = "default")]
    service: String,
    /// The proxy token the config server created (its `proxy-token` file)
    /// [default: the proxy-token file of a config server on this machine].
    #[arg(long, env = "WEFT_PROXY_TOKEN", hide_env_values = true)]
    proxy_token: Option<String>,
    /// Read the proxy token from this file.
    #[arg(long, conflicts_with = "proxy_token")]
    proxy_token_file: Option<PathBuf>,
    /// A label mesh configs can select on, as KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Admin listener (/ready, /live, /metrics, /config, /filters, /clusters) of a proxy fed by a config server.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: String,
    /// Where the last good snapshot is kept, so a restart serves without the server,
    /// and the instance secret, so a restart takes its node id back at once
    /// [default: $XDG_STATE_HOME/weft/proxy-NODE or ~/.local/state/weft/proxy-NODE].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Load only snapshots whose mesh config and pushed modules a key of this file
    /// signed (one ed25519 public key per line); others are refused (NACK) and the
    /// last good config keeps serving.
    #[arg(long, value_name = "FILE")]
    trusted_keys: Option<PathBuf>,
    /// For an https:// config server: the CA certificate (PEM) its certificate
    /// chains to [default: ca.pem of a config server's data folder on this machine].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Logs go to standard error, filtered by `RUST_LOG`. The access log (target
/// `weft::access`, on when the configuration has `access_log`) goes to standard output,
/// one JSON line per request, through a writer thread: a request never waits for the
/// terminal or the disk, and lines past its buffer are dropped rather than waited for.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter};
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Standard output is for what a command prints (`weft status`, the demo's
        // instructions); logs go beside errors.
        .with_writer(std::io::stderr)
        .with_filter(env)
        .with_filter(filter::filter_fn(|m| {
            m.target() != weft_proxy::ACCESS_LOG_TARGET
        }));
    // 4096 lines of buffer (the default 128k would hold megabytes at start).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(true)
        .finish(std::io::stdout());
    let access = access::Lines(writer).with_filter(
        filter::Targets::new().with_target(weft_proxy::ACCESS_LOG_TARGET, tracing::Level::INFO),
    );
    tracing_subscriber::registry()
        .with(logs)
        .with(access)
        .init();
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _access_log = init_logging();
    let runtime = match runtime(cli.command.workers()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The threads asked for, by the commands that serve.
    fn workers(&self) -> Option<std::num::NonZeroUsize> {
        match self {
            Command::Proxy { runtime, .. }
            | Command::ConfigServer(ConfigServerArgs { runtime, .. })
            | Command::Demo { runtime, .. } => runtime.workers,
            _ => None,
        }
    }
}

/// A runtime with `workers` threads, or one per core this process may use; with
/// one, a single-threaded scheduler.
fn runtime(workers: Option<std::num::NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Proxy {
            config,
            check,
            config_server: Some(url),
            drain_delay,
            identity,
            ..
        } => {
            debug_assert!(config.is_none() && !check);
            run_subscribed_proxy(url, identity, drain_delay).await
        }
        Command::Proxy {
            config,
            check,
            drain_delay,
            ..
        } => {
            let path = config.unwrap_or_else(|| "weft.yaml".into());
            run_proxy(path, check, drain_delay).await
        }
        Command::ConfigServer(args) => run_config_server(args.options()).await,
        Command::Push {
            file,
            name,
            sign,
            server,
        } => client::push(&server, &file, &name, sign.as_deref()).await,
        Command::Keys(args) => keys::run(&args),
        Command::Filter(args) => filter_test::run(&args),
        Command::New(args) => new::run(&args),
        Command::Inject(args) => inject::run(&args),
        Command::Apply { args, server } => client::apply(&server, &args).await,
        Command::Status {
            json,
            grace,
            server,
        } => client::status(&server, json, grace).await,
        Command::History(args) => inspect::history(&args).await,
        Command::Get(args) => inspect::get(&args).await,
        Command::Diff(args) => inspect::diff(&args).await,
        Command::ProxyConfig(args) => inspect::proxy_config(&args).await,
        Command::Check(args) => check::check(&args).await,
        Command::Stat(args) => stat::stat(&args).await,
        Command::Certs(args) => certs::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Rollback { version, server } => client::rollback(&server, version).await,
        Command::Demo {
            listen,
            admin,
            server_listen,
            print_config,
            ..
        } => demo::run(&listen, &admin, server_listen, print_config).await,
    }
}

async fn run_proxy(
    path: PathBuf,
    check: bool,
    drain_delay: Option<Duration>,
) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    if check {
        // Loading every filter is the real check: it compiles them and runs `init`.
        let states = weft_proxy::check(&config)?;
        println!("{}: ok ({states} listeners)", path.display());
        return Ok(());
    }
    let proxy = weft_proxy::start(config).await?;
    serve_until_signal(proxy, Some(path), drain_delay).await
}

/// A proxy with no file of its own: its admin listener at once, then what the config
/// server (or, until it answers, the disk cache) says.
async fn run_subscribed_proxy(
    url: String,
    identity: Identity,
    drain_delay: Option<Duration>,
) -> anyhow::Result<()> {
    let node = identity.node.unwrap_or_else(paths::host_name);
    let token = match (identity.proxy_token, identity.proxy_token_file) {
        (Some(token), _) => token,
        (None, file) => {
            let given = file.is_some();
            // A config server started on this machine with its defaults keeps it here.
            let file = file.unwrap_or_else(|| paths::server_data_dir().join("proxy-token"));
            match std::fs::read_to_string(&file) {
                Ok(t) => t.trim().to_owned(),
                Err(e) if given => {
                    anyhow::bail!("reading the proxy token from {}: {e}", file.display())
                }
                Err(_) => anyhow::bail!(
                    "the config server needs the proxy token: give it with --proxy-token, \
                     --proxy-token-file or WEFT_PROXY_TOKEN (the server keeps it in the \
                     proxy-token file of its data folder)"
                ),
            }
        }
    };
    let state_dir = identity
        .state_dir
        .unwrap_or_else(|| paths::state_dir(&format!("proxy-{node}")));
    let mut options = weft_agent::Options::new(&url, &token, &node, &identity.service);
    options.labels = identity.labels.into_iter().collect();
    options.state_dir = Some(state_dir);
    options.trusted_keys = identity.trusted_keys;
    options.ca = match identity.ca {
        Some(ca) => Some(ca),
        None if url.starts_with("https://") => https::ca_file(None).ok(),
        None => None,
    };
    let (proxy, agent) = start_subscribed_with(options, &identity.admin).await?;
    let result = serve_until_signal(proxy, None, drain_delay).await;
    // A goodbye frees the node id on the server at once, for whichever process
    // takes it next.
    agent.shutdown().await;
    result
}

/// A proxy with only its admin listener, and the agent that feeds it.
pub(crate) async fn start_subscribed(
    url: &str,
    token: &str,
    node: &str,
    service: &str,
    labels: BTreeMap<String, String>,
    admin: &str,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<(weft_proxy::RunningProxy, weft_agent::Agent)> {
    let mut options = weft_agent::Options::new(url, token, node, service);
    options.labels = labels;
    options.state_dir = state_dir;
    start_subscribed_with(options, admin).await
}

/// [`start_subscribed`] with every option of the agent.
pub(crate) async fn start_subscribed_with(
    options: weft_agent::Options,
    admin: &str,
) -> anyhow::Result<(weft_proxy::RunningProxy, weft_agent::Agent)> {
    let yaml = format!("admin:\n  address: {admin:?}\n");
    let config = Config::from_str(&yaml, "--admin", None)?;
    let proxy = weft_proxy::start(config).await?;
    let agent = weft_agent::start(proxy.clone(), options).await?;
    Ok((proxy, agent))
}

/// An error and its causes on one line, each said once: many of Weft's errors
/// already quote their cause (`file:line: key: cause`), which `{:#}` would repeat.
fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn run_config_server(mut options: weft_config_server::Options) -> anyhow::Result<()> {
    let given = |var: &str| std::env::var(var).ok().filter(|t| !t.is_empty());
    options.token = given("WEFT_TOKEN");
    options.proxy_token = given("WEFT_PROXY_TOKEN");
    let data_dir = options.data_dir.clone();
    let server = weft_config_server::start(options).await?;
    if let Some(token) = server.created_token() {
        println!(
            "created the API token (shown once; kept in {}):\n  {token}",
            server.token_file().display()
        );
    }
    if let Some(token) = server.created_proxy_token() {
        println!(
            "created the proxy token, which proxies subscribe with (kept in {}):\n  {token}",
            server.proxy_token_file().display()
        );
    }
    println!(
        "weft config server on {} (data in {})",
        server.url(),
        data_dir.display()
    );
    wait_for_stop().await?;
    server.shutdown().await;
    Ok(())
}

/// Serve until SIGTERM or SIGINT, then drain. SIGHUP re-reads the configuration
/// file; a bad one is reported and the running configuration stays.
pub(crate) async fn serve_until_signal(
    proxy: weft_proxy::RunningProxy,
    config_path: Option<PathBuf>,
    drain_delay: Option<Duration>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // SIGTERM (Kubernetes, systemd) waits `shutdown.drain_delay` for balancers to
    // notice; SIGINT (Ctrl-C) does not.
    let delay = loop {
        tokio::select! {
            _ = term.recv() => break drain_delay,
            _ = int.recv() => break Some(Duration::ZERO),
            _ = hup.recv() => {
                let Some(path) = &config_path else { continue };
                match Config::from_file(path).map_err(anyhow::Error::from)
                    .and_then(|c| proxy.reload(&c).map_err(anyhow::Error::from))
                {
                    Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                    Err(e) => tracing::error!(config = %path.display(), "reload refused, keeping the running configuration: {}", report(&e)),
                }
            }
        }
    };
    tracing::info!("shutting down: draining in-flight requests");
    proxy.drain_within(delay, Duration::from_secs(60)).await;
    tracing::info!("stopped");
    Ok(())
}
