//! A filter's shared state outlives reloads that change its config, its module or
//! its place in the chain, and starts empty with `state: reset` or once the filter
//! has left the configuration; keys with a time to live and listing work from a real
//! guest.

use weft_tests::*;

/// The stamp guest as the filter `count`, counting in the state key `requests`.
fn stamp(name: &str) -> String {
    format!(
        "      - name: count\n        module: \"{}\"\n        config: {{ name: {name}, count: true }}\n",
        guests::STAMP
    )
}

/// The counter guest as the filter `count`, counting in the same key; `extra` adds
/// keys to its entry.
fn counter(mark: &str, extra: &str) -> String {
    format!(
        "      - name: count\n        module: \"{}\"\n        config: {{ mark: \"{mark}\" }}\n{extra}",
        guests::COUNTER
    )
}

/// Another filter before it, which moves it one place down the chain.
fn before() -> String {
    format!(
        "      - name: before\n        module: \"{}\"\n        config: {{ name: before }}\n",
        guests::STAMP
    )
}

fn reload(p: &Proxy, web: &Backend, filters: &str) {
    let yaml = chain(web, filters);
    let config = weft_config::Config::from_str(&yaml, "test.yaml", None).expect("valid");
    p.running().reload(&config).expect("reloads");
}

/// One request; what the backend saw of the filter's marks.
async fn marks(c: &Client, p: &Proxy, path: &str) -> (String, String) {
    let r = c.get(p.addr, path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = |h: &str| r.header(h).unwrap_or_default().to_owned();
    (seen("x-echo-count"), seen("x-echo-mark"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_survives_config_and_module_changes_unless_reset() {
    let web = backend("web").start().await;
    let p = proxy(&chain(&web, &stamp("a"))).start().await;
    let c = client();
    assert_eq!(marks(&c, &p, "/").await.0, "1");
    assert_eq!(marks(&c, &p, "/").await.0, "2");

    // Its config changes: the count goes on.
    reload(&p, &web, &stamp("b"));
    assert_eq!(marks(&c, &p, "/").await.0, "3");

    // Its module is replaced by another that knows the key: the count goes on.
    reload(&p, &web, &counter("v2", ""));
    assert_eq!(marks(&c, &p, "/").await, ("4".into(), "v2".into()));

    // Moved down the chain, with a new config: still the same filter.
    reload(&p, &web, &format!("{}{}", before(), counter("v3", "")));
    assert_eq!(marks(&c, &p, "/").await, ("5".into(), "v3".into()));

    // The opt-out: every load starts empty.
    let reset = counter("v4", "        state: reset\n");
    reload(&p, &web, &reset);
    assert_eq!(marks(&c, &p, "/").await.0, "1");
    assert_eq!(marks(&c, &p, "/").await.0, "2");

    // A filter that leaves the configuration takes its state with it.
    reload(&p, &web, &before());
    reload(&p, &web, &counter("v5", ""));
    assert_eq!(marks(&c, &p, "/").await.0, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_lists_its_keys_and_never_reads_an_expired_one() {
    let web = backend("web").start().await;
    let p = proxy(&chain(&web, &counter("", ""))).start().await;
    let c = client();
    for path in ["/b", "/a", "/c", "/a"] {
        c.get(p.addr, path).await;
    }
    let r = c.get(p.addr, "/d").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Listed two to a page, in byte order, each key once.
    assert_eq!(r.header("x-echo-seen"), Some("seen/a,seen/b,seen/c,seen/d"));
    // Written with a time to live of zero: gone at once.
    assert_eq!(r.header("x-echo-flash"), Some("false"));
    assert_eq!(r.header("x-echo-count"), Some("5"));
}
