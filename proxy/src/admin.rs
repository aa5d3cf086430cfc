//! The admin listener: `/ready` for orchestrators, `/metrics` for Prometheus,
//! `/listeners` for tools that need the addresses listeners got.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
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

pub(crate) struct Admin {
    pub(crate) ready: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) listeners: Arc<Mutex<Vec<Bound>>>,
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
            "try /ready, /metrics or /listeners\n".into(),
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
