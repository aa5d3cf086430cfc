//! Weft's core proxy: listeners, clusters, HTTP/1.1 and HTTP/2 on both sides, TLS,
//! and a chain of Wasm filters on every request.
//!
//! 1. Read a [`weft_config::Config`].
//! 2. [`start`] it inside a tokio runtime: every filter is loaded and every listener
//!    bound before it returns, so a bad filter or a taken port is an error here.
//! 3. [`RunningProxy::reload`] swaps filter chains and clusters in place, and starts
//!    or stops listeners; requests in flight finish on the chain they started with.
//!    A configuration that fails to load leaves the running one untouched.
//! 4. [`RunningProxy::shutdown`] stops accepting and drains in-flight requests.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = weft_config::Config::from_file("weft.yaml".as_ref())?;
//! let proxy = weft_proxy::start(config).await?;
//! println!("listening on {:?}", proxy.listener_addr("ingress"));
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod admin;
mod attempt;
mod body;
mod capture;
mod chain;
mod cluster;
mod conn;
mod done;
mod error;
mod hooks;
mod identity;
mod listener;
mod metrics;
mod normalize;
mod service;
mod spans;
mod state;
mod tls;
mod upgrade;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_config::Config;
use weft_engine::Engine;

pub use access::TARGET as ACCESS_LOG_TARGET;
pub use body::ProxyBody;
pub use body::UpstreamBody;
pub use chain::{ChainError, FilterChain, KeptState, ModuleStore, NoModules};
pub use cluster::{Cluster, ClusterError};
pub use error::{ProxyError, Side};
pub use identity::Identity;
pub use listener::Backoff;
use state::Bound;
pub use state::ListenerState;
pub use tls::TlsError;

/// Why a proxy could not start, or a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A filter could not be loaded.
    #[error(transparent)]
    Filter(Box<ChainError>),
    /// TLS material could not be used.
    #[error("{location}: {key}: {source}")]
    Tls {
        /// `file:line:column` of the TLS settings.
        location: String,
        /// The key at fault.
        key: String,
        /// What is wrong.
        source: TlsError,
    },
    /// A cluster could not be built.
    #[error("{location}: {key}.{source}")]
    Cluster {
        /// `file:line:column` of the cluster.
        location: String,
        /// The cluster's key.
        key: String,
        /// What is wrong.
        source: ClusterError,
    },
    /// An address could not be bound.
    #[error("{location}: {key}: cannot listen on {address}: {source}")]
    Bind {
        /// `file:line:column` of the address.
        location: String,
        /// The key at fault.
        key: String,
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The filter engine could not start.
    #[error(transparent)]
    Engine(#[from] weft_engine::LoadError),
}

impl From<ChainError> for StartError {
    fn from(e: ChainError) -> Self {
        Self::Filter(Box::new(e))
    }
}

/// What a reload carries over from the configuration running before it.
#[derive(Default)]
struct Carried {
    /// The clusters, whose pools, health and estimates go on.
    clusters: Option<Arc<HashMap<String, Arc<Cluster>>>>,
    /// The filters' shared state, for the filters that replace them.
    states: KeptState,
}

impl Carried {
    fn from_running(running: &[Bound]) -> Self {
        let mut states = KeptState::default();
        for b in running {
            states.add(&b.name, &b.state.load().chain);
        }
        Self {
            clusters: running.first().map(|b| b.state.load().clusters.clone()),
            states,
        }
    }
}

/// Build every listener's state (filters loaded, clusters set up, TLS read) without
/// binding.
fn build_states(
    engine: &Engine,
    config: &Config,
    modules: &dyn ModuleStore,
    carried: &Carried,
    draining: &Arc<AtomicBool>,
    identity: &Identity,
    capture_counts: &capture::CaptureCounts,
) -> Result<Vec<ListenerState>, StartError> {
    let built = build_clusters(config, carried.clusters.as_deref(), identity)?;
    let clusters = Arc::new(built.clusters);
    let mut states = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let chain = FilterChain::load_keeping(engine, config, i, l, modules, &carried.states)?;
        let tls = acceptor(config, i, l, identity)?;
        let conn = Arc::new(conn::ConnParts::new(tls, &settings(l)));
        states.push(ListenerState {
            name: Arc::from(l.name.value.as_str()),
            chain,
            default_cluster: l
                .default_cluster
                .as_ref()
                .and_then(|d| clusters.get(&d.value).cloned()),
            clusters: clusters.clone(),
            request_timeout: l.limits.request_timeout.0,
            max_body: l.limits.max_body_size.bytes(),
            normalize_path: l.normalize_path,
            allow_connect: l.allow_connect,
            upgrades: l.upgrade_protocols().into_iter().map(Box::from).collect(),
            mesh_internal: l.mesh_internal,
            draining: draining.clone(),
            conn,
            access: config
                .access_log
                .as_ref()
                .map(|a| Arc::new(access::AccessLog::new(Arc::from(l.name.value.as_str()), a))),
            capture: l.capture.as_ref().map(|c| {
                Arc::new(capture::Capture::new(&capture::Setup {
                    listener: l,
                    capture: c,
                    config,
                    clusters: &clusters,
                    identity,
                    counts: capture_counts,
                }))
            }),
        });
    }
    // Only once everything loaded: a configuration that fails changes nothing.
    for update in built.updates {
        update();
    }
    for cluster in built.fresh {
        cluster.start();
    }
    Ok(states)
}

