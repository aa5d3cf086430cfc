//! Weft's config server: the control plane that stores filters and mesh configs,
//! checks every change by loading it, and streams snapshots to the proxies.
//!
//! 1. [`start`] with [`Options`]: the data folder is created (0700) or loaded, an API
//!    token for operators and a proxy token for proxies are created on first start,
//!    and one port serves both the HTTP JSON API (described by
//!    `GET /v1/openapi.yaml`) and the gRPC `Control` service. Every connection is
//!    bounded in time and in number ([`Limits`]); a server on loopback answers only
//!    to names of this machine ([`Options::allowed_hosts`]). With [`Options::tls`]
//!    the port serves TLS; with [`Options::require_proxy_identity`] each proxy's
//!    stream must prove, with a client certificate of the mesh CA, the identity the
//!    live mesh config gives that proxy (see `tls`).
//! 2. Push filters (`PUT /v1/filters/{name}`) and apply a mesh config
//!    (`PUT /v1/mesh`). Each change is checked the way a proxy would load it (every
//!    module compiled, every filter's `init` given its config) and stored only if it
//!    passes; each accepted change is a new numbered version. An apply answers with
//!    warnings when a group selects no connected proxy or a connected proxy has no
//!    group (`strict=true` refuses it then); `dry_run=true` checks and stores nothing.
//!    [`check_mesh_offline`] runs the checks that need no server. With
//!    [`Options::trusted_keys`], a push or apply must carry an ed25519 signature
//!    by a trusted key, else it is refused (403); every signature given is kept and
//!    sent to proxies with what it signs, for them to check again (see `signing`).
//! 3. Proxies subscribe over gRPC with the proxy token: each gets the current
//!    snapshot for the group that selects it, with the modules it lacks, and every
//!    later version; their ACKs and NACKs show in `GET /v1/proxies`, with where each
//!    stands against the current version, and `GET /v1/proxies/{node}/config` shows
//!    what a proxy is sent (secrets redacted unless asked for with the API token).
//! 4. Proxies report their traffic on the same stream every
//!    [`Options::report_interval`]; `GET /v1/stats` sums it per service and route
//!    over a window (what `weft stat` shows).
//!    Each proxy speaks only for the service it registered as, and what the server
//!    keeps of the reports is bounded in memory (see `stats`).
//! 5. Proxies ask the mesh CA ([`ca`]; made in the data folder on first start, or
//!    [`Options::ca_cert`]) for their workload certificate with `Certify`: a proxy
//!    with a live stream gets one for the SPIFFE ID its mesh group gives it, for the
//!    mesh's `certificate_ttl` (see `certify`).
//! 6. [`RunningServer::shutdown`] ends the proxies' streams (they reconnect to the
//!    next server) and stops.
//!
//! ```no_run
//! # async fn run() -> Result<(), weft_config_server::ServerError> {
//! let server = weft_config_server::start(weft_config_server::Options::new(
//!     "127.0.0.1:7070".parse().unwrap(),
//!     "/var/lib/weft".into(),
//! ))
//! .await?;
//! if let Some(token) = server.created_token() {
//!     println!("API token (kept in {}): {token}", server.token_file().display());
//! }
//! if let Some(token) = server.created_proxy_token() {
//!     println!("proxy token (kept in {}): {token}", server.proxy_token_file().display());
//! }
//! println!("serving on {}", server.addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod auth;
pub mod ca;
mod certify;
mod changes;
mod checks;
mod error;
mod registry;
mod serve;
mod signing;
mod stats;
mod store;
mod stream;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_config::MeshConfig;
use weft_engine::Engine;

pub use error::ServerError;
use store::{State, Store, Version};
pub use tls::ServingCert;
pub use validate::{CheckError, CheckedFilter, FilterOutcome, MeshCheck, check_mesh_offline};

