//! The harness drives real built filters (the built-ins, and the test guests the
//! tests crate builds) and reports what the proxy would have done with them.

use std::time::Duration;

use weft_harness::{
    Action, ExchangeError, FailurePolicy, Harness, Hook, Options, RequestSpec, Responder,
    ResponseSpec, TlsInfo,
};
use weft_tests::guests;

fn builtin(name: &str, config: &str) -> Harness {
    let bytes = weft_builtin::get(name).expect("a built-in filter");
    Harness::from_bytes(bytes, config).expect("the filter loads")
}

fn hooks(run: &weft_harness::Run) -> Vec<(Hook, String)> {
    (run.steps.iter())
        .map(|s| (s.hook, s.decision.clone()))
        .collect()
}

#[test]
fn an_abort_answers_locally_and_the_upstream_is_never_asked() {
    let fault = builtin(
        "fault",
        r#"{"abort":{"status":503,"percentage":100,"body":"nope"}}"#,
    );
    let run = fault.request(RequestSpec::get("/api")).unwrap();
    let Action::Respond(local) = &run.action else {
        panic!("expected a local answer, got {:?}", run.action);
    };
    assert_eq!(local.status, 503);
    assert_eq!(run.response.status, 503);
    assert_eq!(run.response.body, b"nope");
    assert_eq!(run.response.header("x-weft-fault"), Some("abort"));
    assert_eq!(run.response.responder, Responder::Filter);
    assert_eq!(run.attempts, 0);
    assert!(!run.failed());
}

#[test]
fn a_delay_goes_on_upstream_unless_it_outlasts_the_request() {
    let fault = builtin(
        "fault",
        r#"{"delay":{"duration":"200ms","percentage":100}}"#,
    );
    let run = fault.request(RequestSpec::get("/")).unwrap();
    assert_eq!(run.action, Action::Delay(Duration::from_millis(200)));
    assert_eq!(run.response.status, 200);
    assert_eq!(run.response.responder, Responder::Upstream);
    assert_eq!(run.attempts, 1);
    assert_eq!(run.cluster.as_deref(), Some("default"));

    // The listener's timeout is 30 s; the proxy cuts the request off with 504.
    let fault = builtin("fault", r#"{"delay":{"duration":"40s","percentage":100}}"#);
    let run = fault.request(RequestSpec::get("/")).unwrap();
    assert_eq!(run.response.status, 504);
    let timed_out = Responder::Proxy(Some(ExchangeError::Timeout));
    assert_eq!(run.response.responder, timed_out);
    assert_eq!(run.attempts, 0);
}

#[test]
fn a_route_names_the_cluster_and_a_rewrite_changes_the_request() {
    let router = builtin(
        "router",
        r#"{"routes":[{"name":"api","match":{"path":{"prefix":"/api/"}},"cluster":"web",
            "rewrite":{"prefix":"/","host":"web.internal"}}]}"#,
    );
    assert_eq!(router.clusters()[0].name, "web");
    let run = router.request(RequestSpec::get("/api/users?id=7")).unwrap();
    assert_eq!(run.action, Action::Route("web".into()));
    assert_eq!(run.cluster.as_deref(), Some("web"));
    assert_eq!(run.request.path, "/users?id=7");
    assert_eq!(run.request.authority.as_deref(), Some("web.internal"));
    assert_eq!(run.settings.route.as_deref(), Some("api"));

    // No route matches: the router's own 404.
    let run = router.request(RequestSpec::get("/else")).unwrap();
    assert_eq!(run.response.status, 404);
    assert_eq!(run.response.responder, Responder::Filter);
}

