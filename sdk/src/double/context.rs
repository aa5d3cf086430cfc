//! The request's context when a filter runs natively: its facts (which a test sets),
//! its properties, route and exchange settings (which a test reads back), with the
//! proxy's limits and the proxy's refusals.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::RequestState;
use crate::__weft_bindings::weft::filter::types as raw;
use crate::{
    Connection, ExchangeSetting, Facts, HttpVersion, PropertyError, Request, RequestHead,
    SettingError, TlsInfo,
};

// The proxy's own limits on a request's properties, route name and settings.
use crate::limits::{
    MAX_PROPERTIES, MAX_PROPERTY_BYTES, MAX_PROPERTY_KEY, MAX_PROPERTY_VALUE, MAX_ROUTE_NAME,
    MAX_SETTING,
};

/// Which hook the context is lent to: settings change only before the request went
/// upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Response,
    Done,
}

#[derive(Debug)]
struct State {
    facts: Facts,
    /// The monotonic clock when the request arrived, for `facts().elapsed`.
    arrived: u64,
    request: Rc<RefCell<RequestState>>,
    properties: Vec<(String, Vec<u8>)>,
    timeout: Option<Duration>,
    per_try_timeout: Option<Duration>,
    required_identity: Option<String>,
    upstream_identity: Option<String>,
    local_identity: Option<String>,
    grpc_status: Option<u32>,
    phase: Phase,
}

/// One request's context (natively: a test double, see the [module
/// docs](crate::testing)): host facts, exchange settings, and the properties filters
/// share from hook to hook.
///
/// A test sets the facts it needs and reads back what the filter decided:
///
/// ```
/// use std::time::Duration;
/// use weft_sdk::{Context, Request, RequestHead};
/// let req = Request::new(RequestHead::new("GET", "/"));
/// let ctx = Context::for_request(&req).with_local_identity("spiffe://example.org/sa/web");
/// ctx.set_timeout(Duration::from_secs(2)).unwrap();
/// ctx.set_route("home");
/// assert_eq!(ctx.timeout(), Some(Duration::from_secs(2)));
/// assert_eq!(ctx.route().as_deref(), Some("home"));
/// ```
// Not `Clone`: the resource a filter gets in the proxy is not either.
#[derive(Debug)]
pub struct Context {
    state: Rc<RefCell<State>>,
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    /// The context of a `GET /` request: request id 1, arrived now (on the
    /// [test clock](crate::testing::clock)), from `127.0.0.1:50000` to
    /// `127.0.0.1:8080` in clear-text HTTP/1.1, before its first attempt.
    pub fn new() -> Self {
        Self::for_request(&Request::new(RequestHead::new("GET", "/")))
    }

    /// The context of this request, as [`Context::new`] otherwise: its
    /// `read-request-head` reads this request as the filter changed it.
    pub fn for_request(request: &Request) -> Self {
        let facts = Facts {
            request_id: 1,
            received_at: crate::native::wall_now(),
            elapsed: 0,
            attempt: 0,
            cluster: None,
            endpoint: None,
            connect_time: None,
            first_byte_time: None,
            route: None,
            connection: Connection {
                peer_address: "127.0.0.1:50000".to_owned(),
                local_address: "127.0.0.1:8080".to_owned(),
                tls: None,
                version: HttpVersion::Http11,
            },
        };
        let state = State {
            facts,
            arrived: crate::native::monotonic_now(),
            request: request.shared(),
            properties: Vec::new(),
            timeout: None,
            per_try_timeout: None,
            required_identity: None,
            upstream_identity: None,
            local_identity: None,
            grpc_status: None,
            phase: Phase::Request,
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// This context with the downstream connection in TLS with these facts.
    pub fn with_tls(self, tls: TlsInfo) -> Self {
        self.update_facts(|f| f.connection.tls = Some(tls));
        self
    }

    /// This context with the client at `peer` (`ip:port`).
    pub fn with_peer_address(self, peer: &str) -> Self {
        self.update_facts(|f| f.connection.peer_address = peer.to_owned());
        self
    }

    /// This context with the client speaking this HTTP version.
    pub fn with_version(self, version: HttpVersion) -> Self {
        self.update_facts(|f| f.connection.version = version);
        self
    }

    /// This context with the SPIFFE ID the proxy presented downstream.
    pub fn with_local_identity(self, id: &str) -> Self {
        self.state.borrow_mut().local_identity = Some(id.to_owned());
        self
    }

    /// This context with a property already set (by an earlier filter).
    pub fn with_property(self, key: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref().to_vec();
        (self.state.borrow_mut().properties).push((key.to_owned(), value));
        self
    }

    /// Change any fact: request id, attempt, cluster, endpoint, timings, connection.
    /// `elapsed` is not kept: it is read from the test clock.
    pub fn update_facts(&self, change: impl FnOnce(&mut Facts)) {
        change(&mut self.state.borrow_mut().facts);
    }

    /// Set the SPIFFE ID the upstream of the current attempt proved, as the proxy
    /// does before response hooks.
    pub fn set_upstream_identity(&self, id: Option<&str>) {
        self.state.borrow_mut().upstream_identity = id.map(str::to_owned);
    }

    /// Set the `grpc-status` the client got, as the proxy does once it is known.
    pub fn set_grpc_status(&self, status: Option<u32>) {
        self.state.borrow_mut().grpc_status = status;
    }

    /// The route name the filter set (native only, for tests).
    pub fn route(&self) -> Option<String> {
        self.state.borrow().facts.route.clone()
    }

    /// The overall timeout the filter set (native only, for tests).
    pub fn timeout(&self) -> Option<Duration> {
        self.state.borrow().timeout
    }

    /// The per-attempt timeout the filter set (native only, for tests).
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.state.borrow().per_try_timeout
    }

    /// The pattern the filter required the upstream's identity to match (native
    /// only, for tests).
    pub fn required_upstream_identity(&self) -> Option<String> {
        self.state.borrow().required_identity.clone()
    }

    /// Every property, in the order they were first set (native only, for tests).
    pub fn properties(&self) -> Vec<(String, Vec<u8>)> {
        self.state.borrow().properties.clone()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.state.borrow_mut().phase = phase;
    }

    /// The facts, in one call.
    pub fn facts(&self) -> Facts {
        let s = self.state.borrow();
        let mut facts = s.facts.clone();
        facts.elapsed = crate::native::monotonic_now().saturating_sub(s.arrived);
        facts
    }

    /// The request's head, in any hook (the headers named by this filter's
    /// `interest.request-headers`).
    pub fn read_request_head(&self) -> raw::RequestHead {
        self.state.borrow().request.borrow().head()
    }

    /// A property, when set.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        let found = s.properties.iter().find(|(k, _)| k == key);
        found.map(|(_, v)| v.clone())
    }

