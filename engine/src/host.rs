//! What a filter instance can reach: the exchange it is lent (request, response,
//! context), and the host services of `weft:filter/host`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Uri};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{host_api, types};
use crate::metrics::FilterMetrics;
use crate::state::SharedState;
use crate::stderr::TailPipe;

/// Marker for the `request` resource: the host lends one exchange at a time, kept in
/// [`HostState`], so the handle needs no table entry.
pub struct RequestRef;
/// Marker for the `response` resource; see [`RequestRef`].
pub struct ResponseRef;
/// Marker for the `context` resource; see [`RequestRef`].
pub struct ContextRef;

/// TLS facts of a downstream connection.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The negotiated cipher suite.
    pub cipher: &'static str,
    /// The server name from the TLS hello.
    pub sni: Option<String>,
    /// The protocol ALPN agreed on.
    pub alpn: Option<String>,
    /// The identity from the client's certificate, if it sent one.
    pub peer_identity: Option<String>,
}

/// The downstream connection a request came in on. Built once per connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The proxy's address of this connection.
    pub local: SocketAddr,
    /// TLS facts; none for clear text.
    pub tls: Option<TlsInfo>,
}

/// A request head, with its body when a filter asked for it or it was kept for a
/// retry.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, URI, version and headers.
    pub parts: http::request::Parts,
    /// The whole body, when buffered.
    pub body: Option<Bytes>,
}

/// Why an upstream exchange ended without an upstream response.
pub use types::ExchangeError;

/// A response head, with its body when a filter asked for it.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers.
    pub parts: http::response::Parts,
    /// The whole body, when buffered.
    pub body: Option<Bytes>,
    /// The trailers, when the body had ended by the time hooks ran.
    pub trailers: Option<HeaderMap>,
    /// Set when the proxy made this response because the exchange failed.
    pub error: Option<ExchangeError>,
}

/// Most properties a request may hold.
pub const MAX_PROPERTIES: usize = 32;
/// Most bytes of keys and values a request's properties may hold.
pub const MAX_PROPERTY_BYTES: usize = 4096;
const MAX_PROPERTY_KEY: usize = 64;
const MAX_PROPERTY_VALUE: usize = 1024;
const MAX_ROUTE_NAME: usize = 128;
/// The longest timeout a filter may set.
const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);

/// One request's context: what the proxy knows, what filters set for the upstream
/// exchange, and the properties filters share. Lives from arrival to the end.
#[derive(Debug)]
pub struct RequestContext {
    /// Unique per process.
    pub id: u64,
    /// The downstream connection.
    pub conn: Arc<ConnectionInfo>,
    /// When the request head arrived.
    pub received: Instant,
    /// The current attempt: 0 before the upstream, 1 for the first.
    pub attempt: u32,
    /// The cluster of the current attempt.
    pub cluster: Option<Arc<str>>,
    /// The endpoint of the current attempt.
    pub endpoint: Option<Authority>,
    /// Time the current attempt spent connecting, when it made a connection.
    pub connect_time: Option<Duration>,
    /// Time from sending the current attempt to its response head.
    pub first_byte_time: Option<Duration>,
    /// The route a filter named.
    pub route: Option<String>,
    /// Overall timeout a filter set, replacing the listener's.
    pub timeout: Option<Duration>,
    /// Per-attempt timeout a filter set.
    pub per_try_timeout: Option<Duration>,
    /// The `grpc-status` the client got, once known.
    pub grpc_status: Option<u32>,
    /// What filters decided (`router:route`, `retry:retry`), kept only when the
    /// request is logged.
    pub decisions: Option<Vec<String>>,
    /// A filter set the request's `traceparent`: the trace context going upstream is
    /// one the chain made or validated, not merely what the client sent.
    pub trace_set: bool,
    properties: Vec<(Box<str>, Box<[u8]>)>,
    property_bytes: usize,
}

impl RequestContext {
    /// The context of a request that has just arrived.
    pub fn new(id: u64, conn: Arc<ConnectionInfo>) -> Self {
        Self {
            id,
            conn,
            received: Instant::now(),
            attempt: 0,
            cluster: None,
            endpoint: None,
            connect_time: None,
            first_byte_time: None,
            route: None,
            timeout: None,
            per_try_timeout: None,
            grpc_status: None,
            decisions: None,
            trace_set: false,
            properties: Vec::new(),
            property_bytes: 0,
        }
    }