#[test]
fn a_retry_goes_again_while_the_proxy_allows_it() {
    let retry = builtin("retry", r#"{"backoff":{"base":"1ms","max":"1ms"}}"#);
    let run = retry
        .request(
            RequestSpec::get("/")
                .response(ResponseSpec::failed(ExchangeError::ConnectFailure))
                .response(ResponseSpec::new(200).body("ok")),
        )
        .unwrap();
    assert_eq!(run.attempts, 2);
    assert_eq!(run.response.status, 200);
    assert_eq!(run.response.body, b"ok");
    let steps = hooks(&run);
    assert!(steps[0].1.starts_with("retry in"), "{steps:?}");
    assert_eq!(steps[1], (Hook::Response, "continue".to_owned()));

    // A body larger than the filter keeps cannot be sent again: the failure stands.
    let retry = builtin("retry", r#"{"max_body":"4","methods":["PUT"]}"#);
    let put = RequestSpec::new("PUT", "/")
        .body("more than four bytes")
        .response(ResponseSpec::failed(ExchangeError::Reset));
    let run = retry.request(put).unwrap();
    assert_eq!(run.attempts, 1);
    assert_eq!(run.response.status, 502);
    let reset = Responder::Proxy(Some(ExchangeError::Reset));
    assert_eq!(run.response.responder, reset);
    assert_eq!(
        hooks(&run)[0].1,
        "retry refused: the request body was not kept"
    );
}

#[test]
fn marks_properties_state_and_metrics_show_in_the_run() {
    let stamp = Harness::load(guests::STAMP, r#"{"name":"a","count":true}"#).unwrap();
    let spec = || RequestSpec::get("/x").header("x-in", "1");
    let run = stamp.request(spec()).unwrap();
    assert_eq!(run.request.header("x-stamp-req"), Some("a"));
    assert_eq!(run.request.header("x-count"), Some("1"));
    assert_eq!(run.request.header("x-in"), Some("1"));
    assert_eq!(run.response.header("x-stamp"), Some("a"));
    assert_eq!(run.response.header("x-stamp-ctx"), Some("/x"));
    assert_eq!(run.response.header("x-stamp-attempt"), Some("1"));
    assert_eq!(run.property("stamp.a"), Some(&b"/x"[..]));
    let order: Vec<Hook> = run.steps.iter().map(|s| s.hook).collect();
    assert_eq!(order, [Hook::Request, Hook::Response]);

    // State and metrics live as long as the filter, across requests.
    let run = stamp.request(spec()).unwrap();
    assert_eq!(run.request.header("x-count"), Some("2"));
    let name = "weft_filter_stamp_requests_total";
    assert_eq!(stamp.metric(name, &[("path_kind", "other")]), Some(2.0));
    let text = stamp.metrics_text();
    assert!(
        text.contains(r#"weft_filter_stamp_requests_total{filter="weft_test_guest_stamp",path_kind="other"} 2"#),
        "{text}"
    );
    assert!(!text.contains("weft_engine_"), "{text}");
}

#[test]
fn a_buffered_response_body_is_the_filters_to_change() {
    let stamp = Harness::load(guests::STAMP, r#"{"name":"a","upper":true}"#).unwrap();
    let run = stamp
        .request(RequestSpec::get("/").response(ResponseSpec::new(200).body("quiet")))
        .unwrap();
    assert_eq!(run.response.body, b"QUIET");
    // A body it did not ask for streams past it untouched.
    let stamp = Harness::load(guests::STAMP, r#"{"name":"a"}"#).unwrap();
    let run = stamp
        .request(RequestSpec::get("/").response(ResponseSpec::new(200).body("quiet")))
        .unwrap();
    assert_eq!(run.response.body, b"quiet");
}

#[test]
fn a_refusal_is_logged_counted_and_answered() {
    let policy = builtin("encryption-policy", r#"{"mode":"strict"}"#);
    let run = policy.request(RequestSpec::get("/")).unwrap();
    assert_eq!(run.response.status, 403);
    assert_eq!(run.logs.len(), 1, "{:?}", run.logs);
    assert_eq!(run.logs[0].level, weft_harness::Level::INFO);
    assert!(
        run.logs[0].message.starts_with("denied: "),
        "{:?}",
        run.logs
    );
    let denied = "weft_filter_denied_total";
    let reason = ("reason", "mutual_tls_required");
    assert_eq!(policy.metric(denied, &[reason]), Some(1.0));

    // A caller that proved its identity passes, and the upstream must prove one too.
    let policy = builtin(
        "encryption-policy",
        r#"{"mode":"strict","destinations":[{"host":"bank","identity":"spiffe://b.example/ns/bank/*"}]}"#,
    );
    let tls = TlsInfo {
        version: "TLSv1.3",
        peer_identity: Some("spiffe://b.example/ns/web/sa/web".into()),
        ..TlsInfo::default()
    };
    let run = policy
        .request(RequestSpec::get("/").authority("bank").tls(tls))
        .unwrap();
    assert_eq!(run.action, Action::Continue);
    let required = run.settings.upstream_identity.as_deref();
    assert_eq!(required, Some("spiffe://b.example/ns/bank/*"));
}

#[test]
fn a_local_answer_skips_the_filters_own_response_hook() {
    // Chaos guests draw their interest from their seed: find one with a response
    // hook, and make its request hook answer.
    let chaos = (0..32)
        .map(|seed| {
            let config = format!(r#"{{"seed":{seed},"status":418,"body":"teapot"}}"#);
            Harness::load(guests::CHAOS, &config).unwrap()
        })
        .find(|h| h.interest().response)
        .expect("a seed whose filter has a response hook");
    let run = chaos.request(RequestSpec::get("/")).unwrap();
    assert_eq!(run.response.status, 418);
    assert_eq!(run.response.body, b"teapot");
    assert!(
        run.steps.iter().all(|s| s.hook != Hook::Response),
        "{run:?}"
    );
}

#[test]
fn a_trap_fails_the_request_closed_or_open_as_the_policy_says() {
    let misbehave = Harness::load(guests::MISBEHAVE, "{}").unwrap();
    let run = misbehave.request(RequestSpec::get("/trap")).unwrap();
    let failure = run.failure.as_ref().expect("the hook failed");
    assert_eq!(failure.hook, Hook::Request);
    assert!(failure.reason.contains("trap"), "{failure:?}");
    assert!(!failure.failed_open);
    assert_eq!(run.response.status, 503);
    assert_eq!(run.response.header("x-weft-error"), Some("filter"));
    assert_eq!(run.response.responder, Responder::Proxy(None));
    assert_eq!(run.attempts, 0);

    let bytes = std::fs::read(guests::MISBEHAVE).unwrap();
    let options = Options {
        policy: FailurePolicy::FailOpen,
        ..Options::default()
    };
    let open = Harness::with_options(&bytes, "{}", "misbehave", options).unwrap();
    let run = open.request(RequestSpec::get("/panic")).unwrap();
    assert!(run.failure.as_ref().is_some_and(|f| f.failed_open));
    assert!(run.failure.unwrap().reason.contains("exploded on purpose"));
    assert_eq!(run.response.status, 200);
    assert_eq!(run.attempts, 1);

    // The instance that failed was replaced: the next request runs normally.
    let run = misbehave.request(RequestSpec::get("/fine")).unwrap();
    assert_eq!(run.request.header("x-misbehave"), Some("passed"));
}

#[test]
fn a_rejected_config_or_a_bad_module_is_an_error_at_load() {
    let err = Harness::load(guests::MISBEHAVE, r#"{"reject":true}"#).unwrap_err();
    assert!(err.to_string().contains("rejected on purpose"), "{err}");
    let err = Harness::from_bytes(b"not wasm", "null").unwrap_err();
    assert!(err.to_string().contains("not"), "{err}");
    let err = Harness::load("/nonexistent/filter.wasm", "null").unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn a_request_no_proxy_could_receive_is_refused() {
    let fault = builtin("fault", r#"{"delay":{"duration":"1ms","percentage":0}}"#);
    let err = fault.request(RequestSpec::get("no-slash")).unwrap_err();
    assert!(err.to_string().contains("path"), "{err}");
    let err = (fault.request(RequestSpec::get("/").header("bad name", "v"))).unwrap_err();
    assert!(err.to_string().contains("header name"), "{err}");
}
