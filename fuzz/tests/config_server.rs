//! The config server's HTTP API (`config-server/src/api.rs` and what it validates
//! with), driven over HTTP on 127.0.0.1 like any client: random routes, methods,
//! path segments, query strings, headers and bodies (mesh configs built from the
//! model, raw bytes, text that is not UTF-8, modules that are not Wasm). Whatever it
//! is sent, the server answers: never a 5xx, and every refusal is a 4xx whose body is
//! `{"error": "..."}`.
//!
//! Longer runs (`docs/fuzzing.md`):
//! `WEFT_FUZZ_CASES=5000 cargo test -p weft-fuzz --test config_server`, or on nightly,
//! coverage-guided: `cargo bolero test -p weft-fuzz --test config_server api_answers_every_request`.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bolero::check;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weft_config_server::{Options, RunningServer};
use weft_fuzz::{Choices, cases, yaml};
use weft_testkit::{ANY_PORT, TempDir, within};

const TOKEN: &str = "fuzz-token";
const PROXY_TOKEN: &str = "fuzz-proxy-token";

/// How long one answer may take; a compile of a pushed module included.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A request the fuzzer made.
#[derive(Debug)]
struct Call {
    method: Method,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// A path segment or query value: ordinary, empty, long, escaped or odd.
fn segment(c: &mut Choices<'_>) -> String {
    match c.below(8) {
        0 => escape(&c.text(20)),
        1 => "9".repeat(c.below(40)),
        2 => (*c.pick(&["%zz", "%00", "%2F", "..", ".", "%c3%28", "-1", "0"])).to_owned(),
        _ => (*c.pick(&["hello", "1", "web-1", "a.b_c-d", "x"])).to_owned(),
    }
}

/// Percent-encode what a URI may not hold as it is.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query string of `keys` (the route's own), with a key of another route or none
/// now and then.
fn query(c: &mut Choices<'_>, keys: &[&str]) -> String {
    const OTHER: &[&str] = &["nope", "", "window", "show_secrets", "dry_run", "file"];
    let pairs: Vec<String> = (0..c.below(4))
        .map(|_| {
            let key = if keys.is_empty() || c.chance(10) {
                *c.pick(OTHER)
            } else {
                *c.pick(keys)
            };
            let values: &[&str] = match key {
                "window" => &["30s", "1m", "0s", "1s", "3h", "-1s", "30"],
                "reporter" => &["auto", "source", "destination", "x"],
                "file" => &["mesh.yaml", "", "a%00b", "%0A"],
                _ => &["true", "false", "true", "false", "1", "yes"],
            };
            let value = if c.chance(15) {
                segment(c)
            } else {
                (*c.pick(values)).to_owned()
            };
            format!("{key}={value}")
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// A route of the API (or none), with its usual method most of the time.
fn route(c: &mut Choices<'_>) -> (Method, String) {
    let (method, path, keys): (_, _, &[&str]) = match c.below(13) {
        0..=2 => (
            Method::PUT,
            "/v1/mesh".to_owned(),
            &["dry_run", "file", "strict"],
        ),
        3 => (Method::PUT, format!("/v1/filters/{}", segment(c)), &[]),
        4 => (Method::GET, format!("/v1/filters/{}", segment(c)), &[]),
        5 => (Method::GET, format!("/v1/versions/{}", segment(c)), &[]),
        6 => (Method::POST, format!("/v1/rollback/{}", segment(c)), &[]),
        7 => (Method::GET, "/v1/stats".to_owned(), &["window", "reporter"]),
        8 => (
            Method::GET,
            format!("/v1/proxies/{}/config", segment(c)),
            &["show_secrets"],
        ),
        9 => {
            let path = c.pick(&["/v1/snapshot", "/v1/versions", "/v1/proxies", "/v1/filters"]);
            (Method::GET, (*path).to_owned(), &[])
        }
        10 => (Method::GET, format!("/{}", segment(c)), &[]),
        11 => (Method::GET, "/v1/openapi.yaml".to_owned(), &[]),
        _ => (Method::DELETE, "/v1/mesh".to_owned(), &[]),
    };
    let method = if c.chance(5) {
        c.pick(&[Method::GET, Method::POST, Method::PATCH, Method::HEAD])
            .clone()
    } else {
        method
    };
    (method, format!("{path}{}", query(c, keys)))
}

fn body(c: &mut Choices<'_>) -> Vec<u8> {
    match c.below(10) {
        0..=5 => yaml::mesh_config(c).into_bytes(),
        6 => b"\xff\xfeproxies: []\n".to_vec(),
        7 => b"\0asm\x0d\0\x01\0".to_vec(),
        _ => (0..c.below(300)).map(|_| c.byte()).collect(),
    }
}

/// `text` without the bytes no header value may hold (CR, LF, NUL and other controls).
fn header_value(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
        .collect()
}

fn made_call(c: &mut Choices<'_>) -> Call {
    let (method, target) = route(c);
    let mut headers = Vec::new();
    match c.below(20) {
        1 => {}
        2 => headers.push(("authorization".into(), b"Bearer wrong".to_vec())),
        3 => headers.push(("authorization".into(), PROXY_TOKEN.into())),
        _ => headers.push((
            "authorization".into(),
            format!("Bearer {TOKEN}").into_bytes(),
        )),
    }
    if c.chance(10) {
        headers.push(("x-weft-user".into(), header_value(&c.text(70))));
    }
    if c.chance(5) {
        headers.push(("host".into(), header_value(&c.text(20))));
    }
    if c.chance(10) {
        let ct = c.pick(&["application/json", "text/yaml", "application/wasm", "x"]);
        headers.push(("content-type".into(), ct.as_bytes().to_vec()));
    }
    Call {
        method,
        target,
        headers,
        body: body(c),
    }
}

/// The server and a client to it, for the whole run.
struct Env {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    _data: TempDir,
}

impl Env {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let data = TempDir::new();
        let mut opts = Options::new(ANY_PORT.parse().expect("an address"), data.0.join("data"));
        opts.token = Some(TOKEN.to_owned());
        opts.proxy_token = Some(PROXY_TOKEN.to_owned());
        let server = rt
            .block_on(within(weft_config_server::start(opts)))
            .expect("the config server starts");
        let base = format!("http://{}", server.addr());
        let client = rt.block_on(async { Client::builder(TokioExecutor::new()).build_http() });
        let env = Self {
            rt,
            server: Some(server),
            client,
            base,
            _data: data,
        };
        // A pushed filter, so that mesh configs naming `filter:hello` can load.
        let hello = std::fs::read(weft_tests::guests::HELLO).expect("the hello guest");
        let (status, _) = env.send(&Call {
            method: Method::PUT,
            target: "/v1/filters/hello".into(),
            headers: vec![(
                "authorization".into(),
                format!("Bearer {TOKEN}").into_bytes(),
            )],
            body: hello,
        });
        assert!(status.is_success(), "pushing hello: {status}");
        env
    }

    /// Send `call`; the status and body of the answer.
    fn send(&self, call: &Call) -> (StatusCode, Bytes) {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", self.base, call.target));
        for (name, value) in &call.headers {
            req = req.header(name.as_str(), value.as_slice());
        }
        let Ok(req) = req.body(Full::new(Bytes::from(call.body.clone()))) else {
            // A header the client cannot send: nothing to ask the server.
            return (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(br#"{"error":"-"}"#),
            );
        };
        self.rt.block_on(async {
            let answer = tokio::time::timeout(ANSWER_WITHIN, async {
                let resp = self.client.request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
            })
            .await;
            match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => panic!("no answer to {call:?}: {e}"),
                Err(_) => panic!("no answer within {ANSWER_WITHIN:?} to {call:?}"),
            }
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(within(server.shutdown()));
        }
    }
}

/// What every answer must be: not a server error, and a refusal says why in JSON.
fn assert_well_formed(call: &Call, status: StatusCode, body: &[u8]) {
    let shown = || {
        format!(
            "{} {} answered {status}: {}",
            call.method,
            call.target,
            String::from_utf8_lossy(body)
        )
    };
    assert!(!status.is_server_error(), "{}", shown());
    if status.is_client_error() && call.method != Method::HEAD {
        let json: serde_json::Value =
            serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", shown()));
        assert!(json["error"].is_string(), "no error: {}", shown());
    }
}

#[test]
fn api_answers_every_request() {
    let env = AssertUnwindSafe(Env::start());
    check!()
        .with_iterations(cases(1000))
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| {
            let call = made_call(&mut Choices::new(bytes));
            let (status, body) = env.send(&call);
            assert_well_formed(&call, status, &body);
        });
    // And it still serves an ordinary read.
    let (status, _) = env.send(&Call {
        method: Method::GET,
        target: "/v1/versions".into(),
        headers: vec![(
            header::AUTHORIZATION.to_string(),
            format!("Bearer {TOKEN}").into_bytes(),
        )],
        body: Vec::new(),
    });
    assert_eq!(status, StatusCode::OK);
}

/// Found by the target above: a path segment that is not UTF-8 once decoded is
/// refused by the router's own extractor, in plain text (`Invalid URL: Invalid UTF-8
/// in `name``), where every other refusal is JSON.
#[test]
fn a_path_segment_that_is_not_utf8_is_refused_in_json() {
    let env = Env::start();
    for (method, target) in [
        (Method::GET, "/v1/filters/%FF"),
        (Method::PUT, "/v1/filters/%c3%28"),
        (Method::GET, "/v1/proxies/%FF/config"),
    ] {
        let call = Call {
            method,
            target: target.into(),
            headers: vec![(
                "authorization".into(),
                format!("Bearer {TOKEN}").into_bytes(),
            )],
            body: Vec::new(),
        };
        let (status, body) = env.send(&call);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}");
        assert_well_formed(&call, status, &body);
    }
}