/// How long [`RunningServer::shutdown`] waits for connections to close before it
/// drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run the config server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to serve HTTP and gRPC; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where filters, versions and the tokens are kept.
    pub data_dir: PathBuf,
    /// The API token operators write with; none: the token file's (`token`),
    /// created on first start.
    pub token: Option<String>,
    /// The token proxies subscribe with; none: the proxy token file's
    /// (`proxy-token`), created on first start. It must differ from the API token:
    /// neither is accepted where the other is expected.
    pub proxy_token: Option<String>,
    /// Largest filter module accepted, in bytes.
    pub max_filter_size: usize,
    /// Bounds on connections and on what proxies may register.
    pub limits: Limits,
    /// How often proxies report their traffic (for `GET /v1/stats`); zero: never.
    pub report_interval: Duration,
    /// Names a request may give the server as its `Host` besides `localhost` and IP
    /// addresses. Checked for every request when the server listens on loopback,
    /// and for requests from this machine without a token otherwise, so that a page
    /// whose site name was made to resolve to this machine gets nothing.
    pub allowed_hosts: Vec<String>,
    /// A file of ed25519 public keys, one per line (hex; `#` comments): when set,
    /// every push and apply must be signed by one of them (403 otherwise).
    pub trusted_keys: Option<PathBuf>,
    /// Serve the HTTP API and the proxies' stream over TLS with this certificate;
    /// none: plain text (for loopback demos).
    pub tls: Option<ServingCert>,
    /// Every Subscribe stream must come with a client certificate of the mesh CA
    /// naming the identity the live mesh config gives that proxy, else it is refused
    /// (PERMISSION_DENIED); a proxy without one gets one with `Certify`. Needs `tls`.
    pub require_proxy_identity: bool,
    /// The mesh CA's certificate (PEM; the CA's first, then any intermediates up
    /// to the root), with `ca_key`; none: the data folder's (`ca.pem`, made on
    /// first start).
    pub ca_cert: Option<PathBuf>,
    /// The mesh CA's private key (PKCS#8 PEM), with `ca_cert`; none: the data
    /// folder's (`ca-key.pem`, 0600).
    pub ca_key: Option<PathBuf>,
    /// More CA certificates (PEM) for the trust bundle proxies get, besides the
    /// CA's own: the old CA during a trust-anchor rotation.
    pub trust_bundle: Option<PathBuf>,
}

impl Options {
    /// Default largest filter module: 16 MiB.
    pub const DEFAULT_MAX_FILTER_SIZE: usize = 16 << 20;
    /// Default report interval: 5 s.
    pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);

    /// Options with the tokens from the data folder and the default limits.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            token: None,
            proxy_token: None,
            max_filter_size: Self::DEFAULT_MAX_FILTER_SIZE,
            limits: Limits::default(),
            report_interval: Self::DEFAULT_REPORT_INTERVAL,
            allowed_hosts: Vec::new(),
            trusted_keys: None,
            tls: None,
            require_proxy_identity: false,
            ca_cert: None,
            ca_key: None,
            trust_bundle: None,
        }
    }
}

/// Bounds on every connection and on the proxy registry, so that no peer (with or
/// without a token) can hold the server's memory, sockets or tasks for ever.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; past it, new connections wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// A new connection must send a whole request head within this long, and an
    /// HTTP/1 keep-alive connection its next one.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress (an HTTP/2 one, or an HTTP/1 one
    /// between requests) is closed after this long. A proxy's stream is a request in
    /// progress for as long as it lasts, so it is never idle.
    pub idle_timeout: Duration,
    /// A request body (a pushed module, a mesh config) must arrive within this long.
    pub body_timeout: Duration,
    /// HTTP/2 connections are pinged after this long without traffic, so a peer that
    /// vanished (its host died, a network cut) is noticed and its stream ended.
    pub keepalive_interval: Duration,
    /// A ping not answered within this long closes the connection.
    pub keepalive_timeout: Duration,
    /// Proxies (node ids) the registry keeps, connected or not. When it is full, the
    /// node disconnected longest (past `node_hold`) is forgotten to make room; when
    /// none is, new nodes are refused with RESOURCE_EXHAUSTED.
    pub max_proxies: usize,
    /// After a node's stream ends, its node id stays bound to its instance secret for
    /// this long: only the same proxy process may reconnect under it meanwhile.
    pub node_hold: Duration,
    /// A node disconnected for this long is forgotten (no longer listed).
    pub forget_after: Duration,
}

