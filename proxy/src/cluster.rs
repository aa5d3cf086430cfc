//! Upstream clusters: endpoints, the balancer that chooses among them, health
//! (active checks and outlier detection), circuit-breaking limits, and a keep-alive
//! connection pool per endpoint speaking HTTP/1.1 or HTTP/2, in clear text or TLS.

pub(crate) mod balance;
mod dns;
mod health;
pub(crate) mod upstream;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use weft_config::{ClusterConfig, DnsConfig, HealthCheckConfig, OutlierConfig, UpstreamProtocol};

use crate::body::{ProxyBody, UpstreamBody};
use crate::tls;
use upstream::{
    Conn, ConnectError, Connector, Endpoint, Exchange, Held, HeldConnection, Io, TlsConnector,
};

/// An upstream cluster.
pub struct Cluster {
    name: Arc<str>,
    /// The endpoints and their balancer, swapped whole when the endpoints change.
    set: ArcSwap<EndpointSet>,
    /// Where the endpoints come from: the configured ones, and the addresses that
    /// `dns:` names last resolved to.
    sources: Mutex<Sources>,
    /// The resolver that follows `dns:` names, when the cluster has any.
    dns: Option<Arc<dns::Dns>>,
    balancer: weft_config::Balancer,
    max_idle: usize,
    scheme: Scheme,
    connector: Connector,
    max_requests: usize,
    requests: AtomicUsize,
    /// Attempts after the first.
    retries: AtomicU64,
    outlier: OutlierConfig,
    health: Option<HealthCheckConfig>,
    /// What the cluster was built from, endpoints aside: an unchanged cluster is kept
    /// across reloads, its endpoint set updated in place.
    fingerprint: String,
}

/// A cluster as `/clusters` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ClusterReport {
    /// Its name.
    pub name: String,
    /// `round-robin`, `least-request` or `peak-ewma`.
    pub balancer: &'static str,
    /// Requests in flight to it now (held against `max_requests`).
    pub requests: usize,
    /// Its endpoints in force.
    pub endpoints: Vec<balance::EndpointReport>,
}

/// A cluster's endpoints and the balancer over them.
struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    picker: balance::Picker,
}

/// A configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// One address.
    Static { authority: Authority, weight: u32 },
    /// Each address `name` resolves to, with the port of `name`.
    Dns { name: Authority, weight: u32 },
}

/// What a cluster's endpoints are built from.
#[derive(Debug, Default)]
struct Sources {
    configured: Vec<Source>,
    /// The last answer for each `dns:` name (sorted); none until its first answer.
    resolved: HashMap<Authority, Vec<IpAddr>>,
}

/// A prepared change of a cluster's endpoints; calling it applies it.
pub type EndpointUpdate = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.set.load();
        let endpoints: Vec<&Authority> = set.endpoints.iter().map(|e| &e.authority).collect();
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

/// Why a cluster could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An endpoint is not `host:port`.
    #[error("endpoints[{index}]: {message}")]
    Endpoint {
        /// Which endpoint.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A cluster needs at least one endpoint.
    #[error("endpoints: a cluster needs at least one endpoint")]
    NoEndpoints,
    /// TLS material could not be used.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The resolver for `dns:` endpoints could not be set up.
    #[error("dns: {0}")]
    Dns(String),
}

/// A failed upstream exchange.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    /// The connection could not be made, so the upstream never saw the request.
    pub(crate) connect: bool,
    /// The client's request body failed while it was being forwarded: the client's
    /// fault, not the upstream's.
    pub(crate) client_body: bool,
    /// A circuit-breaking limit refused the request: its name.
    pub(crate) limit: Option<&'static str>,
    /// The upstream did not prove the identity a filter required: nothing was sent.
    pub(crate) unproven: bool,
    /// The endpoint tried; none when no endpoint was eligible.
    pub(crate) endpoint: Option<Authority>,
    pub(crate) source: Box<dyn std::error::Error + Send + Sync>,
}

