//! The host side of the filter contract: a real proxy runs a chain of two `chaos`
//! guests (`tests/guests/chaos`) in front of a real backend. Each case reloads the
//! chain with new seeds, failure policies and panics on or off, then sends a few
//! random requests over HTTP/1.1 and h2c; the guests answer them with random actions,
//! headers, paths, authorities, bodies, exchange settings, local responses of any
//! status, and retries. Whatever the guests do, the proxy answers every request with
//! well-formed HTTP (a status from 100 to 599) within a bound, no thread of it
//! panics, and a listener without filters still serves a plain request.
//!
//! Longer runs (`docs/fuzzing.md`):
//! `WEFT_FUZZ_CASES=2000 cargo test -p weft-fuzz --test filter_contract`, or on nightly,
//! coverage-guided: `cargo bolero test -p weft-fuzz --test filter_contract proxy_survives_random_filters`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bolero::check;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weft_fuzz::{Choices, cases};
use weft_tests::{Backend, Proxy, backend, guests, proxy, within};

/// The longest a request may take: the listener's request timeout (3 s) bounds the
/// upstream exchange and every retry, and the guests' delays are short.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

thread_local! {
    /// Set on the threads of the tests themselves, whose panics are failed
    /// assertions, reported as such.
    static DRIVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What told of a panic of the proxy: a panic of one of its threads (any thread but
/// the tests'), or a line of its log.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Watch the proxy for panics, into [`PANICS`]; every test calls it first.
fn watch_for_panics() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    DRIVER.with(|d| d.set(true));
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DRIVER.with(std::cell::Cell::get) {
                seen(info.to_string());
            }
            previous(info);
        }));
        // The proxy's log, read as it is written rather than kept: a long run writes
        // a lot. `WEFT_FUZZ_LOG` (a filter, e.g. `weft=debug`) shows it, the guests'
        // decisions included, for a case being replayed.
        let shown = std::env::var("WEFT_FUZZ_LOG").ok();
        let filter = shown
            .clone()
            .unwrap_or_else(|| "warn,weft::access=info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || LogScan(shown.is_some()))
            .try_init();
    });
}

fn seen(what: String) {
    if let Ok(mut list) = PANICS.lock() {
        list.push(what);
    }
}

/// A log writer that notes every line telling of a panic of the proxy (a guest's
/// panic on purpose is a filter failure, not one), and shows the lines if asked.
struct LogScan(bool);

