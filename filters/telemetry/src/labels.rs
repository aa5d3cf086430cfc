//! Istio's standard labels, from what Weft knows of a request: its protocol, why it
//! failed (Envoy's response flags), how its connection was secured, and the caller's
//! workload as its sidecar names it.
//!
//! Everything here is a pure function of the request's facts, so that the labels of
//! one request cost no host call beyond the filter's one `facts` and no allocation in
//! the common case.

use std::borrow::Cow;

use weft_sdk::{Connection, ExchangeError, Responder, Summary};

/// The label names of every metric, in order: first those the filter's configuration
/// fixes (the same for every request of one filter entry, so they are left out of the
/// key its cache looks series up by), then those each request sets.
pub const LABELS: [&str; 19] = [
    "reporter",
    "destination_workload_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_principal",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_service",
    "destination_workload",
    "route",
    "request_protocol",
    "request_method",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// How many of [`LABELS`], from the first, the configuration fixes.
pub const FIXED: usize = 4;

/// What a label reads when Weft does not know its value.
pub const UNKNOWN: &str = "unknown";

/// A canonical revision nobody named, as Istio defaults it.
pub const LATEST: &str = "latest";

/// Istio's `request_protocol` of a request with this `content-type`: `grpc` for
/// `application/grpc` alone or followed by `+` or `;` (Envoy's rule), else `http`.
pub fn protocol(content_type: Option<&[u8]>) -> &'static str {
    const GRPC: &[u8] = b"application/grpc";
    match content_type {
        Some(v)
            if v.len() >= GRPC.len()
                && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
                && matches!(v.get(GRPC.len()), None | Some(b'+' | b';')) =>
        {
            "grpc"
        }
        _ => "http",
    }
}

/// Envoy's short name of why an exchange failed.
fn exchange_flag(e: ExchangeError) -> &'static str {
    match e {
        ExchangeError::ConnectFailure => "UF",
        ExchangeError::Reset => "UC",
        ExchangeError::PerTryTimeout | ExchangeError::Timeout => "UT",
        ExchangeError::Overflow => "UO",
        ExchangeError::NoHealthyEndpoint => "UH",
        ExchangeError::ProtocolError => "UPE",
    }
}

/// Envoy's response flags of a request, as far as Weft knows the cause; `-` for none.
///
/// - the proxy's own answer to a failed exchange: that exchange's flag (`UF`, `UC`,
///   `UT`, `UO`, `UH`, `UPE`);
/// - the proxy's 404 when no filter routed the request and the listener has no
///   `default_cluster`: `NR`;
/// - a response that did not reach the client whole: `DC`;
/// - a failed answer (5xx or a server-side gRPC status) from the upstream or the
///   proxy after more than one attempt: `URX`, the retries spent.
///
/// Several are joined by commas in Envoy's order (`UF,URX`); one is a static string.
pub fn response_flags(summary: &Summary, attempts: u32, grpc_failed: bool) -> Cow<'static, str> {
    let (cause, from_upstream) = match &summary.responder {
        Responder::Proxy(Some(e)) => (Some(exchange_flag(*e)), true),
        Responder::Proxy(None) if summary.status == 404 => (Some("NR"), false),
        Responder::Proxy(None) | Responder::Filter(_) => (None, false),
        Responder::Upstream => (None, true),
    };
    let retried = from_upstream && attempts > 1 && (summary.status >= 500 || grpc_failed);
    // Envoy lists UPE after the others; every other cause comes before DC and URX.
    let (first, last) = match cause {
        Some("UPE") => (None, Some("UPE")),
        c => (c, None),
    };
    let mut flags: [&'static str; 4] = [""; 4];
    let mut n = 0;
    for flag in [
        first,
        (!summary.complete).then_some("DC"),
        retried.then_some("URX"),
        last,
    ]
    .into_iter()
    .flatten()
    {
        flags[n] = flag;
        n += 1;
    }
    match n {
        0 => Cow::Borrowed("-"),
        1 => Cow::Borrowed(flags[0]),
        _ => Cow::Owned(flags[..n].join(",")),
    }
}