impl UpstreamError {
    /// Why the exchange ended, as filters see it.
    pub(crate) fn kind(&self) -> weft_engine::ExchangeError {
        use weft_engine::ExchangeError;
        if self.limit.is_some() {
            return ExchangeError::Overflow;
        }
        if self.endpoint.is_none() {
            return ExchangeError::NoHealthyEndpoint;
        }
        if self.connect {
            return ExchangeError::ConnectFailure;
        }
        match self.source.downcast_ref::<hyper::Error>() {
            Some(e) if e.is_parse() || e.is_parse_status() => ExchangeError::ProtocolError,
            _ => ExchangeError::Reset,
        }
    }
}

/// What one attempt learned about where it went, for the request's context.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// The endpoint it was sent to.
    pub(crate) endpoint: Option<Arc<Endpoint>>,
    /// How long connecting took, when it made a new connection.
    pub(crate) connect_time: Option<std::time::Duration>,
    /// The SPIFFE pattern a filter requires the upstream to prove: nothing is sent
    /// to an upstream that has not proven a matching ID by mutual TLS.
    pub(crate) required_identity: Option<Box<str>>,
    /// The SPIFFE ID the upstream proved (mesh clusters).
    pub(crate) identity: Option<Arc<str>>,
}

impl Attempt {
    /// An attempt whose upstream must prove an identity matching `pattern`, if any.
    pub(crate) fn requiring(pattern: Option<Box<str>>) -> Self {
        Self {
            required_identity: pattern,
            ..Self::default()
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(endpoint) = &self.endpoint else {
            return write!(f, "{}", self.source);
        };
        let what = if self.connect {
            "cannot connect to"
        } else {
            "request failed at"
        };
        write!(f, "{what} {endpoint}: {}", self.source)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl Cluster {
    /// Build a cluster; TLS files are read here, connections are made on demand and
    /// `dns:` names are resolved once the cluster starts.
    pub fn new(
        config: &ClusterConfig,
        dns_config: &DnsConfig,
        identity: &crate::Identity,
    ) -> Result<Self, ClusterError> {
        let max_idle = config.max_idle_per_endpoint;
        let sources = Sources {
            configured: sources(config)?,
            resolved: HashMap::new(),
        };
        let endpoints = sources.endpoints(max_idle, &[]);
        let dns = match config.endpoints.iter().any(|e| e.value.is_dns()) {
            true => Some(Arc::new(
                dns::Dns::new(dns_config, config.allow_link_local).map_err(ClusterError::Dns)?,
            )),
            false => None,
        };
        let (scheme, tls) = match &config.tls {
            None => (Scheme::HTTP, None),
            Some(t) => (
                Scheme::HTTPS,
                Some(tls_connector(t, config.protocol, identity)?),
            ),
        };
        Ok(Self {
            name: Arc::from(config.name.value.as_str()),
            set: ArcSwap::from_pointee(EndpointSet {
                picker: balance::Picker::new(config.balancer, &endpoints),
                endpoints,
            }),
            sources: Mutex::new(sources),
            dns,
            balancer: config.balancer,
            max_idle,
            scheme,
            connector: Connector {
                connect_timeout: config.connect_timeout.0,
                idle_timeout: config.idle_timeout.0,
                http2_only: config.protocol == UpstreamProtocol::Http2,
                tls,
                max_connections: config.limits.max_connections,
                connections: Arc::default(),
                max_pending: config.limits.max_pending,
                pending: AtomicUsize::new(0),
            },
            max_requests: config.limits.max_requests,
            requests: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            outlier: config.outlier,
            health: config.health_check.clone(),
            fingerprint: fingerprint(config, dns_config),
        })
    }

    /// Start what runs beside the cluster (health checks, DNS discovery), on the
    /// current runtime, for as long as the cluster lives.
    pub fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(hc) = &self.health {
            runtime.spawn(health::run(Arc::downgrade(self), hc.clone()));
        }
        if let Some(dns) = &self.dns {
            runtime.spawn(dns::run(Arc::downgrade(self), dns.clone()));
        }
    }

    /// Whether this cluster was built from the same configuration, so it can be kept
    /// (with its pools, health and latency estimates) across a reload.
    pub fn same_config(&self, config: &ClusterConfig, dns: &DnsConfig) -> bool {
        self.fingerprint == fingerprint(config, dns)
    }

    /// Prepare this cluster's endpoints for `config` (a cluster for which
    /// [`Cluster::same_config`] holds): endpoints that stay keep their pooled
    /// connections, health and latency estimates; new ones start fresh. The update
    /// happens when the returned function is called, so that a configuration that
    /// fails elsewhere changes nothing.
    pub fn prepare_endpoints(
        self: &Arc<Self>,
        config: &ClusterConfig,
    ) -> Result<EndpointUpdate, ClusterError> {
        let configured = sources(config)?;
        let cluster = self.clone();
        Ok(Box::new(move || {
            cluster.lock_sources().configured = configured;
            cluster.rebuild();
            if let Some(dns) = &cluster.dns {
                // New names are resolved now, not at the next refresh.
                dns.wake.notify_one();
            }
        }))
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuild the endpoint set from its sources; endpoints that stay (same address,
    /// name and weight) keep their pooled connections, health and latency estimates.
    fn rebuild(&self) {
        let sources = self.lock_sources();
        let current = self.set.load_full();
        let endpoints = sources.endpoints(self.max_idle, &current.endpoints);
        drop(sources);
        let same = endpoints.len() == current.endpoints.len()
            && endpoints
                .iter()
                .zip(&current.endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        tracing::info!(
            cluster = &*self.name,
            endpoints = ?endpoints.iter().map(|e| e.authority.as_str()).collect::<Vec<_>>(),
            "endpoints changed"
        );
        self.set.store(Arc::new(EndpointSet {
            picker: balance::Picker::new(self.balancer, &endpoints),
            endpoints,
        }));
    }

    /// Count an attempt after the first.
    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts after the first, since the cluster was built.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// What `/clusters` shows of this cluster.
    pub(crate) fn report(&self) -> ClusterReport {
        let set = self.set.load();
        ClusterReport {
            name: self.name.to_string(),
            balancer: match self.balancer {
                weft_config::Balancer::RoundRobin => "round-robin",
                weft_config::Balancer::LeastRequest => "least-request",
                weft_config::Balancer::PeakEwma => "peak-ewma",
            },
            requests: self.requests.load(Ordering::Relaxed),
            endpoints: (set.endpoints.iter())
                .map(|e| balance::EndpointReport {
                    idle_connections: e.idle_len(),
                    ..e.stats.report(e.authority.to_string())
                })
                .collect(),
        }
    }

    /// Each endpoint's address, whether it may serve now, and its latency estimate.
    pub fn endpoint_states(&self) -> Vec<(String, bool, Duration)> {
        self.set
            .load()
            .endpoints
            .iter()
            .map(|e| (e.authority.to_string(), e.stats.healthy(), e.stats.ewma()))
            .collect()
    }

    /// An attempt that ran out of time: a slow sample for the balancer and a failure
    /// for outlier detection.
    pub(crate) fn timed_out(&self, endpoint: &Endpoint, after: Duration) {
        endpoint.stats.observe(after);
        self.record(endpoint, false);
    }

    fn record(&self, endpoint: &Endpoint, ok: bool) {
        let set = self.set.load();
        if let Some(length) = balance::record(&self.outlier, endpoint, &set.endpoints, ok) {
            tracing::warn!(
                cluster = &*self.name,
                endpoint = %endpoint.authority,
                "endpoint ejected for {length:?} after {} failures in a row",
                self.outlier.consecutive_failures
            );
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// Send a request to one endpoint of the cluster. The request's URI is rewritten
    /// for that endpoint; its `host` header is kept. A request that a pooled
    /// connection gave back unsent (the upstream closed it meanwhile) goes again, once,
    /// on another connection.
    pub(crate) async fn send(
        &self,
        parts: http::request::Parts,
        body: ProxyBody,
        attempt: &mut Attempt,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        // Circuit breaking: requests waiting for their response head, per cluster.
        let Some(_request) = Held::try_new(&self.requests, self.max_requests) else {
            return Err(self.limit_error("max_requests"));
        };
        self.may_prove(attempt)?;
        let endpoint = self.choose().await?;
        let endpoint = &endpoint;
        attempt.endpoint = Some(endpoint.clone());
        let _in_flight = balance::start(&**endpoint);
        let started = Instant::now();
        let result = self.send_to(endpoint, parts, body, attempt).await;
        match &result {
            Ok(resp) => {
                endpoint.stats.observe(started.elapsed());
                self.record(endpoint, !resp.status().is_server_error());
            }
            Err(e) if e.limit.is_some() || e.client_body => {}
            Err(_) => {
                endpoint.stats.observe(started.elapsed());
                self.record(endpoint, false);
            }
        }
        result
    }

    /// The endpoint the balancer picks; waits for a `dns:` name's first answer.
    async fn choose(&self) -> Result<Arc<Endpoint>, UpstreamError> {
        if let Some(dns) = &self.dns
            && self.set.load().endpoints.is_empty()
        {
            // A name not resolved yet: wait for its first answer, briefly.
            dns.first_answer(self.connector.connect_timeout).await;
        }
        let set = self.set.load();
        set.picker
            .pick(&set.endpoints)
            .cloned()
            .ok_or_else(|| UpstreamError {
                connect: false,
                client_body: false,
                limit: None,
                unproven: false,
                endpoint: None,
                source: match set.endpoints.len() {
                    0 => "no endpoints (their DNS names have no addresses yet)".into(),
                    n => {
                        format!("no healthy endpoint among {n} (health checks or outlier ejection)")
                            .into()
                    }
                },
            })
    }

    /// Open a tunnel (CONNECT) to one endpoint of the cluster: a byte stream, and the
    /// connection's place in the cluster's `max_connections`, to hold while it lasts.
    pub(crate) async fn tunnel(
        &self,
        attempt: &mut Attempt,
    ) -> Result<(Box<dyn Io>, HeldConnection), UpstreamError> {
        self.may_prove(attempt)?;
        let endpoint = self.choose().await?;
        attempt.endpoint = Some(endpoint.clone());
        let started = Instant::now();
        let result = endpoint.tunnel(&self.connector).await;
        attempt.connect_time = Some(started.elapsed());
        match result {
            Ok(io) => {
                // Dropping the stream unused: the endpoint has read no request byte.
                self.proved(&endpoint, attempt)?;
                endpoint.stats.observe(started.elapsed());
                self.record(&endpoint, true);
                Ok(io)
            }
            Err(e) => {
                let e = self.connect_error(&endpoint, e);
                if e.limit.is_none() {
                    self.record(&endpoint, false);
                }
                Err(e)
            }
        }
    }

    /// A place in the cluster's count of connections for an upgraded connection (a
    /// WebSocket after its 101), which its HTTP connection gave up when it switched.
    /// Counted even past `max_connections`: the connection is open already.
    pub(crate) fn hold_connection(&self) -> HeldConnection {
        Held::force(self.connector.connections.clone())
    }

    /// A failure to connect to `endpoint`, as the exchange reports it.
    fn connect_error(&self, endpoint: &Endpoint, e: ConnectError) -> UpstreamError {
        match e {
            ConnectError::Limit(limit) => self.limit_error(limit),
            e => UpstreamError {
                connect: true,
                client_body: false,
                limit: None,
                unproven: false,
                endpoint: Some(endpoint.authority.clone()),
                source: e.into(),
            },
        }
    }

    /// Refuse at once, before any connection, a request whose required identity
    /// this cluster cannot prove: one not spoken to in mutual TLS.
    fn may_prove(&self, attempt: &Attempt) -> Result<(), UpstreamError> {
        match &attempt.required_identity {
            Some(p) if !self.connector.tls.as_ref().is_some_and(|t| t.mesh) => Err(self.unproven(
                None,
                format!(
                    "requires {p}, but cluster {:?} does not speak mutual TLS",
                    self.name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Note the identity `endpoint` proved; refuse, before sending, one that does
    /// not match what the request requires.
    fn proved(&self, endpoint: &Endpoint, attempt: &mut Attempt) -> Result<(), UpstreamError> {
        if self.connector.tls.as_ref().is_some_and(|t| t.mesh) {
            attempt.identity = endpoint.proven_identity();
        }
        let Some(p) = &attempt.required_identity else {
            return Ok(());
        };
        match &attempt.identity {
            Some(id) if weft_config::spiffe::matches(p, id) => Ok(()),
            Some(id) => Err(self.unproven(
                Some(endpoint),
                format!("requires {p}, but the server proved {id}"),
            )),
            None => Err(self.unproven(
                Some(endpoint),
                format!("requires {p}, but the server proved no identity"),
            )),
        }
    }

    fn unproven(&self, endpoint: Option<&Endpoint>, why: String) -> UpstreamError {
        UpstreamError {
            connect: true,
            client_body: false,
            limit: None,
            unproven: true,
            endpoint: endpoint.map(|e| e.authority.clone()),
            source: why.into(),
        }
    }

    fn limit_error(&self, limit: &'static str) -> UpstreamError {
        UpstreamError {
            connect: false,
            client_body: false,
            limit: Some(limit),
            unproven: false,
            endpoint: None,
            source: format!("cluster {:?}: its {limit} is reached", self.name).into(),
        }
    }

    /// Send a request to this endpoint.
    pub(crate) async fn send_to(
        &self,
        endpoint: &Arc<Endpoint>,
        parts: http::request::Parts,
        body: ProxyBody,
        attempt: &mut Attempt,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut req = http::Request::from_parts(parts, body);
        let mut retried = false;
        loop {
            let started = std::time::Instant::now();
            let (conn, pooled) = endpoint
                .checkout(&self.connector)
                .await
                .map_err(|e| self.connect_error(endpoint, e))?;
            if !pooled {
                attempt.connect_time = Some(started.elapsed());
            }
            self.proved(endpoint, attempt)?;
            let mut refused = match conn {
                Conn::Http1(sender) => {
                    // HTTP/1 sends the origin form; the host header names the target.
                    *req.uri_mut() = http::Uri::from(pq.clone());
                    *req.version_mut() = http::Version::HTTP_11;
                    match Exchange::send(endpoint.clone(), sender, req).await {
                        Ok(resp) => return Ok(resp),
                        Err(e) => e,
                    }
                }
                Conn::Http2(mut sender) => {
                    let mut uri = http::uri::Parts::default();
                    uri.scheme = Some(self.scheme.clone());
                    // HTTP/2 names the target in `:authority`, where HTTP/1 has
                    // `host`: the host the client named, else the endpoint. Both
                    // at once must agree, so `host` goes.
                    let host = req.headers_mut().remove(http::header::HOST);
                    let named = host.and_then(|h| Authority::try_from(h.as_bytes()).ok());
                    uri.authority = Some(named.unwrap_or_else(|| endpoint.authority.clone()));
                    uri.path_and_query = Some(pq.clone());
                    *req.uri_mut() =
                        http::Uri::from_parts(uri).expect("scheme, authority and path are set");
                    *req.version_mut() = http::Version::HTTP_2;
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(|b| UpstreamBody::new(b, None))),
                        Err(e) => e,
                    }
                }
            };
            match refused.take_message() {
                Some(back) if pooled && !retried => {
                    retried = true;
                    req = back;
                }
                back => {
                    let error = refused.into_error();
                    // hyper wraps what our body type yields, the client's own error,
                    // as a "user body" error.
                    let client_body = error.is_user()
                        && std::error::Error::source(&error)
                            .is_some_and(|s| s.is::<hyper::Error>());
                    return Err(UpstreamError {
                        // Unsent on a fresh connection: the upstream never saw it.
                        connect: back.is_some(),
                        client_body,
                        limit: None,
                        unproven: false,
                        endpoint: Some(endpoint.authority.clone()),
                        source: error.into(),
                    });
                }
            }
        }
    }
}

/// The configured endpoints of `config`, each parsed by the parser validation used:
/// one that does not parse is an error here, never silently dropped.
fn sources(config: &ClusterConfig) -> Result<Vec<Source>, ClusterError> {
    let configured = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let authority = weft_config::parse_endpoint(e.value.address())
                .map_err(|message| ClusterError::Endpoint { index, message })?;
            let weight = e.value.weight().max(1);
            Ok(match e.value.is_dns() {
                true => Source::Dns {
                    name: authority,
                    weight,
                },
                false => Source::Static { authority, weight },
            })
        })
        .collect::<Result<Vec<_>, ClusterError>>()?;
    if configured.is_empty() {
        return Err(ClusterError::NoEndpoints);
    }
    Ok(configured)
}

impl Sources {
    /// The endpoints these sources name, reusing those of `current` with the same
    /// address, name and weight.
    fn endpoints(&self, max_idle: usize, current: &[Arc<Endpoint>]) -> Vec<Arc<Endpoint>> {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut add = |authority: Authority, name: Option<&str>, weight: u32| {
            let found = |e: &&Arc<Endpoint>| {
                e.authority == authority && e.name.as_deref() == name && e.stats.weight == weight
            };
            if endpoints.iter().any(|e| found(&e)) {
                return;
            }
            let endpoint = current.iter().find(found).cloned().unwrap_or_else(|| {
                Arc::new(Endpoint::new(
                    authority,
                    name.map(Arc::from),
                    max_idle,
                    weight,
                ))
            });
            endpoints.push(endpoint);
        };
        for source in &self.configured {
            match source {
                Source::Static { authority, weight } => add(authority.clone(), None, *weight),
                Source::Dns { name, weight } => {
                    let port = name.port_u16().unwrap_or(80);
                    for ip in self.resolved.get(name).into_iter().flatten() {
                        let address = std::net::SocketAddr::new(*ip, port).to_string();
                        if let Ok(authority) = address.parse() {
                            add(authority, Some(name.host()), *weight);
                        }
                    }
                }
            }
        }
        endpoints
    }

    /// The `dns:` names to resolve.
    fn names(&self) -> Vec<Authority> {
        let mut names: Vec<Authority> = Vec::new();
        for source in &self.configured {
            if let Source::Dns { name, .. } = source
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }
}

/// TLS to a cluster's endpoints: ALPN offering what the cluster may speak; servers
/// verified by name against a CA file, or (mesh) by their SPIFFE ID, with the
/// workload certificate presented.
fn tls_connector(
    t: &weft_config::ClientTlsConfig,
    protocol: UpstreamProtocol,
    identity: &crate::Identity,
) -> Result<TlsConnector, ClusterError> {
    let mesh = t.mode == weft_config::TlsMode::Mesh;
    let mut client = match &t.ca {
        Some(ca) if !mesh => tls::client_config(&ca.value)?,
        _ => crate::identity::mesh_client_config(
            identity,
            t.identity.as_ref().map(|i| i.value.as_str()),
        )?,
    };
    client.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let server_name = match &t.server_name {
        Some(name) => Some(
            rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                tls::TlsError::new("server_name", format!("invalid: {name:?}: {e}"))
            })?,
        ),
        None => None,
    };
    Ok(TlsConnector {
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        server_name,
        mesh,
    })
}

/// What a cluster is built from, endpoints aside, as text: TLS files by their contents, so a rotated
/// CA makes a new cluster while an unchanged one keeps its state.
fn fingerprint(config: &ClusterConfig, dns: &DnsConfig) -> String {
    // The resolver matters only to a cluster that follows names.
    let dns = config
        .endpoints
        .iter()
        .any(|e| e.value.is_dns())
        .then_some(dns);
    let ca = config.tls.as_ref().and_then(|t| t.ca.as_ref()).map(|ca| {
        use sha2::Digest;
        std::fs::read(&ca.value).map_or_else(
            |e| format!("unreadable: {e}"),
            |bytes| hex::encode(sha2::Sha256::digest(bytes)),
        )
    });
    format!(
        "{}|{}|{:?}|{:?}|{:?}|{ca:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{dns:?}",
        config.name.value,
        config.allow_link_local,
        config.balancer,
        config.protocol,
        config.tls.as_ref().map(|t| (
            t.mode,
            t.ca.as_ref().map(|c| &c.value),
            &t.server_name,
            t.identity.as_ref().map(|i| &i.value)
        )),
        config.connect_timeout,
        config.idle_timeout,
        config.max_idle_per_endpoint,
        config.limits,
        config.outlier,
        config.health_check,
    )
}

#[cfg(test)]
mod tests;