    /// A property, when set.
    pub fn property(&self, key: &str) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// Set a property, within the limits.
    pub fn set_property(&mut self, key: &str, value: &[u8]) -> Result<(), types::PropertyError> {
        if key.len() > MAX_PROPERTY_KEY || value.len() > MAX_PROPERTY_VALUE {
            return Err(types::PropertyError::TooLarge);
        }
        let old = self.properties.iter().position(|(k, _)| &**k == key);
        let freed = old.map_or(0, |i| self.properties[i].1.len());
        let added = if old.is_some() {
            value.len()
        } else {
            key.len() + value.len()
        };
        if self.property_bytes - freed + added > MAX_PROPERTY_BYTES
            || (old.is_none() && self.properties.len() >= MAX_PROPERTIES)
        {
            return Err(types::PropertyError::Full);
        }
        self.property_bytes = self.property_bytes - freed + added;
        match old {
            Some(i) => self.properties[i].1 = value.into(),
            None => self.properties.push((key.into(), value.into())),
        }
        Ok(())
    }

    /// Remove a property; true if it was there.
    pub fn remove_property(&mut self, key: &str) -> bool {
        match self.properties.iter().position(|(k, _)| &**k == key) {
            Some(i) => {
                let (k, v) = self.properties.swap_remove(i);
                self.property_bytes -= k.len() + v.len();
                true
            }
            None => false,
        }
    }
}

/// Everything the hooks of one request work on, lent to a filter for one call.
#[derive(Debug)]
pub struct Exchange {
    /// The request head (and kept body).
    pub request: RequestHead,
    /// The response, during response hooks.
    pub response: Option<ResponseHead>,
    /// The request's context.
    pub ctx: RequestContext,
}

/// Which hook runs, so the host can refuse what makes no sense in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Response,
    Done,
}

/// Per-filter things shared by all of its instances.
pub(crate) struct FilterShared {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Arc<FilterMetrics>,
    pub(crate) state: SharedState,
    /// Where `export-span` puts spans.
    pub(crate) spans: Arc<crate::SpanQueue>,
    /// What its hooks cost and how they fail.
    pub(crate) stats: crate::stats::HookStats,
    /// The hex sha256 of its module, which `/metrics` and `/filters` show.
    pub(crate) digest: Arc<str>,
    /// The headers the filter named in its interest, parsed once.
    pub(crate) views: OnceLock<HeaderViews>,
}

/// The header names a filter reads through the one-call heads.
#[derive(Debug, Default)]
pub(crate) struct HeaderViews {
    pub(crate) request: Box<[HeaderName]>,
    pub(crate) response: Box<[HeaderName]>,
}

/// A cluster a filter's configuration names, as the filter declared it in `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// The cluster's name.
    pub name: String,
    /// The configuration key that names it, e.g. `routes[2].cluster`.
    pub key: String,
}

/// The most clusters one filter may declare; names and keys are bounded as well.
const MAX_DECLARED: usize = 1024;
const MAX_DECLARED_TEXT: usize = 512;

