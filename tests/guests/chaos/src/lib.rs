//! A filter whose hooks do random things, so the fuzz targets can check the host
//! side of the filter contract: whatever a filter asks for and returns, the proxy
//! answers well-formed HTTP and goes on serving.
//!
//! Config: `{ seed: u64, panics: bool = false, status: u16 = none, body: "" }`. The seed
//! decides the filter's interest (hooks, body modes, named headers, trailers, kept
//! body). Each hook draws from the seed, the hook, the attempt and the request's
//! number (its `x-chaos-n` header; else a counter in the filter's shared state), so
//! a request replays alone:
//! - the request hook sets, adds and removes headers (invalid names and values and
//!   the ones the proxy owns among them), sets the path, the authority, the body, the
//!   exchange settings, the route name, properties and an upstream identity, then
//!   continues, answers with a local response (any status, any headers), routes
//!   (to clusters that exist and ones that do not) or delays;
//! - the response hook sets the status, headers and body, then continues, answers or
//!   asks for a retry;
//! - with `panics`, a hook now and then panics, for the failure policies;
//! - with `status`, the request hook does nothing but answer with that status and
//!   `body`: the one decision of a failing case, alone.

use weft_sdk::prelude::*;
use weft_sdk::{ExchangeSetting, log, state};

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Chaos {
    seed: u64,
    #[serde(default)]
    panics: bool,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    body: String,
}

