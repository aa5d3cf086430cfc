//! The configuration model. Every struct refuses unknown keys.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::units::{Duration, Size};
use crate::{ClientTlsConfig, IdentityConfig, ServerTlsConfig};

/// A whole Weft configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin listener (`/ready`, `/metrics`); none when omitted.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Where the proxy accepts traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Where it sends traffic.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// The workload identity mesh listeners and clusters present, from files; none
    /// under a config server, whose CA issues it.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// How it stops.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// How `dns:` endpoints are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where the spans filters finish are exported; none: spans are not exported.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// One JSON line per request; none: no access log.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// The file this came from, for errors.
    #[serde(skip)]
    pub file: String,
    /// The folder relative module paths resolve against.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The group of a mesh config this came from (`proxies[N]`), or `None` for a
    /// proxy's own file. A mesh's modules are `builtin:NAME` or `filter:NAME`
    /// (pushed to the config server), never files; its errors name
    /// `proxies[N].listeners` where a proxy's file says `listeners`.
    #[serde(skip)]
    pub mesh_group: Option<usize>,
}

/// The fields an access log line may have, in the order lines have them by default.
pub const ACCESS_LOG_FIELDS: &[&str] = &[
    "time",
    "request_id",
    "trace_id",
    "span_id",
    "listener",
    "peer",
    "method",
    "authority",
    "path",
    "route",
    "cluster",
    "endpoint",
    "attempts",
    "status",
    "grpc_status",
    "responder",
    "error",
    "decisions",
    "response_bytes",
    "duration_ms",
    "complete",
];

/// The access log: one JSON line per request, through the `weft::access` log target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// The fields of each line, in this order (default: all of [`ACCESS_LOG_FIELDS`]).
    #[serde(default)]
    pub fields: Option<Spanned<Vec<String>>>,
    /// Share of requests logged, 0 to 1, decided when each arrives.
    #[serde(default = "default_sample")]
    pub sample: Spanned<f64>,
}

fn default_sample() -> Spanned<f64> {
    unwritten(1.0)
}

/// A default: a value the file did not write, so it has no place in the file.
fn unwritten<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// Span export over OTLP/gRPC.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC address, `host:port` (an OpenTelemetry Collector,
    /// Jaeger or Tempo listens on 4317).
    pub collector: Spanned<String>,
    /// `service.name` of spans that do not name their own service.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Most spans sent in one export call.
    #[serde(default = "default_span_batch")]
    pub batch: usize,
    /// How often waiting spans are sent.
    #[serde(default = "default_span_flush")]
    pub flush_interval: Duration,
    /// How long one export call may take before its spans are dropped.
    #[serde(default = "default_span_timeout")]
    pub timeout: Duration,
}

fn default_service_name() -> String {
    "weft".to_owned()
}

fn default_span_batch() -> usize {
    512
}

fn default_span_flush() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}

fn default_span_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

/// The admin listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port`; port 0 picks a free one.
    pub address: Spanned<String>,
    /// Host names the admin listener answers besides IP addresses and `localhost`,
    /// when it is bound to a loopback address (a browser on the same machine could
    /// otherwise be made to read it through a name that resolves to 127.0.0.1).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

/// Graceful shutdown.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long the proxy keeps accepting and serving while it says it
    /// is going (`/ready` answers 503, HTTP/1 responses carry `connection: close`), so
    /// that load balancers and Kubernetes Services stop sending before it stops
    /// listening. SIGINT skips it.
    #[serde(default = "no_delay")]
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT (after
    /// the drain delay).
    #[serde(default = "default_drain")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay: Duration(std::time::Duration::ZERO),
            drain_timeout: default_drain(),
        }
    }
}

fn no_delay() -> Duration {
    Duration(std::time::Duration::ZERO)
}

fn default_drain() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

/// DNS discovery: the resolver `dns:` endpoints use and how often they are resolved
/// again.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers, `ip:port`; the system's (`/etc/resolv.conf`) when empty.
    #[serde(default)]
    pub servers: Vec<Spanned<String>>,
    /// Names are resolved again when their TTL runs out, but not sooner than this.
    #[serde(default = "default_dns_min")]
    pub min_refresh: Spanned<Duration>,
    /// ... and not later than this.
    #[serde(default = "default_dns_max")]
    pub max_refresh: Spanned<Duration>,
    /// The most addresses one name becomes endpoints for; the rest of an answer
    /// (lowest addresses first) is left out and logged once.
    #[serde(default = "default_dns_max_addresses")]
    pub max_addresses: Spanned<usize>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            min_refresh: default_dns_min(),
            max_refresh: default_dns_max(),
            max_addresses: default_dns_max_addresses(),
        }
    }
}