/// The clusters of a configuration, and what applying them takes once every
/// listener has loaded.
struct Clusters {
    clusters: HashMap<String, Arc<Cluster>>,
    /// New clusters, to start.
    fresh: Vec<Arc<Cluster>>,
    /// Kept clusters' new endpoints, to swap in.
    updates: Vec<cluster::EndpointUpdate>,
}

/// Set up every cluster. An unchanged cluster keeps its pools, health and latency
/// estimates; when only its endpoints changed, those that stay keep theirs.
fn build_clusters(
    config: &Config,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
    identity: &Identity,
) -> Result<Clusters, StartError> {
    let mut built = Clusters {
        clusters: HashMap::new(),
        fresh: Vec::new(),
        updates: Vec::new(),
    };
    for (i, c) in config.clusters.iter().enumerate() {
        let location = || config.locate(&c.name.referenced);
        if let Some(kept) = previous
            .and_then(|p| p.get(&c.name.value))
            .filter(|k| k.same_config(c, &config.dns))
        {
            let update = kept
                .prepare_endpoints(c)
                .map_err(|source| StartError::Cluster {
                    location: location(),
                    key: format!("clusters[{i}]"),
                    source,
                })?;
            built.updates.push(update);
            built.clusters.insert(c.name.value.clone(), kept.clone());
            continue;
        }
        let cluster = Cluster::new(c, &config.dns, identity).map_err(|e| match e {
            ClusterError::Tls(source) => StartError::Tls {
                location: location(),
                key: format!("clusters[{i}].tls"),
                source,
            },
            other => StartError::Cluster {
                location: location(),
                key: format!("clusters[{i}]"),
                source: other,
            },
        })?;
        let cluster = Arc::new(cluster);
        built.fresh.push(cluster.clone());
        built.clusters.insert(c.name.value.clone(), cluster);
    }
    Ok(built)
}

/// A listener's TLS, when it serves TLS.
fn acceptor(
    config: &Config,
    i: usize,
    l: &weft_config::ListenerConfig,
    identity: &Identity,
) -> Result<Option<conn::ListenerTls>, StartError> {
    let Some(t) = &l.tls else {
        return Ok(None);
    };
    let tls_error = |source| StartError::Tls {
        location: config.locate(&l.name.referenced),
        key: config.listener_key(i, ".tls"),
        source,
    };
    if t.mode == weft_config::TlsMode::Mesh {
        let server = identity::mesh_server_config(identity).map_err(tls_error)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        return Ok(Some(conn::ListenerTls::Mesh(acceptor, identity.clone())));
    }
    let paths: Vec<_> = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => vec![(
            &[][..],
            resolve(config, &cert.value),
            resolve(config, &key.value),
        )],
        _ => t
            .certificates
            .iter()
            .map(|c| {
                (
                    &c.server_names[..],
                    resolve(config, &c.cert.value),
                    resolve(config, &c.key.value),
                )
            })
            .collect(),
    };
    let shown: Vec<_> = paths
        .iter()
        .map(|(names, cert, key)| tls::Shown { names, cert, key })
        .collect();
    let server = tls::server_config(&shown).map_err(tls_error)?;
    Ok(Some(conn::ListenerTls::Terminate(
        tokio_rustls::TlsAcceptor::from(server),
    )))
}

/// The identity files of a configuration, read and checked (not installed yet).
fn identity_files(config: &Config) -> Result<Option<identity::Loaded>, StartError> {
    let Some(id) = &config.identity else {
        return Ok(None);
    };
    let files = identity::Files {
        cert: resolve(config, &id.cert.value),
        key: resolve(config, &id.key.value),
        bundle: resolve(config, &id.bundle.value),
        poll: id.poll_interval.0,
    };
    files.load().map(Some).map_err(|source| StartError::Tls {
        location: config.locate(&id.cert.referenced),
        key: "identity".into(),
        source,
    })
}

