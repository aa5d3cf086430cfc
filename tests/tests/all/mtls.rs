//! Mutual TLS between sidecars: workload certificates with SPIFFE IDs, mesh
//! listeners that take mTLS and clear text on one port, mesh clusters that verify
//! the server's identity, certificates rotated on disk, SNI.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use weft_testkit::{TempDir, eventually_async, output_with_input, within};
use weft_tests::mesh::{
    MeshCa, Relay, client_config, contains, get_over, identity_yaml, mesh_client_config, presented,
    tls_connect, workloads, write_atomically,
};
use weft_tests::*;

const BANKING: &str = "spiffe://bank.example/ns/banking/sa/banking";
const TRADING: &str = "spiffe://bank.example/ns/trading/sa/trading";

/// A sidecar in front of `app`: a mesh listener, no filters.
async fn inbound(dir: &Path, name: &str, app: &Backend, filters: &str) -> Proxy {
    let yaml = format!(
        r#"{}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    default_cluster: app
    tls: {{ mode: mesh }}
    filters: {filters}
clusters:
  - name: app
    endpoints: ["{}"]
"#,
        identity_yaml(dir, name),
        app.addr
    );
    proxy(&yaml).start().await
}

/// A sidecar whose plain outbound listener sends to `to` in mutual TLS, expecting
/// `expect` there.
async fn outbound(dir: &Path, name: &str, to: std::net::SocketAddr, expect: &str) -> Proxy {
    let yaml = format!(
        r#"{}
listeners:
  - name: outbound
    address: 127.0.0.1:0
    default_cluster: banking
clusters:
  - name: banking
    endpoints: ["{to}"]
    protocol: auto
    tls: {{ mode: mesh, identity: "{expect}" }}
"#,
        identity_yaml(dir, name),
    );
    proxy(&yaml).start().await
}

/// Two sidecars talk mutual TLS: the caller's outbound listener takes plain HTTP
/// from its app, the callee's inbound listener hands plain HTTP to its app, and a
/// relay between them sees no byte of HTTP in clear text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mutual_tls_and_a_relay_between_them_sees_no_plaintext() {
    let (_ca, dir) = workloads(&[("banking", BANKING), ("trading", TRADING)]);
    let app = backend("banking-app").start().await;
    let callee = inbound(&dir.0, "banking", &app, "[]").await;
    let relay = Relay::start(callee.addr).await;
    let caller = outbound(&dir.0, "trading", relay.addr, BANKING).await;

    for i in 0..3 {
        let reply = client().get(caller.addr, &format!("/orders/{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "banking-app\n");
    }
    assert_eq!(app.requests(), 3);
    let seen = relay.seen();
    assert!(
        seen.len() > 1000,
        "the relay carried the handshake and requests"
    );
    for clear in [
        &b"/orders/"[..],
        b"HTTP/1.1",
        b"PRI * HTTP/2.0",
        b"banking-app",
    ] {
        assert!(
            !contains(&seen, clear),
            "the relay saw {:?} in clear text",
            String::from_utf8_lossy(clear)
        );
    }
}

/// A mesh cluster verifies the server's SPIFFE ID: a server proving another
/// identity is refused at the handshake, and its app sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_proves_another_identity_is_refused() {
    let impostor = "spiffe://bank.example/ns/banking/sa/impostor";
    let (_ca, dir) = workloads(&[("impostor", impostor), ("trading", TRADING)]);
    let app = backend("impostor-app").start().await;
    let callee = inbound(&dir.0, "impostor", &app, "[]").await;
    let caller = outbound(&dir.0, "trading", callee.addr, BANKING).await;

    let reply = client().get(caller.addr, "/orders").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(app.requests(), 0);

    // A pattern covering the namespace lets it through.
    let caller = outbound(
        &dir.0,
        "trading",
        callee.addr,
        "spiffe://bank.example/ns/banking/*",
    )
    .await;
    assert_eq!(client().get(caller.addr, "/orders").await.status, 200);
}