fn default_dns_min() -> Spanned<Duration> {
    unwritten(Duration(std::time::Duration::from_secs(1)))
}

fn default_dns_max_addresses() -> Spanned<usize> {
    unwritten(64)
}

fn default_dns_max() -> Spanned<Duration> {
    unwritten(Duration(std::time::Duration::from_secs(300)))
}

/// A listener: an address, optional TLS, limits, and a filter chain.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// `ip:port`; port 0 picks a free one.
    pub address: Spanned<String>,
    /// Serve TLS (HTTP/2 and HTTP/1.1 offered by ALPN): one certificate, several
    /// chosen by SNI, or the workload identity for mutual TLS (`mode: mesh`).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// The cluster requests go to when no filter routes them.
    #[serde(default)]
    pub default_cluster: Option<Spanned<String>>,
    /// Protection limits.
    #[serde(default)]
    pub limits: Limits,
    /// Normalise request paths before filters and the upstream see them: decode
    /// escaped unreserved characters, remove dot segments, merge slashes.
    #[serde(default = "yes")]
    pub normalize_path: bool,
    /// Accept `CONNECT host:port`: after the chain, the proxy opens a TCP connection
    /// to an endpoint of the cluster the request is routed to (never to the host the
    /// client named), answers 200 and joins the two. Refused with 501 otherwise.
    #[serde(default)]
    pub allow_connect: bool,
    /// The protocols a client may switch to with `Connection: upgrade` (HTTP/1.1),
    /// matched by name without version and case. A request that asks for another has
    /// its `Upgrade` removed and is served as a plain request. `h2c` is refused: the
    /// proxy serves HTTP/2 cleartext itself, and a tunnel would carry requests past
    /// every filter.
    /// Default: `[websocket]`.
    #[serde(default)]
    pub upgrades: Option<Spanned<Vec<String>>>,
    /// The peers on this listener are other mesh proxies: what a proxy says of its
    /// caller (`x-weft-source-workload`) reaches filters. On other listeners that
    /// header is removed from every request, as `x-weft-attempt` is everywhere.
    #[serde(default)]
    pub mesh_internal: bool,
    /// The filter chain, in order.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Serve connections `weft init` redirected here (iptables `REDIRECT`), routed by
    /// their original destination; none: an ordinary listener.
    #[serde(default)]
    pub capture: Option<CaptureConfig>,
}

/// A listener for captured traffic: the workload's connections, redirected by the
/// rules `weft init` installs, each served by where it was going.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// `outbound`: the workload's calls, routed to the mesh cluster that owns their
    /// original destination; `inbound`: calls to the workload, sent to its
    /// application at `127.0.0.1:<original port>`.
    pub direction: Spanned<CaptureDirection>,
    /// What happens to a connection that cannot go through the filter chain:
    /// outbound, one to an address outside the mesh, or one that does not speak
    /// HTTP; inbound, one that speaks neither HTTP nor (on a mesh listener) TLS.
    /// `allow` joins it as TCP to its original destination, `refuse` closes it (with
    /// a 502 when it spoke HTTP). Default: `allow` outbound, `refuse` inbound (a
    /// TCP passthrough would carry a caller past the inbound filters).
    #[serde(default)]
    pub passthrough: Option<Passthrough>,
    /// Outbound: addresses that are not any cluster's endpoint but belong to one (a
    /// Kubernetes Service's cluster IP, a virtual IP).
    #[serde(default)]
    pub services: Vec<Spanned<CaptureService>>,
    /// Time to connect to a passthrough destination.
    #[serde(default = "default_passthrough_connect")]
    pub connect_timeout: Duration,
}

fn default_passthrough_connect() -> Duration {
    Duration(std::time::Duration::from_secs(2))
}

impl CaptureConfig {
    /// Whether connections that cannot go through the filter chain are joined as TCP.
    pub fn allows_passthrough(&self) -> bool {
        match self.passthrough {
            Some(p) => p == Passthrough::Allow,
            None => self.direction.value == CaptureDirection::Outbound,
        }
    }
}

/// Which side of the workload a capture listener serves.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CaptureDirection {
    /// The workload's own calls (iptables `OUTPUT`).
    Outbound,
    /// Calls to the workload (iptables `PREROUTING`).
    Inbound,
}

/// What a capture listener does with what its filter chain cannot serve.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Passthrough {
    /// Join it as TCP to its original destination.
    Allow,
    /// Close it, with a 502 when it spoke HTTP, and count it.
    Refuse,
}

/// An address that belongs to a cluster without being one of its endpoints.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureService {
    /// `ip:port`, as the workload dials it.
    pub address: String,
    /// The cluster connections to it go to.
    pub cluster: String,
}