impl std::io::Write for LogScan {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines() {
            if line.contains("panicked") && !line.contains("a panic on purpose") {
                seen(line.to_owned());
            }
        }
        if self.0 {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One case: the chain's two filters, and the requests sent through it.
#[derive(Debug)]
struct Case {
    filters: [(u64, &'static str, bool); 2],
    requests: Vec<Call>,
}

struct Call {
    /// The request's number, which the guests draw its decisions from.
    n: u64,
    h2: bool,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Call {
    // The body's length only: a shrunk case's body can be long and says little.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = if self.h2 { "h2c" } else { "HTTP/1.1" };
        write!(
            f,
            "#{} {} {} {version} {:?} with a body of {} bytes",
            self.n,
            self.method,
            self.path,
            self.headers,
            self.body.len()
        )
    }
}

fn seed(c: &mut Choices<'_>) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|_| c.byte()))
}

fn made_call(c: &mut Choices<'_>) -> Call {
    const METHODS: &[Method] = &[Method::GET, Method::POST, Method::HEAD, Method::PUT];
    const PATHS: &[&str] = &["/", "/a", "/a/../b", "/%2e%2e/x", "/x?y=1", "/%zz", "//a"];
    const TRACE: &[&str] = &[
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-x",
        "",
    ];
    let mut headers = Vec::new();
    if c.chance(30) {
        headers.push(("traceparent", (*c.pick(TRACE)).to_owned()));
    }
    if c.chance(20) {
        headers.push(("x-chaos", c.text(10).replace(['\r', '\n', '\0'], "")));
    }
    let body_len = if c.chance(40) { c.below(3000) } else { 0 };
    Call {
        n: seed(c),
        h2: c.chance(30),
        method: c.pick(METHODS).clone(),
        path: c.pick::<&str>(PATHS),
        headers,
        body: (0..body_len).map(|_| c.byte()).collect(),
    }
}

fn made_case(c: &mut Choices<'_>) -> Case {
    let filter = |c: &mut Choices<'_>| {
        let policy = *c.pick(&["fail-closed", "fail-open", "reload"]);
        (seed(c), policy, c.chance(30))
    };
    let filters = [filter(c), filter(c)];
    let requests = (0..1 + c.below(6)).map(|_| made_call(c)).collect();
    Case { filters, requests }
}

/// The chain of a case: each filter's seed, failure policy and whether it panics.
fn chain(filters: &[(u64, &str, bool)]) -> Vec<String> {
    filters
        .iter()
        .map(|(seed, policy, panics)| {
            format!("{{ failure: {policy}, config: {{ seed: {seed}, panics: {panics} }} }}")
        })
        .collect()
}

/// A proxy with listener `main` (a chain of `chaos` filters, each given as
/// `{ failure: ..., config: ... }`) and `plain` (no filters), both to `web`; `api`
/// is a second cluster a guest may route to.
fn yaml(web: &Backend, filters: &[String]) -> String {
    let chain: String = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.trim_start_matches('{');
            format!(
                "\n      - {{ name: chaos-{i}, module: {:?}, {f}",
                guests::CHAOS
            )
        })
        .collect();
    let chain = if chain.is_empty() {
        " []".to_owned()
    } else {
        chain
    };
    format!(
        "access_log: {{}}\n\
         listeners:\n  \
           - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n    \
             limits: {{ request_timeout: 3s, max_body_size: 64KiB }}\n    filters:{chain}\n  \
           - name: plain\n    address: 127.0.0.1:0\n    default_cluster: web\n\
         clusters:\n  \
           - name: web\n    endpoints: [\"{addr}\"]\n  \
           - name: api\n    endpoints: [\"{addr}\"]\n",
        addr = web.addr,
    )
}

struct Env {
    rt: tokio::runtime::Runtime,
    web: Backend,
    proxy: Proxy,
    http1: Client<HttpConnector, Full<Bytes>>,
    h2c: Client<HttpConnector, Full<Bytes>>,
    requests: AtomicUsize,
}

impl Env {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (web, proxy) = rt.block_on(async {
            let web = backend("web").start().await;
            let proxy = proxy(&yaml(&web, &[])).start().await;
            (web, proxy)
        });
        Self {
            rt,
            web,
            proxy,
            http1: Client::builder(TokioExecutor::new()).build_http(),
            // Filters may add long headers (the backend echoes them): a client that
            // takes up to 1 MiB of them, as browsers take hundreds of KiB, where
            // hyper's default is 16 KiB.
            h2c: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_max_header_list_size(1 << 20)
                .build_http(),
            requests: AtomicUsize::new(0),
        }
    }

    fn reload(&self, filters: &[String]) {
        let text = yaml(&self.web, filters);
        let config = weft_config::Config::from_str(&text, "fuzz.yaml", None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let _entered = self.rt.enter();
        self.proxy
            .running()
            .reload(&config)
            .unwrap_or_else(|e| panic!("reload: {e}\n{text}"));
    }

    fn addr(&self, listener: &str) -> std::net::SocketAddr {
        self.proxy
            .running()
            .listener_addr(listener)
            .expect("the listener")
    }

    /// Send `call` to `listener`; the answer's status, or why there was none.
    fn send(&self, listener: &str, call: &Call) -> Result<StatusCode, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = Request::builder().method(call.method.clone()).uri(format!(
            "http://{}{}",
            self.addr(listener),
            call.path
        ));
        if call.h2 {
            req = req.version(Version::HTTP_2);
        }
        req = req.header("x-chaos-n", call.n);
        for (name, value) in &call.headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(call.body.clone())))
            .map_err(|e| format!("the client cannot send it: {e}"))?;
        let client = if call.h2 { &self.h2c } else { &self.http1 };
        self.rt.block_on(async {
            let answer = tokio::time::timeout(ANSWER_WITHIN, async {
                let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body of a {status}: {e:?}"))?;
                Ok(status)
            })
            .await;
            answer.unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.running.take() {
            self.rt
                .block_on(within(p.shutdown_within(Duration::from_secs(5))));
        }
    }
}

