//! What a listener's requests are served with: its chain, clusters, limits and
//! connection parts, built from configuration and swapped as a whole on reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::access::AccessLog;
use crate::chain::FilterChain;
use crate::cluster::Cluster;
use crate::conn::{ConnCounts, ConnParts};

/// What a listener's requests need, swapped as a whole when configuration changes.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener's name.
    pub name: Arc<str>,
    /// Its filter chain.
    pub chain: FilterChain,
    /// Every cluster, by name.
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
    /// Where requests go when no filter routes them.
    pub default_cluster: Option<Arc<Cluster>>,
    /// The upstream must answer within this time of the request's arrival, unless a
    /// filter sets another.
    pub request_timeout: Duration,
    /// The largest body a filter may have buffered.
    pub max_body: usize,
    /// Normalise request paths before filters see them.
    pub normalize_path: bool,
    /// Tunnel `CONNECT` requests to the routed cluster.
    pub allow_connect: bool,
    /// The protocols clients may upgrade to, lower-cased, without `h2c`.
    pub upgrades: Box<[Box<str>]>,
    /// Peers are mesh proxies: their `x-weft-source-workload` reaches filters.
    pub mesh_internal: bool,
    /// The proxy is about to stop: HTTP/1 clients are told to reconnect.
    pub(crate) draining: Arc<AtomicBool>,
    /// TLS and HTTP settings for new connections.
    pub(crate) conn: Arc<ConnParts>,
    /// The access log, when the configuration has one.
    pub(crate) access: Option<Arc<AccessLog>>,
    /// Routes by original destination, on a capture listener.
    pub(crate) capture: Option<Arc<crate::capture::Capture>>,
}

/// A bound listener.
pub(crate) struct Bound {
    pub(crate) name: String,
    /// The address as configured (`127.0.0.1:0` stays bound to the port it got).
    pub(crate) configured: String,
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<ArcSwap<ListenerState>>,
    pub(crate) stop: watch::Sender<bool>,
    /// Its connections, for `/metrics`.
    pub(crate) counts: Arc<ConnCounts>,
}

impl Bound {
    /// A reload keeps this listener's socket when its name and address stay.
    pub(crate) fn kept_by(&self, l: &weft_config::ListenerConfig) -> bool {
        self.name == l.name.value && self.configured == l.address.value
    }
}