fn yes() -> bool {
    true
}

impl ListenerConfig {
    /// The protocols clients may upgrade to, lower-cased: `upgrades`, or WebSocket.
    pub fn upgrade_protocols(&self) -> Vec<String> {
        match &self.upgrades {
            Some(list) => list.value.iter().map(|p| p.to_ascii_lowercase()).collect(),
            None => vec!["websocket".to_owned()],
        }
    }
}

/// Limits that protect a listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A client must send its whole request head within this time.
    pub header_read_timeout: Duration,
    /// The upstream must answer (response head) within this time; 504 after.
    pub request_timeout: Duration,
    /// Largest request head; larger gets 431.
    pub max_header_size: Size,
    /// Largest body a filter may ask to buffer; larger gets 413.
    pub max_body_size: Size,
    /// Connections that move no byte and have no request in flight for this long
    /// are closed.
    pub idle_timeout: Duration,
    /// Most connections open at once; the listener closes new ones past it.
    pub max_connections: usize,
    /// An HTTP/2 connection whose client cancels this many streams after the proxy
    /// took them, and at least half of all its streams, is closed (GOAWAY).
    pub max_premature_resets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration(std::time::Duration::from_secs(10)),
            request_timeout: Duration(std::time::Duration::from_secs(30)),
            max_header_size: Size(16 * 1024),
            max_body_size: Size(1024 * 1024),
            idle_timeout: Duration(std::time::Duration::from_secs(300)),
            max_connections: 10_000,
            max_premature_resets: 100,
        }
    }
}

/// What happens to a request when its filter fails (traps, panics, runs past its
/// deadline or its memory limit).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Answer 503 naming the filter. The broken instance is replaced for later
    /// requests.
    #[default]
    FailClosed,
    /// Skip the filter for this request, as if it had said continue.
    FailOpen,
    /// Run the hook again on a fresh instance; if that fails too, answer 503.
    Reload,
}

/// One filter of a chain.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name in this chain, used in logs, errors and metrics.
    pub name: Spanned<String>,
    /// `builtin:NAME`, a path to a `.wasm` component (relative to this file), or in a
    /// mesh config `filter:NAME` for a filter pushed to the config server.
    pub module: Spanned<String>,
    /// Expected sha256 of the module, hex; loading fails when it differs.
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    /// What a failure of this filter does to the request.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// CPU deadline of one hook call.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Duration,
    /// Memory limit of one instance.
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// The filter's own configuration, handed to it as JSON.
    #[serde(default)]
    pub config: Option<Spanned<crate::FilterSettings>>,
    /// How the metrics the filter defines are named and bounded.
    #[serde(default)]
    pub metrics: FilterMetricsConfig,
    /// Whether a reload keeps the filter's shared state.
    #[serde(default)]
    pub state: StatePolicy,
}

/// What a reload does to a filter's shared state (its `state-*` keys). A filter is
/// the same filter across reloads when its listener and its name stay: its position
/// in the chain, its configuration and its module may change.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StatePolicy {
    /// The filter goes on with the keys it had: counters, rate-limit buckets and
    /// caches outlive a change of configuration or module.
    #[default]
    Keep,
    /// Every load starts with no keys, as the first one did.
    Reset,
}

/// How a filter's own metrics are named and bounded.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterMetricsConfig {
    /// Put before each metric name the filter defines (`istio_` gives the telemetry
    /// filter Istio's names).
    #[serde(default = "default_metric_prefix")]
    pub prefix: String,
    /// Most label sets one metric holds; updates past it are dropped and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// A label set not updated for this long leaves `/metrics`.
    #[serde(default = "default_expire_after")]
    pub expire_after: Duration,
}

impl Default for FilterMetricsConfig {
    fn default() -> Self {
        Self {
            prefix: default_metric_prefix(),
            max_series: default_max_series(),
            expire_after: default_expire_after(),
        }
    }
}

fn default_metric_prefix() -> String {
    "weft_filter_".to_owned()
}

fn default_max_series() -> usize {
    2_000
}

fn default_expire_after() -> Duration {
    Duration(std::time::Duration::from_secs(600))
}

fn default_hook_timeout() -> Duration {
    Duration(std::time::Duration::from_millis(20))
}

fn default_memory() -> Size {
    Size(16 * 1024 * 1024)
}

