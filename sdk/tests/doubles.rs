//! A filter's hooks tested on the host through the SDK's doubles, as a filter author
//! writes such tests: the request in, what the filter changed, what the client got,
//! and what it logged and counted.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::testing::{self, Edit, Exchange, MetricValue};
use weft_sdk::{HeaderError, RequestHead, Responder, ResponseHead, SettingError, time};

/// A small gate: refuses some paths, sends canary requests to their own cluster,
/// limits each user to `limit` requests per window, stamps responses, retries a 503.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde")]
struct Gate {
    deny: Vec<String>,
    canary: String,
    timeout_ms: u64,
    limit: u32,
    window_secs: u64,
    #[serde(skip)]
    windows: HashMap<String, (Duration, u32)>,
    #[serde(skip)]
    requests: Option<Counter>,
}

impl Gate {
    fn count(&self, verdict: &str) {
        if let Some(c) = &self.requests {
            let _ = c.inc(&[verdict]);
        }
    }

    /// Whether `user` is over the limit in the current window (on the proxy's clock).
    fn over_limit(&mut self, user: &str) -> bool {
        let now = time::monotonic();
        let window = Duration::from_secs(self.window_secs);
        let (start, n) = self.windows.entry(user.to_owned()).or_insert((now, 0));
        if now - *start >= window {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        *n > self.limit
    }
}

impl Filter for Gate {
    fn init(&mut self) -> Result<(), String> {
        let c = Counter::define("requests", "Requests by verdict.", &["verdict"])
            .map_err(|e| format!("cannot define a metric: {e}"))?;
        self.requests = Some(c);
        Ok(())
    }

    fn interest(&self) -> Interest {
        Interest::REQUEST
            .with_response()
            .with_done()
            .with_request_headers(["x-user", "x-canary"])
            .with_response_headers(["server"])
    }

    fn clusters(&self) -> Vec<ClusterRef> {
        vec![ClusterRef::new(&self.canary, "canary")]
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        if self.deny.iter().any(|p| p == head.path_only()) {
            weft_sdk::log::warn(&format!("denied {}", head.path()));
            self.count("denied");
            return Action::respond(403, "denied\n");
        }
        let user = head.header("x-user").unwrap_or("anonymous").to_owned();
        if self.over_limit(&user) {
            self.count("limited");
            return Action::respond(429, "slow down\n");
        }
        let _ = req.set_header("x-gate", "seen");
        let _ = req.remove_header("x-debug");
        let _ = ctx.set("user", user.as_bytes());
        let _ = ctx.set_timeout(Duration::from_millis(self.timeout_ms));
        self.count("passed");
        if head.header("x-canary") == Some("1") {
            ctx.set_route("canary");
            return Action::route(&self.canary);
        }
        Action::Continue
    }

    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        let head = resp.head();
        if head.status == 503 && head.attempt == 1 {
            return ResponseAction::retry(Duration::from_millis(10));
        }
        if let Some(user) = ctx.get("user") {
            let _ = resp.set_header("x-served-user", &String::from_utf8_lossy(&user));
        }
        ResponseAction::Continue
    }

    fn on_done(&mut self, _: &Context, summary: &Summary) {
        weft_sdk::log::info(&format!("done {}", summary.status));
    }
}

const CONFIG: &str =
    r#"{"deny":["/admin"],"canary":"shop-canary","timeout_ms":1500,"limit":2,"window_secs":60}"#;

fn gate() -> Exchange<Gate> {
    Exchange::init(CONFIG).expect("the config loads")
}

fn get(path: &str) -> RequestHead {
    RequestHead::new("GET", path).with_authority("shop.local")
}

fn ok() -> Response {
    Response::new(ResponseHead::new(200).with_header("server", "app")).with_body("hello")
}

#[test]
fn headers_change_and_a_property_reaches_on_response() {
    let req = Request::new(
        get("/cart")
            .with_header("x-user", "ann")
            .with_header("x-debug", "1"),
    );
    let out = gate().run(req, ok());

    assert_eq!(out.action, Some(Action::Continue));
    assert_eq!(out.request.header("x-gate").as_deref(), Some("seen"));
    assert_eq!(out.request.header("x-debug"), None);
    assert_eq!(
        out.request.edits(),
        [
            Edit::SetHeader {
                name: "x-gate".into(),
                value: "seen".into()
            },
            Edit::RemoveHeader("x-debug".into()),
        ]
    );
    assert_eq!(out.context.get("user").as_deref(), Some(&b"ann"[..]));
    assert_eq!(out.response_actions, [ResponseAction::Continue]);
    assert_eq!(out.response.header("x-served-user").as_deref(), Some("ann"));
    assert_eq!((out.status(), out.responder()), (200, &Responder::Upstream));
    assert_eq!(out.summary.response_bytes, 5);
    assert_eq!(out.attempts, 1);
}

