//! The built-in fault filter: aborts and delays by percentage and by header.

use std::time::{Duration, Instant};

use weft_tests::*;

fn faulty(web: &Backend, fault: &str) -> String {
    chain(
        web,
        &format!(
            "      - name: fault
        module: builtin:fault
        config:
{fault}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_of_requests_abort() {
    let web = backend("web").start().await;
    let p = proxy(&faulty(
        &web,
        "          abort: { status: 503, percentage: 50 }",
    ))
    .start()
    .await;
    let c = client();
    let total = 1000;
    let mut aborted = 0;
    for _ in 0..total {
        let r = c.get(p.addr, "/").await;
        match r.status.as_u16() {
            503 => aborted += 1,
            200 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    let share = aborted as f64 / total as f64;
    assert!((0.44..=0.56).contains(&share), "aborted share {share}");
    assert_eq!(
        web.requests(),
        total - aborted,
        "aborted requests never reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_triggers_abort_and_delay() {
    let web = backend("web").start().await;
    let fault = r#"          abort:
            status: 418
            header: { name: x-weft-fault, value: abort }
          delay:
            duration: 300ms
            header: { name: x-weft-fault, value: delay }"#;
    let p = proxy(&faulty(&web, fault)).start().await;
    let c = client();
    let r = c.get(p.addr, "/").await;
    assert_eq!(r.status, 200, "no header, no fault");
    let r = c.get_with(p.addr, "/", &[("x-weft-fault", "abort")]).await;
    assert_eq!(r.status, 418);
    let started = Instant::now();
    let r = c.get_with(p.addr, "/", &[("x-weft-fault", "delay")]).await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the delay was applied"
    );
    assert_eq!(web.requests(), 2);
}
