//! Test support for Weft's end-to-end tests: real backends, real proxies and real
//! clients on loopback, built so a test reads like a story:
//!
//! ```no_run
//! # async fn t() {
//! use weft_tests::*;
//! let web = backend("web").start().await;
//! let proxy = proxy(&format!("listeners: [...] # {}", web.addr)).start().await;
//! let resp = client().get(proxy.addr, "/").await;
//! assert_eq!(resp.header("x-backend"), Some("web"));
//! # }
//! ```
//!
//! What is not about Weft (the time limit, processes, ports, waits, temporary
//! folders) comes from `weft-testkit`, re-exported here, so every harness of the
//! workspace waits and cleans up alike.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use weft_testkit::*;

/// Mutual TLS: a mesh CA, a recording relay, TLS clients.
pub mod mesh;

/// A config server, its HTTP API and the sidecars it feeds.
pub mod control;

/// Paths of the guest components built for the tests.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Debian's `promtool`: one on the PATH, or the one `./dev test` unpacks from the
/// `prometheus` package into `target/tools` (unpacked, not installed: no service
/// starts).
pub fn promtool() -> std::path::PathBuf {
    let unpacked =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!("promtool not found: `./dev test` fetches it from Debian's prometheus package")
    })
}

/// Start describing a backend.
pub fn backend(name: &'static str) -> BackendBuilder {
    BackendBuilder {
        name,
        http2_only: false,
        tls: None,
        fail_first: (0, 200),
        slow_first: (0, 0),
        bind: ANY_PORT.into(),
    }
}

/// A backend to be started.
pub struct BackendBuilder {
    name: &'static str,
    http2_only: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    fail_first: (usize, u16),
    slow_first: (usize, u64),
    bind: String,
}

/// A running backend. It answers every request (after `x-delay-ms` milliseconds when
/// the request has that header, with the status and delay its builder gave the first
/// requests, else 200) with:
/// - `x-backend`: its name; `x-path`: path and query; `x-host`: the host header (or
///   the URI authority); `x-version`: the HTTP version;
/// - `x-echo-NAME` for every request header `x-NAME`, values joined by `,`, and
///   likewise for `traceparent`, `tracestate` and `b3`;
/// - the request body as its body, or its name and a newline when that is empty.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl BackendBuilder {
    /// Speak only HTTP/2 (prior knowledge, or h2 by ALPN with TLS).
    pub fn http2_only(mut self) -> Self {
        self.http2_only = true;
        self
    }

    /// Serve TLS with this config.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Answer the first `n` requests with `status` (usize::MAX: every request).
    pub fn fail_first(mut self, n: usize, status: u16) -> Self {
        self.fail_first = (n, status);
        self
    }

    /// Hold the first `n` requests `ms` milliseconds before answering.
    pub fn slow_first(mut self, n: usize, ms: u64) -> Self {
        self.slow_first = (n, ms);
        self
    }

    /// Listen at `addr` (a loopback `ip:port`) instead of 127.0.0.1 on a free port:
    /// several backends on one port, each its own address, as DNS names them.
    pub fn bind(mut self, addr: &str) -> Self {
        self.bind = addr.to_owned();
        self
    }

    /// Bind (127.0.0.1 on a free port unless told otherwise) and serve.
    pub async fn start(self) -> Backend {
        let listener = TcpListener::bind(&self.bind)
            .await
            .unwrap_or_else(|e| panic!("bind backend at {}: {e}", self.bind));
        let addr = listener.local_addr().expect("backend address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let (name, h2, tls) = (self.name, self.http2_only, self.tls);
        let (fail_first, slow_first) = (self.fail_first, self.slow_first);
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let (conns, reqs, seen) = (connections.clone(), requests.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = stop_rx.changed() => return,
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let reqs = reqs.clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let n = reqs.fetch_add(1, Ordering::Relaxed);
                        seen.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(req.uri().path().to_owned());
                        let status = if n < fail_first.0 { fail_first.1 } else { 200 };
                        let delay = if n < slow_first.0 { slow_first.1 } else { 0 };
                        answer(name, req, status, delay)
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    if h2 {
                        builder = builder.http2_only();
                    }
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            connections,
            requests,
            paths,
            stop,
        }
    }
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
    status: u16,
    delay_ms: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    if let Some(ms) = parts
        .headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut resp = Response::builder()
        .status(status)
        .header("x-backend", name)
        .header(
            "x-path",
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        )
        .header("x-host", host)
        .header("x-version", format!("{:?}", parts.version));
    let mut names: Vec<_> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-"))
        .collect();
    names.dedup();
    // Trace context, as the backend got it: every value, joined by `,`.
    for n in ["traceparent", "tracestate", "b3"] {
        let values: Vec<_> = (parts.headers.get_all(n).iter())
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            resp = resp.header(format!("x-echo-{n}"), values.join(","));
        }
    }
    for n in names {
        let joined: Vec<_> = parts
            .headers
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        resp = resp.header(format!("x-echo-{}", &n.as_str()[2..]), joined.join(","));
    }
    let body = if body.is_empty() {
        Bytes::from(format!("{name}\n"))
    } else {
        body
    };
    Ok(resp.body(Full::new(body)).expect("valid response"))
}

