//! Weft's core proxy: listeners, clusters, HTTP/1.1 and HTTP/2 on both sides, TLS,
//! and a chain of Wasm filters on every request.
//!
//! 1. Read a [`weft_config::Config`].
//! 2. [`start`] it inside a tokio runtime: every filter is loaded and every listener
//!    bound before it returns, so a bad filter or a taken port is an error here.
//! 3. [`RunningProxy::reload`] swaps filter chains and clusters in place; requests
//!    in flight finish on the chain they started with. A configuration that fails to
//!    load leaves the running one untouched.
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

mod admin;
mod body;
mod chain;
mod cluster;
mod error;
mod listener;
mod service;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_config::Config;
use weft_engine::Engine;

pub use body::ProxyBody;
pub use chain::{ChainError, FilterChain};
pub use cluster::Cluster;
pub use error::{ProxyError, Side};
pub use service::ListenerState;
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
    /// The new configuration changes what only a restart can change.
    #[error("{0}")]
    NeedsRestart(String),
    /// The filter engine could not start.
    #[error(transparent)]
    Engine(#[from] weft_engine::LoadError),
}

impl From<ChainError> for StartError {
    fn from(e: ChainError) -> Self {
        Self::Filter(Box::new(e))
    }
}

/// Build every listener's state (filters loaded, clusters set up) without binding.
fn build_states(engine: &Engine, config: &Config) -> Result<Vec<ListenerState>, StartError> {
    let mut clusters = HashMap::new();
    for (i, c) in config.clusters.iter().enumerate() {
        let cluster = Cluster::new(c).map_err(|source| StartError::Tls {
            location: config.locate(&c.name.referenced),
            key: format!("clusters[{i}].tls"),
            source,
        })?;
        clusters.insert(c.name.value.clone(), Arc::new(cluster));
    }
    let clusters = Arc::new(clusters);
    let mut states = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let chain = FilterChain::load(engine, config, i, l)?;
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
        });
    }
    Ok(states)
}

/// A proxy that is serving.
pub struct RunningProxy {
    engine: Engine,
    listeners: Vec<(String, SocketAddr, Arc<ArcSwap<ListenerState>>)>,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field(
                "listeners",
                &self
                    .listeners
                    .iter()
                    .map(|l| (&l.0, l.1))
                    .collect::<Vec<_>>(),
            )
            .field("admin", &self.admin_addr)
            .finish()
    }
}

/// Load every filter, bind every listener, and start serving.
pub async fn start(config: Config) -> Result<RunningProxy, StartError> {
    let engine = Engine::new()?;
    let states = build_states(&engine, &config)?;
    let (stop, stop_rx) = watch::channel(false);
    let drain = config.shutdown.drain_timeout.0;
    let mut listeners = Vec::new();
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for (i, (l, state)) in config.listeners.iter().zip(states).enumerate() {
        let tcp = TcpListener::bind(&l.address.value)
            .await
            .map_err(|source| StartError::Bind {
                location: config.locate(&l.address.referenced),
                key: format!("listeners[{i}].address"),
                address: l.address.value.clone(),
                source,
            })?;
        let tls = match &l.tls {
            None => None,
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(
                    &resolve(&config, &t.cert.value),
                    &resolve(&config, &t.key.value),
                )
                .map_err(|source| StartError::Tls {
                    location: config.locate(&t.cert.referenced),
                    key: format!("listeners[{i}].tls"),
                    source,
                })?,
            )),
        };
        let addr = tcp.local_addr().map_err(|source| StartError::Bind {
            location: config.locate(&l.address.referenced),
            key: format!("listeners[{i}].address"),
            address: l.address.value.clone(),
            source,
        })?;
        let settings = listener::ConnSettings {
            header_read_timeout: l.limits.header_read_timeout.0,
            max_header_size: l.limits.max_header_size.bytes(),
            idle_timeout: l.limits.idle_timeout.0,
        };
        let state = Arc::new(ArcSwap::from_pointee(state));
        listeners.push((l.name.value.clone(), addr, state.clone()));
        bound.push((l.name.value.clone(), tcp, tls, state, settings));
    }
    for (name, tcp, tls, state, settings) in bound {
        let task = listener::run(
            Arc::from(name.as_str()),
            tcp,
            tls,
            state,
            settings,
            stop_rx.clone(),
            drain,
        );
        tasks.push(tokio::spawn(task));
    }
    let mut admin_addr = None;
    if let Some(a) = &config.admin {
        let tcp = TcpListener::bind(&a.address.value)
            .await
            .map_err(|source| StartError::Bind {
                location: config.locate(&a.address.referenced),
                key: "admin.address".into(),
                address: a.address.value.clone(),
                source,
            })?;
        admin_addr = tcp.local_addr().ok();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(engine.metrics()));
        let admin = Arc::new(admin::Admin {
            ready: true.into(),
            registry,
        });
        tasks.push(tokio::spawn(admin::run(
            tcp,
            admin.clone(),
            stop_rx.clone(),
        )));
        // Ready only once every listener is bound, which is now.
        admin.ready.store(true, Ordering::Release);
    }
    for (name, addr, _) in &listeners {
        tracing::info!(listener = %name, %addr, "listening");
    }
    Ok(RunningProxy {
        engine,
        listeners,
        admin_addr,
        stop,
        tasks,
    })
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
        self.listeners.iter().find(|l| l.0 == name).map(|l| l.1)
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.listeners.iter().map(|l| (l.0.as_str(), l.1))
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Apply a new configuration to the running listeners: new filter chains and
    /// clusters take over for new requests; requests in flight finish on the old
    /// ones. All or nothing: on error the running configuration stays.
    pub fn reload(&self, config: &Config) -> Result<(), StartError> {
        let names: Vec<_> = config
            .listeners
            .iter()
            .map(|l| l.name.value.as_str())
            .collect();
        let running: Vec<_> = self.listeners.iter().map(|l| l.0.as_str()).collect();
        if names != running {
            return Err(StartError::NeedsRestart(format!(
                "listeners changed from {running:?} to {names:?}; that needs a restart"
            )));
        }
        let states = build_states(&self.engine, config)?;
        for ((_, _, slot), state) in self.listeners.iter().zip(states) {
            slot.store(Arc::new(state));
        }
        Ok(())
    }

    /// Stop accepting, wait for in-flight requests (up to the drain timeout), stop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Like [`RunningProxy::shutdown`], but bounded: gives up waiting after `limit`.
    pub async fn shutdown_within(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shutdown()).await;
    }
}

/// Check a configuration the way [`start`] would (every filter loaded and given its
/// config, TLS files read), without binding anything. Returns the listener count.
pub fn check(config: &Config) -> Result<usize, StartError> {
    let engine = Engine::new()?;
    Ok(build_states(&engine, config)?.len())
}