/// Istio's `connection_security_policy` of a downstream connection, and the
/// identity its client proved, if any: `mutual_tls` when the client presented a
/// certificate the proxy verified, `none` otherwise.
pub fn security(connection: &Connection) -> (&'static str, Option<&str>) {
    match connection
        .tls
        .as_ref()
        .and_then(|t| t.peer_identity.as_deref())
    {
        Some(identity) => ("mutual_tls", Some(identity)),
        None => ("none", None),
    }
}

/// A number as label text, formatted on the stack: each request's status code and
/// gRPC status cost no allocation.
pub struct Decimal {
    digits: [u8; 10],
    start: usize,
}

impl Decimal {
    /// `n` in decimal.
    pub fn new(mut n: u32) -> Self {
        let mut digits = [b'0'; 10];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(&self.digits[self.start..]).unwrap_or_default()
    }
}

/// What a caller's sidecar says about its workload in `x-weft-source-workload`:
/// `workload;namespace;canonical_service;canonical_revision`, trailing fields left
/// out when unset or at their default (`workload`, `latest`), so that a caller with
/// only a workload sends just its name, as before these fields existed. Fields past
/// the fourth are ignored: a later version may add some.
#[derive(Debug, Default, PartialEq)]
pub struct Caller<'a> {
    /// The caller's workload.
    pub workload: Option<&'a str>,
    /// Its namespace.
    pub namespace: Option<&'a str>,
    /// Its canonical service (default: its workload).
    pub canonical_service: Option<&'a str>,
    /// Its canonical revision (default: `latest`).
    pub canonical_revision: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// Read a header's value; an empty field is an unset one.
    pub fn parse(value: &'a str) -> Self {
        let mut fields = value.split(';').map(|f| (!f.is_empty()).then_some(f));
        let mut next = || fields.next().flatten();
        Self {
            workload: next(),
            namespace: next(),
            canonical_service: next(),
            canonical_revision: next(),
        }
    }

    /// The header's value.
    pub fn encode(&self) -> String {
        let fields = [
            self.workload,
            self.namespace,
            self.canonical_service.filter(|c| Some(*c) != self.workload),
            self.canonical_revision.filter(|r| *r != LATEST),
        ];
        let used = fields
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        let mut out = String::new();
        for (i, f) in fields[..used].iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(f.unwrap_or_default());
        }
        out
    }
}

