//! Upstream clusters: endpoints, round-robin choice, and a keep-alive connection pool
//! per cluster speaking HTTP/1.1 or HTTP/2, in clear text or TLS.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use weft_config::{ClusterConfig, UpstreamProtocol};

use crate::body::ProxyBody;
use crate::tls;

enum Pool {
    Plain(Client<HttpConnector, ProxyBody>),
    Tls(Client<HttpsConnector<HttpConnector>, ProxyBody>),
}

/// An upstream cluster.
pub struct Cluster {
    name: String,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
    scheme: Scheme,
    version: http::Version,
    pool: Pool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A failed upstream exchange.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    /// The connection could not be made, so the upstream never saw the request.
    pub(crate) connect: bool,
    pub(crate) endpoint: Authority,
    pub(crate) source: hyper_util::client::legacy::Error,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::error::Error;
        let what = if self.connect {
            "cannot connect to"
        } else {
            "request failed at"
        };
        write!(f, "{what} {}", self.endpoint)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl Cluster {
    /// Build a cluster and its pool; TLS files are read here.
    pub fn new(config: &ClusterConfig) -> Result<Self, tls::TlsError> {
        let endpoints = config
            .endpoints
            .iter()
            .filter_map(|e| e.value.parse::<Authority>().ok())
            .collect();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.0));
        http.enforce_http(config.tls.is_none());
        let h2 = config.protocol == UpstreamProtocol::Http2;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout.0)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            // The proxy sets Host itself, from the client's request or a filter.
            .set_host(false)
            .http2_only(h2);
        let (scheme, pool) = match &config.tls {
            None => (Scheme::HTTP, Pool::Plain(builder.build(http))),
            Some(t) => {
                let tls = tls::client_config(&t.ca.value)?;
                let b = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only();
                let b =
                    match &t.server_name {
                        Some(name) => {
                            let name = rustls::pki_types::ServerName::try_from(name.clone())
                                .map_err(|e| tls::TlsError {
                                    path: t.ca.value.display().to_string(),
                                    message: format!("invalid server_name {name:?}: {e}"),
                                })?;
                            b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                                name,
                            ))
                        }
                        None => b,
                    };
                // ALPN offers what the cluster may speak.
                let connector = match config.protocol {
                    UpstreamProtocol::Http1 => b.enable_http1().wrap_connector(http),
                    UpstreamProtocol::Http2 => b.enable_http2().wrap_connector(http),
                    UpstreamProtocol::Auto => b.enable_all_versions().wrap_connector(http),
                };
                (Scheme::HTTPS, Pool::Tls(builder.build(connector)))
            }
        };
        Ok(Self {
            name: config.name.value.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            scheme,
            version: if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            },
            pool,
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next endpoint, round robin.
    fn pick(&self) -> &Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    /// Send a request to one endpoint of the cluster. The request's URI is rewritten to
    /// that endpoint; its `host` header is kept.
    pub(crate) async fn send(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let endpoint = self.pick().clone();
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(endpoint.clone());
        uri.path_and_query = Some(pq);
        parts.uri = http::Uri::from_parts(uri).expect("scheme, authority and path are set");
        parts.version = self.version;
        let req = http::Request::from_parts(parts, body);
        let result = match &self.pool {
            Pool::Plain(c) => c.request(req).await,
            Pool::Tls(c) => c.request(req).await,
        };
        result.map_err(|source| UpstreamError {
            connect: source.is_connect(),
            endpoint,
            source,
        })
    }
}
