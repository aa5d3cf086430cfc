//! Transparent capture: connections that `weft init`'s iptables rules redirected to a
//! capture listener (`listeners[].capture`), each served by where it was going.
//!
//! 1. **Where it was going.** The kernel keeps a redirected connection's original
//!    destination; `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it. A
//!    connection made to the listener itself has none and is served as on any
//!    listener (its `default_cluster`).
//! 2. **Whose it is.** Outbound, the destination belongs to the cluster one of whose
//!    endpoints (or declared `services`) is that address, looked up in a map built
//!    with the listener's state; inbound, it goes to the workload's application at
//!    `127.0.0.1:<original port>`, through the cluster whose endpoint that is, or one
//!    made for the port on first use.
//! 3. **What it speaks.** A connection for the filter chain must speak HTTP (or, on a
//!    listener with TLS, start a TLS handshake), told by its first bytes. It is then
//!    served like any other, with the original destination as the connection's local
//!    address (filters see it as `local-address`) and its cluster as the default
//!    route. What cannot go through the chain (outbound: an address outside the mesh;
//!    both ways: another protocol) is joined as TCP when `passthrough` allows it, and
//!    refused otherwise: closed, after a 502 when it spoke HTTP.
//!
//! Every outcome is counted per listener (`weft_capture_connections`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_config::{CaptureConfig, CaptureDirection, ClusterConfig, DnsConfig, canonical};

use crate::cluster::Cluster;
use crate::conn::{ConnCounts, ConnLimits, ConnWatch, Watched};
use crate::error::{ProxyError, Side};

/// Most ports an inbound capture listener makes a cluster for on first use: a peer
/// that tries every port must not make the proxy build sixty thousand clusters.
const MAX_MADE_PORTS: usize = 256;

/// What a capture listener knows beside its listener state: the clusters that own
/// which destinations, and what to do with the rest.
pub(crate) struct Capture {
    listener: Arc<str>,
    outbound: bool,
    /// The listener serves TLS: a connection that starts a handshake is for it.
    tls: bool,
    passthrough: bool,
    connect_timeout: Duration,
    /// Outbound: the cluster owning each address (an endpoint written as an IP
    /// address, or a declared service), canonical.
    owners: HashMap<SocketAddr, Arc<Cluster>>,
    /// Inbound: the cluster whose endpoint is the application on each port, on
    /// loopback.
    ports: HashMap<u16, Arc<Cluster>>,
    /// Inbound: clusters for ports no cluster names, made on first use.
    made: Made,
    counts: Arc<ListenerCounts>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("outbound", &self.outbound)
            .field("passthrough", &self.passthrough)
            .field("owners", &self.owners.keys().collect::<Vec<_>>())
            .field("ports", &self.ports.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The clusters an inbound capture listener made for ports, read without a lock on
/// the request path; made one at a time.
struct Made {
    clusters: ArcSwap<HashMap<u16, Arc<Cluster>>>,
    making: Mutex<()>,
    dns: DnsConfig,
    identity: crate::Identity,
}

/// What a listener's configuration gives its capture.
pub(crate) struct Setup<'a> {
    pub(crate) listener: &'a weft_config::ListenerConfig,
    pub(crate) capture: &'a CaptureConfig,
    pub(crate) config: &'a weft_config::Config,
    pub(crate) clusters: &'a HashMap<String, Arc<Cluster>>,
    pub(crate) identity: &'a crate::Identity,
    pub(crate) counts: &'a CaptureCounts,
}

impl Capture {
    /// The capture of a listener, with its lookup maps built from the clusters in
    /// force: the first cluster (in the file's order) that names an address owns it;
    /// a declared service owns its address whatever the endpoints say.
    pub(crate) fn new(s: &Setup<'_>) -> Self {
        let mut owners = HashMap::new();
        let mut ports = HashMap::new();
        for c in &s.config.clusters {
            let Some(cluster) = s.clusters.get(&c.name.value) else {
                continue;
            };
            for e in c.endpoints.iter().filter(|e| !e.value.is_dns()) {
                let Ok(addr) = e.value.address().parse::<SocketAddr>() else {
                    continue;
                };
                let addr = canonical(addr);
                owners.entry(addr).or_insert_with(|| cluster.clone());
                if addr.ip().is_loopback() {
                    ports.entry(addr.port()).or_insert_with(|| cluster.clone());
                }
            }
        }
        for service in &s.capture.services {
            let owner = s.clusters.get(&service.value.cluster);
            if let (Ok(addr), Some(cluster)) = (service.value.address.parse(), owner) {
                owners.insert(canonical(addr), cluster.clone());
            }
        }
        let name = s.listener.name.value.as_str();
        let outbound = s.capture.direction.value == CaptureDirection::Outbound;
        let counts = s.counts.of(name);
        counts.outbound.store(outbound, Ordering::Relaxed);
        Self {
            listener: Arc::from(name),
            outbound,
            tls: s.listener.tls.is_some(),
            passthrough: s.capture.allows_passthrough(),
            connect_timeout: s.capture.connect_timeout.0,
            owners,
            ports,
            made: Made {
                clusters: ArcSwap::default(),
                making: Mutex::new(()),
                dns: s.config.dns.clone(),
                identity: s.identity.clone(),
            },
            counts,
        }
    }

