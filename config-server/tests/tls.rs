//! The control plane over real TLS on 127.0.0.1: a config server serving its API
//! and the proxies' stream with a certificate its own CA issued, and requiring every
//! proxy's stream to prove, with a client certificate of the mesh CA, the identity
//! the mesh config gives that proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use weft_api::proxy_message::Kind;
use weft_api::{CertifyRequest, ControlClient, Hello, ProxyMessage, Snapshot};
use weft_config_server::ca::Ca;
use weft_config_server::{Options, RunningServer, ServingCert};
use weft_testkit::{ANY_PORT, TempDir, eventually_async, within};

const TOKEN: &str = "test-token";
const PROXY_TOKEN: &str = "test-proxy-token";

/// Two groups, each with the identity derived from its service; `web`'s proxies
/// get a listener in front of `backend`.
fn mesh(backend: &str) -> String {
    format!(
        "\
identity:
  trust_domain: bank.example
clusters:
  - name: web
    endpoints: [\"{backend}\"]
proxies:
  - select: {{ service: web }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
  - select: {{ service: billing }}
"
    )
}

const WEB_ID: &str = "spiffe://bank.example/ns/default/sa/web";
const BILLING_ID: &str = "spiffe://bank.example/ns/default/sa/billing";

// ---------------------------------------------------------------------------------
// The story helpers.

/// A config server over TLS (a certificate its CA issues) requiring proxy
/// identities, with its data in `data`; the CA certificate clients verify it with.
async fn tls_server(data: &Path) -> (RunningServer, Vec<u8>) {
    let mut opts = Options::new(ANY_PORT.parse().unwrap(), data.to_owned());
    opts.token = Some(TOKEN.to_owned());
    opts.proxy_token = Some(PROXY_TOKEN.to_owned());
    opts.tls = Some(ServingCert::Issued { names: Vec::new() });
    opts.require_proxy_identity = true;
    let server = within(weft_config_server::start(opts))
        .await
        .expect("the config server starts");
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let ca = std::fs::read(data.join("ca.pem")).expect("the server keeps its CA's certificate");
    (server, ca)
}

/// One HTTP/1.1 request over TLS, verified with `ca`; the status and the JSON.
async fn https(
    server: &RunningServer,
    ca: &[u8],
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = within(tokio::net::TcpStream::connect(server.addr()))
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .expect("the serving certificate verifies");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = within(sender.send_request(req)).await.unwrap();
    let status = resp.status();
    let bytes = within(resp.into_body().collect()).await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A gRPC channel over TLS, verified with `ca`, presenting `identity` (chain and
/// key, PEM) when given.
async fn channel(
    server: &RunningServer,
    ca: &[u8],
    identity: Option<&Issued>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(&issued.chain, &issued.key));
    }
    let endpoint = Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    within(endpoint.connect())
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Open a Subscribe stream as `hello`: the first snapshot, or why there is none.
async fn first_snapshot(
    channel: Channel,
    token: &str,
    hello: Hello,
) -> Result<(Snapshot, Stream), Status> {
    let mut client =
        ControlClient::new(channel).max_decoding_message_size(weft_api::MAX_MESSAGE_SIZE);
    let (to_server, rx) = mpsc::channel(4);
    let hello = ProxyMessage {
        kind: Some(Kind::Hello(hello)),
    };
    to_server.send(hello).await.unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    (request.metadata_mut()).insert("authorization", weft_api::bearer(token).unwrap());
    let mut snapshots = within(client.subscribe(request)).await?.into_inner();
    let first = within(snapshots.message()).await?;
    let first = first.ok_or_else(|| Status::cancelled("the stream ended"))?;
    Ok((
        first,
        Stream {
            _to_server: to_server,
            _snapshots: snapshots,
        },
    ))
}

/// A stream kept open.
struct Stream {
    _to_server: mpsc::Sender<ProxyMessage>,
    _snapshots: tonic::Streaming<Snapshot>,
}

/// A workload certificate and its key, PEM.
struct Issued {
    chain: Vec<u8>,
    key: Vec<u8>,
}

/// Ask for a certificate for `node`'s stream, as the proxy process `hello` is.
async fn certify(channel: Channel, hello: &Hello) -> Result<(Issued, String), Status> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let mut request = tonic::Request::new(CertifyRequest {
        csr: csr.der().to_vec(),
        node: hello.node.clone(),
        instance: hello.instance.clone(),
    });
    (request.metadata_mut()).insert("authorization", weft_api::bearer(PROXY_TOKEN).unwrap());
    let answer = within(ControlClient::new(channel).certify(request))
        .await?
        .into_inner();
    let issued = Issued {
        chain: answer.chain.into_bytes(),
        key: key.serialize_pem().into_bytes(),
    };
    Ok((issued, answer.identity))
}

fn hello(node: &str, service: &str) -> Hello {
    Hello {
        node: node.into(),
        service: service.into(),
        agent: "test".into(),
        instance: format!("instance-of-{node:<16}"),
        ..Default::default()
    }
}

fn denied(result: Result<(Snapshot, Stream), Status>) -> String {
    match result {
        Ok((snapshot, _)) => panic!("version {} was sent", snapshot.version),
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            status.message().to_owned()
        }
    }
}

// ---------------------------------------------------------------------------------
// The stories.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gets_its_groups_snapshot_only_with_a_certificate_naming_that_groups_identity() {
    let data = TempDir::new();
    let (server, ca) = tls_server(&data.0.join("data")).await;
    let (status, body) = https(
        &server,
        &ca,
        Method::PUT,
        "/v1/mesh?file=mesh.yaml",
        &mesh("127.0.0.1:9"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // No client certificate: refused, whatever the token.
    let web = hello("web-1", "web");
    let why = denied(
        first_snapshot(
            channel(&server, &ca, None).await.unwrap(),
            PROXY_TOKEN,
            web.clone(),
        )
        .await,
    );
    assert!(
        why.contains("client certificate") && why.contains("has none"),
        "{why}"
    );
    // Refused, that stream's node may still ask for a certificate, for the identity
    // its group gives it.
    let (web_cert, id) = certify(channel(&server, &ca, None).await.unwrap(), &web)
        .await
        .unwrap();
    assert_eq!(id, WEB_ID);
    let billing = hello("billing-1", "billing");
    denied(
        first_snapshot(
            channel(&server, &ca, None).await.unwrap(),
            PROXY_TOKEN,
            billing.clone(),
        )
        .await,
    );
    let (billing_cert, id) = certify(channel(&server, &ca, None).await.unwrap(), &billing)
        .await
        .unwrap();
    assert_eq!(id, BILLING_ID);

    // A certificate of the other group's identity: web's snapshot is not sent.
    let billing_channel = channel(&server, &ca, Some(&billing_cert)).await.unwrap();
    let why = denied(first_snapshot(billing_channel, PROXY_TOKEN, web.clone()).await);
    assert!(
        why.contains(&format!("proves {BILLING_ID}")) && why.contains(WEB_ID),
        "{why}"
    );

    // A certificate of another CA fails the handshake: nothing is subscribed.
    let stranger = Ca::generate("Another CA").unwrap();
    let forged = stranger
        .issue_workload(WEB_ID, &[], &[], Duration::from_secs(600))
        .unwrap();
    let forged = Issued {
        chain: forged.issued.chain_pem.into_bytes(),
        key: forged.key_pem.into_bytes(),
    };
    match channel(&server, &ca, Some(&forged)).await {
        Err(_) => {}
        Ok(ch) => {
            let refused = first_snapshot(ch, PROXY_TOKEN, web.clone()).await;
            assert!(refused.is_err(), "a certificate of another CA was taken");
        }
    }

    // The token is still checked.
    let web_channel = channel(&server, &ca, Some(&web_cert)).await.unwrap();
    let refused = first_snapshot(web_channel.clone(), "wrong", web.clone()).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unauthenticated));

    // The right certificate: the group's snapshot.
    let (snapshot, _stream) = first_snapshot(web_channel, PROXY_TOKEN, web).await.unwrap();
    assert_eq!(snapshot.version, 1);
    let (status, body) = https(&server, &ca, Method::GET, "/v1/proxies", "").await;
    assert_eq!(status, StatusCode::OK);
    let connected: Vec<&str> = (body["proxies"].as_array().unwrap().iter())
        .filter(|p| p["connected"] == true)
        .filter_map(|p| p["node"].as_str())
        .collect();
    assert!(connected.contains(&"web-1"), "{body:#}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_its_certificate_then_subscribes_with_it_and_serves() {
    let data = TempDir::new();
    let state = TempDir::new();
    let backend = weft_tests::backend("web").start().await;
    let (server, ca) = tls_server(&data.0.join("data")).await;
    let yaml = mesh(&backend.addr.to_string()).replace(
        "trust_domain: bank.example",
        "trust_domain: bank.example\n  certificate_ttl: 6s",
    );
    let (status, body) = https(&server, &ca, Method::PUT, "/v1/mesh?file=mesh.yaml", &yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let config =
        weft_config::Config::from_str("admin:\n  address: \"127.0.0.1:0\"\n", "test", None)
            .unwrap();
    let proxy = within(weft_proxy::start(config))
        .await
        .expect("the proxy starts");
    let ca_file: PathBuf = data.0.join("data").join("ca.pem");
    let mut options = weft_agent::Options::new(&server.url(), PROXY_TOKEN, "web-1", "web");
    options.ca = Some(ca_file);
    options.state_dir = Some(state.0.clone());
    options.min_backoff = Duration::from_millis(50);
    options.max_backoff = Duration::from_millis(200);
    let agent = within(weft_agent::start(proxy.clone(), options))
        .await
        .expect("the agent starts");

    // Refused at first, it gets a certificate, subscribes again presenting it, and
    // applies its group's snapshot.
    let mut applied = agent.applied();
    within(applied.wait_for(|v| *v == Some(1))).await.unwrap();
    assert_eq!(proxy.identity().spiffe_id().as_deref(), Some(WEB_ID));
    let inbound = proxy
        .listener_addr("inbound")
        .expect("the group's listener");
    let reply = weft_tests::client().get(inbound, "/").await;
    assert_eq!(reply.status, 200);

    // After a renewal it connects again with the new certificate, and is still in
    // force.
    let first = proxy.identity().not_after().unwrap();
    eventually_async("a renewed certificate", async || {
        proxy.identity().not_after().filter(|t| *t > first)
    })
    .await;
    eventually_async("web-1 current on the new stream", async || {
        let (_, body) = https(&server, &ca, Method::GET, "/v1/proxies", "").await;
        let p = body["proxies"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["node"] == "web-1"))
            .cloned();
        match p {
            Some(p) if p["connected"] == true && p["state"] == "current" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (status, _) = https(
        &server,
        &ca,
        Method::PUT,
        "/v1/mesh?file=mesh.yaml",
        &format!("{yaml}# again\n"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    within(applied.wait_for(|v| *v == Some(2))).await.unwrap();
    agent.shutdown().await;
    proxy.shutdown().await;
    server.shutdown().await;
}