/// splitmix64: small, and every seed gives its own sequence.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, n: u64) -> Self {
        Self(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` characters: ASCII mostly, with CR, LF, NUL, DEL and multi-byte ones.
    fn text(&mut self, max: usize) -> String {
        const ODD: &[char] = &['\r', '\n', '\0', '\x7f', ' ', ':', '/', '%', 'é', '💥'];
        let len = self.below(max + 1);
        (0..len)
            .map(|_| match self.below(40) {
                0..=4 => *self.pick(ODD),
                _ => char::from(b'a' + self.below(26) as u8),
            })
            .collect()
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The request header that numbers a request, for its hooks' decisions.
const NUMBER: &str = "x-chaos-n";

const STATUSES: &[u16] = &[
    200, 0, 1, 99, 100, 101, 103, 199, 204, 205, 304, 404, 500, 599, 600, 999, 1000, 65535,
];
const HEADER_NAMES: &[&str] = &[
    "x-chaos",
    "X-Upper",
    "",
    "a b",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    ":path",
    "traceparent",
    "tracestate",
    "x-weft-attempt",
    "x-weft-source-workload",
    "content-type",
    "set-cookie",
    "trailer",
    "keep-alive",
    "grpc-status",
    "x\r\ny",
    "é",
];
const HEADER_VALUES: &[&str] = &[
    "v",
    "",
    "a\r\nb",
    "\0",
    "é",
    " lead",
    "trail ",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-0000000000000000-00",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "chunked",
    "close",
    "websocket",
    "99999999999999999999",
    "-1",
    "5",
];
const PATHS: &[&str] = &[
    "/", "/a/../b", "", "x", "/%zz", "/a b", "/\0", "//x", "/?q", "/#f", "*", "/é", "/%2e%2e/",
];
const AUTHORITIES: &[&str] = &[
    "a",
    "",
    "[::1]",
    "[::1]:80",
    "a b",
    "user@h",
    "h:99999",
    "[",
    "é",
    "web:80",
    "127.0.0.1",
];
const CLUSTERS: &[&str] = &["web", "api", "nope", ""];
const NANOS: &[u64] = &[1, 1_000, 1_000_000, 100_000_000, 2_000_000_000, 0, u64::MAX];
/// Delays stay short: the request path waits for them (up to a minute) by design.
const DELAYS: &[u64] = &[0, 1, 1_000, 1_000_000, 20_000_000];
const RETRY_DELAYS: &[u64] = &[0, 1_000, 1_000_000, 10_000_000, u64::MAX];
const IDENTITIES: &[&str] = &["*", "spiffe://a/b", "spiffe://a/*", "", "x", "spiffe://"];

/// What a call returned does not matter here: only that the proxy copes with it.
fn ignore<T>(_: T) {}

fn name(rng: &mut Rng) -> String {
    if rng.chance(10) {
        rng.text(12)
    } else {
        (*rng.pick(HEADER_NAMES)).to_owned()
    }
}

fn value(rng: &mut Rng) -> String {
    match rng.below(20) {
        0 => rng.text(24),
        1 => "a".repeat(rng.below(20_000)),
        _ => (*rng.pick(HEADER_VALUES)).to_owned(),
    }
}

fn local_response(rng: &mut Rng) -> LocalResponse {
    let status = if rng.chance(70) {
        200 + rng.below(400) as u16
    } else {
        *rng.pick(STATUSES)
    };
    let mut local = LocalResponse::new(status);
    for _ in 0..rng.below(4) {
        local = local.header(name(rng), value(rng).as_bytes());
    }
    local.body(rng.bytes(64))
}

/// Changes to the request and its context, a few of many kinds, each logged (at
/// debug level) with what the proxy said to it.
fn meddle_with_request(rng: &mut Rng, req: &Request, ctx: &Context) {
    for _ in 0..rng.below(6) {
        match rng.below(12) {
            0 => {
                let (n, v) = (name(rng), value(rng));
                note(format!("set-header {n:?} {v:?}"), req.set_header(&n, &v));
            }
            1 => {
                let (n, v) = (name(rng), value(rng));
                note(format!("add-header {n:?} {v:?}"), req.add_header(&n, &v));
            }
            2 => {
                let n = name(rng);
                note(format!("remove-header {n:?}"), req.remove_header(&n));
            }
            3 => {
                let p = path(rng);
                note(format!("set-path {p:?}"), req.set_path(&p));
            }
            4 => {
                let a = authority(rng);
                note(format!("set-authority {a:?}"), req.set_authority(&a));
            }
            5 => {
                let body = rng.bytes(2048);
                note(format!("set-body of {}", body.len()), req.set_body(&body));
            }
            6 => {
                let setting = setting(rng);
                note(format!("configure {setting:?}"), ctx.configure(setting));
            }
            7 => ctx.set_route(&rng.text(160)),
            8 => ignore(ctx.set(&rng.text(80), &rng.bytes(1500))),
            9 => {
                let id = *rng.pick(IDENTITIES);
                note(format!("require {id:?}"), ctx.require_upstream_identity(id));
            }
            10 => ignore((req.head(), req.headers(), req.body(), ctx.facts())),
            _ => ignore(req.header_all(&name(rng))),
        }
    }
}

/// Log a change and what the proxy said to it, so a failing case can be read.
fn note(what: String, result: impl std::fmt::Debug) {
    log::debug(&format!("chaos: {what}: {result:?}"));
}

fn path(rng: &mut Rng) -> String {
    if rng.chance(20) {
        format!("/{}", rng.text(40))
    } else {
        (*rng.pick(PATHS)).to_owned()
    }
}

fn authority(rng: &mut Rng) -> String {
    if rng.chance(20) {
        rng.text(20)
    } else {
        (*rng.pick(AUTHORITIES)).to_owned()
    }
}

fn setting(rng: &mut Rng) -> ExchangeSetting {
    let ns = *rng.pick(NANOS);
    if rng.chance(50) {
        ExchangeSetting::Timeout(ns)
    } else {
        ExchangeSetting::PerTryTimeout(ns)
    }
}

/// Changes to the response, each logged.
fn meddle_with_response(rng: &mut Rng, resp: &Response, ctx: &Context) {
    for _ in 0..rng.below(5) {
        match rng.below(8) {
            0 => {
                let status = *rng.pick(STATUSES);
                note(format!("set-status {status}"), resp.set_status(status));
            }
            1 => {
                let (n, v) = (name(rng), value(rng));
                note(format!("set-header {n:?} {v:?}"), resp.set_header(&n, &v));
            }
            2 => {
                let (n, v) = (name(rng), value(rng));
                note(format!("add-header {n:?} {v:?}"), resp.add_header(&n, &v));
            }
            3 => {
                let n = name(rng);
                note(format!("remove-header {n:?}"), resp.remove_header(&n));
            }
            4 => {
                let body = rng.bytes(2048);
                note(format!("set-body of {}", body.len()), resp.set_body(&body));
            }
            5 => {
                let setting = setting(rng);
                note(format!("configure {setting:?}"), ctx.configure(setting));
            }
            6 => ignore((
                resp.head(),
                resp.headers(),
                resp.body(),
                ctx.upstream_identity(),
            )),
            _ => ignore((ctx.grpc_status(), ctx.request_head(), ctx.facts())),
        }
    }
}

impl Chaos {
    /// This hook's decisions: the seed and how many times hooks of this kind ran.
    /// This hook's decisions: from the seed, the hook, the attempt, and the request's
    /// number in `x-chaos-n` (else a count of the hook's calls), so that one request
    /// replays alone.
    fn rng(&self, hook: u64, ctx: &Context, attempt: u32) -> Rng {
        let n = ctx
            .request_head()
            .header(NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| state::increment("calls", 1).unwrap_or(0) as u64);
        let hook = hook.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (u64::from(attempt) << 48);
        Rng::new(self.seed ^ hook, n)
    }

    fn maybe_panic(&self, rng: &mut Rng) {
        if self.panics && rng.chance(3) {
            panic!("chaos: a panic on purpose");
        }
    }
}

impl Filter for Chaos {
    fn interest(&self) -> Interest {
        let mut rng = Rng::new(self.seed, u64::MAX);
        let mut i = Interest::REQUEST;
        if rng.chance(30) {
            i = i.with_request_body();
        }
        if rng.chance(60) {
            i = i.with_response();
        }
        if rng.chance(30) {
            i = i.with_response_body();
        }
        if rng.chance(30) {
            i = i.with_done();
        }
        if rng.chance(20) {
            i = i.with_trailers();
        }
        let named = [
            "x-chaos",
            "traceparent",
            "Host",
            "grpc-status",
            "content-length",
        ];
        i = i.with_request_headers(named.iter().filter(|_| rng.chance(40)));
        i = i.with_response_headers(named.iter().filter(|_| rng.chance(40)));
        i.keep_request_body(*rng.pick(&[0, 1, 1024, 1 << 20, u64::MAX]))
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        if let Some(status) = self.status {
            return Action::Respond(LocalResponse::new(status).body(&self.body));
        }
        let mut rng = self.rng(1, ctx, 0);
        self.maybe_panic(&mut rng);
        meddle_with_request(&mut rng, req, ctx);
        let action = match rng.below(20) {
            0..=3 => Action::Respond(local_response(&mut rng)),
            4 | 5 => Action::route(*rng.pick(CLUSTERS)),
            6 | 7 => Action::Delay(*rng.pick(DELAYS)),
            _ => Action::Continue,
        };
        note("request hook returns".into(), &action);
        action
    }

    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        let mut rng = self.rng(2, ctx, resp.head().attempt);
        self.maybe_panic(&mut rng);
        meddle_with_response(&mut rng, resp, ctx);
        let action = match rng.below(10) {
            0 | 1 => ResponseAction::Respond(local_response(&mut rng)),
            2..=4 => ResponseAction::Retry(*rng.pick(RETRY_DELAYS)),
            _ => ResponseAction::Continue,
        };
        note("response hook returns".into(), &action);
        action
    }

    fn on_done(&mut self, ctx: &Context, summary: &Summary) {
        let mut rng = self.rng(3, ctx, ctx.facts().attempt);
        self.maybe_panic(&mut rng);
        let _ = (ctx.facts(), ctx.grpc_status(), summary.status);
    }
}

weft_sdk::export!(Chaos);