impl Default for Limits {
    /// 1024 connections, 10 s for a request head, 60 s idle, 60 s for a body, pings
    /// every 20 s answered within 20 s, 1000 proxies, node ids held 15 s, forgotten
    /// after 10 minutes.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            max_proxies: 1000,
            node_hold: Duration::from_secs(15),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// A running config server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    token_file: PathBuf,
    created_token: Option<String>,
    proxy_token_file: PathBuf,
    created_proxy_token: Option<String>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// `https` when it serves TLS, else `http`.
    scheme: &'static str,
}

impl RunningServer {
    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL: `https://ADDR` when it serves TLS, else `http://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The token, only when this start created it, so it is shown once.
    pub fn created_token(&self) -> Option<&str> {
        self.created_token.as_deref()
    }

    /// The file the token is kept in.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The proxy token, only when this start created it, so it is shown once.
    pub fn created_proxy_token(&self) -> Option<&str> {
        self.created_proxy_token.as_deref()
    }

    /// The file the proxy token is kept in; proxies read it with
    /// `--proxy-token-file`.
    pub fn proxy_token_file(&self) -> &Path {
        &self.proxy_token_file
    }

    /// End every proxy stream, let requests in flight finish, and stop.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            task.abort();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // A server dropped without shutdown() still stops, in the background.
        self.stop.send_replace(true);
    }
}

/// What readers see: the stored state and the live version, replaced as a whole on
/// every change so a reader never sees half of one.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub state: State,
    pub current: Option<Arc<Current>>,
}

/// The live version with its mesh config parsed once.
#[derive(Debug)]
pub(crate) struct Current {
    pub version: Arc<Version>,
    pub mesh: MeshConfig,
}

impl Current {
    fn parse(version: Arc<Version>) -> Result<Self, String> {
        let mesh =
            MeshConfig::parse(&version.mesh, &version.mesh_file).map_err(|e| e.to_string())?;
        Ok(Self { version, mesh })
    }
}

/// What every handler and stream shares.
pub(crate) struct Shared {
    pub store: Store,
    pub engine: Engine,
    pub token: String,
    pub proxy_token: String,
    pub max_filter_size: usize,
    pub limits: Limits,
    /// Readers borrow; writers replace under `write`. Streams wait on it for new
    /// versions.
    pub published: watch::Sender<Arc<Published>>,
    /// Changes are checked and stored one at a time.
    pub write: tokio::sync::Mutex<()>,
    pub proxies: registry::Registry,
    pub stats: stats::Stats,
    pub report_interval: Duration,
    pub hosts: auth::Hosts,
    pub stop: watch::Receiver<bool>,
    /// The trusted keys, if pushes must be signed, and the signatures kept.
    pub signing: signing::Signing,
    /// Subscribe streams must prove their proxy's identity (see `tls`).
    pub require_proxy_identity: bool,
    /// Signs the proxies' workload certificates.
    pub ca: Arc<ca::Ca>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    /// A server's shared state on an empty data folder, with no socket: for tests
    /// of what handlers and changes do.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path) -> Arc<Self> {
        let limits = Limits::default();
        let (_, stop) = watch::channel(false);
        Arc::new(Self {
            store: Store::open(dir).expect("the test's data folder opens"),
            engine: Engine::new().expect("the engine starts"),
            token: "api-token".to_owned(),
            proxy_token: "proxy-token".to_owned(),
            max_filter_size: Options::DEFAULT_MAX_FILTER_SIZE,
            limits,
            published: watch::Sender::new(Arc::default()),
            write: tokio::sync::Mutex::new(()),
            proxies: registry::Registry::new(&limits),
            stats: stats::Stats::new(),
            report_interval: Options::DEFAULT_REPORT_INTERVAL,
            hosts: auth::Hosts::new("127.0.0.1:0".parse().expect("an address"), &[])
                .expect("no names to check"),
            stop,
            signing: signing::Signing::none(&Store::open(dir).expect("the folder opens")),
            require_proxy_identity: false,
            ca: certify::test_ca(),
        })
    }
}

/// Load the data folder, bind, and serve until [`RunningServer::shutdown`].
pub async fn start(opts: Options) -> Result<RunningServer, ServerError> {
    let hosts = auth::Hosts::new(opts.listen, &opts.allowed_hosts)?;
    let token_file = opts.data_dir.join("token");
    let proxy_token_file = opts.data_dir.join("proxy-token");
    let loaded = {
        let files = (opts.clone(), token_file.clone(), proxy_token_file.clone());
        tokio::task::spawn_blocking(move || Loaded::read(&files.0, &files.1, &files.2))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??
    };
    let Loaded {
        store,
        token: (token, created),
        proxy_token: (proxy_token, created_proxy),
        state,
        current,
        engine,
        signing,
    } = loaded;
    let ca = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || certify::load_ca(&opts.data_dir, &opts))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??
    };
    // Issuing a serving certificate makes a key and signs: off the workers.
    let (ca, acceptor) = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || {
            let acceptor = tls::serving(&opts, &ca);
            (ca, acceptor)
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
    };
    let acceptor = acceptor?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let (listener, addr) = bind(opts.listen).await?;
    let (stop, stop_rx) = watch::channel(false);
    let versions = state.versions.len();
    let shared = Arc::new(Shared {
        store,
        engine,
        token: token.clone(),
        proxy_token: proxy_token.clone(),
        max_filter_size: opts.max_filter_size,
        limits: opts.limits,
        published: watch::Sender::new(Arc::new(Published { state, current })),
        write: tokio::sync::Mutex::new(()),
        proxies: registry::Registry::new(&opts.limits),
        stats: stats::Stats::new(),
        report_interval: opts.report_interval,
        hosts,
        stop: stop_rx.clone(),
        signing,
        require_proxy_identity: opts.require_proxy_identity,
        ca: Arc::new(ca),
    });
    let app = app(shared);
    let task = tokio::spawn(serve::serve(listener, app, opts.limits, acceptor, stop_rx));
    let data_dir = opts.data_dir.display();
    tracing::info!(%addr, scheme, %data_dir, versions, "config server started");
    Ok(RunningServer {
        addr,
        token_file,
        created_token: created.then_some(token),
        proxy_token_file,
        created_proxy_token: created_proxy.then_some(proxy_token),
        stop,
        task: Some(task),
        scheme,
    })
}

/// What the data folder holds, with the tokens (each with whether this start
/// created it) and an engine to check changes with.
struct Loaded {
    store: Store,
    token: (String, bool),
    proxy_token: (String, bool),
    state: State,
    current: Option<Arc<Current>>,
    engine: Engine,
    signing: signing::Signing,
}

impl Loaded {
    /// Open the data folder (creating it and the tokens on first start), parse the
    /// live version, and read the signatures kept and the trusted keys. Blocking:
    /// it reads and writes files.
    fn read(
        opts: &Options,
        token_file: &Path,
        proxy_token_file: &Path,
    ) -> Result<Self, ServerError> {
        let data_dir = &opts.data_dir;
        let store = Store::open(data_dir)?;
        let token = auth::load_token(opts.token.clone(), data_dir, token_file)?;
        let proxy_token = auth::load_token(opts.proxy_token.clone(), data_dir, proxy_token_file)?;
        // One secret for both would let every proxy write, and every operator
        // token leak to proxies: the two roles stay apart.
        if auth::same_secret(&token.0, &proxy_token.0) {
            return Err(ServerError::SameToken);
        }
        let state = store.load()?;
        let current = live_version(&store, &state)?;
        let engine = Engine::new()?;
        let signing = signing::Signing::open(&store, opts.trusted_keys.as_deref())?;
        Ok(Self {
            store,
            token,
            proxy_token,
            state,
            current,
            engine,
            signing,
        })
    }
}

/// The stored live version, parsed; a mesh config that no longer parses means the
/// data folder was damaged.
fn live_version(store: &Store, state: &State) -> Result<Option<Arc<Current>>, ServerError> {
    let Some(v) = state.current() else {
        return Ok(None);
    };
    let current = Current::parse(v.clone()).map_err(|message| ServerError::CorruptState {
        path: store.state_file(),
        message: format!("version {}: {message}", v.version),
    })?;
    Ok(Some(Arc::new(current)))
}

/// The listener, and the address it got (port 0 picks one).
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// The HTTP API and the gRPC service on one router.
fn app(shared: Arc<Shared>) -> axum::Router {
    api::router(shared.clone())
        .merge(stream::router(shared.clone()))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        // Before anything else, even a 404: a request by a name that is not this
        // server's may come from a page of another site.
        .layer(axum::middleware::from_fn_with_state(
            shared,
            auth::check_host,
        ))
}
