//! Workload certificates end to end: a real config server's CA, real proxies and
//! their agents on 127.0.0.1, and the `Certify` call as a proxy makes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api::proxy_message::Kind;
use weft_api::{CertifyRequest, CertifyResponse, ControlClient, Hello, ProxyMessage, Snapshot};
use weft_config_server::ca::Ca;
use weft_config_server::{Options, RunningServer};
use weft_testkit::{ANY_PORT, TempDir, eventually_async, within};
use x509_parser::prelude::{FromDer, X509Certificate};

const TOKEN: &str = "test-token";
const PROXY_TOKEN: &str = "test-proxy-token";

/// A mesh whose certificates last `ttl`; trading's group names its own identity.
fn mesh(ttl: &str) -> String {
    format!(
        "\
identity:
  trust_domain: bank.example
  certificate_ttl: {ttl}
proxies:
  - select: {{ service: trading }}
    identity: spiffe://bank.example/ns/markets/sa/desk
  - select: {{}}
"
    )
}

// ---------------------------------------------------------------------------------
// The story helpers.

/// A config server on `listen` keeping its data (and CA) in `data`.
async fn server_at(
    data: &Path,
    listen: SocketAddr,
    tweak: impl FnOnce(&mut Options),
) -> RunningServer {
    let mut opts = Options::new(listen, data.to_owned());
    opts.token = Some(TOKEN.to_owned());
    opts.proxy_token = Some(PROXY_TOKEN.to_owned());
    tweak(&mut opts);
    within(weft_config_server::start(opts))
        .await
        .expect("the config server starts")
}

async fn server(data: &Path) -> RunningServer {
    server_at(data, ANY_PORT.parse().unwrap(), |_| {}).await
}

/// Apply `yaml` as the mesh config, which must be accepted.
async fn apply(server: &RunningServer, yaml: &str) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/v1/mesh?file=mesh.yaml", server.addr()))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(yaml.to_owned())))
        .unwrap();
    let resp = within(client.request(req)).await.unwrap();
    let status = resp.status();
    let body = within(resp.into_body().collect()).await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A proxy of `service` fed by `server`, keeping its state in `state`.
async fn proxy(
    server: SocketAddr,
    node: &str,
    service: &str,
    state: &Path,
) -> (weft_proxy::RunningProxy, weft_agent::Agent) {
    let config =
        weft_config::Config::from_str("admin:\n  address: \"127.0.0.1:0\"\n", "test", None)
            .unwrap();
    let proxy = within(weft_proxy::start(config))
        .await
        .expect("the proxy starts");
    let mut options =
        weft_agent::Options::new(&format!("http://{server}"), PROXY_TOKEN, node, service);
    options.state_dir = Some(state.to_owned());
    options.min_backoff = Duration::from_millis(50);
    options.max_backoff = Duration::from_millis(200);
    let agent = within(weft_agent::start(proxy.clone(), options))
        .await
        .expect("the agent starts");
    (proxy, agent)
}