fn plain() -> Call {
    Call {
        n: 0,
        h2: false,
        method: Method::GET,
        path: "/",
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// What no case may leave behind: a panic of the proxy, in a thread or in the log.
fn assert_no_panic(case: &Case) {
    let seen = PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(seen.is_empty(), "{case:?}: the proxy panicked: {seen:?}");
}

fn run_case(env: &Env, case: &Case) {
    env.reload(&chain(&case.filters));
    for call in &case.requests {
        if call.h2 && call.method == Method::HEAD {
            continue;
        }
        match env.send("main", call) {
            Ok(status) => assert!(
                (100..=599).contains(&status.as_u16()),
                "{case:?}: {call:?} answered {status}"
            ),
            Err(why) => panic!("{case:?}: {call:?}: {why}"),
        }
    }
    assert_eq!(env.send("plain", &plain()), Ok(StatusCode::OK), "{case:?}");
    assert_no_panic(case);
}

#[test]
fn proxy_survives_random_filters() {
    watch_for_panics();
    let env = AssertUnwindSafe(Env::start());
    check!()
        .with_iterations(cases(100))
        .with_max_len(512)
        .for_each(|bytes: &[u8]| run_case(&env, &made_case(&mut Choices::new(bytes))));
    // Back to a chain without filters: the listener serves as before.
    env.reload(&[]);
    assert_eq!(env.send("main", &plain()), Ok(StatusCode::OK));
    assert!(env.web.requests() > 0);
    let sent = env.requests.load(Ordering::Relaxed);
    assert!(sent > 40.min(cases(100)), "only {sent} requests were sent");
}

/// Found by the target above: a filter's local response (or `set-status`) with a
/// status that is not one of a final response reaches the client as it is. 600 to
/// 999, which the WIT allows, are invalid (RFC 9110 §15); 1xx over HTTP/2 makes the
/// client end the whole connection (GOAWAY, PROTOCOL_ERROR), and a 103 over
/// HTTP/1.1 leaves it without a final response.
#[test]
fn a_filter_status_that_is_not_a_final_one_does_not_reach_the_client() {
    watch_for_panics();
    let env = Env::start();
    for status in [100, 101, 103, 600, 999] {
        env.reload(&[format!("{{ config: {{ seed: 0, status: {status} }} }}")]);
        for h2 in [false, true] {
            let call = Call { h2, ..plain() };
            let answer = env.send("main", &call);
            assert!(
                answer
                    .as_ref()
                    .is_ok_and(|s| (200..=599).contains(&s.as_u16())),
                "a filter's {status} over {call:?} was answered {answer:?}"
            );
        }
    }
}

/// Found by the target above: a HEAD request over HTTP/2 that a filter answers with
/// a body (any status) gets its body sent, and the client resets the stream
/// (PROTOCOL_ERROR); over HTTP/1.1 the body is left out as it should be.
#[test]
fn a_local_answer_to_head_over_http2_has_no_body() {
    watch_for_panics();
    let env = Env::start();
    env.reload(&["{ config: { seed: 0, status: 200, body: hello } }".to_owned()]);
    for h2 in [false, true] {
        let call = Call {
            h2,
            method: Method::HEAD,
            ..plain()
        };
        assert_eq!(env.send("main", &call), Ok(StatusCode::OK), "{call:?}");
    }
}

/// Found beside the target above: a filter's delay is not cut by the request's
/// timeout, which the WIT says counts "across every attempt and delay": with a
/// timeout of 1 s, a delay of 30 s is waited in full before the 504.
#[test]
fn a_filter_delay_ends_with_the_request_timeout() {
    watch_for_panics();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let web = backend("web").start().await;
        let fault = "{ delay: { duration: 30s, percentage: 100 } }";
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n    \
             limits: {{ request_timeout: 1s }}\n    filters:\n      \
             - {{ name: fault, module: \"builtin:fault\", config: {fault} }}\n\
             clusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
            web.addr
        );
        let mut p = proxy(&yaml).start().await;
        // Well before the delay is over, and well after the timeout.
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            weft_tests::client().get(p.addr, "/"),
        )
        .await;
        if let Some(running) = p.running.take() {
            within(running.shutdown_within(Duration::from_secs(5))).await;
        }
        let status = answer.map(|r| r.status);
        assert_eq!(status.ok(), Some(StatusCode::GATEWAY_TIMEOUT));
    });
}