/// A listener's per-connection settings.
fn settings(l: &weft_config::ListenerConfig) -> conn::ConnSettings {
    conn::ConnSettings {
        max_header_size: l.limits.max_header_size.bytes(),
        limits: conn::ConnLimits {
            header_read_timeout: l.limits.header_read_timeout.0,
            idle_timeout: l.limits.idle_timeout.0,
            max_premature_resets: l.limits.max_premature_resets,
            max_connections: l.limits.max_connections,
        },
    }
}

struct Inner {
    engine: Engine,
    runtime: tokio::runtime::Handle,
    /// Shared with the admin listener, which shows them.
    listeners: Arc<Mutex<Vec<Bound>>>,
    /// One reload at a time (SIGHUP and the config server may both ask).
    reloading: Mutex<()>,
    admin: Option<(SocketAddr, Arc<admin::Admin>)>,
    admin_stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    drain: Duration,
    /// The configuration's `shutdown.drain_delay`, as last loaded.
    drain_delay: Mutex<Duration>,
    /// Set when the drain delay begins: listeners answer HTTP/1 with
    /// `connection: close` from then on.
    draining: Arc<AtomicBool>,
    /// Where spans go; none while no collector is configured.
    span_settings: watch::Sender<Option<spans::ExportSettings>>,
    /// Tells the span exporter to send what is left and stop.
    span_stop: watch::Sender<bool>,
    exporter: Mutex<Option<JoinHandle<()>>>,
    /// The workload identity mesh listeners and clusters use, kept across reloads.
    identity: Identity,
    /// The identity files watched for changes, when the configuration names them.
    identity_watch: Mutex<Option<identity::Watch>>,
    /// Capture listeners' connections by route, kept across reloads.
    capture_counts: Arc<capture::CaptureCounts>,
}

/// A proxy that is serving; clones are handles to the same proxy.
#[derive(Clone)]
pub struct RunningProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("listeners", &self.listeners())
            .field("admin", &self.admin_addr())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Load every filter, bind every listener, and start serving. Must be called inside
/// a tokio runtime.
pub async fn start(config: Config) -> Result<RunningProxy, StartError> {
    let engine = Engine::new()?;
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let (span_settings, span_settings_rx) = watch::channel(None);
    let (span_stop, span_stop_rx) = watch::channel(false);
    let span_stats = Arc::new(spans::ExportStats::default());
    let exporter = tokio::spawn(spans::run(
        engine.spans(),
        span_settings_rx,
        span_stop_rx,
        span_stats.clone(),
    ));
    let mut tasks = Vec::new();
    let listeners: Arc<Mutex<Vec<Bound>>> = Arc::default();
    let capture_counts: Arc<capture::CaptureCounts> = Arc::default();
    let mut admin = None;
    if let Some(a) = &config.admin {
        let bind_error = |source| StartError::Bind {
            location: config.locate(&a.address.referenced),
            key: "admin.address".into(),
            address: a.address.value.clone(),
            source,
        };
        let tcp = TcpListener::bind(&a.address.value)
            .await
            .map_err(bind_error)?;
        let addr = tcp.local_addr().map_err(bind_error)?;
        let version = Arc::new(AtomicU64::new(0));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(engine.metrics()));
        registry.register_collector(Box::new(metrics::ProxyMetrics {
            listeners: listeners.clone(),
            version: version.clone(),
            spans: engine.spans(),
            span_stats: span_stats.clone(),
        }));
        registry.register_collector(Box::new(capture::CaptureMetrics(capture_counts.clone())));
        let state = Arc::new(admin::Admin {
            ready: false.into(),
            registry,
            listeners: listeners.clone(),
            version,
            bound: addr.ip(),
            allow_hosts: a.allow_hosts.clone(),
        });
        tasks.push(tokio::spawn(admin::run(tcp, state.clone(), admin_stop_rx)));
        tracing::info!(%addr, "admin listening");
        admin = Some((addr, state));
    }
    let proxy = RunningProxy {
        inner: Arc::new(Inner {
            engine,
            runtime: tokio::runtime::Handle::current(),
            listeners,
            reloading: Mutex::default(),
            admin,
            admin_stop,
            tasks: Mutex::new(tasks),
            drain: config.shutdown.drain_timeout.0,
            drain_delay: Mutex::new(config.shutdown.drain_delay.0),
            draining: Arc::default(),
            span_settings,
            span_stop,
            exporter: Mutex::new(Some(exporter)),
            identity: Identity::default(),
            identity_watch: Mutex::default(),
            capture_counts,
        }),
    };
    if let Err(e) = proxy.reload(&config) {
        proxy.shutdown().await;
        return Err(e);
    }
    // Ready once every listener is bound, which is now; a proxy fed by a config
    // server with nothing to serve yet says so.
    proxy.set_ready(!config.listeners.is_empty());
    Ok(proxy)
}

