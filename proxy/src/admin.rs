//! The admin listener: `/ready` and `/live` for orchestrators, `/metrics` for
//! Prometheus, `/listeners` for tools that need the addresses listeners got, and the
//! JSON views of what is in force: `/config`, `/filters`, `/clusters`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::Duration;

use hyper::service::service_fn;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Bound;
use crate::body::ProxyBody;
use crate::conn::{ConnLimits, ConnSettings, ConnWatch, Watched, http_builder};
use crate::listener::{accept_loop, drive};
use crate::state::ListenerState;

pub(crate) struct Admin {
    pub(crate) ready: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) listeners: Arc<Mutex<Vec<Bound>>>,
    /// The config server's snapshot version in force; 0 for a file's config.
    pub(crate) version: Arc<AtomicU64>,
    /// The address the admin listener is bound to, and the host names it answers
    /// besides IP addresses and `localhost` when that is a loopback address.
    pub(crate) bound: std::net::IpAddr,
    pub(crate) allow_hosts: Vec<String>,
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    text(StatusCode::OK, format!("{value:#}\n"), "application/json")
}

fn policy(p: weft_engine::FailurePolicy) -> &'static str {
    match p {
        weft_engine::FailurePolicy::FailClosed => "fail-closed",
        weft_engine::FailurePolicy::FailOpen => "fail-open",
        weft_engine::FailurePolicy::Reload => "reload",
    }
}

impl Admin {
    /// The listeners in force, each with its state.
    fn states(&self) -> Vec<(String, std::net::SocketAddr, Arc<ListenerState>)> {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners
            .iter()
            .map(|l| (l.name.clone(), l.addr, l.state.load_full()))
            .collect()
    }

    /// `/config`: the configuration in force, with each filter's module digest.
    fn config(&self) -> serde_json::Value {
        let states = self.states();
        let version = self.version.load(Ordering::Acquire);
        let listeners: Vec<_> = states
            .iter()
            .map(|(name, addr, state)| {
                let filters: Vec<_> = (state.chain.filters().iter())
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name(),
                            "source": f.source(),
                            "sha256": f.sha256(),
                            "policy": policy(f.policy()),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": name,
                    "address": addr.to_string(),
                    "filters": filters,
                    "default_cluster": state.default_cluster.as_ref().map(|c| c.name()),
                    "request_timeout_ms": state.request_timeout.as_millis() as u64,
                    "allow_connect": state.allow_connect,
                })
            })
            .collect();
        let mut clusters: Vec<&str> = (states.first())
            .map(|(_, _, s)| s.clusters.keys().map(String::as_str).collect())
            .unwrap_or_default();
        clusters.sort_unstable();
        serde_json::json!({
            "version": (version > 0).then_some(version),
            "listeners": listeners,
            "clusters": clusters,
        })
    }

    /// `/filters`: each loaded filter, its module and what its hooks cost.
    fn filters(&self) -> serde_json::Value {
        let mut filters = Vec::new();
        for (listener, _, state) in self.states() {
            for f in state.chain.filters() {
                let stats = f.stats();
                filters.push(serde_json::json!({
                    "listener": listener,
                    "name": f.name(),
                    "source": f.source(),
                    "sha256": f.sha256(),
                    "policy": policy(f.policy()),
                    "instances": stats.instances,
                    "hooks": stats.hooks,
                }));
            }
        }
        serde_json::json!({ "filters": filters })
    }

    /// `/clusters`: each cluster's endpoints with health, load and latency.
    fn clusters(&self) -> serde_json::Value {
        let states = self.states();
        let mut clusters: Vec<_> = (states.first())
            .map(|(_, _, s)| s.clusters.values().map(|c| c.report()).collect())
            .unwrap_or_default();
        clusters.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        serde_json::json!({ "clusters": clusters })
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// Whether the scraper accepts OpenMetrics (Prometheus asks for it first); others get
/// the Prometheus text format, which every tool reads.
fn wants_openmetrics(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut params = t.split(';').map(str::trim);
            params
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case("application/openmetrics-text"))
                && params.all(|p| p.replace(' ', "") != "q=0")
        })
}