impl Backend {
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The path of every request so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// YAML for the most common proxy of these tests: one listener `main` on a free port,
/// whose requests go to the cluster `web` (this backend) unless a filter routes them,
/// through `filters`: YAML list items indented by six spaces.
pub fn chain(web: &Backend, filters: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n    \
         filters:\n{filters}\nclusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
        web.addr
    )
}

/// Start describing a proxy from YAML.
pub fn proxy(yaml: &str) -> ProxyBuilder {
    ProxyBuilder {
        yaml: yaml.to_owned(),
    }
}

/// A proxy to be started.
pub struct ProxyBuilder {
    yaml: String,
}

/// A running proxy, shut down when dropped.
pub struct Proxy {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// The running proxy.
    pub running: Option<weft_proxy::RunningProxy>,
}

impl ProxyBuilder {
    /// Parse, validate and start; panics with the error.
    pub async fn start(self) -> Proxy {
        match self.try_start().await {
            Ok(p) => p,
            Err(e) => panic!("proxy did not start: {e}"),
        }
    }

    /// Parse, validate and start.
    pub async fn try_start(self) -> Result<Proxy, String> {
        let config = weft_config::Config::from_str(&self.yaml, "test.yaml", None)
            .map_err(|e| e.to_string())?;
        let running = weft_proxy::start(config).await.map_err(|e| e.to_string())?;
        let addr = running.listeners().first().expect("a listener").1;
        Ok(Proxy {
            addr,
            running: Some(running),
        })
    }
}

impl Proxy {
    /// The running proxy.
    pub fn running(&self) -> &weft_proxy::RunningProxy {
        self.running.as_ref().expect("running")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(p) = self.running.take() {
            tokio::spawn(async move { p.shutdown_within(Duration::from_secs(5)).await });
        }
    }
}

