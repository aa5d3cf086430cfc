//! Two sidecars certified by the config server's CA talk mutual TLS, and keep
//! talking while their certificates (a few seconds long here) are renewed: a real
//! config server, real agents and proxies, real handshakes on loopback.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use weft_testkit::{TempDir, eventually_async};
use weft_tests::control::{apply, config_server, free_port, sidecar};
use weft_tests::mesh::{mesh_client_config, presented, tls_connect};
use weft_tests::*;

const TRADING: &str = "spiffe://bank.example/ns/default/sa/trading";

/// The mesh: banking's inbound listener (mesh TLS, STRICT, only trading may call,
/// the caller's ID forwarded) in front of its app; trading's outbound listener
/// sending to it in mutual TLS.
fn mesh(app: SocketAddr, inbound: SocketAddr, outbound: SocketAddr) -> String {
    format!(
        r#"
identity: {{ trust_domain: bank.example, certificate_ttl: 6s }}
clusters:
  - name: app
    endpoints: ["{app}"]
  - name: banking
    endpoints: ["{inbound}"]
    protocol: auto
    tls: {{ mode: mesh, identity: "spiffe://bank.example/ns/default/sa/banking" }}
proxies:
  - select: {{ service: banking }}
    listeners:
      - name: inbound
        address: "{inbound}"
        tls: {{ mode: mesh }}
        default_cluster: app
        filters:
          - name: policy
            module: builtin:encryption-policy
            config:
              mode: strict
              rules: [{{ action: allow, principals: ["{TRADING}"] }}]
              forward_identity: {{ header: x-forwarded-client-cert }}
  - select: {{ service: trading }}
    listeners:
      - name: outbound
        address: "{outbound}"
        default_cluster: banking
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_certified_by_the_mesh_ca_keep_talking_mtls_through_renewals() {
    let data = TempDir::new();
    let server = config_server(&data.0).start().await;
    let app = backend("banking-app").start().await;
    let (inbound, outbound) = (free_port(), free_port());
    apply(server.addr(), &mesh(app.addr, inbound, outbound)).await;
    let (state_b, state_t) = (TempDir::new(), TempDir::new());
    let (banking, _agent_b) = sidecar(server.addr(), "banking", &state_b.0).await;
    let (trading, _agent_t) = sidecar(server.addr(), "trading", &state_t.0).await;

    // Once both serve the mesh and have their certificates, trading's requests
    // reach banking's app.
    eventually_async("both sidecars to serve the mesh", async || {
        trading.listener_addr("outbound").is_some() && banking.listener_addr("inbound").is_some()
    })
    .await;
    let first = eventually_async("a request through both sidecars", async || {
        let reply = client().get(outbound, "/balance").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    let xfcc = first
        .header("x-echo-forwarded-client-cert")
        .unwrap_or_default();
    assert!(xfcc.contains(&format!("URI={TRADING}")), "{xfcc}");

    // Traffic for three lifetimes of a certificate: no request fails, both proxies
    // install several certificates, and new handshakes get the renewed ones.
    let bundle = std::fs::read_to_string(data.0.join("ca.pem")).expect("the CA's certificate");
    let direct = mesh_client_config(&bundle, None, &[b"http/1.1"]);
    let (mut sent, mut failed) = (0, Vec::new());
    let mut installed = (BTreeSet::new(), BTreeSet::new());
    let mut shown = BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(18);
    while tokio::time::Instant::now() < until {
        let reply = client().get(outbound, "/balance").await;
        sent += 1;
        if reply.status != 200 {
            failed.push((reply.status, reply.text()));
        }
        installed.0.extend(banking.identity().not_after());
        installed.1.extend(trading.identity().not_after());
        if sent % 25 == 0
            && let Ok(s) = tls_connect(inbound, direct.clone(), "banking").await
        {
            shown.insert(presented(&s));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert!(
        installed.0.len() >= 3,
        "banking's certificates: {:?}",
        installed.0
    );
    assert!(
        installed.1.len() >= 3,
        "trading's certificates: {:?}",
        installed.1
    );
    assert!(
        shown.len() >= 2,
        "new handshakes saw {} certificates",
        shown.len()
    );
}