    /// Set a property. Keys are at most 64 bytes, values 1 KiB; a request holds at
    /// most 32 properties and 4 KiB.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), PropertyError> {
        if key.len() > MAX_PROPERTY_KEY || value.len() > MAX_PROPERTY_VALUE {
            return Err(PropertyError::TooLarge);
        }
        let mut s = self.state.borrow_mut();
        let old = s.properties.iter().position(|(k, _)| k == key);
        let bytes: usize = (s.properties.iter())
            .filter(|(k, _)| k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let full = old.is_none() && s.properties.len() >= MAX_PROPERTIES;
        if full || bytes + key.len() + value.len() > MAX_PROPERTY_BYTES {
            return Err(PropertyError::Full);
        }
        match old {
            Some(i) => s.properties[i].1 = value.to_vec(),
            None => s.properties.push((key.to_owned(), value.to_vec())),
        }
        Ok(())
    }

    /// Remove a property. Returns true if it was there.
    pub fn remove(&self, key: &str) -> bool {
        let mut s = self.state.borrow_mut();
        let before = s.properties.len();
        s.properties.retain(|(k, _)| k != key);
        s.properties.len() != before
    }

    /// Name the route the request took, for logs and telemetry (at most 128 bytes).
    pub fn set_route(&self, name: &str) {
        let mut end = name.len().min(MAX_ROUTE_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        self.state.borrow_mut().facts.route = Some(name[..end].to_owned());
    }

    /// Change a setting of the upstream exchange (from a request hook).
    pub fn configure(&self, setting: ExchangeSetting) -> Result<(), SettingError> {
        let mut s = self.state.borrow_mut();
        // Once the request went upstream, its exchange settings no longer apply.
        if s.phase == Phase::Done || s.facts.attempt > 0 {
            return Err(SettingError::TooLate);
        }
        let (slot, ns) = match setting {
            ExchangeSetting::Timeout(ns) => (&mut s.timeout, ns),
            ExchangeSetting::PerTryTimeout(ns) => (&mut s.per_try_timeout, ns),
        };
        let d = Duration::from_nanos(ns);
        if d.is_zero() || d > MAX_SETTING {
            return Err(SettingError::OutOfRange);
        }
        *slot = Some(d);
        Ok(())
    }

    /// The `grpc-status` the client got, once known.
    pub fn grpc_status(&self) -> Option<u32> {
        self.state.borrow().grpc_status
    }

    /// Require the upstream of this request to prove, by mutual TLS, a SPIFFE ID
    /// matching `pattern` (a SPIFFE ID, an ID prefix ending in `/*`, or `*`).
    pub fn require_upstream_identity(&self, pattern: &str) -> Result<(), SettingError> {
        let mut s = self.state.borrow_mut();
        // It must be in place before the first byte goes upstream.
        if s.phase != Phase::Request || s.facts.attempt > 0 {
            return Err(SettingError::TooLate);
        }
        if crate::spiffe::check_pattern(pattern).is_err() {
            return Err(SettingError::OutOfRange);
        }
        s.required_identity = Some(pattern.to_owned());
        Ok(())
    }

    /// The SPIFFE ID the upstream of the current attempt proved: none in a request
    /// hook.
    pub fn upstream_identity(&self) -> Option<String> {
        let s = self.state.borrow();
        if s.phase == Phase::Request {
            return None;
        }
        s.upstream_identity.clone()
    }

    /// The SPIFFE ID the proxy itself presented on the downstream connection.
    pub fn local_identity(&self) -> Option<String> {
        self.state.borrow().local_identity.clone()
    }
}
