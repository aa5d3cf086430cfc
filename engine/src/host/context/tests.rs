//! The identity calls of `context`: when a requirement may be set, which patterns
//! pass, and what the proved identities read in each phase.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Resource;

use crate::bindings::types::{HostContext, SettingError};
use crate::exchange::{ConnectionInfo, Exchange, Phase, RequestContext, RequestHead, TlsInfo};
use crate::host::HostState;
use crate::metrics::{MetricsHub, MetricsSpec};
use crate::shared::FilterShared;
use crate::spans::SpanQueue;
use crate::state::SharedState;

const DESK: &str = "spiffe://bank.example/ns/trading/sa/desk";

fn host(tls: Option<TlsInfo>) -> HostState {
    let hub = MetricsHub::default();
    let shared = Arc::new(FilterShared {
        name: Arc::from("policy"),
        metrics: hub.filter_metrics("policy", "00", &MetricsSpec::default()),
        state: SharedState::default(),
        spans: Arc::new(SpanQueue::default()),
        stats: Default::default(),
        digest: Arc::from("00"),
        views: Default::default(),
    });
    let addr = "127.0.0.1:1".parse().unwrap();
    let conn = Arc::new(ConnectionInfo {
        peer: addr,
        local: addr,
        tls,
    });
    let (parts, ()) = http::Request::new(()).into_parts();
    let mut host = HostState::new(shared, 1 << 20, Instant::now());
    host.exchange = Some(Box::new(Exchange {
        request: RequestHead { parts, body: None },
        response: None,
        ctx: RequestContext::new(1, conn),
    }));
    host
}

fn ctx() -> Resource<crate::resources::ContextRef> {
    Resource::new_borrow(0)
}

fn require(host: &mut HostState, pattern: &str) -> Result<(), SettingError> {
    host.require_upstream_identity(ctx(), pattern.to_owned())
}

fn required(host: &HostState) -> Option<&str> {
    let ex = host.exchange.as_deref().unwrap();
    ex.ctx.upstream_identity_required.as_deref()
}

#[test]
fn a_request_hook_requires_and_a_later_call_replaces() {
    let mut h = host(None);
    assert_eq!(require(&mut h, DESK), Ok(()));
    assert_eq!(required(&h), Some(DESK));
    for pattern in [
        "spiffe://bank.example/ns/trading/*",
        "spiffe://bank.example/*",
        "*",
    ] {
        assert_eq!(require(&mut h, pattern), Ok(()), "{pattern}");
        assert_eq!(required(&h), Some(pattern));
    }
}

#[test]
fn a_pattern_the_spiffe_rule_refuses_is_out_of_range() {
    let mut h = host(None);
    let long_domain = format!("spiffe://{}/*", "a".repeat(3000));
    let long_id = format!("spiffe://b/{}", "a".repeat(3000));
    for bad in [
        "",
        "**",
        "https://bank.example/ns/a",
        "spiffe://Bank.example/ns/a",
        "spiffe://bank.example",
        "spiffe://bank.example/ns/*/sa/desk",
        "spiffe://bank.example/ns/../sa",
        &long_domain,
        &long_id,
    ] {
        assert_eq!(
            require(&mut h, bad),
            Err(SettingError::OutOfRange),
            "{bad:.40}"
        );
    }
    assert_eq!(required(&h), None, "a refused pattern changes nothing");
}

#[test]
fn once_the_request_went_upstream_it_is_too_late() {
    let mut h = host(None);
    h.exchange.as_deref_mut().unwrap().ctx.attempt = 1;
    assert_eq!(require(&mut h, DESK), Err(SettingError::TooLate));
    // A response hook, even of a local answer that never went upstream, and on-done.
    for phase in [Phase::Response, Phase::Done] {
        let mut h = host(None);
        h.phase = phase;
        assert_eq!(
            require(&mut h, DESK),
            Err(SettingError::TooLate),
            "{phase:?}"
        );
        assert_eq!(required(&h), None);
    }
    // Outside any request (an `init` that calls it).
    let mut h = host(None);
    h.exchange = None;
    assert_eq!(require(&mut h, DESK), Err(SettingError::TooLate));
    // Bad and late at once: too late says more.
    let mut h = host(None);
    h.phase = Phase::Done;
    assert_eq!(require(&mut h, "bad"), Err(SettingError::TooLate));
}

#[test]
fn the_upstreams_identity_reads_after_the_request_went_upstream() {
    let mut h = host(None);
    h.exchange.as_deref_mut().unwrap().ctx.upstream_identity = Some(Arc::from(DESK));
    assert_eq!(
        h.upstream_identity(ctx()),
        None,
        "no attempt in a request hook"
    );
    for phase in [Phase::Response, Phase::Done] {
        h.phase = phase;
        assert_eq!(
            h.upstream_identity(ctx()).as_deref(),
            Some(DESK),
            "{phase:?}"
        );
    }
    h.exchange.as_deref_mut().unwrap().ctx.upstream_identity = None;
    assert_eq!(h.upstream_identity(ctx()), None, "none proved");
    h.exchange = None;
    assert_eq!(h.upstream_identity(ctx()), None);
}

#[test]
fn the_local_identity_is_the_one_presented_downstream() {
    let me = "spiffe://bank.example/ns/bank/sa/banking";
    let tls = |local: Option<&str>| TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS13_AES_128_GCM_SHA256",
        peer_identity: Some(DESK.to_owned()),
        local_identity: local.map(Arc::from),
        ..TlsInfo::default()
    };
    for phase in [Phase::Request, Phase::Response, Phase::Done] {
        let mut h = host(Some(tls(Some(me))));
        h.phase = phase;
        assert_eq!(h.local_identity(ctx()).as_deref(), Some(me), "{phase:?}");
    }
    // A listener's own certificate, and clear text, present no mesh identity.
    assert_eq!(host(Some(tls(None))).local_identity(ctx()), None);
    assert_eq!(host(None).local_identity(ctx()), None);
}