fn resolve(config: &Config, path: &std::path::Path) -> std::path::PathBuf {
    match &config.base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_owned(),
    }
}

impl RunningProxy {
    /// The bound address of a listener, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.inner.listeners)
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        lock(&self.inner.listeners)
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin.as_ref().map(|a| a.0)
    }

    /// The filter engine, shared by every listener.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Say which config server snapshot is in force, for `/config`.
    pub fn set_config_version(&self, version: u64) {
        if let Some((_, admin)) = &self.inner.admin {
            admin.version.store(version, Ordering::Release);
        }
    }

    /// Set what `/ready` answers.
    pub fn set_ready(&self, ready: bool) {
        if let Some((_, admin)) = &self.inner.admin {
            admin.ready.store(ready, Ordering::Release);
        }
    }

    /// The endpoints of a cluster in force: address, whether its health checks let it
    /// serve, and its latency estimate.
    pub fn cluster_states(&self, name: &str) -> Option<Vec<(String, bool, Duration)>> {
        let listeners = lock(&self.inner.listeners);
        let state = listeners.first()?.state.load();
        state.clusters.get(name).map(|c| c.endpoint_states())
    }

    /// Apply a new configuration (see [`RunningProxy::reload_with`]).
    pub fn reload(&self, config: &Config) -> Result<(), StartError> {
        self.reload_with(config, &NoModules)
    }

    /// Apply a new configuration, with pushed modules taken from `modules`. All or
    /// nothing: every filter is loaded and every new address bound before anything
    /// changes, and on error the running configuration stays.
    ///
    /// Listeners that keep their name and address keep their socket: their new
    /// filter chain and clusters take over for new requests while requests in flight
    /// finish on the old ones. New listeners start; removed ones stop accepting and
    /// drain. Each filter goes on with the shared state of the filter it replaces
    /// (same listener, same name), unless its entry says `state: reset`
    /// ([`KeptState`]). Loading filters can take milliseconds: call this from a blocking
    /// context when a runtime worker should not wait.
    pub fn reload_with(
        &self,
        config: &Config,
        modules: &dyn ModuleStore,
    ) -> Result<(), StartError> {
        let _one_at_a_time = lock(&self.inner.reloading);
        let _runtime = self.inner.runtime.enter();
        let carried = Carried::from_running(&lock(&self.inner.listeners));
        let identity = identity_files(config)?;
        let states = build_states(
            &self.inner.engine,
            config,
            modules,
            &carried,
            &self.inner.draining,
            &self.inner.identity,
            &self.inner.capture_counts,
        )?;
        *lock(&self.inner.drain_delay) = config.shutdown.drain_delay.0;
        // Bind what is new first, so a taken port changes nothing.
        let fresh = self.bind_new(config)?;
        let mut running = lock(&self.inner.listeners);
        let mut next = Vec::with_capacity(config.listeners.len());
        let mut fresh = fresh.into_iter().peekable();
        for (i, (l, state)) in config.listeners.iter().zip(states).enumerate() {
            if let Some(pos) = running.iter().position(|b| b.kept_by(l)) {
                let bound = running.swap_remove(pos);
                bound.state.store(Arc::new(state));
                next.push(bound);
                continue;
            }
            let Some((_, tcp, addr)) = fresh.next_if(|(j, _, _)| *j == i) else {
                unreachable!("every listener not kept was bound above");
            };
            next.push(self.start_listener(l, tcp, addr, state));
        }
        // What is left was removed (or moved): stop accepting, drain in the background.
        for gone in running.drain(..) {
            tracing::info!(listener = %gone.name, addr = %gone.addr, "listener removed; draining");
            let _ = gone.stop.send(true);
        }
        *running = next;
        lock(&self.inner.tasks).retain(|t| !t.is_finished());
        self.apply_tracing(config);
        identity::Watch::apply(&self.inner.identity_watch, identity, &self.inner.identity);
        Ok(())
    }

    /// The workload identity: what mesh listeners and clusters present. Install a
    /// certificate with [`Identity::install_pem`] (the agent does, with what the
    /// config server's CA issues).
    pub fn identity(&self) -> Identity {
        self.inner.identity.clone()
    }

    /// Bind the listeners of `config` that are not running yet: their position,
    /// socket and address.
    fn bind_new(
        &self,
        config: &Config,
    ) -> Result<Vec<(usize, TcpListener, SocketAddr)>, StartError> {
        let running = lock(&self.inner.listeners);
        let mut fresh = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            if running.iter().any(|b| b.kept_by(l)) {
                continue;
            }
            let bind_error = |source| StartError::Bind {
                location: config.locate(&l.address.referenced),
                key: config.listener_key(i, ".address"),
                address: l.address.value.clone(),
                source,
            };
            let tcp = bind(&l.address.value).map_err(bind_error)?;
            let addr = tcp.local_addr().map_err(bind_error)?;
            fresh.push((i, tcp, addr));
        }
        Ok(fresh)
    }

    /// Start accepting on a newly bound listener.
    fn start_listener(
        &self,
        l: &weft_config::ListenerConfig,
        tcp: TcpListener,
        addr: SocketAddr,
        state: ListenerState,
    ) -> Bound {
        let state = Arc::new(ArcSwap::from_pointee(state));
        let (stop, stop_rx) = watch::channel(false);
        let counts = Arc::new(conn::ConnCounts::default());
        let task = listener::run(
            Arc::from(l.name.value.as_str()),
            tcp,
            state.clone(),
            stop_rx,
            self.inner.drain,
            counts.clone(),
        );
        lock(&self.inner.tasks).push(tokio::spawn(task));
        tracing::info!(listener = %l.name.value, %addr, "listening");
        Bound {
            name: l.name.value.clone(),
            configured: l.address.value.clone(),
            addr,
            state,
            stop,
            counts,
        }
    }

    /// Span export as the configuration's `tracing` section says.
    fn apply_tracing(&self, config: &Config) {
        let export = config
            .tracing
            .as_ref()
            .map(spans::ExportSettings::from_config);
        self.inner.engine.spans().set_enabled(export.is_some());
        self.inner.span_settings.send_if_modified(|s| {
            let changed = *s != export;
            *s = export;
            changed
        });
    }

    /// Stop as a load balancer in front needs it: for `delay` (the configuration's
    /// `shutdown.drain_delay` when `None`) keep accepting and serving while saying
    /// the proxy is going (`/ready` answers 503, HTTP/1 responses carry
    /// `connection: close`, so clients reconnect elsewhere once balancers have
    /// noticed); then [`RunningProxy::shutdown`], given up on after `limit`.
    pub async fn drain_within(&self, delay: Option<Duration>, limit: Duration) {
        let delay = delay.unwrap_or_else(|| *lock(&self.inner.drain_delay));
        if !delay.is_zero() {
            self.inner.draining.store(true, Ordering::Relaxed);
            if let Some((_, admin)) = &self.inner.admin {
                admin.ready.store(false, Ordering::Release);
            }
            tracing::info!("draining: serving with connection: close for {delay:?}");
            tokio::time::sleep(delay).await;
        }
        self.shutdown_within(limit).await;
    }

    /// Stop accepting, wait for in-flight requests (up to the drain timeout), stop.
    pub async fn shutdown(&self) {
        for l in lock(&self.inner.listeners).iter() {
            let _ = l.stop.send(true);
        }
        let _ = self.inner.admin_stop.send(true);
        identity::Watch::apply(&self.inner.identity_watch, None, &self.inner.identity);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
        // The last requests' spans go out before the exporter stops.
        let _ = self.inner.span_stop.send(true);
        let exporter = lock(&self.inner.exporter).take();
        if let Some(exporter) = exporter {
            let _ = exporter.await;
        }
    }

    /// Like [`RunningProxy::shutdown`], but bounded: gives up waiting after `limit`.
    pub async fn shutdown_within(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shutdown()).await;
    }
}

/// Bind a listening socket the way tokio does (address reuse, non-blocking), without
/// awaiting, so reloads can run on a blocking thread.
fn bind(address: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Check a configuration the way [`start`] would (every filter loaded and given its
/// config, TLS files read), without binding anything. Returns the listener count.
pub fn check(config: &Config) -> Result<usize, StartError> {
    let engine = Engine::new()?;
    identity_files(config)?;
    let identity = Identity::default();
    Ok(build_states(
        &engine,
        config,
        &NoModules,
        &Carried::default(),
        &Arc::default(),
        &identity,
        &capture::CaptureCounts::default(),
    )?
    .len())
}

/// The request-target rules of `normalize`, for the fuzz targets in `fuzz/`; not part
/// of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::normalize::{authority, normal_path, path};
}
