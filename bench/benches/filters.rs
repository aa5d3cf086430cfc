//! What each filter hook costs on a warm, reused instance; what the default chain
//! costs; and what loading a filter costs, cold (compile) and cached.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_engine::{
    Action, ConnectionInfo, Engine, Exchange, Filter, FilterSpec, Outcome, RequestContext,
    RequestHead, Responder, ResponseAction, ResponseHead, Summary, TlsInfo,
};

const ROUTER: &str = r#"{"routes":[
  {"match":{"path":{"prefix":"/api"},"headers":[{"name":"x-canary","exact":"1"}]},"cluster":"green"},
  {"match":{"path":{"prefix":"/api"}},"split":[{"cluster":"blue","weight":80},{"cluster":"green","weight":20}]},
  {"match":{"path":{"exact":"/hello"},"method":"GET"},"cluster":"blue"}
]}"#;
const FAULT: &str = r#"{"abort":{"status":503,"header":{"name":"x-weft-fault","value":"abort"}},
  "delay":{"duration":"500ms","header":{"name":"x-weft-fault","value":"delay"}}}"#;
/// The encryption policy as `bench/run mtls` runs it on the inbound sidecar: strict,
/// one allow rule naming the caller, the caller's identity forwarded.
const POLICY: &str = r#"{"mode":"strict",
  "rules":[{"action":"allow","principals":["spiffe://bench.example/ns/default/sa/sidecar-a"]}],
  "forward_identity":{"header":"x-forwarded-client-cert"}}"#;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

fn load(engine: &Engine, name: &str, config: &str) -> Filter {
    let bytes = weft_builtin::get(name).expect("built-in");
    load_bytes(engine, name, bytes, config)
}

fn load_bytes(engine: &Engine, name: &str, bytes: &[u8], config: &str) -> Filter {
    let mut spec = FilterSpec::new(name, name, bytes);
    spec.config_json = config.to_owned();
    engine.load(spec).expect("loads")
}

fn request() -> Box<Exchange> {
    request_over(None)
}

/// The request, on a connection with these TLS facts.
fn request_over(tls: Option<TlsInfo>) -> Box<Exchange> {
    let req = http::Request::get("/api/users?id=7")
        .header("host", "bench.local")
        .header("user-agent", "criterion")
        .body(())
        .expect("request");
    let (parts, ()) = req.into_parts();
    let addr = "127.0.0.1:40000".parse().expect("addr");
    let conn = Arc::new(ConnectionInfo {
        peer: addr,
        local: addr,
        tls,
    });
    Box::new(Exchange {
        request: RequestHead { parts, body: None },
        response: None,
        ctx: RequestContext::new(1, conn),
    })
}

/// The exchange after its first attempt, with the upstream's 200.
fn answered() -> Box<Exchange> {
    let mut ex = request();
    ex.ctx.attempt = 1;
    let (parts, ()) = http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(())
        .expect("response")
        .into_parts();
    ex.response = Some(ResponseHead {
        parts,
        body: None,
        trailers: None,
        error: None,
    });
    ex
}

/// A mesh connection's facts: the caller proved its SPIFFE ID with its certificate.
fn mutual_tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS13_AES_256_GCM_SHA384",
        sni: None,
        alpn: Some("http/1.1".into()),
        peer_identity: Some("spiffe://bench.example/ns/default/sa/sidecar-a".into()),
        local_identity: Some(Arc::from("spiffe://bench.example/ns/default/sa/sidecar-b")),
    }
}

fn run(filter: &Filter, ex: Box<Exchange>) -> Box<Exchange> {
    let (ex, outcome) = filter.on_request(ex);
    assert!(matches!(outcome, Outcome::Done(_)));
    ex
}

fn run_response(filter: &Filter, ex: Box<Exchange>) -> Box<Exchange> {
    let (ex, outcome) = filter.on_response(ex);
    assert!(matches!(outcome, Outcome::Done(ResponseAction::Continue)));
    ex
}

fn hooks(c: &mut Criterion) {
    let engine = Engine::new().expect("engine");
    let router = load(&engine, "router", ROUTER);
    let fault = load(&engine, "fault", FAULT);
    let mut head = Some(request());
    // The floor: a call into a warm instance whose hook returns at once.
    let bytes = std::fs::read(guests::EMPTY).expect("the empty guest was built");
    let empty = load_bytes(&engine, "empty", &bytes, "{}");
    c.bench_function("hook/empty on-request (the floor)", |b| {
        b.iter(|| head = Some(run(&empty, head.take().expect("head"))))
    });
    c.bench_function("hook/router on-request", |b| {
        b.iter(|| head = Some(run(&router, head.take().expect("head"))))
    });
    c.bench_function("hook/fault on-request", |b| {
        b.iter(|| head = Some(run(&fault, head.take().expect("head"))))
    });
    c.bench_function("chain/fault+router on-request", |b| {
        b.iter(|| {
            let h = run(&fault, head.take().expect("head"));
            head = Some(run(&router, h));
        })
    });
    let retry = load(&engine, "retry", "{}");
    let mut ex = Some(answered());
    c.bench_function("hook/empty on-response (the floor)", |b| {
        b.iter(|| ex = Some(run_response(&empty, ex.take().expect("exchange"))))
    });
    c.bench_function("hook/retry on-response (200)", |b| {
        b.iter(|| ex = Some(run_response(&retry, ex.take().expect("exchange"))))
    });
    // Telemetry: its request hook (trace context, the labels it notes) and its
    // `on-done` (three metric updates), with no span exporter.
    let telemetry = load(&engine, "telemetry", r#"{"workload":"bench"}"#);
    c.bench_function("hook/telemetry on-request", |b| {
        b.iter(|| head = Some(run(&telemetry, head.take().expect("head"))))
    });
    let mut done = Some(run(&telemetry, answered()));
    let summary = Summary {
        status: 200,
        responder: Responder::Upstream,
        response_bytes: 6,
        duration: 1_200_000,
        complete: true,
    };
    c.bench_function("hook/telemetry on-done", |b| {
        b.iter(|| done = Some(telemetry.on_done(done.take().expect("exchange"), &summary)))
    });
    // The policy lets the caller through (a refusal would be a local response) and
    // sets the forwarded identity, replacing the one it set the time before.
    let policy = load(&engine, "encryption-policy", POLICY);
    let mut caller = Some(request_over(Some(mutual_tls())));
    let (ex, outcome) = policy.on_request(caller.take().expect("caller"));
    assert!(matches!(outcome, Outcome::Done(Action::Continue)));
    caller = Some(ex);
    c.bench_function(
        "hook/encryption-policy on-request (strict, 1 rule, identity forwarded)",
        |b| b.iter(|| caller = Some(run(&policy, caller.take().expect("caller")))),
    );
    c.bench_function("load/router compiled in memory (instantiate + init)", |b| {
        b.iter(|| black_box(load(&engine, "router", ROUTER)))
    });
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("router cold (compile + instantiate + init)", |b| {
        b.iter(|| {
            let engine = Engine::with_cache_dir(None).expect("engine");
            black_box(load(&engine, "router", ROUTER))
        })
    });
    group.bench_function(
        "router from the disk cache (deserialize + instantiate + init)",
        |b| b.iter(|| black_box(load(&Engine::new().expect("engine"), "router", ROUTER))),
    );
    group.finish();
}

criterion_group!(benches, hooks);
criterion_main!(benches);