/// The data of one instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) stderr: TailPipe,
    pub(crate) shared: Arc<FilterShared>,
    pub(crate) exchange: Option<Box<Exchange>>,
    pub(crate) phase: Phase,
    /// Whether the filter running now may touch the buffered request/response body.
    pub(crate) body_access: bool,
    /// The clusters the filter declared while its `init` ran; `None` once it returned.
    pub(crate) declared: Option<Vec<ClusterRef>>,
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
            exchange: None,
            phase: Phase::Request,
            body_access: false,
            declared: Some(Vec::new()),
            rng: fastrand::Rng::new(),
            epoch,
        }
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn request_names(&self) -> &[HeaderName] {
        self.shared.views.get().map_or(&[], |v| &v.request)
    }

    /// The request, for reading.
    fn req(&self) -> Option<&RequestHead> {
        self.exchange.as_deref().map(|e| &e.request)
    }

    /// The request, for changing: only in its own hook, before it went upstream.
    fn req_mut(&mut self) -> Option<&mut RequestHead> {
        if self.phase != Phase::Request {
            return None;
        }
        self.exchange.as_deref_mut().map(|e| &mut e.request)
    }

    fn resp(&mut self) -> Option<&mut ResponseHead> {
        if self.phase != Phase::Response {
            return None;
        }
        self.exchange.as_deref_mut()?.response.as_mut()
    }

    /// Remember that a request hook set the trace context.
    fn note_trace(&mut self, name: &str) {
        if self.phase == Phase::Request
            && name.eq_ignore_ascii_case("traceparent")
            && let Some(ctx) = self.ctx()
        {
            ctx.trace_set = true;
        }
    }

    fn ctx(&mut self) -> Option<&mut RequestContext> {
        self.exchange.as_deref_mut().map(|e| &mut e.ctx)
    }

    fn own_request_head(&self) -> types::RequestHead {
        let mut text = HeadText::default();
        let Some(req) = self.req() else {
            return types::RequestHead {
                method: text.push(b""),
                path: text.push(b"/"),
                authority: None,
                headers: None,
                text: text.0,
            };
        };
        let parts = &req.parts;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = match parts.uri.authority() {
            Some(a) => Some(a.as_str().as_bytes()),
            None => parts.headers.get(http::header::HOST).map(|h| h.as_bytes()),
        };
        let method = parts.method.as_str();
        text.0
            .reserve(method.len() + path.len() + authority.map_or(0, <[u8]>::len));
        types::RequestHead {
            method: text.push(method.as_bytes()),
            path: text.push(path.as_bytes()),
            authority: authority.map(|a| text.push(a)),
            headers: text.selected(&parts.headers, self.request_names()),
            text: text.0,
        }
    }
}

/// The strings of a head, back to back, for one copy into the guest.
#[derive(Default)]
struct HeadText(Vec<u8>);

impl HeadText {
    fn push(&mut self, bytes: &[u8]) -> types::Span {
        // A head is bounded by the listener's header limit, far below 4 GiB.
        let start = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(bytes);
        types::Span {
            start,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        }
    }

