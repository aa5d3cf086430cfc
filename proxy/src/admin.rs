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
use crate::listener::{
    ConnLimits, ConnSettings, ConnWatch, Watched, accept_loop, drive, http_builder,
};
use crate::service::ListenerState;

pub(crate) struct Admin {
    pub(crate) ready: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) listeners: Arc<Mutex<Vec<Bound>>>,
    /// The config server's snapshot version in force; 0 for a file's config.
    pub(crate) version: Arc<AtomicU64>,
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

fn handle(admin: &Admin, req: &Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/ready" if admin.ready.load(Ordering::Acquire) => {
            text(StatusCode::OK, "ready\n".into(), "text/plain")
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".into(),
            "text/plain",
        ),
        "/live" => text(StatusCode::OK, "live\n".into(), "text/plain"),
        "/config" => json(&admin.config()),
        "/filters" => json(&admin.filters()),
        "/clusters" => json(&admin.clusters()),
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &admin.registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    out,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}\n"),
                    "text/plain",
                ),
            }
        }
        "/listeners" => {
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
        _ => text(
            StatusCode::NOT_FOUND,
            "try /ready, /live, /metrics, /listeners, /config, /filters or /clusters\n".into(),
            "text/plain",
        ),
    }
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
