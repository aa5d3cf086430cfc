//! The data model of one request as the hooks see it: the downstream connection, the
//! request and response heads, and the request's context with the properties filters
//! share. The proxy builds and reads it; the host lends it to filters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::uri::Authority;

use crate::bindings::types;

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
    /// The SPIFFE ID the proxy presented on this connection (a mesh listener's
    /// workload certificate); none when it presented another certificate.
    pub local_identity: Option<std::sync::Arc<str>>,
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

impl ExchangeError {
    /// Every way an exchange ends without an upstream response.
    pub const ALL: [ExchangeError; 7] = [
        ExchangeError::ConnectFailure,
        ExchangeError::Reset,
        ExchangeError::PerTryTimeout,
        ExchangeError::Timeout,
        ExchangeError::Overflow,
        ExchangeError::NoHealthyEndpoint,
        ExchangeError::ProtocolError,
    ];

    /// Its name as the WIT contract spells it (`connect-failure`): what access logs
    /// write and `weft filter test` reads and prints.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeError::ConnectFailure => "connect-failure",
            ExchangeError::Reset => "reset",
            ExchangeError::PerTryTimeout => "per-try-timeout",
            ExchangeError::Timeout => "timeout",
            ExchangeError::Overflow => "overflow",
            ExchangeError::NoHealthyEndpoint => "no-healthy-endpoint",
            ExchangeError::ProtocolError => "protocol-error",
        }
    }

    /// The error with this WIT name, if one has it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

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

// The limits on properties live with the rules a filter's native tests meet too.
pub use crate::limits::{MAX_PROPERTIES, MAX_PROPERTY_BYTES};
use crate::limits::{MAX_PROPERTY_KEY, MAX_PROPERTY_VALUE};

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
    /// A filter required the upstream to prove, by mutual TLS, an identity matching
    /// this SPIFFE pattern (`weft_config::spiffe`): the proxy sends no byte to an
    /// upstream that has not.
    pub upstream_identity_required: Option<Box<str>>,
    /// The SPIFFE ID the current attempt's upstream proved with its certificate
    /// (mutual TLS to a mesh cluster); none in clear text or plain TLS.
    pub upstream_identity: Option<Arc<str>>,
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
            upstream_identity_required: None,
            upstream_identity: None,
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

    /// Every property, in the order they were first set (a removal moves the last
    /// one into the gap): what a request carries for tools that show it whole, such
    /// as the filter test harness.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.properties.iter().map(|(k, v)| (&**k, &**v))
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
