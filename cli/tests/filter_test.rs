//! `weft filter test` as a filter author runs it: real built filters on one request,
//! what they did in text and JSON, and exit code 1 with the reason when they fail.

use weft_testkit::output;
use weft_tests::guests;

mod support;

use support::weft;

/// Runs `weft filter test ARGS`; returns the exit code, stdout and stderr.
fn filter_test(args: &[&str]) -> (Option<i32>, String, String) {
    let out = output(weft().args(["filter", "test"]).args(args));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_built_in_filters_local_answer_is_printed() {
    let (code, stdout, stderr) = filter_test(&[
        "builtin:fault",
        "--config",
        r#"{"abort":{"status":503,"percentage":100,"body":"nope"}}"#,
        "--request",
        "GET /api",
        "-H",
        "x-user: alice",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("on-request  respond 503"), "{stdout}");
    assert!(stdout.contains("response  503 from the filter"), "{stdout}");
    assert!(stdout.contains("x-weft-fault: abort"), "{stdout}");
    assert!(stdout.contains("x-user: alice"), "{stdout}");
}

#[test]
fn json_shows_headers_properties_metrics_and_retries() {
    let (code, stdout, stderr) = filter_test(&[
        guests::STAMP,
        "--config",
        r#"{"name":"a","count":true}"#,
        "--request",
        "PUT /x",
        "--body",
        "hi",
        "--response",
        "reset",
        "--response",
        "200",
        "--response-body",
        "done",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let has = |list: &serde_json::Value, pair: [&str; 2]| {
        (list.as_array().unwrap().iter()).any(|h| h == &serde_json::json!(pair))
    };
    assert!(has(&run["request"]["headers"], ["x-count", "1"]), "{run:#}");
    assert!(has(&run["properties"], ["stamp.a", "/x"]), "{run:#}");
    // The stamp filter does not retry: the proxy's answer to the reset stands.
    assert_eq!(run["response"]["status"], 502, "{run:#}");
    assert_eq!(run["response"]["responder"]["proxy"], "reset", "{run:#}");
    let error = (run["response"]["headers"].as_array().unwrap().iter())
        .find(|h| h[0] == "x-stamp-error")
        .map(|h| h[1].to_string());
    assert!(error.is_some_and(|e| e.contains("Reset")), "{run:#}");
    assert_eq!(
        run["metrics"][0]["name"],
        "weft_filter_stamp_requests_total"
    );
    assert_eq!(run["metrics"][0]["value"], 1.0);
    assert_eq!(run["failure"], serde_json::Value::Null);
}

#[test]
fn a_failing_filter_exits_1_with_the_reason() {
    let (code, stdout, stderr) = filter_test(&[guests::MISBEHAVE, "--request", "GET /trap"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("response  503 from the proxy"), "{stdout}");
    assert!(
        stderr.contains("filter failed in on-request") && stderr.contains("trap"),
        "{stderr}"
    );

    let (code, _, stderr) = filter_test(&[guests::MISBEHAVE, "--config", r#"{"reject":true}"#]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("rejected on purpose"), "{stderr}");
}

#[test]
fn what_no_request_can_be_is_refused_before_the_filter_runs() {
    let (code, _, stderr) = filter_test(&["builtin:fault", "--request", "GET"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("METHOD /PATH"), "{stderr}");
    let (code, _, stderr) = filter_test(&["builtin:nothing"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("built-ins: "), "{stderr}");
    let (code, _, stderr) = filter_test(&["builtin:fault", "--config", "{not json"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--config is not JSON"), "{stderr}");
}
