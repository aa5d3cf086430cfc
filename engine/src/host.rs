//! What a filter instance can reach: the request or response it is lent, and the host
//! services of `weft:filter/host`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{host_api, types};
use crate::metrics::FilterMetrics;
use crate::state::SharedState;
use crate::stderr::TailPipe;

/// Marker for the `request` resource: the host lends one request at a time, kept in
/// [`HostState::request`], so the handle needs no table entry.
pub struct RequestRef;
/// Marker for the `response` resource; see [`RequestRef`].
pub struct ResponseRef;

/// The downstream connection a request came in on. Built once per connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The proxy's address of this connection.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity from the client's certificate, if it sent one.
    pub peer_identity: Option<String>,
    /// The server name from the TLS hello.
    pub sni: Option<String>,
}

/// A request head lent to the filter chain, with its body when a filter asked for it.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, URI, version and headers.
    pub parts: http::request::Parts,
    /// The whole body, when some filter of the chain wants it buffered.
    pub body: Option<Bytes>,
    /// Unique per process.
    pub id: u64,
    /// The downstream connection.
    pub conn: Arc<ConnectionInfo>,
}

/// A response head lent to the filter chain, with its body when a filter asked for it.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers.
    pub parts: http::response::Parts,
    /// The whole body, when some filter of the chain wants it buffered.
    pub body: Option<Bytes>,
    /// The id of the request it answers.
    pub request_id: u64,
}

/// Per-filter things shared by all of its instances.
pub(crate) struct FilterShared {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Arc<FilterMetrics>,
    pub(crate) state: SharedState,
}

/// The data of one instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) stderr: TailPipe,
    pub(crate) shared: Arc<FilterShared>,
    pub(crate) request: Option<Box<RequestHead>>,
    pub(crate) response: Option<Box<ResponseHead>>,
    /// Whether the filter running now may touch the buffered request/response body.
    pub(crate) body_access: bool,
    rng: fastrand::Rng,
    epoch: Instant,
}

impl HostState {
    pub(crate) fn new(shared: Arc<FilterShared>, memory_limit: usize, epoch: Instant) -> Self {
        let stderr = TailPipe::default();
        // No preopened directories, no environment, no arguments, no sockets: a filter
        // sees the request and the host services, nothing of the machine.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .trap_on_grow_failure(true)
            .instances(64)
            .tables(64)
            .memories(8)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            shared,
            request: None,
            response: None,
            body_access: false,
            rng: fastrand::Rng::new(),
            epoch,
        }
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn req(&mut self) -> Option<&mut RequestHead> {
        self.request.as_deref_mut()
    }

    fn resp(&mut self) -> Option<&mut ResponseHead> {
        self.response.as_deref_mut()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Headers the proxy owns: hop-by-hop ones, and framing it computes itself.
/// Headers a filter may not touch through the header calls: the proxy frames messages
/// itself, and the request's target has one home (`set-authority`), so that what
/// filters decided on is what the upstream gets.
fn is_forbidden(name: &HeaderName) -> bool {
    use http::header::*;
    name == HOST
        || name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == TE
        || name == CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), types::HeaderError> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| types::HeaderError::InvalidName)?;
    if is_forbidden(&name) {
        return Err(types::HeaderError::Forbidden);
    }
    let value = HeaderValue::from_str(value).map_err(|_| types::HeaderError::InvalidValue)?;
    Ok((name, value))
}

fn get_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn all_headers(headers: &HeaderMap) -> Vec<types::Header> {
    headers
        .iter()
        .map(|(name, value)| types::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

fn set_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), types::HeaderError> {
    let (name, value) = header_pair(name, value)?;
    headers.insert(name, value);
    Ok(())
}

fn add_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), types::HeaderError> {
    let (name, value) = header_pair(name, value)?;
    headers.append(name, value);
    Ok(())
}

fn remove_header(headers: &mut HeaderMap, name: &str) -> bool {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) if !is_forbidden(&name) => headers.remove(name).is_some(),
        _ => false,
    }
}

