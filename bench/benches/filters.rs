//! What each filter hook costs on a warm, reused instance; what the default chain
//! costs; and what loading a filter costs, cold (compile) and cached.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_engine::{ConnectionInfo, Engine, Filter, FilterSpec, Outcome, RequestHead};

const ROUTER: &str = r#"{"routes":[
  {"match":{"path":{"prefix":"/api"},"headers":[{"name":"x-canary","exact":"1"}]},"cluster":"green"},
  {"match":{"path":{"prefix":"/api"}},"split":[{"cluster":"blue","weight":80},{"cluster":"green","weight":20}]},
  {"match":{"path":{"exact":"/hello"},"method":"GET"},"cluster":"blue"}
]}"#;
const FAULT: &str = r#"{"abort":{"status":503,"header":{"name":"x-weft-fault","value":"abort"}},
  "delay":{"duration":"500ms","header":{"name":"x-weft-fault","value":"delay"}}}"#;

fn load(engine: &Engine, name: &str, config: &str) -> Filter {
    let bytes = weft_builtin::get(name).expect("built-in");
    let mut spec = FilterSpec::new(name, name, bytes);
    spec.config_json = config.to_owned();
    engine.load(spec).expect("loads")
}

fn request() -> Box<RequestHead> {
    let req = http::Request::get("/api/users?id=7")
        .header("host", "bench.local")
        .header("user-agent", "criterion")
        .body(())
        .expect("request");
    let (parts, ()) = req.into_parts();
    let addr = "127.0.0.1:40000".parse().expect("addr");
    Box::new(RequestHead {
        parts,
        body: None,
        id: 1,
        conn: Arc::new(ConnectionInfo {
            peer: addr,
            local: addr,
            tls: false,
            peer_identity: None,
            sni: None,
        }),
    })
}

fn run(filter: &Filter, head: Box<RequestHead>) -> Box<RequestHead> {
    let (head, outcome) = filter.on_request(head);
    assert!(matches!(outcome, Outcome::Done(_)));
    head
}

fn hooks(c: &mut Criterion) {
    let engine = Engine::new().expect("engine");
    let router = load(&engine, "router", ROUTER);
    let fault = load(&engine, "fault", FAULT);
    let mut head = Some(request());
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