#[test]
fn a_local_response_skips_the_filters_own_on_response() {
    let out = gate().named("gate").run(Request::new(get("/admin")), ok());

    let local = out.action.as_ref().and_then(Action::local_response);
    assert_eq!(local.map(|l| l.status), Some(403));
    assert!(out.response_actions.is_empty(), "on_response did not run");
    assert_eq!(out.attempts, 0, "nothing went upstream");
    assert_eq!(out.status(), 403);
    assert_eq!(out.responder(), &Responder::Filter("gate".into()));
    assert_eq!(out.response.body_now().as_deref(), Some(&b"denied\n"[..]));
    assert_eq!(out.response.header("x-served-user"), None);
    // on_done still ran, and the filter logged and counted the refusal.
    assert!(testing::logged("denied /admin"));
    assert_eq!(
        testing::logs().last().map(ToString::to_string).as_deref(),
        Some("INFO done 403")
    );
    assert_eq!(testing::metric_value("requests", &["denied"]), Some(1.0));
    assert_eq!(testing::metric_value("requests", &["passed"]), Some(0.0));
}

#[test]
fn a_route_goes_to_a_declared_cluster_and_names_the_route() {
    let mut gate = gate();
    assert_eq!(
        testing::declared_clusters(),
        [ClusterRef::new("shop-canary", "canary")]
    );
    let req = Request::new(get("/").with_header("x-canary", "1"));
    let out = gate.run(req, ok());
    assert_eq!(out.routed_to(), Some("shop-canary"));
    assert_eq!(out.context.route().as_deref(), Some("canary"));
    assert_eq!(out.context.facts().cluster.as_deref(), Some("shop-canary"));
    assert_eq!(out.status(), 200);
}

#[test]
fn a_route_to_an_undeclared_cluster_is_answered_502_by_the_proxy() {
    // A filter that declared its clusters may route only to those.
    #[derive(Deserialize)]
    #[serde(crate = "weft_sdk::serde")]
    struct Stray {}
    impl Filter for Stray {
        fn clusters(&self) -> Vec<ClusterRef> {
            vec![ClusterRef::new("known", "cluster")]
        }
        fn on_request(&mut self, _: &Request, _: &Context) -> Action {
            Action::route("unknown")
        }
    }
    let out = Exchange::<Stray>::init("null")
        .unwrap()
        .run(Request::new(get("/")), ok());
    assert_eq!(
        (out.status(), out.responder()),
        (502, &Responder::Proxy(None))
    );
    assert_eq!(out.attempts, 0);
}

#[test]
fn the_timeout_is_set_before_the_request_goes_upstream() {
    let out = gate().run(Request::new(get("/")), ok());
    assert_eq!(out.context.timeout(), Some(Duration::from_millis(1500)));
    assert_eq!(out.context.per_try_timeout(), None);
    // Once an attempt went upstream, settings are refused, as in the proxy.
    assert_eq!(
        out.context.set_timeout(Duration::from_secs(1)),
        Err(SettingError::TooLate)
    );
}