    /// The cluster a captured connection's requests go to when no filter routes
    /// them: outbound, the owner of its original destination; inbound, the
    /// application on its original port.
    pub(crate) fn route(&self, destination: SocketAddr) -> Option<Arc<Cluster>> {
        if self.outbound {
            return self.owners.get(&destination).cloned();
        }
        let port = destination.port();
        if let Some(c) = self.ports.get(&port) {
            return Some(c.clone());
        }
        if let Some(c) = self.made.clusters.load().get(&port) {
            return Some(c.clone());
        }
        self.make(port)
    }

    /// A cluster for the application on `port`, made once: every other key at its
    /// default. None past [`MAX_MADE_PORTS`].
    fn make(&self, port: u16) -> Option<Arc<Cluster>> {
        let _one_at_a_time = self
            .made
            .making
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.made.clusters.load_full();
        if let Some(c) = current.get(&port) {
            return Some(c.clone());
        }
        if current.len() >= MAX_MADE_PORTS {
            tracing::warn!(
                listener = &*self.listener,
                port,
                "no cluster for the application's port: {MAX_MADE_PORTS} ports have one \
                 made already; declare a cluster with endpoint 127.0.0.1:{port}"
            );
            return None;
        }
        let app = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let made = ClusterConfig::of_endpoint(&format!("inbound:{port}"), app)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                Cluster::new(&c, &self.made.dns, &self.made.identity).map_err(|e| e.to_string())
            });
        let cluster = match made {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(
                    listener = &*self.listener,
                    port,
                    "no cluster for {app}: {e}"
                );
                return None;
            }
        };
        let mut next = HashMap::clone(&current);
        next.insert(port, cluster.clone());
        self.made.clusters.store(Arc::new(next));
        Some(cluster)
    }

    /// Take a connection the listener accepted: the stream back, with its original
    /// destination when it was redirected, if it is for the filter chain; none when
    /// it was joined as TCP or refused here.
    pub(crate) async fn intercept(
        &self,
        stream: TcpStream,
        local: SocketAddr,
        limits: &ConnLimits,
        bytes: &Arc<ConnCounts>,
    ) -> Option<(TcpStream, Option<SocketAddr>)> {
        let Some(destination) = original_destination(&stream, local) else {
            self.counts.direct.fetch_add(1, Ordering::Relaxed);
            return Some((stream, None));
        };
        if self.outbound && !self.owners.contains_key(&destination) {
            let why = "destination outside the mesh";
            self.pass_or_refuse(stream, destination, why, limits, bytes)
                .await;
            return None;
        }
        match speaks(&stream, limits.header_read_timeout).await {
            Speaks::Http | Speaks::Tls if self.tls => {}
            Speaks::Http => {}
            Speaks::Closed => return None,
            Speaks::Tls | Speaks::Other => {
                // Inbound, the application is on loopback: where HTTP would go.
                let to = match self.outbound {
                    true => destination,
                    false => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), destination.port()),
                };
                let why = "connection does not speak HTTP";
                self.pass_or_refuse(stream, to, why, limits, bytes).await;
                return None;
            }
        }
        let served = match self.outbound {
            true => &self.counts.cluster,
            false => &self.counts.local,
        };
        served.fetch_add(1, Ordering::Relaxed);
        Some((stream, Some(destination)))
    }

    /// Join `stream` as TCP to `to` when passthrough is allowed; refuse it otherwise.
    async fn pass_or_refuse(
        &self,
        stream: TcpStream,
        to: SocketAddr,
        why: &'static str,
        limits: &ConnLimits,
        bytes: &Arc<ConnCounts>,
    ) {
        if !self.passthrough {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            self.refuse(stream, to, why, limits).await;
            return;
        }
        self.counts.passthrough.fetch_add(1, Ordering::Relaxed);
        let connect = tokio::time::timeout(self.connect_timeout, TcpStream::connect(to));
        let mut upstream = match connect.await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                tracing::debug!(listener = &*self.listener, %to, "passthrough failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = &*self.listener, %to, "passthrough connect timed out");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        // Bytes count for the listener, and a joined connection that moves none for
        // the idle timeout is closed, as an HTTP one would be.
        let watch = Arc::new(ConnWatch::new(u32::MAX));
        let mut client = Watched::new(stream, watch.clone()).counting(bytes.clone());
        tokio::select! {
            ended = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = ended {
                    tracing::debug!(listener = &*self.listener, %to, "passthrough ended: {e}");
                }
            }
            () = watch.idle(limits.idle_timeout) => {
                tracing::debug!(listener = &*self.listener, %to, "passthrough idle; closed");
            }
        }
    }

    /// Close a connection passthrough may not take, telling an HTTP client why with
    /// a 502 once its request head is in.
    async fn refuse(
        &self,
        mut stream: TcpStream,
        to: SocketAddr,
        why: &'static str,
        limits: &ConnLimits,
    ) {
        let id = fastrand::u64(..);
        let e = ProxyError::new(
            Side::Internal,
            http::StatusCode::BAD_GATEWAY,
            "passthrough refused",
            format!("{why}: {to} (the listener's capture says passthrough: refuse)"),
        );
        e.log(&self.listener, id);
        if speaks(&stream, limits.header_read_timeout).await != Speaks::Http {
            return;
        }
        // Read the head first: closing on unread bytes would reset the connection
        // and the client might never see the answer.
        let read_head = async {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            true
        };
        if !matches!(
            tokio::time::timeout(limits.header_read_timeout, read_head).await,
            Ok(true)
        ) {
            return;
        }
        let answer = http1_bytes(e.into_response(id));
        let write = async {
            stream.write_all(&answer).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(limits.header_read_timeout, write).await;
    }
}

