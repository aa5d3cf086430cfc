//! `builtin:encryption-policy` and `builtin:telemetry` over mutual TLS between two
//! sidecars: the callee refuses callers by SPIFFE identity and hands the one it let
//! in to its application; the caller sends a request for a host only to an upstream
//! proving the identity that host must have; both label their metrics with the
//! identities each side proved.

use std::path::Path;

use weft_tests::mesh::{identity_yaml, workloads};
use weft_tests::*;

const BANKING: &str = "spiffe://bank.example/ns/banking/sa/banking";
const TRADING: &str = "spiffe://bank.example/ns/trading/sa/trading";
const AUDIT: &str = "spiffe://bank.example/ns/audit/sa/reader";

/// The callee's sidecar: a mesh listener in front of `app`, telemetry first, then a
/// strict policy that lets the trading namespace place orders.
async fn callee(dir: &Path, app: &Backend) -> Proxy {
    let yaml = format!(
        r#"{}
admin:
  address: 127.0.0.1:0
listeners:
  - name: inbound
    address: 127.0.0.1:0
    default_cluster: app
    tls: {{ mode: mesh }}
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{ workload: banking }}
      - name: policy
        module: builtin:encryption-policy
        config:
          mode: strict
          rules:
            - action: allow
              principals: ["spiffe://bank.example/ns/trading/*"]
              paths: ["/orders", "/orders/*"]
          forward_identity: {{ header: x-forwarded-client-cert }}
clusters:
  - name: app
    endpoints: ["{}"]
"#,
        identity_yaml(dir, "banking"),
        app.addr
    );
    proxy(&yaml).start().await
}

/// A caller's sidecar named `name`: a plain outbound listener whose requests for
/// `banking` must reach an upstream proving `required`, over a mesh cluster that
/// accepts any identity of the trust domain.
async fn caller(dir: &Path, name: &str, to: std::net::SocketAddr, required: &str) -> Proxy {
    let yaml = format!(
        r#"{}
admin:
  address: 127.0.0.1:0
listeners:
  - name: outbound
    address: 127.0.0.1:0
    default_cluster: bank
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{ reporter: source, workload: {name} }}
      - name: policy
        module: builtin:encryption-policy
        config:
          destinations:
            - {{ host: banking, identity: "{required}" }}
clusters:
  - name: bank
    endpoints: ["{to}"]
    tls: {{ mode: mesh, identity: "spiffe://bank.example/*" }}
"#,
        identity_yaml(dir, name),
    );
    proxy(&yaml).start().await
}

async fn metrics(c: &Client, p: &Proxy) -> Vec<Sample> {
    let admin = p.running().admin_addr().expect("admin");
    samples(&c.get(admin, "/metrics").await.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_admits_by_identity_and_tells_its_app_who_called() {
    let (_ca, dir) = workloads(&[("banking", BANKING), ("trading", TRADING), ("audit", AUDIT)]);
    let app = backend("banking-app").start().await;
    let bank = callee(&dir.0, &app).await;
    let trading = caller(&dir.0, "trading", bank.addr, BANKING).await;
    let audit = caller(&dir.0, "audit", bank.addr, BANKING).await;
    let c = client();
    let to_banking = [
        ("host", "banking"),
        // A caller's app cannot speak for its sidecar.
        (
            "x-forwarded-client-cert",
            "URI=spiffe://bank.example/ns/admin/sa/root",
        ),
    ];

    let r = c.get_with(trading.addr, "/orders/7", &to_banking).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-echo-forwarded-client-cert"),
        Some(format!("By={BANKING};URI={TRADING}").as_str()),
        "the proven identities, and only they"
    );
    // Another workload of the mesh proves who it is, and is not let in.
    let r = c.get_with(audit.addr, "/orders/7", &to_banking).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (403, "caller not allowed\n")
    );
    let r = c.get_with(trading.addr, "/admin", &to_banking).await;
    assert_eq!(r.status, 403);
    // Clear text straight to the callee's mesh listener proves nothing.
    let r = c.get(bank.addr, "/orders/7").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (403, "mutual TLS required\n")
    );
    assert_eq!(app.requests(), 1);

    let callee_side = eventually_async("the callee's telemetry counted 4", async || {
        let all = metrics(&c, &bank).await;
        (total(&all, "weft_filter_requests_total", &[]) == 4.0).then_some(all)
    })
    .await;
    // The callee names itself by the identity it presented: none in clear text.
    for (source, destination, policy, code, n) in [
        (TRADING, BANKING, "mutual_tls", "200", 1.0),
        (TRADING, BANKING, "mutual_tls", "403", 1.0),
        (AUDIT, BANKING, "mutual_tls", "403", 1.0),
        ("unknown", "unknown", "none", "403", 1.0),
    ] {
        let labels = [
            ("source_principal", source),
            ("destination_principal", destination),
            ("connection_security_policy", policy),
            ("response_code", code),
        ];
        let seen = total(&callee_side, "weft_filter_requests_total", &labels);
        assert_eq!(seen, n, "{labels:?}");
    }
    let denied = |reason| {
        total(
            &callee_side,
            "weft_filter_denied_total",
            &[("filter", "policy"), ("reason", reason)],
        )
    };
    assert_eq!(denied("caller_not_allowed"), 2.0);
    assert_eq!(denied("mutual_tls_required"), 1.0);

    // The caller's side names the callee by what it proved.
    let caller_side = metrics(&c, &trading).await;
    let labels = [
        ("reporter", "source"),
        ("destination_principal", BANKING),
        ("response_code", "200"),
    ];
    assert_eq!(
        total(&caller_side, "weft_filter_requests_total", &labels),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_sends_nothing_to_an_upstream_without_the_identity_its_host_needs() {
    let (_ca, dir) = workloads(&[("banking", BANKING), ("trading", TRADING)]);
    let app = backend("banking-app").start().await;
    let bank = callee(&dir.0, &app).await;
    // The cluster takes any identity of the trust domain; requests for `banking`
    // need the ledger's, which the callee cannot prove.
    let ledger = "spiffe://bank.example/ns/banking/sa/ledger";
    let trading = caller(&dir.0, "trading", bank.addr, ledger).await;
    let c = client();
    let r = c
        .get_with(trading.addr, "/orders", &[("host", "banking")])
        .await;
    assert!(r.status.is_server_error(), "{}: {}", r.status, r.text());
    assert_eq!(app.requests(), 0, "not one byte to the wrong workload");
    // Another host is not the policy's to hold; the cluster's own check lets it go.
    let r = c
        .get_with(trading.addr, "/orders", &[("host", "ledger")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.requests(), 1);
}