fn set_body(
    headers: &mut HeaderMap,
    slot: &mut Option<Bytes>,
    access: bool,
    body: Vec<u8>,
) -> Result<(), String> {
    if !access || slot.is_none() {
        return Err("this filter did not ask for the body (interest body-mode buffered)".into());
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *slot = Some(Bytes::from(body));
    Ok(())
}

/// Hooks only ever run with a head in place; a guest that kept a borrowed handle past
/// its hook is misbehaving, and gets empty answers rather than a crash of the host.
const NO_REQUEST: &str = "no request is lent to this filter now";

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestRef>) -> String {
        self.req()
            .map(|r| r.parts.method.as_str().to_owned())
            .unwrap_or_default()
    }

    fn path(&mut self, _: Resource<RequestRef>) -> String {
        self.req()
            .and_then(|r| r.parts.uri.path_and_query().map(|p| p.as_str().to_owned()))
            .unwrap_or_else(|| "/".to_owned())
    }

    fn set_path(&mut self, _: Resource<RequestRef>, path: String) -> Result<(), String> {
        let req = self.req().ok_or(NO_REQUEST)?;
        if !path.starts_with('/') {
            return Err(format!("path must start with '/': {path:?}"));
        }
        let mut uri = std::mem::take(&mut req.parts.uri).into_parts();
        let restore = uri.path_and_query.clone();
        match path.parse() {
            Ok(pq) => {
                uri.path_and_query = Some(pq);
                req.parts.uri = Uri::from_parts(uri).unwrap_or_default();
                Ok(())
            }
            Err(e) => {
                uri.path_and_query = restore;
                req.parts.uri = Uri::from_parts(uri).unwrap_or_default();
                Err(format!("invalid path {path:?}: {e}"))
            }
        }
    }

    fn authority(&mut self, _: Resource<RequestRef>) -> Option<String> {
        let req = self.req()?;
        match req.parts.uri.authority() {
            Some(a) => Some(a.as_str().to_owned()),
            None => get_header(&req.parts.headers, "host"),
        }
    }

    fn set_authority(&mut self, _: Resource<RequestRef>, authority: String) -> Result<(), String> {
        let req = self.req().ok_or(NO_REQUEST)?;
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("invalid authority {authority:?}: {e}"))?;
        let value = HeaderValue::from_str(parsed.as_str()).map_err(|e| e.to_string())?;
        if req.parts.uri.authority().is_some() {
            let mut uri = std::mem::take(&mut req.parts.uri).into_parts();
            uri.authority = Some(parsed);
            req.parts.uri = Uri::from_parts(uri).map_err(|e| e.to_string())?;
        }
        req.parts.headers.insert(http::header::HOST, value);
        Ok(())
    }

    fn header(&mut self, _: Resource<RequestRef>, name: String) -> Option<String> {
        self.req().and_then(|r| get_header(&r.parts.headers, &name))
    }

    fn header_all(&mut self, _: Resource<RequestRef>, name: String) -> Vec<Vec<u8>> {
        self.req()
            .map(|r| {
                r.parts
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<RequestRef>) -> Vec<types::Header> {
        self.req()
            .map(|r| all_headers(&r.parts.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<RequestRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.req() {
            Some(r) => set_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn add_header(
        &mut self,
        _: Resource<RequestRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.req() {
            Some(r) => add_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn remove_header(&mut self, _: Resource<RequestRef>, name: String) -> bool {
        self.req()
            .is_some_and(|r| remove_header(&mut r.parts.headers, &name))
    }

    fn body(&mut self, _: Resource<RequestRef>) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.req().and_then(|r| r.body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<RequestRef>, body: Vec<u8>) -> Result<(), String> {
        let access = self.body_access;
        let req = self.req().ok_or(NO_REQUEST)?;
        set_body(&mut req.parts.headers, &mut req.body, access, body)
    }

    fn id(&mut self, _: Resource<RequestRef>) -> u64 {
        self.req().map_or(0, |r| r.id)
    }

    fn connection(&mut self, _: Resource<RequestRef>) -> types::Connection {
        let Some(req) = self.req() else {
            return types::Connection {
                peer_address: String::new(),
                local_address: String::new(),
                tls: false,
                peer_identity: None,
                sni: None,
                version: types::HttpVersion::Http11,
            };
        };
        let c = &req.conn;
        types::Connection {
            peer_address: c.peer.to_string(),
            local_address: c.local.to_string(),
            tls: c.tls,
            peer_identity: c.peer_identity.clone(),
            sni: c.sni.clone(),
            version: match req.parts.version {
                http::Version::HTTP_10 | http::Version::HTTP_09 => types::HttpVersion::Http10,
                http::Version::HTTP_2 => types::HttpVersion::Http2,
                _ => types::HttpVersion::Http11,
            },
        }
    }

    fn drop(&mut self, _: Resource<RequestRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseRef>) -> u16 {
        self.resp().map_or(0, |r| r.parts.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseRef>, status: u16) -> Result<(), String> {
        let resp = self.resp().ok_or(NO_REQUEST)?;
        resp.parts.status =
            http::StatusCode::from_u16(status).map_err(|_| format!("invalid status {status}"))?;
        Ok(())
    }

    fn header(&mut self, _: Resource<ResponseRef>, name: String) -> Option<String> {
        self.resp()
            .and_then(|r| get_header(&r.parts.headers, &name))
    }

    fn headers(&mut self, _: Resource<ResponseRef>) -> Vec<types::Header> {
        self.resp()
            .map(|r| all_headers(&r.parts.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.resp() {
            Some(r) => set_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn add_header(
        &mut self,
        _: Resource<ResponseRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.resp() {
            Some(r) => add_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn remove_header(&mut self, _: Resource<ResponseRef>, name: String) -> bool {
        self.resp()
            .is_some_and(|r| remove_header(&mut r.parts.headers, &name))
    }

    fn body(&mut self, _: Resource<ResponseRef>) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.resp()
            .and_then(|r| r.body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<ResponseRef>, body: Vec<u8>) -> Result<(), String> {
        let access = self.body_access;
        let resp = self.resp().ok_or(NO_REQUEST)?;
        set_body(&mut resp.parts.headers, &mut resp.body, access, body)
    }

    fn request_id(&mut self, _: Resource<ResponseRef>) -> u64 {
        self.resp().map_or(0, |r| r.request_id)
    }

    fn drop(&mut self, _: Resource<ResponseRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl host_api::Host for HostState {
    fn log(&mut self, level: host_api::Level, message: String) {
        let filter = &*self.shared.name;
        match level {
            host_api::Level::Trace => tracing::trace!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Debug => tracing::debug!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Info => tracing::info!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Warn => tracing::warn!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Error => tracing::error!(target: "weft::filter", filter, "{message}"),
        }
    }

    fn define_metric(
        &mut self,
        kind: host_api::MetricKind,
        name: String,
        help: String,
        labels: Vec<String>,
    ) -> Result<u32, host_api::MetricError> {
        self.shared.metrics.define(kind, &name, &help, labels)
    }

    fn metric_add(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        delta: i64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.add(metric, labels, delta)
    }

    fn metric_set(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        value: i64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.set(metric, labels, value)
    }

    fn metric_observe(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        value: f64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.observe(metric, labels, value)
    }

    fn state_get(&mut self, key: String) -> Option<host_api::Entry> {
        self.shared.state.get(&key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<u64, host_api::StateError> {
        self.shared.state.set(key, value)
    }

    fn state_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<Option<u64>, host_api::StateError> {
        self.shared.state.compare_and_swap(key, expected, value)
    }

    fn state_increment(&mut self, key: String, delta: i64) -> Result<i64, host_api::StateError> {
        self.shared.state.increment(key, delta)
    }

    fn state_delete(&mut self, key: String) -> bool {
        self.shared.state.delete(&key)
    }

    fn monotonic_now(&mut self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_now(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.u64(..)
    }
}
