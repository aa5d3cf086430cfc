//! Signed pushes on a real config server: with trusted keys it refuses what is not
//! signed, and any change that would make live what no trusted key signed, even
//! what was stored before signatures were required.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::Value;
use weft_agent::signature::{HEADER, PublicKey, Signature, Signed};
use weft_config_server::{Options, RunningServer};
use weft_testkit::{ANY_PORT, TempDir, within};
use weft_tests::guests::{TAG_ONE, TAG_TWO};

const TOKEN: &str = "test-token";
const PROXY_TOKEN: &str = "test-proxy-token";

const MESH: &str = "\
clusters:
  - name: web
    endpoints: [\"127.0.0.1:9\"]
proxies:
  - select: { service: web }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: tag
            module: filter:tag
";

/// An operator's key.
struct Key(Ed25519KeyPair, PublicKey);

impl Key {
    fn new() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = PublicKey::from_bytes(pair.public_key().as_ref().try_into().unwrap());
        Self(pair, public)
    }

    fn sign(&self, what: Signed, content: &[u8]) -> String {
        let sig = self.0.sign(&what.message(content));
        Signature::new(self.1.id(), sig.as_ref().try_into().unwrap()).to_string()
    }
}

async fn server(data: &std::path::Path, trusted: Option<&std::path::Path>) -> RunningServer {
    let mut opts = Options::new(ANY_PORT.parse().unwrap(), data.to_owned());
    opts.token = Some(TOKEN.to_owned());
    opts.proxy_token = Some(PROXY_TOKEN.to_owned());
    opts.trusted_keys = trusted.map(ToOwned::to_owned);
    within(weft_config_server::start(opts))
        .await
        .expect("the config server starts")
}

/// `method path` with `body`, signed by `key` when given; the status and the error.
async fn call(
    server: &RunningServer,
    method: Method,
    path: &str,
    body: &[u8],
    signed: Option<(&Key, Signed)>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.addr()))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some((key, what)) = signed {
        req = req.header(HEADER, key.sign(what, body));
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = within(client.request(req)).await.unwrap();
    let status = resp.status();
    let bytes = within(resp.into_body().collect()).await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        status,
        json["error"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn push(
    s: &RunningServer,
    bytes: &[u8],
    signed: Option<(&Key, Signed)>,
) -> (StatusCode, String) {
    call(s, Method::PUT, "/v1/filters/tag", bytes, signed).await
}

async fn apply(
    s: &RunningServer,
    yaml: &[u8],
    signed: Option<(&Key, Signed)>,
) -> (StatusCode, String) {
    call(s, Method::PUT, "/v1/mesh?file=mesh.yaml", yaml, signed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_stored_unsigned_does_not_go_live_once_signatures_are_required() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let key = Key::new();
    let trusted = dir.0.join("trusted-keys");
    std::fs::write(&trusted, format!("{} ops\n", key.1)).unwrap();
    let (one, two) = (
        std::fs::read(TAG_ONE).unwrap(),
        std::fs::read(TAG_TWO).unwrap(),
    );

    // Before signatures were required: version 1, all unsigned.
    let s = server(&data, None).await;
    assert_eq!(push(&s, &one, None).await.0, StatusCode::CREATED);
    let before = format!("{MESH}# before\n");
    assert_eq!(
        apply(&s, before.as_bytes(), None).await.0,
        StatusCode::CREATED
    );
    let mesh = MESH.as_bytes();
    s.shutdown().await;

    let s = server(&data, Some(&trusted)).await;
    // A signed push would make a version of the unsigned mesh config.
    let (status, why) = push(&s, &two, Some((&key, Signed::Module))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
    assert!(
        why.starts_with("this change would make live mesh config \"mesh.yaml\"")
            && why.contains("apply it again with `weft apply --sign KEYFILE`"),
        "{why}"
    );
    // A signed mesh config would run the module pushed unsigned.
    let (status, why) = apply(&s, mesh, Some((&key, Signed::Mesh))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
    assert!(
        why.contains("(filter tag)")
            && why.contains("the module is not signed; push it again with `weft push --sign"),
        "{why}"
    );
    // Signed again, the same module and mesh config go live.
    let (status, why) = push(&s, &one, Some((&key, Signed::Module))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "nothing changed but the signature: {why}"
    );
    let (status, why) = apply(&s, mesh, Some((&key, Signed::Mesh))).await;
    assert_eq!(status, StatusCode::CREATED, "{why}");
    // A mesh config's signature does not pass for a module's of the same bytes.
    let (status, why) = push(&s, &two, Some((&key, Signed::Mesh))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(why.contains("does not verify"), "{why}");
    // Version 1's mesh config is as unsigned as it was: no rollback to it.
    let (status, why) = call(&s, Method::POST, "/v1/rollback/1", b"", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
    assert!(why.contains("mesh config \"mesh.yaml\""), "{why}");
    // And a well-signed push goes live.
    let (status, why) = push(&s, &two, Some((&key, Signed::Module))).await;
    assert_eq!(status, StatusCode::CREATED, "{why}");
    s.shutdown().await;
    let kept = std::fs::read_to_string(data.join("signatures.json")).unwrap();
    assert!(kept.contains(&key.1.id().to_string()), "{kept}");
}
