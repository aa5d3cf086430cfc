use super::*;

fn load(json: &str) -> Result<Retry, String> {
    weft_sdk::from_config(json)
}

fn head(status: u16, error: Option<ExchangeError>) -> ResponseHead {
    let head = ResponseHead::new(status);
    match error {
        Some(e) => head.with_error(e),
        None => head,
    }
}

#[test]
fn defaults_retry_gateway_errors_connect_failures_and_resets() {
    let r = load("{}").unwrap();
    assert_eq!(r.max_retries, 2);
    for status in [502, 503, 504] {
        assert!(r.retryable(&head(status, None)), "{status}");
    }
    for status in [200, 404, 500, 501] {
        assert!(!r.retryable(&head(status, None)), "{status}");
    }
    assert!(r.retryable(&head(503, Some(ExchangeError::ConnectFailure))));
    assert!(r.retryable(&head(502, Some(ExchangeError::Reset))));
    assert!(!r.retryable(&head(504, Some(ExchangeError::Timeout))));
    assert!(!r.retryable(&head(504, Some(ExchangeError::PerTryTimeout))));
    assert_eq!(r.when.methods, default_methods());
    assert!(r.interest().keep_request_body > 0);
    assert!(
        !r.interest().request,
        "no request hook without a per-try timeout"
    );
}

#[test]
fn conditions_statuses_and_grpc_codes() {
    let r = load(
        r#"{"retry_on":["5xx"],"statuses":[409],"grpc":["UNAVAILABLE", 8],
            "per_try_timeout":"300ms","methods":["get","post"]}"#,
    )
    .unwrap();
    assert!(r.retryable(&head(500, None)));
    assert!(r.retryable(&head(409, None)));
    assert!(r.retryable(&head(504, Some(ExchangeError::PerTryTimeout))));
    assert!(!r.retryable(&head(504, Some(ExchangeError::ConnectFailure))));
    let grpc = |in_trailers: bool, code: &str| {
        let resp = head(200, None);
        let resp = if in_trailers {
            resp.with_trailer("grpc-status", code)
        } else {
            resp.with_header("grpc-status", code)
        };
        r.retryable(&resp)
    };
    assert!(grpc(true, "14"));
    assert!(grpc(false, "8"));
    assert!(!grpc(true, "0"));
    assert!(!grpc(true, "13"));
    assert_eq!(r.when.methods, ["GET", "POST"]);
    let i = r.interest();
    assert!(i.request && i.response_trailers);
    assert_eq!(i.response_headers, ["grpc-status"]);
}

#[test]
fn backoff_is_jittered_below_an_exponential_ceiling() {
    let r = load(r#"{"backoff":{"base":"10ms","max":"35ms"}}"#).unwrap();
    for _ in 0..200 {
        assert!(r.backoff(1) <= Duration::from_millis(10));
        assert!(r.backoff(2) <= Duration::from_millis(20));
        assert!(r.backoff(5) <= Duration::from_millis(35));
    }
    let spread: std::collections::HashSet<_> = (0..50).map(|_| r.backoff(3)).collect();
    assert!(spread.len() > 10, "full jitter spreads delays: {spread:?}");
}

#[test]
fn instances_add_their_requests_to_the_shared_window_in_batches() {
    // Two instances of one filter share the proxy's state (natively: this thread's).
    assert_eq!(budget::BATCH, 8, "this test counts in batches of eight");
    let config = r#"{"budget":{"window":"10s"}}"#;
    let (mut a, mut b) = (load(config).unwrap(), load(config).unwrap());
    let now = Duration::from_secs(1_000);
    for _ in 0..5 {
        a.when.requests.add(now);
        b.when.requests.add(now);
    }
    assert_eq!(a.when.requests.sum(now), 5, "b still holds its five");
    for _ in 0..3 {
        b.when.requests.add(now);
    }
    assert_eq!(
        a.when.requests.sum(now),
        5 + 8,
        "b added its batch of eight"
    );
    assert_eq!(b.when.requests.sum(now), 8);
    // When the second turns, what an instance gathered goes to its own second.
    let later = now + Duration::from_secs(1);
    a.when.requests.add(later);
    assert_eq!(b.when.requests.sum(later), 13);
    assert_eq!(a.when.requests.sum(later), 14);
    // Once the window has passed them, none of them count.
    assert_eq!(b.when.requests.sum(now + Duration::from_secs(10)), 0);
    assert_eq!(a.when.requests.sum(now + Duration::from_secs(10)), 1);
}

#[test]
fn the_budget_allows_its_minimum_plus_a_share_of_requests() {
    // Native tests run the proxy's state in this thread, as the proxy would.
    let mut r = load(r#"{"budget":{"ratio":0.5,"min_per_second":1,"window":"2s"}}"#).unwrap();
    let now = time::monotonic();
    for _ in 0..10 {
        r.when.requests.add(now);
    }
    assert_eq!(r.when.requests.sum(now), 10);
    // 1/s over 2 s, plus half of 10 requests: 7 retries.
    let spent = (0..20).filter(|_| r.spend()).count();
    assert_eq!(spent, 7);
    // Seconds outside the window no longer count.
    assert_eq!(r.when.requests.sum(now + Duration::from_secs(5)), 0);
}

#[test]
fn bad_configs_say_what_is_wrong() {
    let cases = [
        (r#"{"max_retries":20}"#, "max_retries: 20 is more than 9"),
        (
            r#"{"retry_on":["sometimes"]}"#,
            "unknown variant `sometimes`",
        ),
        (r#"{"grpc":["flaky"]}"#, "\"flaky\" is not a gRPC status"),
        (r#"{"grpc":[42]}"#, "42 is not a gRPC status code"),
        (
            r#"{"statuses":[42]}"#,
            "statuses[0]: 42 is not an HTTP status",
        ),
        (r#"{"backoff":{"base":"1s","max":"10ms"}}"#, "backoff.max"),
        (r#"{"budget":{"window":"0s"}}"#, "budget.window"),
        (r#"{"per_try_timeout":"soon"}"#, "invalid duration"),
        (r#"{"max_body":"lots"}"#, "invalid size"),
        (r#"{"retires":2}"#, "unknown field `retires`"),
    ];
    for (json, want) in cases {
        let e = load(json).err().unwrap_or_default();
        assert!(e.contains(want), "{json}\n  gave {e}\n  want {want}");
    }
}

#[test]
fn sizes_and_durations_take_the_proxys_units() {
    for (json, bytes) in [
        (r#"{"max_body":65536}"#, 65_536),
        (r#"{"max_body":"64KiB"}"#, 65_536),
        (r#"{"max_body":"1MB"}"#, 1_000_000),
    ] {
        assert_eq!(load(json).unwrap().max_body, bytes, "{json}");
    }
    let r =
        load(r#"{"per_try_timeout":"1.5s","backoff":{"base":"10ms","max":"1s 500ms"}}"#).unwrap();
    assert_eq!(r.per_try_timeout, Some(Duration::from_millis(1_500)));
    assert_eq!(r.backoff.max, Duration::from_millis(1_500));
}
