//! The filter on the host: its configuration, which key a request presents, whose it
//! is, the answer to a request without a good one, and its hook run as the proxy
//! runs it (`weft_sdk::testing`).

use weft_sdk::testing::{self, Edit, Exchange};
use weft_sdk::{RequestHead, ResponseHead};

use super::*;

/// sha256 of `bob-secret-2`, as `echo -n bob-secret-2 | sha256sum` prints it.
const BOB_SHA256: &str = "a68ab6dd53781f068ce2bd33b894c3479e3bd8869ccb29b772c5f50ae9449078";

fn filter() -> ApiKey {
    let config = format!(
        r#"{{"keys":[{{"owner":"alice","key":"alice-secret-1"}},{{"owner":"bob","sha256":"{BOB_SHA256}"}}]}}"#
    );
    weft_sdk::from_config(&config).expect("a valid config")
}

fn get() -> RequestHead {
    RequestHead::new("GET", "/orders")
}

#[test]
fn a_known_key_names_its_owner_in_either_header() {
    let f = filter();
    let alice = get().with_header("x-api-key", "alice-secret-1");
    assert_eq!(f.verdict(&alice), Verdict::Allowed("alice"));
    let bob = get().with_header("authorization", "Bearer bob-secret-2");
    assert_eq!(f.verdict(&bob), Verdict::Allowed("bob"), "a hashed key");
    let lower = get().with_header("authorization", "bearer bob-secret-2");
    assert_eq!(
        f.verdict(&lower),
        Verdict::Allowed("bob"),
        "any case of scheme"
    );
    let both = get()
        .with_header("x-api-key", "alice-secret-1")
        .with_header("authorization", "Bearer bob-secret-2");
    assert_eq!(
        f.verdict(&both),
        Verdict::Allowed("alice"),
        "the header wins"
    );
}

#[test]
fn no_key_is_missing_and_a_wrong_one_refused() {
    let f = filter();
    assert_eq!(f.verdict(&get()), Verdict::Missing);
    let empty = get().with_header("x-api-key", "");
    assert_eq!(f.verdict(&empty), Verdict::Missing);
    let basic = get().with_header("authorization", "Basic YWxpY2U6cHc=");
    assert_eq!(f.verdict(&basic), Verdict::Missing, "not a bearer token");
    let bare = get().with_header("authorization", "Bearer ");
    assert_eq!(f.verdict(&bare), Verdict::Missing);
    let wrong = get().with_header("x-api-key", "alice-secret-2");
    assert_eq!(f.verdict(&wrong), Verdict::Refused);
    let hash = get().with_header("x-api-key", BOB_SHA256);
    assert_eq!(f.verdict(&hash), Verdict::Refused, "a hash is not its key");
    let binary = get().with_header("x-api-key", [0xff, 0x00, b'k']);
    assert_eq!(f.verdict(&binary), Verdict::Refused);
}