/// A response the proxy made, as HTTP/1.1 bytes, closing the connection.
fn http1_bytes(resp: http::Response<crate::ProxyBody>) -> Vec<u8> {
    let (parts, body) = resp.into_parts();
    let body = match body {
        crate::ProxyBody::Full(Some(b)) => b,
        _ => bytes::Bytes::new(),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

/// The destination a redirected connection was made to, canonical; none when it was
/// made to the listener itself (no redirection, or no record of one).
fn original_destination(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let local = canonical(local);
    let found = kernel_original_destination(stream, local)?;
    let found = canonical(found);
    (found != local).then_some(found)
}

#[cfg(target_os = "linux")]
fn kernel_original_destination(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    use rustix::net::sockopt::{ip_original_dst, ipv6_original_dst};
    // An IPv4 connection, also on a dual-stack socket, is in the IPv4 table.
    match local {
        SocketAddr::V4(_) => ip_original_dst(stream).ok().map(SocketAddr::V4),
        SocketAddr::V6(_) => ipv6_original_dst(stream).ok().map(SocketAddr::V6),
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_original_destination(_: &TcpStream, _: SocketAddr) -> Option<SocketAddr> {
    // Redirection by iptables is Linux's; elsewhere nothing is captured.
    None
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, PartialEq, Eq)]
enum Speaks {
    /// An HTTP/1 request line (`METHOD SP`) or the HTTP/2 preface.
    Http,
    /// A TLS handshake record.
    Tls,
    /// Anything else, or nothing within the header read timeout (a protocol whose
    /// server speaks first).
    Other,
    /// Closed before a byte.
    Closed,
}

/// How many bytes tell HTTP from the rest: the longest common method and a space.
const SNIFF: usize = 16;

/// The HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Read (without taking) the first bytes of `stream` until they say what it speaks,
/// within `limit`.
async fn speaks(stream: &TcpStream, limit: Duration) -> Speaks {
    let look = async {
        let mut buf = [0u8; SNIFF];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return Speaks::Closed,
                Ok(n) => n,
            };
            if let Some(said) = classify(&buf[..n]) {
                return said;
            }
            // A request line cut short: wait for the rest rather than spin on the
            // bytes already there.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, look)
        .await
        .unwrap_or(Speaks::Other)
}

/// What `first` (the bytes so far) says, or none while it could still be either.
fn classify(first: &[u8]) -> Option<Speaks> {
    const TLS_HANDSHAKE: u8 = 0x16;
    match first.first() {
        None => return None,
        Some(&TLS_HANDSHAKE) => return Some(Speaks::Tls),
        Some(_) => {}
    }
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Speaks::Http);
    }
    let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match first.get(method) {
        Some(b' ') if method > 0 => Some(Speaks::Http),
        None if method < SNIFF => None,
        _ => Some(Speaks::Other),
    }
}

/// Captured connections of one listener, by what became of them.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounts {
    /// The listener captures outbound (as last loaded): which routes it can take.
    outbound: AtomicBool,
    /// Outbound, served to the mesh cluster owning the destination.
    cluster: AtomicU64,
    /// Inbound, served to the workload's application.
    local: AtomicU64,
    /// Joined as TCP to the original destination.
    passthrough: AtomicU64,
    /// Closed: passthrough refused.
    refused: AtomicU64,
    /// Made to the listener itself, not redirected.
    direct: AtomicU64,
}

