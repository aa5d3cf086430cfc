//! Filters built against `weft:filter@0.2.0` as it first shipped keep loading and
//! running as the contract grows by functions: a guest built against a frozen copy of
//! that WIT runs in one chain with built-ins that import today's additions.

use weft_tests::*;

/// What a component's import names hold: the component model names each function
/// it imports in its type section, and only those.
fn imports(component: &[u8], name: &str) -> bool {
    component.windows(name.len()).any(|w| w == name.as_bytes())
}

#[test]
fn the_frozen_guest_imports_none_of_the_additions() {
    let frozen = std::fs::read(guests::FROZEN_0_2).expect("the frozen guest");
    let policy = weft_builtin::get("encryption-policy").expect("embedded");
    for added in [
        "[method]context.require-upstream-identity",
        "[method]context.local-identity",
    ] {
        assert!(!imports(&frozen, added), "{added}");
        assert!(imports(policy, added), "today's filters do import {added}");
    }
    // What the frozen guest does call, it names the same way.
    assert!(imports(&frozen, "[method]context.configure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_of_the_first_0_2_contract_runs_beside_todays() {
    let web = backend("web").start().await;
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{}}
      - name: frozen
        module: "{}"
      - name: policy
        module: builtin:encryption-policy
        config: {{ forward_identity: {{ header: x-forwarded-client-cert }} }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        guests::FROZEN_0_2,
        web.addr
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    let r = c.get(p.addr, "/orders?id=7").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Its request hook read the head and set an exchange setting...
    assert_eq!(r.header("x-echo-frozen-path"), Some("/orders?id=7"));
    assert_eq!(r.header("x-echo-frozen-configure"), Some("ok"));
    // ...and its response hook read back its property and its route.
    assert_eq!(r.header("x-frozen"), Some("0.2.0"));
    assert_eq!(r.header("x-frozen-ctx"), Some("/orders?id=7"));
    assert_eq!(r.header("x-frozen-route"), Some("frozen"));
    // Its on-done counted the request, as telemetry's did.
    let admin = p.running().admin_addr().expect("admin");
    eventually_async("both on-done hooks counted", async || {
        let all = samples(&c.get(admin, "/metrics").await.text());
        let frozen = total(
            &all,
            "weft_filter_frozen_requests_total",
            &[("filter", "frozen")],
        );
        let telemetry = total(
            &all,
            "weft_filter_requests_total",
            &[("filter", "telemetry")],
        );
        (frozen == 1.0 && telemetry == 1.0).then_some(())
    })
    .await;
}