#[test]
fn the_header_read_is_configurable() {
    let f: ApiKey =
        weft_sdk::from_config(r#"{"header":"X-Token","keys":[{"owner":"ci","key":"k1"}]}"#)
            .unwrap();
    assert_eq!(
        f.verdict(&get().with_header("x-token", "k1")),
        Verdict::Allowed("ci")
    );
    assert_eq!(
        f.verdict(&get().with_header("x-api-key", "k1")),
        Verdict::Missing
    );
    let names: Vec<_> = f.interest().request_headers;
    assert_eq!(names, ["x-token", "authorization", "x-api-key-owner"]);
}

#[test]
fn refusals_are_json_with_a_challenge() {
    let f = filter();
    let missing = f.unauthorized(&Verdict::Missing);
    assert_eq!(missing.status, 401);
    let header = |r: &LocalResponse, name: &str| {
        (r.headers.iter())
            .find(|h| h.name == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(
        header(&missing, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(&missing, "www-authenticate").as_deref(),
        Some(r#"Bearer realm="api""#)
    );
    let body = String::from_utf8_lossy(&missing.body);
    assert!(body.starts_with(r#"{"error":"missing_api_key""#), "{body}");
    let refused = f.unauthorized(&Verdict::Refused);
    assert_eq!(
        header(&refused, "www-authenticate").as_deref(),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    assert!(String::from_utf8_lossy(&refused.body).contains("invalid_api_key"));
}

#[test]
fn labels_are_a_fixed_set() {
    let labels = [
        Verdict::Allowed("anyone"),
        Verdict::Missing,
        Verdict::Refused,
    ]
    .map(|v| v.label());
    assert_eq!(labels, ["allowed", "missing", "refused"]);
}

#[test]
fn bad_configs_are_refused_at_their_key() {
    let err = |json: &str| {
        weft_sdk::from_config::<ApiKey>(json)
            .err()
            .unwrap_or_default()
    };
    assert_eq!(err("null"), "no config given: missing field `keys`");
    assert_eq!(err(r#"{"keys":[]}"#), "keys: empty: no request could pass");
    assert_eq!(
        err(r#"{"keys":[{"owner":"a"}]}"#),
        "keys[0]: give one of `key` and `sha256`"
    );
    assert_eq!(
        err(r#"{"keys":[{"owner":"a","key":"k","sha256":"00"}]}"#),
        "keys[0]: give one of `key` and `sha256`"
    );
    assert!(err(r#"{"keys":[{"owner":"a","sha256":"abc"}]}"#).starts_with("keys[0].sha256:"));
    assert!(err(r#"{"keys":[{"owner":"a\nb","key":"k"}]}"#).starts_with("keys[0].owner:"));
    let twice = format!(
        r#"{{"keys":[{{"owner":"a","key":"bob-secret-2"}},{{"owner":"b","sha256":"{}"}}]}}"#,
        BOB_SHA256.to_uppercase()
    );
    assert_eq!(err(&twice), "keys[1]: the same key as keys[0]");
    let one = r#"[{"owner":"a","key":"k"}]"#;
    assert!(err(&format!(r#"{{"keys":{one},"header":"authorization"}}"#)).starts_with("header:"));
    assert!(
        err(&format!(r#"{{"keys":{one},"owner_header":"host"}}"#)).starts_with("owner_header:")
    );
    assert!(err(&format!(r#"{{"keys":{one},"realm":"a\"b"}}"#)).starts_with("realm:"));
    let typo = err(&format!(r#"{{"keys":{one},"hedaer":"x"}}"#));
    assert!(typo.starts_with("hedaer: unknown field"), "{typo}");
}

/// The README's two keys, loaded as the proxy loads the filter.
fn exchange() -> Exchange<ApiKey> {
    let config = format!(
        r#"{{"keys":[{{"owner":"alice","key":"alice-secret-1"}},{{"owner":"bob","sha256":"{BOB_SHA256}"}}]}}"#
    );
    Exchange::init(&config)
        .expect("a valid config")
        .named("api-key")
}

fn upstream() -> Response {
    Response::new(ResponseHead::new(200))
}

#[test]
fn the_hook_names_the_owner_to_the_app_and_to_later_filters() {
    let mut f = exchange();
    // A client's own claim of an owner is removed before the filter's goes on.
    let head = get()
        .with_header("x-api-key", "alice-secret-1")
        .with_header("x-api-key-owner", "admin");
    let out = f.run(Request::new(head), upstream());
    assert_eq!((out.status(), out.attempts), (200, 1));
    assert_eq!(
        out.request.header("x-api-key-owner").as_deref(),
        Some("alice")
    );
    assert_eq!(
        out.request.edits(),
        [
            Edit::RemoveHeader("x-api-key-owner".into()),
            Edit::SetHeader {
                name: "x-api-key-owner".into(),
                value: "alice".into()
            },
        ]
    );
    assert_eq!(
        out.context.get(OWNER_PROPERTY).as_deref(),
        Some(&b"alice"[..])
    );

    let bearer = get().with_header("authorization", "Bearer bob-secret-2");
    let out = f.run(Request::new(bearer), upstream());
    assert_eq!(
        out.request.header("x-api-key-owner").as_deref(),
        Some("bob")
    );
    assert_eq!(
        testing::metric_value("api_key_requests_total", &["allowed"]),
        Some(2.0)
    );
}

#[test]
fn the_hook_answers_401_itself_and_counts_why() {
    let mut f = exchange();
    let out = f.run(Request::new(get()), upstream());
    assert_eq!(
        (out.status(), out.attempts),
        (401, 0),
        "the app never sees it"
    );
    assert_eq!(
        out.responder(),
        &weft_sdk::Responder::Filter("api-key".into())
    );
    assert_eq!(
        out.response.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="api""#)
    );
    assert_eq!(out.context.get(OWNER_PROPERTY), None);

    let wrong = get()
        .with_header("x-api-key", "guess")
        .with_header("x-api-key-owner", "alice");
    let out = f.run(Request::new(wrong), upstream());
    assert_eq!(out.status(), 401);
    let body = String::from_utf8(out.response.body_now().unwrap_or_default()).unwrap();
    assert!(body.contains("invalid_api_key"), "{body}");
    assert_eq!(
        out.request.header("x-api-key-owner"),
        None,
        "removed all the same"
    );

    let counts = ["allowed", "missing", "refused"]
        .map(|r| testing::metric_value("api_key_requests_total", &[r]));
    assert_eq!(counts, [Some(0.0), Some(1.0), Some(1.0)]);
    assert_eq!(
        testing::exported_name("api_key_requests_total", testing::MetricKind::Counter),
        "weft_filter_api_key_requests_total"
    );
}
