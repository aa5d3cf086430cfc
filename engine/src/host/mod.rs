//! The data of one instance's `Store`: what a filter instance can reach while a hook
//! runs (the exchange it is lent, its filter's shared things, a WASI context that
//! grants nothing), and the host side of `weft:filter` on it, one resource or
//! interface per file.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::HeaderName;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::types;
use crate::deadline::HookDeadline;
use crate::exchange::{Exchange, Phase, RequestContext, RequestHead, ResponseHead};
use crate::shared::{ClusterRef, FilterShared};
use crate::stderr::TailPipe;

mod context;
mod headers;
mod message;
mod services;

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
    /// The hook running now, for the deadline to weigh its CPU time.
    pub(crate) deadline: HookDeadline,
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
            deadline: HookDeadline::default(),
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
