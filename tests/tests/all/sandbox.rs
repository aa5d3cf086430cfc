//! Filters that trap, panic, loop or eat memory: the proxy keeps serving, the failure
//! policy decides the affected request, and the log names the filter and the reason.

use weft_tests::*;

fn misbehaving(web: &Backend, name: &str, policy: &str) -> String {
    // The deadline counts the hook's CPU time, so on a loaded machine `/grow` still
    // reaches the memory limit before it, and `/loop` is stopped by it.
    let filter = format!(
        "      - name: {name}
        module: \"{}\"
        failure: {policy}
        \
         timeout: 50ms
        memory: 8MiB",
        guests::MISBEHAVE
    );
    chain(web, &filter)
}

/// What each misbehaviour must be reported as.
const CASES: &[(&str, &str)] = &[
    ("/trap", "unreachable"),
    ("/panic", "filter exploded on purpose"),
    ("/loop", "deadline"),
    ("/grow", "memory"),
    ("/sleep", "must not wait"),
];

async fn still_serving(p: &Proxy) {
    let r = client().get(p.addr, "/fine").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-echo-misbehave"),
        Some("passed"),
        "the filter runs again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_and_logs_the_filter() {
    let logs = logs();
    let web = backend("web").start().await;
    let p = proxy(&misbehaving(&web, "mis-closed", "fail-closed"))
        .start()
        .await;
    still_serving(&p).await;
    for (path, reason) in CASES {
        let r = client().get(p.addr, path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert_eq!(r.header("x-weft-error"), Some("filter"));
        // The client learns that a filter failed; which one, and how, is in the log.
        let body = r.text();
        assert!(
            body.starts_with("filter failed (error id "),
            "{path}: {body}"
        );
        assert!(!body.contains("mis-closed"), "{path}: {body}");
        let log = logs.of_error(&r);
        assert!(log.contains("\"mis-closed\""), "{path}: {log}");
        assert!(log.contains(reason), "{path}: {log}");
        still_serving(&p).await;
    }
    assert_eq!(
        web.requests(),
        1 + CASES.len(),
        "failed requests never reach the backend"
    );
    let log = logs.text();
    for (_, reason) in CASES {
        assert!(
            log.lines()
                .any(|l| l.contains("mis-closed") && l.contains(reason)),
            "log names filter and reason {reason:?}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_skips_the_filter() {
    let logs = logs();
    let web = backend("web").start().await;
    let p = proxy(&misbehaving(&web, "mis-open", "fail-open"))
        .start()
        .await;
    for (path, reason) in CASES {
        let r = client().get(p.addr, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.header("x-path"),
            Some(*path),
            "the request went on without the filter"
        );
        assert_eq!(r.header("x-echo-misbehave"), None);
        assert!(
            logs.text()
                .lines()
                .any(|l| l.contains("mis-open") && l.contains(reason)),
            "log names filter and reason {reason:?}"
        );
        still_serving(&p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_retries_on_a_fresh_instance() {
    let logs = logs();
    let web = backend("web").start().await;
    let p = proxy(&misbehaving(&web, "mis-reload", "reload"))
        .start()
        .await;
    for (path, reason) in CASES {
        let r = client().get(p.addr, path).await;
        // These failures are deterministic: the fresh instance fails too.
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(logs.of_error(&r).contains(reason), "{}", r.text());
        let failures = logs
            .text()
            .lines()
            .filter(|l| l.contains("mis-reload") && l.contains(reason))
            .count();
        assert!(
            failures >= 2,
            "{path}: tried on a fresh instance too ({failures} failures logged)"
        );
        still_serving(&p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_see_no_environment_files_or_network() {
    let web = backend("web").start().await;
    let p = proxy(&misbehaving(&web, "mis-escape", "fail-closed"))
        .start()
        .await;
    let r = client().get(p.addr, "/escape").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-escape"), Some("env=0 fs=false net=false"));
}