/// PERMISSIVE on one port: a mesh listener serves clear text, TLS without a client
/// certificate and mutual TLS; a client certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_listener_serves_mtls_and_clear_text_on_one_port() {
    let (ca, dir) = workloads(&[("banking", BANKING)]);
    let app = backend("banking-app").start().await;
    let callee = inbound(&dir.0, "banking", &app, "[]").await;

    assert_eq!(client().get(callee.addr, "/plain").await.status, 200);

    let anonymous = mesh_client_config(&ca.pem, None, &[b"http/1.1"]);
    let mut tls = tls_connect(callee.addr, anonymous, "banking")
        .await
        .unwrap();
    assert!(
        get_over(&mut tls, "/tls", "")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let trading = ca.workload(TRADING);
    let mutual = mesh_client_config(&ca.pem, Some(&trading), &[b"h2", b"http/1.1"]);
    let tls = tls_connect(callee.addr, mutual, "banking").await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN agreed h2"
    );
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://banking/mutual")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(within(send.send_request(req)).await.unwrap().status(), 200);

    let stranger = MeshCa::new("another mesh").workload(TRADING);
    let foreign = mesh_client_config(&ca.pem, Some(&stranger), &[b"http/1.1"]);
    let refused = match tls_connect(callee.addr, foreign, "banking").await {
        // TLS 1.3: the server's refusal arrives with the first read.
        Ok(mut s) => !get_over(&mut s, "/foreign", "")
            .await
            .starts_with("HTTP/1.1 200"),
        Err(_) => true,
    };
    assert!(refused, "a certificate from another CA is refused");
    assert_eq!(
        app.requests(),
        3,
        "the foreign client's request never reached the app"
    );
}

/// `openssl s_client` (a TLS client this project did not write) without a client
/// certificate is served by a listener with no policy (PERMISSIVE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_without_a_client_certificate_is_served_when_permissive() {
    let (_ca, dir) = workloads(&[("banking", BANKING)]);
    let app = backend("banking-app").start().await;
    let callee = inbound(&dir.0, "banking", &app, "[]").await;
    let out = s_client(callee.addr, &dir.0.join("bundle.pem"), None).await;
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(out.contains("banking-app"), "{out}");
}

/// STRICT: the same client is refused by a listener whose policy requires a proven
/// identity, and served once it presents a workload certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_without_a_client_certificate_is_refused_when_strict() {
    let (_ca, dir) = workloads(&[("banking", BANKING), ("trading", TRADING)]);
    let app = backend("banking-app").start().await;
    let strict =
        r#"[{ name: policy, module: "builtin:encryption-policy", config: { mode: strict } }]"#;
    let callee = inbound(&dir.0, "banking", &app, strict).await;
    let bundle = dir.0.join("bundle.pem");
    let out = s_client(callee.addr, &bundle, None).await;
    assert!(out.contains("HTTP/1.1 403"), "{out}");
    assert!(out.contains("mutual TLS required"), "{out}");
    assert_eq!(app.requests(), 0);
    let (cert, key) = (dir.0.join("trading.pem"), dir.0.join("trading-key.pem"));
    let out = s_client(callee.addr, &bundle, Some((&cert, &key))).await;
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(app.requests(), 1);
}