/// The validity of the certificate an agent keeps in `state`: (not before, not
/// after), Unix seconds.
fn kept_validity(state: &Path) -> Option<(i64, i64)> {
    let pem_text = std::fs::read_to_string(state.join("identity.pem")).ok()?;
    let block = pem::parse(pem_text).ok()?;
    let (_, cert) = X509Certificate::from_der(block.contents()).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Wait for the next certificate the agent keeps after `after` (its validity),
/// and return it.
async fn next_certificate(state: &Path, after: Option<(i64, i64)>) -> (i64, i64) {
    eventually_async("a new workload certificate", async || {
        match kept_validity(state) {
            Some(v) if Some(v) != after && after.is_none_or(|a| v.1 > a.1) => Ok(v),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------
// The stories.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_renews_its_certificate_before_it_expires_and_while_the_server_was_away() {
    let data = TempDir::new();
    let state = TempDir::new();
    let server = server(&data.0.join("data")).await;
    let addr = server.addr();
    apply(&server, &mesh("6s")).await;
    let (proxy, agent) = proxy(addr, "trading-1", "trading", &state.0).await;
    let identity = proxy.identity();
    // The mesh's identity section asks for a certificate; the group names it.
    let first = next_certificate(&state.0, None).await;
    eventually_async("the certificate installed", async || {
        identity
            .spiffe_id()
            .filter(|id| **id == *"spiffe://bank.example/ns/markets/sa/desk")
    })
    .await;
    assert_eq!(
        first.1 - first.0,
        60 + 6,
        "valid from a minute before, for 6s"
    );
    // Renewed more than once, each time while the one before was still valid:
    // the new one was made (a minute after its not-before) before the old expired.
    let mut previous = first;
    for _ in 0..2 {
        let next = next_certificate(&state.0, Some(previous)).await;
        assert!(
            next.0 + 60 < previous.1,
            "{next:?} made after {previous:?} expired"
        );
        previous = next;
    }
    eventually_async("the latest certificate installed", async || {
        identity.not_after().filter(|t| unix(*t) >= previous.1)
    })
    .await;

    // The server goes away past the time the agent renews: the proxy keeps the
    // certificate it has, and the agent retries.
    server.shutdown().await;
    let installed = identity.not_after().unwrap();
    let due = installed - Duration::from_millis(6000 * 4 / 10);
    eventually_async("the renewal time passed", async || SystemTime::now() > due).await;
    assert_eq!(
        identity.not_after(),
        Some(installed),
        "nothing else was installed"
    );
    assert!(identity.spiffe_id().is_some());
    // Back on the same address and data folder (so the same CA): renewal resumes.
    let server = server_at(&data.0.join("data"), addr, |_| {}).await;
    let resumed = next_certificate(&state.0, Some(previous)).await;
    eventually_async("the renewed certificate installed", async || {
        identity.not_after().filter(|t| unix(*t) >= resumed.1)
    })
    .await;
    agent.shutdown().await;
    proxy.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_serves_with_its_kept_certificate_before_the_server_answers() {
    let data = TempDir::new();
    let state = TempDir::new();
    let server = server(&data.0.join("data")).await;
    let addr = server.addr();
    apply(&server, &mesh("1h")).await;
    let (proxy_a, agent) = proxy(addr, "banking-1", "banking", &state.0).await;
    let kept = next_certificate(&state.0, None).await;
    let key_file = state.0.join("identity-key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    agent.stop();
    proxy_a.shutdown().await;
    server.shutdown().await;
    // No server now: the restarted proxy installs what it kept, at start.
    let (proxy_b, agent) = proxy(addr, "banking-1", "banking", &state.0).await;
    let identity = proxy_b.identity();
    assert_eq!(
        identity.spiffe_id().as_deref(),
        Some("spiffe://bank.example/ns/default/sa/banking")
    );
    assert_eq!(identity.not_after().map(unix), Some(kept.1));
    agent.stop();
    proxy_b.shutdown().await;
}

/// A raw proxy stream: the sender keeps it open.
struct Stream {
    _to_server: mpsc::Sender<ProxyMessage>,
    _snapshots: tonic::Streaming<Snapshot>,
}

async fn client(server: &RunningServer) -> ControlClient<tonic::transport::Channel> {
    within(ControlClient::connect(format!("http://{}", server.addr())))
        .await
        .expect("connects")
}

async fn subscribe(server: &RunningServer, hello: Hello) -> Stream {
    let (to_server, rx) = mpsc::channel(4);
    to_server
        .send(ProxyMessage {
            kind: Some(Kind::Hello(hello)),
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    (request.metadata_mut()).insert("authorization", weft_api::bearer(PROXY_TOKEN).unwrap());
    let snapshots = within(client(server).await.subscribe(request))
        .await
        .expect("subscribed")
        .into_inner();
    Stream {
        _to_server: to_server,
        _snapshots: snapshots,
    }
}

fn hello(node: &str, service: &str, labels: &[(&str, &str)]) -> Hello {
    Hello {
        node: node.into(),
        service: service.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        agent: "test".into(),
        instance: format!("instance-of-{node:<16}"),
        ..Default::default()
    }
}

/// A new P-256 key.
fn key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A CSR for `key`, asking for a name the server must ignore.
fn csr(key: &rcgen::KeyPair) -> Vec<u8> {
    let params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.serialize_request(key).unwrap().der().to_vec()
}

/// `Certify` for `node` with `instance`, with `token` (none: no metadata).
async fn certify(
    server: &RunningServer,
    node: &str,
    instance: &str,
    token: Option<&str>,
) -> Result<CertifyResponse, tonic::Status> {
    certify_key(server, node, instance, token, &key()).await
}

/// [`certify`] for `key`.
async fn certify_key(
    server: &RunningServer,
    node: &str,
    instance: &str,
    token: Option<&str>,
    key: &rcgen::KeyPair,
) -> Result<CertifyResponse, tonic::Status> {
    let mut request = tonic::Request::new(CertifyRequest {
        csr: csr(key),
        node: node.into(),
        instance: instance.into(),
    });
    if let Some(token) = token {
        (request.metadata_mut()).insert("authorization", weft_api::bearer(token).unwrap());
    }
    within(client(server).await.certify(request))
        .await
        .map(tonic::Response::into_inner)
}

fn instance(node: &str) -> String {
    format!("instance-of-{node:<16}")
}

/// The URI SANs and DNS SANs of a chain's leaf.
fn names(chain: &str) -> (Vec<String>, usize) {
    use x509_parser::extensions::GeneralName;
    let block = pem::parse(chain).unwrap();
    let (_, cert) = X509Certificate::from_der(block.contents()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut uris = Vec::new();
    let mut dns = 0;
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::DNSName(_) => dns += 1,
            _ => {}
        }
    }
    (uris, dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_subscribed_proxy_gets_a_certificate_for_the_identity_the_mesh_gives_it() {
    let data = TempDir::new();
    let server = server(&data.0.join("data")).await;
    let _web = subscribe(&server, hello("web-1", "web", &[("namespace", "retail")])).await;
    let e = certify(&server, "web-1", &instance("web-1"), Some(PROXY_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("no mesh config is applied yet"),
        "{e:?}"
    );
    apply(&server, &mesh("1h")).await;

    // The proxy token, and nothing else, authenticates the call.
    let e = certify(&server, "web-1", &instance("web-1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        e.message().starts_with("Certify needs the proxy token"),
        "{e:?}"
    );
    let e = certify(&server, "web-1", &instance("web-1"), Some(TOKEN))
        .await
        .unwrap_err();
    assert!(e.message().contains("this is the API token"), "{e:?}");
    // The node must have a live stream, under the same instance secret.
    let e = certify(&server, "db-1", &instance("db-1"), Some(PROXY_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("subscribe first"), "{e:?}");
    let e = certify(
        &server,
        "web-1",
        &instance("someone-else"),
        Some(PROXY_TOKEN),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    let issued = certify(&server, "web-1", &instance("web-1"), Some(PROXY_TOKEN))
        .await
        .unwrap();
    let id = "spiffe://bank.example/ns/retail/sa/web";
    assert_eq!(issued.identity, id);
    assert_eq!(names(&issued.chain), (vec![id.to_owned()], 0));
    let ca = std::fs::read_to_string(data.0.join("data").join("ca.pem")).unwrap();
    assert_eq!(issued.bundle, ca);
    let now = unix(SystemTime::now()) as u64;
    assert!((now + 3500..=now + 3600).contains(&issued.not_after));
    // The group's own identity.
    let _desk = subscribe(&server, hello("trading-1", "trading", &[])).await;
    let issued = certify(
        &server,
        "trading-1",
        &instance("trading-1"),
        Some(PROXY_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(issued.identity, "spiffe://bank.example/ns/markets/sa/desk");
    // A request that is not a CSR.
    let mut request = tonic::Request::new(CertifyRequest {
        csr: vec![0x30; 9000],
        node: "web-1".into(),
        instance: instance("web-1"),
    });
    (request.metadata_mut()).insert("authorization", weft_api::bearer(PROXY_TOKEN).unwrap());
    let e = within(client(&server).await.certify(request))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at most 8192"), "{e:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_given_ca_hands_out_the_old_anchor_too_during_a_rotation() {
    let files = TempDir::new();
    let write = |name: &str, text: &str| -> PathBuf {
        let path = files.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let old = Ca::generate("Weft mesh CA").unwrap();
    let new = Ca::generate("Weft mesh CA").unwrap();
    let cert = write("new.pem", new.cert_pem());
    let key_file = write("new-key.pem", new.key_pem());
    let old_file = write("old.pem", old.cert_pem());
    let server = server_at(&files.0.join("data"), ANY_PORT.parse().unwrap(), |o| {
        o.ca_cert = Some(cert);
        o.ca_key = Some(key_file);
        o.trust_bundle = Some(old_file);
    })
    .await;
    assert!(
        !files.0.join("data").join("ca.pem").exists(),
        "the given CA is used"
    );
    apply(&server, &mesh("1h")).await;
    let _web = subscribe(&server, hello("web-1", "web", &[])).await;
    let key = key();
    let issued = certify_key(
        &server,
        "web-1",
        &instance("web-1"),
        Some(PROXY_TOKEN),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(
        issued.bundle,
        format!("{}{}", new.cert_pem(), old.cert_pem())
    );
    // What it issues installs on a proxy, with that bundle.
    let identity = weft_proxy::Identity::default();
    let key_pem = key.serialize_pem();
    (identity)
        .install_pem(
            issued.chain.as_bytes(),
            key_pem.as_bytes(),
            issued.bundle.as_bytes(),
        )
        .unwrap();
    assert_eq!(
        identity.spiffe_id().as_deref(),
        Some("spiffe://bank.example/ns/default/sa/web")
    );
    // Half of the lone CA files is refused at start.
    let mut opts = Options::new(ANY_PORT.parse().unwrap(), files.0.join("other"));
    opts.ca_cert = Some(files.0.join("new.pem"));
    let e = weft_config_server::start(opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--ca-cert and --ca-key"), "{e}");
    server.shutdown().await;
}

/// `openssl s_client` to `addr` presenting `name`'s certificate from `dir`, verifying
/// the proxy against `dir/bundle.pem`, with one request; what it printed.
async fn s_client_as(addr: SocketAddr, dir: &Path, name: &str) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-quiet",
        "-verify_return_error",
    ])
    .arg("-CAfile")
    .arg(dir.join("bundle.pem"))
    .arg("-cert")
    .arg(dir.join(format!("{name}.pem")))
    .arg("-key")
    .arg(dir.join(format!("{name}-key.pem")));
    let request = b"GET / HTTP/1.1\r\nhost: banking\r\nconnection: close\r\n\r\n";
    let out =
        tokio::task::spawn_blocking(move || weft_testkit::output_with_input(&mut cmd, request))
            .await
            .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Rotation, step 3: the proxy's certificate comes from the new CA, its bundle holds
/// the old and the new anchor, and callers still on an old certificate are served as
/// well as those on a new one; a certificate of a CA outside the bundle is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_the_old_and_the_new_anchor_accepts_callers_certified_by_either() {
    let old = Ca::generate("Weft mesh CA").unwrap();
    let mut new = Ca::generate("Weft mesh CA").unwrap();
    new.add_trust_anchors(old.cert_pem(), Path::new("old.pem"))
        .unwrap();
    let stranger = Ca::generate("Another mesh CA").unwrap();
    let dir = TempDir::new();
    let write = |name: &str, ca: &Ca, id: &str| {
        let issued = ca
            .issue_workload(id, &[], &[], Duration::from_secs(3600))
            .unwrap();
        weft_config_server::ca::write_pem(
            &dir.0,
            &format!("{name}.pem"),
            &issued.issued.chain_pem,
            false,
        )
        .unwrap();
        weft_config_server::ca::write_pem(
            &dir.0,
            &format!("{name}-key.pem"),
            &issued.key_pem,
            true,
        )
        .unwrap();
    };
    write(
        "banking",
        &new,
        "spiffe://bank.example/ns/default/sa/banking",
    );
    write(
        "on-old",
        &old,
        "spiffe://bank.example/ns/default/sa/trading",
    );
    write(
        "on-new",
        &new,
        "spiffe://bank.example/ns/default/sa/trading",
    );
    write(
        "stranger",
        &stranger,
        "spiffe://bank.example/ns/default/sa/trading",
    );
    weft_config_server::ca::write_pem(&dir.0, "bundle.pem", new.bundle_pem(), false).unwrap();
    let app = weft_tests::backend("banking-app").start().await;
    let yaml = format!(
        "{}listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    default_cluster: app\n    \
         tls: {{ mode: mesh }}\nclusters:\n  - name: app\n    endpoints: [\"{}\"]\n",
        weft_tests::mesh::identity_yaml(&dir.0, "banking"),
        app.addr
    );
    let callee = weft_tests::proxy(&yaml).start().await;
    for caller in ["on-old", "on-new"] {
        let out = s_client_as(callee.addr, &dir.0, caller).await;
        assert!(out.contains("HTTP/1.1 200"), "{caller}: {out}");
    }
    assert_eq!(app.requests(), 2);
    let out = s_client_as(callee.addr, &dir.0, "stranger").await;
    assert!(
        !out.contains("HTTP/1.1"),
        "a certificate of another CA is served: {out}"
    );
    assert_eq!(app.requests(), 2);
}