/// OpenMetrics text as the Prometheus text format (0.0.4): a counter family `x` is
/// named `x_total` there, as its samples are; `# UNIT` and `# EOF` do not exist, nor
/// `_created` samples; help text escapes only backslash and newline.
fn prometheus_text(open: &str) -> String {
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 8 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                if prefix == "# HELP " {
                    out.push_str(&tail.replace("\\\"", "\""));
                } else {
                    out.push_str(tail);
                }
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if name
                    .strip_suffix("_created")
                    .is_some_and(|family| counters.contains(&family))
                {
                    continue;
                }
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

fn handle(admin: &Admin, req: &Request<Incoming>) -> Response<ProxyBody> {
    if !host_allowed(admin, req) {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown host: the admin listener answers IP addresses, localhost and \
             admin.allow_hosts\n"
                .into(),
            "text/plain",
        );
    }
    // Views only: nothing here changes when asked to.
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return method_not_allowed();
    }
    match req.uri().path() {
        "/ready" => ready(admin),
        "/live" => text(StatusCode::OK, "live\n".into(), "text/plain"),
        "/config" => json(&admin.config()),
        "/filters" => json(&admin.filters()),
        "/clusters" => json(&admin.clusters()),
        "/metrics" => metrics(admin, req.headers()),
        "/listeners" => listeners(admin),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /ready, /live, /metrics, /listeners, /config, /filters or /clusters\n".into(),
            "text/plain",
        ),
    }
}

/// A page in a browser on this machine may reach a loopback port through a name it
/// controls (DNS rebinding): answer only hosts that cannot be rebound.
fn host_allowed(admin: &Admin, req: &Request<Incoming>) -> bool {
    let host = req.uri().host().or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    weft_config::host_allowed(admin.bound, host, &admin.allow_hosts)
}

fn method_not_allowed() -> Response<ProxyBody> {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "the admin views answer GET and HEAD\n".into(),
        "text/plain",
    );
    resp.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD"),
    );
    resp
}

/// `/ready`: 503 until the proxy is said to be ready, and again while it drains, so
/// balancers send it nothing then.
fn ready(admin: &Admin) -> Response<ProxyBody> {
    if admin.ready.load(Ordering::Acquire) {
        text(StatusCode::OK, "ready\n".into(), "text/plain")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".into(),
            "text/plain",
        )
    }
}

/// `/metrics`, in the format the scraper reads.
fn metrics(admin: &Admin, headers: &http::HeaderMap) -> Response<ProxyBody> {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &admin.registry) {
        Ok(()) if wants_openmetrics(headers) => text(
            StatusCode::OK,
            out,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Ok(()) => text(
            StatusCode::OK,
            prometheus_text(&out),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}\n"),
            "text/plain",
        ),
    }
}

/// `/listeners`: each listener's bound address, on one line.
fn listeners(admin: &Admin) -> Response<ProxyBody> {
    let listeners = admin
        .listeners
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let map: serde_json::Map<String, serde_json::Value> = listeners
        .iter()
        .map(|l| (l.name.clone(), l.addr.to_string().into()))
        .collect();
    text(
        StatusCode::OK,
        format!("{}\n", serde_json::Value::Object(map)),
        "application/json",
    )
}

/// The admin listener's limits: it answers small requests from orchestrators and
/// scrapers, so it needs few connections and no patience.
const LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    max_premature_resets: 100,
    max_connections: 64,
};

pub(crate) async fn run(listener: TcpListener, admin: Arc<Admin>, stop: watch::Receiver<bool>) {
    let builder = Arc::new(http_builder(&ConnSettings {
        max_header_size: 16 * 1024,
        limits: LIMITS,
    }));
    accept_loop(
        "admin",
        listener,
        || LIMITS.max_connections,
        stop,
        Duration::from_secs(1),
        Arc::default(),
        move |stream, _, mut stop| {
            let admin = admin.clone();
            let builder = builder.clone();
            async move {
                let svc = service_fn(move |req| {
                    let resp = handle(&admin, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let watch = Arc::new(ConnWatch::new(LIMITS.max_premature_resets));
                let io = Watched::new(stream, watch.clone());
                let _ = drive(io, &builder, svc, &LIMITS, &watch, &mut stop).await;
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                    a_requests_total{x=\"1\"} 3\na_requests_created{x=\"1\"} 1.7e9\n\
                    # HELP b Help with \\\"quotes\\\".\n# TYPE b gauge\n# UNIT b seconds\n\
                    b 1\n# EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total{x=\"1\"} 3\n# HELP b Help with \"quotes\".\n# TYPE b gauge\nb 1\n"
        );
    }

    #[test]
    fn openmetrics_only_to_those_who_ask() {
        let accept = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::ACCEPT, v.parse().unwrap());
            wants_openmetrics(&h)
        };
        assert!(accept(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
        ));
        assert!(accept(
            "text/plain, Application/OpenMetrics-Text; version=1.0.0"
        ));
        assert!(!accept("application/openmetrics-text; q=0"));
        assert!(!accept("text/plain;version=0.0.4"));
        assert!(!accept("*/*"));
        assert!(!wants_openmetrics(&http::HeaderMap::new()));
    }
}