/// Check a configuration as the proxy would at start; the error text.
pub fn config_error(yaml: &str) -> String {
    let config = match weft_config::Config::from_str(yaml, "test.yaml", None) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    match weft_proxy::check(&config) {
        Ok(_) => panic!("expected the configuration to be refused:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// HTTP version.
    pub version: http::Version,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client with a keep-alive pool.
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

/// An HTTP/1.1 client.
pub fn client() -> Client {
    Client {
        inner: HyperClient::builder(TokioExecutor::new()).build_http(),
    }
}

/// An HTTP/2 client speaking prior knowledge (h2c).
pub fn h2c_client() -> Client {
    Client {
        inner: HyperClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
    }
}

impl Client {
    /// GET a path.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Reply {
        self.send(addr, "GET", path, &[], Bytes::new()).await
    }

    /// GET a path with headers.
    pub async fn get_with(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(addr, "GET", path, headers, Bytes::new()).await
    }

    /// Send a request and read the whole response; panics on a transport error.
    pub async fn send(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("valid request");
        let resp = within(self.inner.request(req)).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        }
    }
}

/// Log lines captured from every test of this process.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }

    /// The log lines of the error a proxy answered `reply` with, found by its error
    /// id; panics when the reply has none.
    pub fn of_error(&self, reply: &Reply) -> String {
        let id = reply
            .header("x-weft-error-id")
            .unwrap_or_else(|| panic!("no error id in a {} reply: {}", reply.status, reply.text()));
        let needle = format!("error_id={id}");
        self.text()
            .lines()
            .filter(|l| l.contains(&needle))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Capture the process's logs (installed once).
pub fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,weft=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
    .clone()
}

/// A self-signed certificate for `localhost` and 127.0.0.1: `(cert PEM, key PEM)`.
pub fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

/// A TLS server config for a backend with this certificate and key (PEM), offering
/// h2 and http/1.1.
pub fn server_tls(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// An upstream that accepts connections and never answers; it stops when dropped.
pub struct SilentUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentUpstream {
    /// Listen on a port the OS picks.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(ANY_PORT).await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Self { addr, task }
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name (`_bucket`, `_count` ... included).
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parse the samples of a Prometheus text exposition (comments skipped); panics on a
/// line that is not a sample, so a test sees a broken exposition at once.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("not a sample: {line}"),
        };
        let mut labels = std::collections::BTreeMap::new();
        let value_text = if let Some(mut rest) = rest.strip_prefix('{') {
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    break r;
                }
                let eq = rest.find('=').unwrap_or_else(|| panic!("label in {line}"));
                let key = rest[..eq].trim_start_matches(',').to_owned();
                let mut chars = rest[eq + 1..]
                    .strip_prefix('"')
                    .expect("quoted")
                    .char_indices();
                let mut value = String::new();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("escape in {line}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated value in {line}"),
                    }
                };
                labels.insert(key, value);
                rest = rest[eq + 2 + end + 1..].trim_start_matches(',');
            }
        } else {
            rest
        };
        let value = value_text.split_whitespace().next().expect("a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{v} in {line}: {e}")),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// The samples named `name` whose labels include all of `labels`.
pub fn select<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include all of `labels`.
pub fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    select(samples, name, labels).iter().map(|s| s.value).sum()
}

/// Check an exposition with Debian's promtool; panics with its complaint.
pub async fn promtool_check(text: &str) {
    let problems = promtool_problems(text).await;
    assert!(
        problems.is_empty(),
        "promtool check metrics: {problems:?}\n{text}"
    );
}

/// What Debian's promtool finds wrong with an exposition it could parse (its lint,
/// exit 3); panics when it cannot parse it.
pub async fn promtool_problems(text: &str) -> Vec<String> {
    let input = text.as_bytes().to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let mut check = std::process::Command::new(promtool());
        output_with_input(check.args(["check", "metrics"]), &input)
    })
    .await
    .expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(3) => said.lines().map(str::to_owned).collect(),
        _ => panic!("promtool could not parse the exposition: {said}\n{text}"),
    }
}

/// An OTLP/gRPC trace receiver on loopback, as a collector would be: it keeps every
/// span it is sent. Stops when dropped.
pub struct OtlpReceiver {
    /// Its address, for `tracing.collector`.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut spans = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for rs in request.into_inner().resource_spans {
            let service = (rs.resource.iter())
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl OtlpReceiver {
    /// Start one on a free loopback port.
    pub async fn start() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = TcpListener::bind(ANY_PORT).await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let sink = Sink::default();
        let spans = sink.0.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        Self {
            addr,
            spans,
            stop: Some(stop),
        }
    }

    /// Every span received so far, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every span received, once at least `n` came (within [`LIMIT`]).
    pub async fn wait_for(
        &self,
        n: usize,
    ) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        eventually_async(&format!("{n} spans"), async || {
            let spans = self.spans();
            if spans.len() >= n {
                Ok(spans)
            } else {
                Err(format!("{spans:#?}"))
            }
        })
        .await
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