/// Whether a configured name can go in the caller header as one field: visible
/// ASCII other than `;`, at most `max` bytes.
pub fn valid_field(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_sdk::{HttpVersion, TlsInfo};

    fn summary(status: u16, responder: Responder, complete: bool) -> Summary {
        Summary {
            status,
            responder,
            response_bytes: 0,
            duration: 1,
            complete,
        }
    }

    #[test]
    fn response_flags_name_the_cause_weft_knows() {
        let flags = |s: Summary, attempts, grpc| response_flags(&s, attempts, grpc).into_owned();
        let proxy = |e| Responder::Proxy(Some(e));
        assert_eq!(
            flags(summary(200, Responder::Upstream, true), 1, false),
            "-"
        );
        // The upstream's own 503 is its answer, not a failed exchange.
        assert_eq!(
            flags(summary(503, Responder::Upstream, true), 1, false),
            "-"
        );
        for (e, status, flag) in [
            (ExchangeError::ConnectFailure, 503, "UF"),
            (ExchangeError::Reset, 502, "UC"),
            (ExchangeError::PerTryTimeout, 504, "UT"),
            (ExchangeError::Timeout, 504, "UT"),
            (ExchangeError::Overflow, 503, "UO"),
            (ExchangeError::NoHealthyEndpoint, 503, "UH"),
            (ExchangeError::ProtocolError, 502, "UPE"),
        ] {
            assert_eq!(flags(summary(status, proxy(e), true), 1, false), flag);
            // Retried and failed all the same: the retries were spent.
            let retried = flags(summary(status, proxy(e), true), 3, false);
            let expected = if flag == "UPE" {
                "URX,UPE".to_owned()
            } else {
                format!("{flag},URX")
            };
            assert_eq!(retried, expected);
        }
        // No route: the proxy's 404; a filter's answer says nothing of why.
        assert_eq!(
            flags(summary(404, Responder::Proxy(None), true), 0, false),
            "NR"
        );
        assert_eq!(
            flags(summary(503, Responder::Proxy(None), true), 0, false),
            "-"
        );
        let router = Responder::Filter("router".into());
        assert_eq!(flags(summary(404, router, true), 0, false), "-");
        // A retried request that succeeded carries no flag; one whose upstream still
        // failed does, by status or by gRPC status.
        assert_eq!(
            flags(summary(200, Responder::Upstream, true), 2, false),
            "-"
        );
        assert_eq!(
            flags(summary(503, Responder::Upstream, true), 3, false),
            "URX"
        );
        assert_eq!(
            flags(summary(200, Responder::Upstream, true), 2, true),
            "URX"
        );
        // Cut short on the way to the client.
        assert_eq!(
            flags(summary(200, Responder::Upstream, false), 1, false),
            "DC"
        );
        assert_eq!(
            flags(
                summary(503, proxy(ExchangeError::ConnectFailure), false),
                2,
                false
            ),
            "UF,DC,URX"
        );
        // One flag costs no allocation.
        let s = summary(503, proxy(ExchangeError::ConnectFailure), true);
        assert!(matches!(response_flags(&s, 1, false), Cow::Borrowed("UF")));
    }

    #[test]
    fn grpc_by_content_type_as_envoy_has_it() {
        for (v, p) in [
            (Some(&b"application/grpc"[..]), "grpc"),
            (Some(b"application/grpc+proto"), "grpc"),
            (Some(b"Application/GRPC;charset=utf-8"), "grpc"),
            (Some(b"application/grpc-web"), "http"),
            (Some(b"application/json"), "http"),
            (Some(b"application/grp"), "http"),
            (None, "http"),
        ] {
            assert_eq!(protocol(v), p, "{v:?}");
        }
    }

    #[test]
    fn mutual_tls_when_the_client_proved_an_identity() {
        let conn = |peer_identity: Option<&str>| Connection {
            peer_address: "10.0.0.1:5000".into(),
            local_address: "10.0.0.2:8443".into(),
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                sni: None,
                alpn: None,
                peer_identity: peer_identity.map(Into::into),
            }),
            version: HttpVersion::Http2,
        };
        let id = "spiffe://cluster.local/ns/markets/sa/trading";
        assert_eq!(security(&conn(Some(id))), ("mutual_tls", Some(id)));
        assert_eq!(security(&conn(None)), ("none", None));
        let clear = Connection {
            tls: None,
            ..conn(None)
        };
        assert_eq!(security(&clear), ("none", None));
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 200, 503, 999, 16, u32::MAX] {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn the_caller_header_round_trips_and_stays_short() {
        let full = Caller {
            workload: Some("trading"),
            namespace: Some("markets"),
            canonical_service: Some("trading-app"),
            canonical_revision: Some("v2"),
        };
        assert_eq!(full.encode(), "trading;markets;trading-app;v2");
        assert_eq!(Caller::parse(&full.encode()), full);
        // Defaults are left out, so a workload alone is sent as just its name.
        let plain = Caller {
            workload: Some("trading"),
            canonical_service: Some("trading"),
            canonical_revision: Some(LATEST),
            ..Caller::default()
        };
        assert_eq!(plain.encode(), "trading");
        let gap = Caller {
            workload: Some("trading"),
            canonical_revision: Some("v3"),
            ..Caller::default()
        };
        assert_eq!(gap.encode(), "trading;;;v3");
        assert_eq!(Caller::parse("trading;;;v3"), gap);
        assert_eq!(
            Caller::parse("trading;markets;c;r;later;fields"),
            Caller {
                workload: Some("trading"),
                namespace: Some("markets"),
                canonical_service: Some("c"),
                canonical_revision: Some("r"),
            }
        );
        assert_eq!(Caller::parse(""), Caller::default());
        assert!(valid_field("trading-app.v2", 63));
        for bad in ["", "a;b", "a b", "é", &"x".repeat(64)] {
            assert!(!valid_field(bad, 63), "{bad:?}");
        }
    }
}