/// An upstream cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name; filters route by it.
    pub name: Spanned<String>,
    /// Each endpoint: `host:port`, `{ address: host:port, weight: N }`, or
    /// `{ dns: name:port, weight: N }` for every address the name resolves to.
    pub endpoints: Vec<Spanned<EndpointConfig>>,
    /// How an attempt picks its endpoint.
    #[serde(default)]
    pub balancer: Balancer,
    /// Accept link-local endpoints (`169.254.0.0/16`, `fe80::/10`), where cloud
    /// metadata services live; refused otherwise, written or resolved.
    #[serde(default)]
    pub allow_link_local: bool,
    /// Circuit-breaking limits.
    #[serde(default)]
    pub limits: ClusterLimits,
    /// Passive outlier detection: endpoints that keep failing are ejected for a while.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Active HTTP health checks; none when omitted.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// Time to establish a connection; 503 after.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Pooled connections idle longer than this are closed.
    #[serde(default = "default_pool_idle")]
    pub idle_timeout: Duration,
    /// Most idle pooled connections kept per endpoint.
    #[serde(default = "default_pool_max_idle")]
    pub max_idle_per_endpoint: usize,
}

/// An endpoint of a cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "host:port, { address: host:port, weight: N } or { dns: name:port, weight: N }"
)]
pub enum EndpointConfig {
    /// `host:port`, weight 1.
    Address(String),
    /// `{ address: host:port, weight: N }`.
    Weighted(WeightedEndpoint),
    /// `{ dns: name:port, weight: N }`.
    Dns(DnsEndpoint),
}

/// A DNS name followed on its TTL: each address it resolves to is an endpoint
/// (with this port and weight), and the set follows the name's records.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsEndpoint {
    /// `name:port`.
    pub dns: String,
    /// The weight of each address.
    #[serde(default = "one")]
    pub weight: u32,
}

/// An endpoint with a weight.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    /// `host:port`.
    pub address: String,
    /// Its share of requests relative to the others (1 to 1000).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl EndpointConfig {
    /// `host:port` (`name:port` for a DNS endpoint).
    pub fn address(&self) -> &str {
        match self {
            Self::Address(a) => a,
            Self::Weighted(w) => &w.address,
            Self::Dns(d) => &d.dns,
        }
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        match self {
            Self::Address(_) => 1,
            Self::Weighted(w) => w.weight,
            Self::Dns(d) => d.weight,
        }
    }

    /// Whether this names a DNS name to follow rather than one endpoint.
    pub fn is_dns(&self) -> bool {
        matches!(self, Self::Dns(_))
    }
}

/// How an attempt picks its endpoint among the healthy ones.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balancer {
    /// Each in turn, as often as its weight says.
    RoundRobin,
    /// Two at random (by weight), the one with fewer requests in flight.
    LeastRequest,
    /// Two at random (by weight), the one with the lower latency estimate (a moving
    /// average that jumps to a slower sample at once) times its requests in flight.
    #[default]
    PeakEwma,
}

/// Circuit-breaking limits of a cluster: past one, a request is answered 503 at once
/// with `x-weft-overflow` naming the limit.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterLimits {
    /// Requests in flight to the cluster.
    pub max_requests: usize,
    /// Requests waiting for a new connection.
    pub max_pending: usize,
    /// Connections open to the cluster's endpoints.
    pub max_connections: usize,
}

impl Default for ClusterLimits {
    fn default() -> Self {
        Self {
            max_requests: 1024,
            max_pending: 1024,
            max_connections: 1024,
        }
    }
}

/// Passive outlier detection.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row (5xx, connect failure, reset, timeout) that eject an
    /// endpoint; 0 turns detection off.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one lasts this much longer.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// Never eject more than this share of the cluster's endpoints.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration(std::time::Duration::from_secs(30)),
            max_ejection: Duration(std::time::Duration::from_secs(300)),
            max_ejection_percent: 50,
        }
    }
}

/// Active HTTP health checks of every endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The path to GET; a 2xx answer is healthy.
    pub path: String,
    /// Time between checks of one endpoint.
    #[serde(default = "default_hc_interval")]
    pub interval: Duration,
    /// Time a check may take.
    #[serde(default = "default_hc_timeout")]
    pub timeout: Duration,
    /// Failed checks in a row that take an endpoint out.
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
}

fn default_hc_interval() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

fn default_hc_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

fn default_unhealthy() -> u32 {
    3
}

fn default_healthy() -> u32 {
    2
}

fn default_connect_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(2))
}

fn default_pool_idle() -> Duration {
    Duration(std::time::Duration::from_secs(90))
}

fn default_pool_max_idle() -> usize {
    256
}

/// How a cluster is spoken to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) in clear text, ALPN `h2` with TLS.
    Http2,
    /// With TLS, whatever ALPN agrees (h2 preferred); in clear text, HTTP/1.1.
    Auto,
}