/// Run `openssl s_client` against `addr` with one HTTP/1.1 request on stdin,
/// optionally presenting `client` (cert and key files); its output.
pub(crate) async fn s_client(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-quiet"])
        .arg("-CAfile")
        .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let request = b"GET /via-openssl HTTP/1.1\r\nhost: banking\r\nconnection: close\r\n\r\n";
    let out = tokio::task::spawn_blocking(move || output_with_input(&mut cmd, request))
        .await
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A certificate rotated on disk serves new handshakes without a restart, while a
/// connection made before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_serves_new_handshakes_and_old_connections_go_on() {
    let (ca, dir) = workloads(&[("banking", BANKING)]);
    let app = backend("banking-app").start().await;
    let callee = inbound(&dir.0, "banking", &app, "[]").await;
    let trading = ca.workload(TRADING);
    let config = mesh_client_config(&ca.pem, Some(&trading), &[b"http/1.1"]);

    let old = tls_connect(callee.addr, config.clone(), "banking")
        .await
        .unwrap();
    let first = presented(&old);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(path)
            .header("host", "banking")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(
        within(send.send_request(get("/before")))
            .await
            .unwrap()
            .status(),
        200
    );

    // Rotate: a new key and certificate for the same identity, written in place.
    ca.workload(BANKING).write(&dir.0, "banking");
    let rotated = eventually_async(
        "new handshakes to present the rotated certificate",
        async || {
            let s = tls_connect(callee.addr, config.clone(), "banking")
                .await
                .ok()?;
            let der = presented(&s);
            (der != first).then_some(der)
        },
    )
    .await;
    assert_ne!(rotated, first);

    // The connection made before the rotation still serves.
    let resp = within(send.send_request(get("/after"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    assert_eq!(app.paths().iter().filter(|p| *p == "/after").count(), 1);

    // A broken rotation (a key that does not fit) changes nothing.
    write_atomically(&dir.0.join("banking-key.pem"), &ca.workload(BANKING).key);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let s = tls_connect(callee.addr, config.clone(), "banking")
        .await
        .unwrap();
    assert_eq!(
        presented(&s),
        rotated,
        "the last good certificate serves on"
    );
}

/// One listener, several certificates, chosen by the server name the client asks
/// for: exact names, a wildcard, and the first for any other name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_by_server_name() {
    let ca = MeshCa::new("ingress CA");
    let dir = TempDir::new();
    let (a_cert, a_key) = ca.server(&["shop.example"]).write(&dir.0, "shop");
    let (b_cert, b_key) = ca.server(&["api.example"]).write(&dir.0, "api");
    let (w_cert, w_key) = ca.server(&["tenants"]).write(&dir.0, "tenants");
    let web = backend("web").start().await;
    let yaml = format!(
        r#"
listeners:
  - name: ingress
    address: 127.0.0.1:0
    default_cluster: web
    tls:
      certificates:
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}", server_names: ["*.tenants.example"] }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        w_cert.display(),
        w_key.display(),
        web.addr
    );
    let p = proxy(&yaml).start().await;
    // Verification is by name, so a client that asked for `api.example` and was
    // shown the shop's certificate would fail the handshake.
    let config = client_config(&ca.pem, None, &[b"http/1.1"]);
    let shown =
        async |name: &str| presented(&tls_connect(p.addr, config.clone(), name).await.unwrap());
    let shop = shown("shop.example").await;
    let api = shown("api.example").await;
    assert_ne!(shop, api);
    // The wildcard's certificate names `tenants` (not the wildcard), and a name no
    // certificate serves gets the first: `openssl s_client` shows which.
    let addr = p.addr;
    let subject = move |name: &'static str| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ]);
        String::from_utf8_lossy(&output_with_input(&mut cmd, b"").stdout).into_owned()
    };
    let tenant = tokio::task::spawn_blocking(move || subject("a.tenants.example"))
        .await
        .unwrap();
    assert!(
        tenant.contains("CN=tenants") || tenant.contains("CN = tenants"),
        "{tenant}"
    );
    let other = tokio::task::spawn_blocking(move || subject("other.example"))
        .await
        .unwrap();
    assert!(other.contains("shop.example"), "{other}");
    let mut s = tls_connect(p.addr, config.clone(), "api.example")
        .await
        .unwrap();
    assert!(get_over(&mut s, "/", "").await.starts_with("HTTP/1.1 200"));
}

/// What is wrong with TLS settings is said before anything starts.
#[test]
fn tls_settings_are_checked() {
    let cases = [
        (
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    tls: { mode: mesh, cert: a.pem, key: b.pem }\n",
            "listeners[0].tls",
        ),
        (
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    tls: { cert: a.pem }\n",
            "give both cert and key",
        ),
        (
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    tls: {}\n",
            "or mode: mesh",
        ),
        (
            "clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n    tls: { mode: mesh, ca: a.pem }\n",
            "drop ca and server_name",
        ),
        (
            "clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n    tls: { mode: mesh, identity: \"spiffe://Bank/x\" }\n",
            "clusters[0].tls.identity",
        ),
        (
            "clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n    tls: { identity: \"spiffe://bank/x\" }\n",
            "set mode: mesh",
        ),
    ];
    for (yaml, wanted) in cases {
        let e = config_error(yaml);
        assert!(e.contains(wanted), "{yaml}: {e}");
    }
}

/// Identity files that cannot be used stop the proxy from starting, naming the
/// file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_identity_files_are_named() {
    let (ca, dir) = workloads(&[("banking", BANKING)]);
    // A certificate without a SPIFFE ID.
    ca.server(&["banking"]).write(&dir.0, "plain");
    let yaml = format!("{}listeners: []\n", identity_yaml(&dir.0, "plain"));
    let e = proxy(&yaml).try_start().await.err().expect("refused");
    assert!(e.contains("plain.pem") && e.contains("SPIFFE"), "{e}");
    // A bundle that does not vouch for the certificate.
    std::fs::write(dir.0.join("bundle.pem"), MeshCa::new("other").pem).unwrap();
    let yaml = format!("{}listeners: []\n", identity_yaml(&dir.0, "banking"));
    let e = proxy(&yaml).try_start().await.err().expect("refused");
    assert!(
        e.contains("banking.pem") && e.contains("trust bundle"),
        "{e}"
    );
}
