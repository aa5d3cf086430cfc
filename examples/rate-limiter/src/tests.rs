//! The bucket's arithmetic, the client a request counts against, the
//! compare-and-swap loop against the SDK's own state on the host, and the hooks run
//! as the proxy runs them on a test clock (`weft_sdk::testing`).

use std::time::UNIX_EPOCH;

use weft_sdk::testing::{self, Exchange, clock};
use weft_sdk::{RequestHead, ResponseHead};

use super::*;

const SECOND: u64 = 1_000_000_000;

fn limiter(json: &str) -> RateLimiter {
    weft_sdk::from_config(json).expect("a valid config")
}

#[test]
fn a_bucket_starts_full_empties_and_refills_one_token_a_period() {
    let (cap, every) = (3, SECOND);
    let mut b = Bucket::full(cap, 100);
    for left in [2, 1, 0] {
        match b.take(100, cap, every) {
            Take::Taken(next) => {
                assert_eq!(next.tokens, left);
                b = next;
            }
            Take::Empty(_) => panic!("a token should be left"),
        }
    }
    assert_eq!(b.take(100, cap, every), Take::Empty(SECOND));
    assert_eq!(
        b.take(100 + SECOND / 4, cap, every),
        Take::Empty(SECOND * 3 / 4)
    );
    // 2.5 periods later: two tokens back, and the half period counts toward the next.
    let later = b.refilled(100 + SECOND * 5 / 2, cap, every);
    assert_eq!(
        later,
        Bucket {
            tokens: 2,
            since: 100 + 2 * SECOND
        }
    );
    // Time spent full earns nothing.
    assert_eq!(
        b.refilled(100 + 60 * SECOND, cap, every),
        Bucket::full(cap, 100 + 60 * SECOND)
    );
    // A clock reading before `since` refills nothing and does not underflow.
    let ahead = Bucket {
        tokens: 0,
        since: 50 * SECOND,
    };
    assert_eq!(ahead.take(SECOND, cap, every), Take::Empty(SECOND));
}

#[test]
fn buckets_round_trip_through_their_bytes() {
    let b = Bucket {
        tokens: 7,
        since: u64::MAX - 3,
    };
    assert_eq!(Bucket::decode(&b.encode()), Some(b));
    assert_eq!(Bucket::decode(b"short"), None);
    assert_eq!(Bucket::decode(&[0; 13]), None);
}