/// Every capture listener's counts, by listener name, kept by the proxy across
/// reloads so counters only grow.
#[derive(Debug, Default)]
pub(crate) struct CaptureCounts(Mutex<BTreeMap<String, Arc<ListenerCounts>>>);

impl CaptureCounts {
    /// The counts of `listener`, made on its first capture.
    fn of(&self, listener: &str) -> Arc<ListenerCounts> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(listener.to_owned()).or_default().clone()
    }
}

/// `/metrics`: `weft_capture_connections{listener, route}`.
#[derive(Debug)]
pub(crate) struct CaptureMetrics(pub(crate) Arc<CaptureCounts>);

impl Collector for CaptureMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let all: Vec<_> = (self.0.0.lock().unwrap_or_else(PoisonError::into_inner))
            .iter()
            .map(|(name, counts)| (name.clone(), counts.clone()))
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "weft_capture_connections",
            "Connections a capture listener took, by route: cluster (outbound, to the mesh \
             cluster owning the destination), local (inbound, to the application), \
             passthrough (joined as TCP), refused (passthrough: refuse), direct (made to \
             the listener itself).",
            None,
            MetricType::Counter,
        )?;
        for (name, c) in &all {
            // Each direction shows the routes it can take.
            let served = match c.outbound.load(Ordering::Relaxed) {
                true => ("cluster", &c.cluster),
                false => ("local", &c.local),
            };
            for (route, n) in [
                served,
                ("passthrough", &c.passthrough),
                ("refused", &c.refused),
                ("direct", &c.direct),
            ] {
                let labels = [("listener", name.as_str()), ("route", route)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n.load(Ordering::Relaxed), None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Speaks, classify};

    #[test]
    fn first_bytes_tell_http_from_tls_and_the_rest() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Speaks::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Speaks::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(Speaks::Http));
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Speaks::Tls));
        // Redis, a MySQL client, a lower-case line: not HTTP.
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Speaks::Other));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Speaks::Other));
        assert_eq!(classify(b"PINGPONGPINGPONGPING"), Some(Speaks::Other));
        // Cut short, it could still be either.
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HT"), None);
    }
}