    /// The named headers present in `headers`, in the order of the names; none when
    /// there are none (an empty list would still cost a copy into the guest).
    fn selected(
        &mut self,
        headers: &HeaderMap,
        names: &[HeaderName],
    ) -> Option<Vec<types::HeaderSpan>> {
        let mut out = Vec::new();
        if headers.is_empty() {
            return None;
        }
        for name in names {
            for value in headers.get_all(name) {
                out.push(types::HeaderSpan {
                    name: self.push(name.as_str().as_bytes()),
                    value: self.push(value.as_bytes()),
                });
            }
        }
        (!out.is_empty()).then_some(out)
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

fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

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

/// Hooks only ever run with an exchange in place; a guest that kept a borrowed handle
/// past its hook, or changes the request from a response hook, gets refusals rather
/// than a crash of the host.
const NOT_NOW: &str = "the request can be changed only by its request hook";
const NO_RESPONSE: &str = "no response is lent to this filter now";

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn read_head(&mut self, _: Resource<RequestRef>) -> types::RequestHead {
        self.own_request_head()
    }

    fn set_path(&mut self, _: Resource<RequestRef>, path: String) -> Result<(), String> {
        let req = self.req_mut().ok_or(NOT_NOW)?;
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

    fn set_authority(&mut self, _: Resource<RequestRef>, authority: String) -> Result<(), String> {
        let req = self.req_mut().ok_or(NOT_NOW)?;
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
        self.note_trace(&name);
        match self.req_mut() {
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
        self.note_trace(&name);
        match self.req_mut() {
            Some(r) => add_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn remove_header(&mut self, _: Resource<RequestRef>, name: String) -> bool {
        self.req_mut()
            .is_some_and(|r| remove_header(&mut r.parts.headers, &name))
    }

    fn body(&mut self, _: Resource<RequestRef>) -> Option<Vec<u8>> {
        if !self.body_access || self.phase != Phase::Request {
            return None;
        }
        self.req().and_then(|r| r.body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<RequestRef>, body: Vec<u8>) -> Result<(), String> {
        let access = self.body_access;
        let req = self.req_mut().ok_or(NOT_NOW)?;
        set_body(&mut req.parts.headers, &mut req.body, access, body)
    }

    fn drop(&mut self, _: Resource<RequestRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn read_head(&mut self, _: Resource<ResponseRef>) -> types::ResponseHead {
        let names = self.shared.views.get().map(|v| &v.response);
        let attempt = self.exchange.as_deref().map_or(0, |e| e.ctx.attempt);
        let Some(resp) = self.exchange.as_deref().and_then(|e| e.response.as_ref()) else {
            return types::ResponseHead {
                status: 0,
                attempt,
                text: None,
                headers: None,
                trailers: None,
                error: None,
            };
        };
        let names = names.map_or(&[][..], |n| &n[..]);
        let mut text = HeadText::default();
        let headers = text.selected(&resp.parts.headers, names);
        // Known trailers are a list, even an empty one: "none" says they are not known.
        let trailers = resp
            .trailers
            .as_ref()
            .map(|t| text.selected(t, names).unwrap_or_default());
        types::ResponseHead {
            status: resp.parts.status.as_u16(),
            attempt,
            text: (!text.0.is_empty()).then_some(text.0),
            headers,
            trailers,
            error: resp.error,
        }
    }

    fn set_status(&mut self, _: Resource<ResponseRef>, status: u16) -> Result<(), String> {
        let resp = self.resp().ok_or(NO_RESPONSE)?;
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
        let resp = self.resp().ok_or(NO_RESPONSE)?;
        set_body(&mut resp.parts.headers, &mut resp.body, access, body)
    }

    fn drop(&mut self, _: Resource<ResponseRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

fn connection(c: &ConnectionInfo, version: http::Version) -> types::Connection {
    types::Connection {
        peer_address: c.peer.to_string(),
        local_address: c.local.to_string(),
        tls: c.tls.as_ref().map(|t| types::TlsInfo {
            version: t.version.to_owned(),
            cipher: t.cipher.to_owned(),
            sni: t.sni.clone(),
            alpn: t.alpn.clone(),
            peer_identity: t.peer_identity.clone(),
        }),
        version: match version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => types::HttpVersion::Http10,
            http::Version::HTTP_2 => types::HttpVersion::Http2,
            _ => types::HttpVersion::Http11,
        },
    }
}

impl types::HostContext for HostState {
    fn facts(&mut self, _: Resource<ContextRef>) -> types::Facts {
        let Some(ex) = self.exchange.as_deref() else {
            return types::Facts {
                request_id: 0,
                received_at: 0,
                elapsed: 0,
                attempt: 0,
                cluster: None,
                endpoint: None,
                connect_time: None,
                first_byte_time: None,
                route: None,
                connection: types::Connection {
                    peer_address: String::new(),
                    local_address: String::new(),
                    tls: None,
                    version: types::HttpVersion::Http11,
                },
            };
        };
        let ctx = &ex.ctx;
        types::Facts {
            request_id: ctx.id,
            // The wall clock is read when a filter asks, not for every request.
            received_at: wall_now().saturating_sub(nanos(ctx.received.elapsed())),
            elapsed: nanos(ctx.received.elapsed()),
            attempt: ctx.attempt,
            cluster: ctx.cluster.as_deref().map(str::to_owned),
            endpoint: ctx.endpoint.as_ref().map(|a| a.as_str().to_owned()),
            connect_time: ctx.connect_time.map(nanos),
            first_byte_time: ctx.first_byte_time.map(nanos),
            route: ctx.route.clone(),
            connection: connection(&ctx.conn, ex.request.parts.version),
        }
    }

    fn read_request_head(&mut self, _: Resource<ContextRef>) -> types::RequestHead {
        self.own_request_head()
    }

    fn get(&mut self, _: Resource<ContextRef>, key: String) -> Option<Vec<u8>> {
        self.ctx()?.property(&key).map(<[u8]>::to_vec)
    }

    fn set(
        &mut self,
        _: Resource<ContextRef>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), types::PropertyError> {
        match self.ctx() {
            Some(ctx) => ctx.set_property(&key, &value),
            None => Err(types::PropertyError::Full),
        }
    }

    fn remove(&mut self, _: Resource<ContextRef>, key: String) -> bool {
        self.ctx().is_some_and(|c| c.remove_property(&key))
    }

    fn set_route(&mut self, _: Resource<ContextRef>, mut name: String) {
        if let Some(ctx) = self.ctx() {
            if name.len() > MAX_ROUTE_NAME {
                let mut end = MAX_ROUTE_NAME;
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name.truncate(end);
            }
            ctx.route = Some(name);
        }
    }

    fn grpc_status(&mut self, _: Resource<ContextRef>) -> Option<u32> {
        self.exchange.as_ref()?.ctx.grpc_status
    }

    fn configure(
        &mut self,
        _: Resource<ContextRef>,
        setting: types::ExchangeSetting,
    ) -> Result<(), types::SettingError> {
        let Some(ctx) = self.ctx() else {
            return Err(types::SettingError::TooLate);
        };
        // Once the request went upstream, its exchange settings no longer apply.
        if ctx.attempt > 0 {
            return Err(types::SettingError::TooLate);
        }
        let (slot, ns) = match setting {
            types::ExchangeSetting::Timeout(ns) => (&mut ctx.timeout, ns),
            types::ExchangeSetting::PerTryTimeout(ns) => (&mut ctx.per_try_timeout, ns),
        };
        let d = Duration::from_nanos(ns);
        if d.is_zero() || d > MAX_SETTING {
            return Err(types::SettingError::OutOfRange);
        }
        *slot = Some(d);
        Ok(())
    }

    fn drop(&mut self, _: Resource<ContextRef>) -> wasmtime::Result<()> {
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
        self.shared.metrics.define(kind, &name, &help, labels, None)
    }

    fn metric_series(
        &mut self,
        metric: u32,
        labels: Vec<String>,
    ) -> Result<u64, host_api::MetricError> {
        self.shared.metrics.series(metric, labels)
    }

    fn series_add(&mut self, series: u64, delta: i64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_add(series, delta)
    }

    fn series_set(&mut self, series: u64, value: i64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_set(series, value)
    }

    fn series_observe(&mut self, series: u64, value: f64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_observe(series, value)
    }

    fn define_histogram(
        &mut self,
        name: String,
        help: String,
        labels: Vec<String>,
        bounds: Vec<f64>,
    ) -> Result<u32, host_api::MetricError> {
        let kind = host_api::MetricKind::Histogram;
        self.shared
            .metrics
            .define(kind, &name, &help, labels, Some(bounds))
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
        nanos(self.epoch.elapsed())
    }

    fn wall_now(&mut self) -> u64 {
        wall_now()
    }

    fn declare_cluster(&mut self, name: String, key: String) {
        let Some(declared) = self.declared.as_mut() else {
            return;
        };
        if declared.len() < MAX_DECLARED
            && name.len() <= MAX_DECLARED_TEXT
            && key.len() <= MAX_DECLARED_TEXT
            && !declared.iter().any(|d| d.name == name && d.key == key)
        {
            declared.push(ClusterRef { name, key });
        }
    }

    fn spans_exported(&mut self) -> bool {
        self.shared.spans.enabled()
    }

    fn export_span(&mut self, span: host_api::Span) -> bool {
        let valid = span.trace_id != (0, 0) && span.span_id != 0 && span.parent_span_id != Some(0);
        valid && self.shared.spans.push(span)
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.u64(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        let addr = "127.0.0.1:1".parse().unwrap();
        RequestContext::new(
            1,
            Arc::new(ConnectionInfo {
                peer: addr,
                local: addr,
                tls: None,
            }),
        )
    }

    #[test]
    fn properties_are_bounded_in_size_and_count() {
        let mut c = ctx();
        assert_eq!(
            c.set_property(&"k".repeat(65), b""),
            Err(types::PropertyError::TooLarge)
        );
        assert_eq!(
            c.set_property("k", &[0; 1025]),
            Err(types::PropertyError::TooLarge)
        );
        for i in 0..MAX_PROPERTIES {
            c.set_property(&format!("k{i}"), b"v").unwrap();
        }
        assert_eq!(
            c.set_property("one-more", b"v"),
            Err(types::PropertyError::Full)
        );
        // Replacing an existing key is not a new one.
        c.set_property("k0", b"longer").unwrap();
        assert_eq!(c.property("k0"), Some(&b"longer"[..]));
        assert!(c.remove_property("k0"));
        assert!(!c.remove_property("k0"));
        c.set_property("one-more", b"v").unwrap();
    }

    #[test]
    fn properties_are_bounded_in_bytes() {
        let mut c = ctx();
        for i in 0..3 {
            c.set_property(&format!("k{i}"), &[1; 1024]).unwrap();
        }
        // 3 * (2 + 1024) = 3078 bytes held; another KiB passes the 4 KiB bound.
        assert_eq!(
            c.set_property("k3", &[1; 1024]),
            Err(types::PropertyError::Full)
        );
        c.set_property("k3", &[1; 900]).unwrap();
        // Shrinking a value frees its bytes.
        c.set_property("k0", b"").unwrap();
        c.set_property("k4", &[1; 1000]).unwrap();
    }
}