#[test]
fn clients_are_named_by_header_else_by_peer_ip() {
    let by_header = limiter(r#"{"capacity":1,"refill_every":"1s","key":{"header":"X-Client"}}"#);
    let head = RequestHead::new("GET", "/").with_header("x-client", "acme");
    let peer = || "10.0.0.7:51234".to_owned();
    assert_eq!(by_header.client(Some(&head), peer), "client/acme");
    let none = RequestHead::new("GET", "/");
    assert_eq!(by_header.client(Some(&none), peer), "peer/10.0.0.7");
    let empty = RequestHead::new("GET", "/").with_header("x-client", "");
    assert_eq!(by_header.client(Some(&empty), peer), "peer/10.0.0.7");
    assert_eq!(by_header.interest().request_headers, ["x-client"]);

    let by_peer = limiter(r#"{"capacity":1,"refill_every":"1s"}"#);
    assert_eq!(
        by_peer.client(Some(&head), || "[::1]:8080".to_owned()),
        "peer/::1"
    );
    assert!(by_peer.interest().request_headers.is_empty());
    assert!(
        by_peer.interest().response,
        "the remaining header is set on responses"
    );
}

#[test]
fn long_client_names_are_hashed_into_a_state_key() {
    assert_eq!(state_key("client/acme"), "bucket/client/acme");
    let long = format!("client/{}", "x".repeat(300));
    let key = state_key(&long);
    assert!(
        key.starts_with("bucket-sha256/") && key.len() == 14 + 64,
        "{key}"
    );
    assert_ne!(key, state_key(&format!("{long}y")));
}

#[test]
fn admit_takes_tokens_from_the_shared_state_and_refuses_with_seconds_to_wait() {
    let mut f = limiter(r#"{"capacity":2,"refill_every":"1500ms"}"#);
    let t0 = 5 * SECOND;
    assert_eq!(f.admit("peer/a", t0), Admission::Allowed(1));
    assert_eq!(f.admit("peer/a", t0), Admission::Allowed(0));
    assert_eq!(
        f.admit("peer/a", t0),
        Admission::Limited(2),
        "1.5 s, rounded up"
    );
    assert_eq!(
        f.admit("peer/b", t0),
        Admission::Allowed(1),
        "a bucket per client"
    );
    assert_eq!(
        f.admit("peer/a", t0 + 1499 * SECOND / 1000),
        Admission::Limited(1)
    );
    assert_eq!(
        f.admit("peer/a", t0 + 3 * SECOND / 2),
        Admission::Allowed(0)
    );
    // What another instance wrote in between is read, not overwritten.
    let key = state_key("peer/c");
    state::set(
        &key,
        &Bucket {
            tokens: 1,
            since: t0,
        }
        .encode(),
    )
    .unwrap();
    assert_eq!(f.admit("peer/c", t0), Admission::Allowed(0));
    assert_eq!(
        Bucket::decode(&state::get(&key).unwrap().value)
            .unwrap()
            .tokens,
        0
    );
    // A value the filter cannot read is replaced by a full bucket.
    state::set(&state_key("peer/d"), b"junk").unwrap();
    assert_eq!(f.admit("peer/d", t0), Admission::Allowed(1));
}

#[test]
fn a_full_state_lets_new_clients_through_untracked() {
    let mut f = limiter(r#"{"capacity":1,"refill_every":"1s"}"#);
    // The SDK's host keeps the proxy's limit of keys per filter.
    let mut filled = 0;
    while state::set(&format!("filler/{filled}"), b"").is_ok() {
        filled += 1;
    }
    assert!(filled > 0);
    assert_eq!(f.admit("peer/new", SECOND), Admission::Untracked);
    assert_eq!(Admission::Untracked.label(), "untracked");
    for i in 0..filled {
        state::delete(&format!("filler/{i}"));
    }
    assert_eq!(f.admit("peer/new", SECOND), Admission::Allowed(0));
}

#[test]
fn the_429_is_json_with_retry_after() {
    let f = limiter(r#"{"capacity":5,"refill_every":"1s"}"#);
    let r = f.limited(3);
    assert_eq!(r.status, 429);
    let header = |name: &str| {
        (r.headers.iter())
            .find(|h| h.name == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("retry-after").as_deref(), Some("3"));
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("5"));
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(
        body,
        "{\"error\":\"rate_limited\",\"message\":\"too many requests\",\"retry_after\":3}\n"
    );
}

#[test]
fn bad_configs_are_refused_at_their_key() {
    let err = |json: &str| {
        weft_sdk::from_config::<RateLimiter>(json)
            .err()
            .unwrap_or_default()
    };
    assert_eq!(err("null"), "no config given: missing field `capacity`");
    assert_eq!(
        err(r#"{"capacity":0,"refill_every":"1s"}"#),
        "capacity: 0 would refuse every request"
    );
    assert_eq!(
        err(r#"{"capacity":1,"refill_every":"0s"}"#),
        "refill_every: must be longer than zero"
    );
    assert!(err(r#"{"capacity":1,"refill_every":"soon"}"#).starts_with("refill_every:"));
    assert!(
        err(r#"{"capacity":1,"refill_every":"1s","key":{"header":"a b"}}"#)
            .starts_with("key.header:")
    );
    assert!(err(r#"{"capacity":1,"refill_every":"1s","key":"cookie"}"#).starts_with("key:"));
}

fn from(client: &str) -> Request {
    Request::new(RequestHead::new("GET", "/").with_header("x-client-id", client))
}

fn upstream() -> Response {
    Response::new(ResponseHead::new(200))
}

#[test]
fn the_hooks_carry_the_tokens_left_to_the_response_and_refuse_when_empty() {
    clock::set(UNIX_EPOCH + Duration::from_secs(1_000_000));
    let config = r#"{"capacity":2,"refill_every":"10s","key":{"header":"x-client-id"}}"#;
    let mut f = Exchange::<RateLimiter>::init(config)
        .unwrap()
        .named("rate-limiter");
    for left in ["1", "0"] {
        let out = f.run(from("acme"), upstream());
        assert_eq!(out.status(), 200);
        // Set by on_request, read by on_response: the context carried it.
        assert_eq!(
            out.context.get(REMAINING_PROPERTY),
            Some(left.as_bytes().to_vec())
        );
        assert_eq!(
            out.response.header("x-ratelimit-remaining").as_deref(),
            Some(left)
        );
        assert_eq!(
            out.response.header("x-ratelimit-limit").as_deref(),
            Some("2")
        );
    }
    let out = f.run(from("acme"), upstream());
    assert_eq!((out.status(), out.attempts), (429, 0));
    assert_eq!(out.response.header("retry-after").as_deref(), Some("10"));
    assert!(
        out.response_actions.is_empty(),
        "its own 429 skips its on_response"
    );

    clock::advance(Duration::from_secs(4));
    let out = f.run(from("acme"), upstream());
    assert_eq!(out.response.header("retry-after").as_deref(), Some("6"));
    clock::advance(Duration::from_secs(6));
    let out = f.run(from("acme"), upstream());
    assert_eq!(
        out.response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );

    let counts = ["allowed", "limited", "untracked"]
        .map(|r| testing::metric_value("rate_limiter_requests_total", &[r]));
    assert_eq!(counts, [Some(3.0), Some(2.0), Some(0.0)]);
}

#[test]
fn an_idle_bucket_expires_when_it_would_be_full_again() {
    clock::set(UNIX_EPOCH + Duration::from_secs(1_000_000));
    let mut f = Exchange::<RateLimiter>::init(r#"{"capacity":3,"refill_every":"1s"}"#).unwrap();
    let req = Request::new(RequestHead::new("GET", "/"));
    let ctx = Context::for_request(&req).with_peer_address("203.0.113.7:40000");
    let out = f.run_in(req, ctx, [upstream()]);
    assert_eq!(
        out.response.header("x-ratelimit-remaining").as_deref(),
        Some("2")
    );
    let key = state_key("peer/203.0.113.7");
    assert!(state::get(&key).is_some(), "a bucket per peer address");
    // Three tokens at one a second: after 3 s it would be full, and it is gone.
    clock::advance(Duration::from_millis(2_900));
    assert!(state::get(&key).is_some());
    clock::advance(Duration::from_millis(200));
    assert!(state::get(&key).is_none(), "idle clients do not hold state");
}