#[test]
fn advancing_the_clock_expires_the_rate_window() {
    testing::clock::set(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut gate = gate();
    let from_bob = || Request::new(get("/").with_header("x-user", "bob"));
    assert_eq!(gate.run(from_bob(), ok()).status(), 200);
    assert_eq!(gate.run(from_bob(), ok()).status(), 200);
    assert_eq!(gate.run(from_bob(), ok()).status(), 429);

    testing::clock::advance(Duration::from_secs(59));
    assert_eq!(
        gate.run(from_bob(), ok()).status(),
        429,
        "the window is still open"
    );
    testing::clock::advance(Duration::from_secs(1));
    assert_eq!(gate.run(from_bob(), ok()).status(), 200, "a new window");

    assert_eq!(
        testing::metric("requests", &["limited"]),
        Some(MetricValue::Counter(2))
    );
    assert_eq!(
        time::wall(),
        UNIX_EPOCH + Duration::from_secs(1_700_000_060)
    );
}

#[test]
fn a_503_is_retried_and_the_next_attempt_answers() {
    testing::clock::set(UNIX_EPOCH);
    let unavailable = Response::new(ResponseHead::new(503));
    let req = Request::new(get("/"));
    let ctx = Context::for_request(&req);
    let out = gate().run_in(req, ctx, [unavailable, ok()]);
    assert_eq!(out.attempts, 2);
    assert_eq!(
        out.response_actions,
        [
            ResponseAction::retry(Duration::from_millis(10)),
            ResponseAction::Continue
        ]
    );
    assert_eq!(out.status(), 200);
    assert_eq!(
        out.summary.duration, 10_000_000,
        "the retry's delay passed on the test clock"
    );
}

#[test]
fn metrics_are_listed_with_the_names_the_proxy_exports() {
    let _ = gate().run(Request::new(get("/")), ok());
    let series = testing::metrics();
    let passed = series
        .iter()
        .find(|s| s.labels == [("verdict".into(), "passed".into())]);
    let passed = passed.expect("the passed series");
    assert_eq!(passed.exported, "weft_filter_requests_total");
    assert_eq!(passed.value, MetricValue::Counter(1));
}

#[test]
fn hooks_can_be_called_directly_with_built_values() {
    let mut gate: Gate = weft_sdk::from_config(CONFIG).unwrap();
    let req = Request::new(get("/x").with_header("x-user", "cy"));
    let ctx = Context::for_request(&req).with_local_identity("spiffe://shop.local/sa/gate");
    assert_eq!(gate.on_request(&req, &ctx), Action::Continue);
    // The context reads the request as the filter left it.
    assert_eq!(ctx.request_head().header("x-user"), Some("cy"));
    assert_eq!(
        ctx.local_identity().as_deref(),
        Some("spiffe://shop.local/sa/gate")
    );

    let resp = Response::new(ResponseHead::new(200));
    assert_eq!(gate.on_response(&resp, &ctx), ResponseAction::Continue);
    assert_eq!(resp.header("x-served-user").as_deref(), Some("cy"));
    assert_eq!(resp.edits().len(), 1);
}

#[test]
fn the_doubles_refuse_what_the_proxy_refuses() {
    let req = Request::new(get("/"));
    assert_eq!(req.set_header("host", "evil"), Err(HeaderError::Forbidden));
    assert_eq!(
        req.set_header("bad name", "v"),
        Err(HeaderError::InvalidName)
    );
    assert_eq!(
        req.set_header("x-a", "line\nbreak"),
        Err(HeaderError::InvalidValue)
    );
    assert!(req.set_path("no-slash").is_err());
    assert!(req.set_body(b"x").is_err(), "no body was buffered");
    assert!(req.set_authority("api.shop.local").is_ok());
    assert_eq!(req.header("host").as_deref(), Some("api.shop.local"));

    let resp = Response::new(ResponseHead::new(200));
    assert!(resp.set_status(101).is_err());

    let ctx = Context::new();
    assert_eq!(
        ctx.set(&"k".repeat(65), b""),
        Err(weft_sdk::PropertyError::TooLarge)
    );
    assert_eq!(
        ctx.set_timeout(Duration::ZERO),
        Err(SettingError::OutOfRange)
    );
    assert_eq!(
        ctx.require_upstream_identity("not a pattern"),
        Err(SettingError::OutOfRange)
    );
    assert!(
        ctx.require_upstream_identity("spiffe://shop.local/ns/pay/*")
            .is_ok()
    );
    assert_eq!(
        ctx.required_upstream_identity().as_deref(),
        Some("spiffe://shop.local/ns/pay/*")
    );
}

#[test]
fn a_lent_request_shows_only_the_headers_the_interest_names() {
    #[derive(Deserialize)]
    #[serde(crate = "weft_sdk::serde")]
    struct Peek {}
    impl Filter for Peek {
        fn interest(&self) -> Interest {
            Interest::REQUEST.with_request_headers(["x-named"])
        }
        fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
            let head = req.head();
            let seen = format!("{:?}/{:?}", head.header("x-named"), head.header("x-other"));
            let _ = ctx.set("seen", seen.as_bytes());
            Action::Continue
        }
    }
    let req = Request::new(
        get("/")
            .with_header("x-named", "a")
            .with_header("x-other", "b"),
    );
    let out = Exchange::<Peek>::init("{}").unwrap().run(req, ok());
    assert_eq!(
        out.context.get("seen").as_deref(),
        Some(&b"Some(\"a\")/None"[..])
    );
    assert!(
        out.response_actions.is_empty(),
        "no response hook asked for"
    );
}

#[test]
fn reset_forgets_what_the_thread_recorded() {
    let _ = gate().run(Request::new(get("/admin")), ok());
    weft_sdk::state::set("k", b"v").unwrap();
    assert!(!testing::logs().is_empty());
    testing::reset();
    assert!(testing::logs().is_empty());
    assert!(testing::metrics().is_empty());
    assert!(weft_sdk::state::get("k").is_none());
    assert!(!testing::clock::is_set());
}

#[test]
fn a_state_key_with_a_time_to_live_expires_on_the_test_clock() {
    testing::clock::set(UNIX_EPOCH + Duration::from_secs(1_000));
    let ttl = Duration::from_secs(30);
    weft_sdk::state::set_with_ttl("session/ann", b"token", ttl).unwrap();
    testing::clock::advance(Duration::from_secs(29));
    assert!(weft_sdk::state::get("session/ann").is_some());
    testing::clock::advance(Duration::from_secs(1));
    assert!(weft_sdk::state::get("session/ann").is_none(), "expired");
    assert!(weft_sdk::state::keys("session/", None, 10).is_empty());
}

#[test]
fn an_invalid_local_response_is_answered_500_by_the_proxy() {
    #[derive(Deserialize)]
    #[serde(crate = "weft_sdk::serde")]
    struct Broken {
        status: u16,
    }
    impl Filter for Broken {
        fn on_request(&mut self, _: &Request, _: &Context) -> Action {
            Action::Respond(LocalResponse::new(self.status).header("x-bad\n", "v"))
        }
    }
    for status in [200, 101] {
        let config = format!(r#"{{"status":{status}}}"#);
        let out = testing::run::<Broken>(&config, Request::new(get("/")), ok()).unwrap();
        assert_eq!(
            (out.status(), out.responder()),
            (500, &Responder::Proxy(None))
        );
    }
}
