//! The config server end to end: real sockets, real components, real gRPC.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api::proxy_message::Kind;
use weft_api::{
    Ack, BoundListener, ControlClient, Hello, Nack, ProxyMessage, Report, Snapshot, Traffic,
};
use weft_config_server::{Limits, Options, RunningServer};
use weft_testkit::{ANY_PORT, LIMIT, TempDir, eventually_async, within};
use weft_tests::guests::{HELLO, HELLO_P1, STAMP, WRONG_WORLD};

const TOKEN: &str = "test-token";
const PROXY_TOKEN: &str = "test-proxy-token";

/// Two pushed filters and a built-in, for proxies of service `web`.
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
          - name: fault
            module: builtin:fault
            config: { abort: { status: 503, header: { name: x-fault, value: abort } } }
          - name: stamp
            module: filter:stamp
            config: { name: a }
          - name: hello
            module: filter:hello
            config: { greeting: hi }
";

// ---------------------------------------------------------------------------------
// The story helpers.

/// A data folder the server makes itself (so with its own mode), in a temporary
/// folder removed when the test ends.
struct DataDir {
    path: PathBuf,
    _temp: TempDir,
}

impl DataDir {
    fn new() -> Self {
        let temp = TempDir::new();
        Self {
            path: temp.0.join("data"),
            _temp: temp,
        }
    }
}

fn options(dir: &DataDir) -> Options {
    Options::new(ANY_PORT.parse().unwrap(), dir.path.clone())
}

async fn start(dir: &DataDir, token: Option<&str>) -> RunningServer {
    start_with(dir, token, Limits::default()).await
}

async fn start_with(dir: &DataDir, token: Option<&str>, limits: Limits) -> RunningServer {
    let mut opts = options(dir);
    opts.token = token.map(str::to_owned);
    opts.proxy_token = Some(PROXY_TOKEN.to_owned());
    opts.limits = limits;
    within(weft_config_server::start(opts))
        .await
        .expect("the config server starts")
}

/// A server with `limits` serving [`MESH`] as version 1, and its API with the token.
async fn serving(dir: &DataDir, limits: Limits) -> (RunningServer, Api) {
    let server = start_with(dir, Some(TOKEN), limits).await;
    let a = api(&server, Some(TOKEN));
    a.push_file("stamp", STAMP).await;
    a.push_file("hello", HELLO).await;
    assert_eq!(a.apply(MESH).await.json["version"], 1);
    (server, a)
}

/// The HTTP API of one server.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.json))
    }
}

fn api(server: &RunningServer, token: Option<&str>) -> Api {
    Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}", server.addr()),
        token: token.map(str::to_owned),
    }
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let resp = within(self.client.request(req))
            .await
            .expect("the request is answered");
        let (parts, body) = resp.into_parts();
        let bytes = within(body.collect()).await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status: parts.status,
            headers: parts.headers,
            json,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Bytes::new()).await
    }

    async fn push(&self, name: &str, bytes: impl Into<Bytes>) -> Answer {
        self.call(Method::PUT, &format!("/v1/filters/{name}"), bytes)
            .await
    }

    async fn push_file(&self, name: &str, path: &str) -> Answer {
        self.push(name, std::fs::read(path).unwrap()).await
    }

    async fn apply(&self, yaml: &str) -> Answer {
        self.call(Method::PUT, "/v1/mesh?file=mesh.yaml", yaml.to_owned())
            .await
    }

    /// Poll `/v1/proxies` until the entry of `node` satisfies `ok`.
    async fn proxy_until(&self, node: &str, ok: impl Fn(&Value) -> bool) -> Value {
        eventually_async(&format!("{node} as wanted in /v1/proxies"), async || {
            let all = self.get("/v1/proxies").await.json;
            match all["proxies"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["node"] == node))
            {
                Some(p) if ok(p) => Ok(p.clone()),
                _ => Err(format!("{all:#}")),
            }
        })
        .await
    }
}

fn sha256(path: &str) -> String {
    weft_engine::Engine::digest(&std::fs::read(path).unwrap())
}

/// A proxy's side of the gRPC stream.
struct Proxy {
    to_server: mpsc::Sender<ProxyMessage>,
    snapshots: tonic::Streaming<Snapshot>,
}

async fn subscribe(server: &RunningServer, hello: Hello) -> Result<Proxy, tonic::Status> {
    subscribe_as(server, Some(PROXY_TOKEN), hello).await
}

/// Subscribe with `token` as the proxy token (none: no `authorization` metadata).
async fn subscribe_as(
    server: &RunningServer,
    token: Option<&str>,
    hello: Hello,
) -> Result<Proxy, tonic::Status> {
    let mut client = within(ControlClient::connect(format!("http://{}", server.addr())))
        .await
        .expect("connects")
        .max_decoding_message_size(weft_api::MAX_MESSAGE_SIZE);
    let (to_server, rx) = mpsc::channel(8);
    to_server
        .send(ProxyMessage {
            kind: Some(Kind::Hello(hello)),
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", weft_api::bearer(token).unwrap());
    }
    let snapshots = within(client.subscribe(request)).await?.into_inner();
    Ok(Proxy {
        to_server,
        snapshots,
    })
}

/// The Hello of the proxy process `node` (its instance secret derives from the node
/// id, so the same node in one test is the same process).
fn hello(node: &str, service: &str) -> Hello {
    Hello {
        node: node.into(),
        service: service.into(),
        agent: "test".into(),
        instance: format!("instance-of-{node:<16}"),
        ..Default::default()
    }
}

impl Proxy {
    async fn next(&mut self) -> Snapshot {
        within(self.snapshots.message())
            .await
            .expect("the stream stays up")
            .expect("a snapshot comes")
    }

    async fn send(&self, kind: Kind) {
        self.to_server
            .send(ProxyMessage { kind: Some(kind) })
            .await
            .unwrap();
    }
}

fn module_shas(s: &Snapshot) -> Vec<&str> {
    s.modules.iter().map(|m| m.sha256.as_str()).collect()
}

// ---------------------------------------------------------------------------------
// The stories.

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = DataDir::new();
    let server = start(&dir, None).await;
    let token = server
        .created_token()
        .expect("first start creates the token")
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(server.token_file()).unwrap().trim(),
        token
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(server.token_file()), 0o600);
        assert_eq!(mode(&dir.path), 0o700);
    }
    let a = api(&server, Some(&token));
    assert_eq!(
        a.push_file("stamp", STAMP).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        a.push_file("hello", HELLO).await.status,
        StatusCode::CREATED
    );
    let applied = a.apply(MESH).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.json);
    assert_eq!(applied.json["version"], 1);
    within(server.shutdown()).await;

    let server = start(&dir, None).await;
    assert_eq!(server.created_token(), None, "the token is created once");
    let a = api(&server, Some(&token));
    let filters = a.get("/v1/filters").await.json;
    let names: Vec<&str> = filters["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "stamp"]);
    assert_eq!(
        filters["filters"][1]["versions"][0]["sha256"],
        sha256(STAMP)
    );
    let snapshot = a.get("/v1/snapshot").await;
    assert_eq!(snapshot.status, StatusCode::OK);
    assert_eq!(snapshot.json["version"], 1);
    assert_eq!(snapshot.json["cause"], "apply mesh.yaml");
    assert_eq!(snapshot.json["mesh"], MESH);
    assert_eq!(snapshot.json["filters"]["hello"], sha256(HELLO));
    // The token from the file still works for writes.
    assert_eq!(a.push_file("hello", HELLO_P1).await.json["version"], 2);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn writes_need_the_token() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    assert_eq!(server.created_token(), None);

    let anonymous = api(&server, None);
    let refused = anonymous.push_file("stamp", STAMP).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(
        refused.error().contains("Authorization: Bearer"),
        "{}",
        refused.error()
    );

    let wrong = api(&server, Some("not-the-token"));
    let refused = wrong.push_file("stamp", STAMP).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error(), "the API token is wrong");
    let refused = wrong
        .call(Method::POST, "/v1/rollback/1", Bytes::new())
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = wrong.apply(MESH).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // Reads from this machine need no token.
    let filters = anonymous.get("/v1/filters").await;
    assert_eq!(filters.status, StatusCode::OK);
    assert_eq!(filters.json["filters"], Value::Array(vec![]));
    let missing = api(&server, Some(TOKEN)).get("/v1/snapshot").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.error().contains("no mesh config"));
    let doc = anonymous.get("/v1/openapi.yaml").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json.as_str().unwrap().starts_with("openapi: 3.0"));
    let nowhere = anonymous.get("/v2/nothing").await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(nowhere.error().contains("no such route"));
    within(server.shutdown()).await;
}

#[tokio::test]
async fn modules_that_are_not_filters_are_refused() {
    let dir = DataDir::new();
    let mut opts = options(&dir);
    opts.token = Some(TOKEN.into());
    opts.max_filter_size = 1 << 20;
    let server = within(weft_config_server::start(opts)).await.unwrap();
    let a = api(&server, Some(TOKEN));

    let r = a.push("stamp", "hello, world").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.error(),
        "stamp: not a WebAssembly file (no \\0asm header)"
    );

    let r = a.push("stamp", &b"\0asm\x01\0\0\0"[..]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error()
            .starts_with("stamp: is a core WebAssembly module, not a component"),
        "{}",
        r.error()
    );

    let r = a.push_file("other", WRONG_WORLD).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.error()
            .starts_with("other: not a Weft filter (world weft:filter/filter-world@0.2.0)"),
        "{}",
        r.error()
    );

    let r = a.push_file("Bad/Name", STAMP).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a slash is no filter route"
    );
    let r = a.push_file("Bad", STAMP).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error().starts_with("invalid filter name \"Bad\""),
        "{}",
        r.error()
    );

    let r = a.push("big", vec![0u8; (1 << 20) + 1]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.error().contains("up to 1048576 bytes"), "{}", r.error());

    // Nothing of that was stored.
    assert_eq!(
        a.get("/v1/filters").await.json["filters"],
        Value::Array(vec![])
    );

    let r = a.push_file("stamp", STAMP).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json["sha256"], sha256(STAMP));
    assert_eq!(r.json["version"], Value::Null, "no mesh config yet");
    let again = a.push_file("stamp", STAMP).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the same bytes change nothing"
    );
    let versions = a.get("/v1/filters/stamp").await.json;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.get("/v1/filters/nope").await.status,
        StatusCode::NOT_FOUND
    );
    within(server.shutdown()).await;
}

#[tokio::test]
async fn mesh_errors_point_at_the_key() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));

    let r = a.apply("proxies: [").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().starts_with("mesh.yaml:"), "{}", r.error());

    let r = a.apply(MESH).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.error(),
        "mesh.yaml:15:21: proxies[0].listeners[0].filters[1].module: \
         no filter was pushed under the name \"stamp\""
    );

    a.push_file("stamp", STAMP).await;
    a.push_file("hello", HELLO).await;
    let r = a
        .apply(&MESH.replace("default_cluster: web", "default_cluster: nowhere"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.error(),
        "mesh.yaml:9:26: proxies[0].listeners[0].default_cluster: no cluster named \"nowhere\""
    );

    let pinned = MESH.replace(
        "module: filter:hello\n",
        &format!(
            "module: filter:hello\n            sha256: {}\n",
            "0".repeat(64)
        ),
    );
    let r = a.apply(&pinned).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.error()
            .starts_with("mesh.yaml:19:21: proxies[0].listeners[0].filters[2].sha256: "),
        "{}",
        r.error()
    );

    let rejected = MESH.replace("config: { name: a }", "config: { nom: a }");
    let r = a.apply(&rejected).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.error().starts_with(
            "mesh.yaml:16:28: proxies[0].listeners[0].filters[1].config.nom: filter \"stamp\" rejected its config"
        ),
        "{}",
        r.error()
    );

    assert_eq!(
        a.get("/v1/versions").await.json["versions"],
        Value::Array(vec![])
    );
    let r = a
        .apply(&pinned.replace(&"0".repeat(64), &sha256(HELLO)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn a_push_the_live_mesh_config_rejects_is_refused() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));
    a.push_file("stamp", STAMP).await;
    a.push_file("hello", HELLO).await;
    assert_eq!(a.apply(MESH).await.status, StatusCode::CREATED);

    // The stamp filter wants `{name}`; the mesh gives `hello` `{greeting: hi}`.
    let r = a.push_file("hello", STAMP).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.error().starts_with(
            "mesh.yaml:19:33: proxies[0].listeners[0].filters[2].config.greeting: filter \"hello\" rejected its config: "
        ),
        "{}",
        r.error()
    );
    let hello = a.get("/v1/filters/hello").await.json;
    assert_eq!(hello["versions"].as_array().unwrap().len(), 1);
    assert_eq!(hello["versions"][0]["sha256"], sha256(HELLO));
    let versions = a.get("/v1/versions").await.json;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn rollback_makes_a_new_version() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;
    let pushed = a.push_file("hello", HELLO_P1).await;
    assert_eq!(pushed.status, StatusCode::CREATED);
    assert_eq!(pushed.json["version"], 2);

    let r = a.call(Method::POST, "/v1/rollback/1", Bytes::new()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json, serde_json::json!({ "version": 3, "from": 1 }));
    let snapshot = a.get("/v1/snapshot").await.json;
    assert_eq!(snapshot["version"], 3);
    assert_eq!(snapshot["cause"], "rollback to 1");
    assert_eq!(snapshot["filters"]["hello"], sha256(HELLO));
    let versions = a.get("/v1/versions").await.json;
    let causes: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["cause"].as_str().unwrap())
        .collect();
    let p1 = sha256(HELLO_P1);
    assert_eq!(
        causes,
        [
            "apply mesh.yaml",
            &format!("push hello {}", &p1[..12]),
            "rollback to 1"
        ]
    );

    let r = a.call(Method::POST, "/v1/rollback/9", Bytes::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no version 9: versions are 1 to 3");
    let r = a
        .call(Method::POST, "/v1/rollback/latest", Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn proxies_get_their_modules_and_report_back() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;
    let (stamp, hello1, hello2) = (sha256(STAMP), sha256(HELLO), sha256(HELLO_P1));

    let mut proxy = subscribe(&server, hello("web-1", "web")).await.unwrap();
    let first = proxy.next().await;
    assert_eq!(first.version, 1);
    assert_eq!(first.mesh, MESH);
    assert_eq!(first.filters["stamp"], stamp);
    let mut shas = module_shas(&first);
    shas.sort_unstable();
    let mut want = vec![stamp.as_str(), hello1.as_str()];
    want.sort_unstable();
    assert_eq!(
        shas, want,
        "every pushed module the group uses, no built-in"
    );
    for m in &first.modules {
        assert_eq!(weft_engine::Engine::digest(&m.wasm), m.sha256);
    }

    proxy
        .send(Kind::Ack(Ack {
            version: 1,
            listeners: vec![BoundListener {
                name: "inbound".into(),
                address: "127.0.0.1:15006".into(),
            }],
            modules: vec![stamp.clone(), hello1.clone()],
            filters: [
                ("hello".into(), hello1.clone()),
                ("stamp".into(), stamp.clone()),
            ]
            .into(),
        }))
        .await;
    let p = a.proxy_until("web-1", |p| p["applied"] == 1).await;
    // Which module the proxy runs for each filter, beside what the live version says.
    assert_eq!(p["filters"]["hello"], hello1.as_str());
    let all = a.get("/v1/proxies").await.json;
    assert_eq!(all["filters"]["hello"], hello1.as_str());
    assert_eq!(p["connected"], true);
    assert_eq!(p["service"], "web");
    assert_eq!(p["group"], 0);
    assert_eq!(p["listeners"]["inbound"], "127.0.0.1:15006");
    assert_eq!(p["last"]["result"], "ack");
    assert!(p["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    // A new version of one filter carries only that module.
    assert_eq!(a.push_file("hello", HELLO_P1).await.json["version"], 2);
    let second = proxy.next().await;
    assert_eq!(second.version, 2);
    assert_eq!(module_shas(&second), [hello2.as_str()]);
    assert_eq!(second.filters["hello"], hello2);

    proxy
        .send(Kind::Nack(Nack {
            version: 2,
            error: "mesh.yaml:21:21: no, thanks".into(),
            modules: vec![stamp.clone(), hello1.clone(), hello2.clone()],
        }))
        .await;
    let p = a
        .proxy_until("web-1", |p| p["last"]["result"] == "nack")
        .await;
    assert_eq!(
        p["applied"], 1,
        "a NACK leaves the proxy on its last good version"
    );
    assert_eq!(p["last"]["version"], 2);
    assert_eq!(p["last"]["error"], "mesh.yaml:21:21: no, thanks");

    // It now has every module: a rollback sends none.
    a.call(Method::POST, "/v1/rollback/1", Bytes::new()).await;
    let third = proxy.next().await;
    assert_eq!(third.version, 3);
    assert!(third.modules.is_empty());

    // Shutting down ends the stream, so the proxy can reconnect elsewhere.
    within(server.shutdown()).await;
    let end = within(proxy.snapshots.message()).await;
    assert!(matches!(end, Err(s) if s.code() == tonic::Code::Unavailable));
}

#[tokio::test]
async fn streams_start_with_hello_and_only_selected_proxies_get_snapshots() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;

    // A stream that does not open with a Hello is refused.
    let mut client = ControlClient::connect(format!("http://{}", server.addr()))
        .await
        .unwrap();
    let ack = ProxyMessage {
        kind: Some(Kind::Ack(Ack::default())),
    };
    let mut request = tonic::Request::new(tokio_stream::iter([ack]));
    request
        .metadata_mut()
        .insert("authorization", weft_api::bearer(PROXY_TOKEN).unwrap());
    let refused = within(client.subscribe(request)).await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::InvalidArgument),
        "{refused:?}"
    );

    // No group selects service `db`: it is listed, with no group, and sent nothing.
    let mut db = subscribe(&server, hello("db-1", "db")).await.unwrap();
    let p = a.proxy_until("db-1", |p| p["connected"] == true).await;
    assert_eq!(p["group"], Value::Null);
    assert_eq!(p["applied"], Value::Null);
    let for_db = MESH.replace(
        "proxies:\n",
        "proxies:\n  - select: { service: db }\n    listeners: []\n",
    );
    assert_eq!(a.apply(&for_db).await.json["version"], 2);
    let first = db.next().await;
    assert_eq!(first.version, 2, "version 1 was never sent");
    assert!(first.modules.is_empty(), "its group uses no module");
    a.proxy_until("db-1", |p| p["group"] == 0).await;

    // A proxy that already serves the live version is sent nothing until the next.
    let mut web = subscribe(
        &server,
        Hello {
            version: 2,
            ..hello("web-1", "web")
        },
    )
    .await
    .unwrap();
    let p = a.proxy_until("web-1", |p| p["group"] == 1).await;
    assert_eq!(p["applied"], 2);
    a.push_file("hello", HELLO_P1).await;
    assert_eq!(web.next().await.version, 3);

    // The same node again replaces the old stream, which ends.
    let _again = subscribe(&server, hello("web-1", "web")).await.unwrap();
    let end = within(async {
        loop {
            match web.snapshots.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(&end, Err(s) if s.code() == tonic::Code::Aborted),
        "{end:?}"
    );
    let p = a
        .proxy_until("web-1", |p| p["applied"] == Value::Null)
        .await;
    assert_eq!(p["connected"], true);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn a_damaged_state_stops_the_start() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    within(server.shutdown()).await;
    std::fs::write(dir.path.join("state.json"), "{ not json").unwrap();
    let mut opts = options(&dir);
    opts.token = Some(TOKEN.into());
    let err = within(weft_config_server::start(opts)).await.unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains(&dir.path.join("state.json").display().to_string()),
        "{err}"
    );
    assert!(err.contains("damaged state"), "{err}");
    // Still there to look at.
    assert_eq!(
        std::fs::read_to_string(dir.path.join("state.json")).unwrap(),
        "{ not json"
    );
}

// ---------------------------------------------------------------------------------
// Hardening: who may subscribe, what a proxy may say, what a push does, who reads
// configs.

fn code(r: &Result<Proxy, tonic::Status>) -> Option<tonic::Code> {
    r.as_ref().err().map(tonic::Status::code)
}

#[tokio::test]
async fn the_proxy_stream_needs_the_proxy_token() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;

    for (token, why) in [
        (None, "needs the proxy token"),
        (Some("guess"), "the proxy token is wrong"),
        (Some(TOKEN), "this is the API token"),
    ] {
        let refused = subscribe_as(&server, token, hello("web-1", "web")).await;
        let status = refused.as_ref().err().expect("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(why), "{status:?}");
    }
    // Nothing was registered, let alone sent.
    assert_eq!(
        a.get("/v1/proxies").await.json["proxies"],
        serde_json::json!([])
    );

    // The proxy token subscribes, and only that: it cannot write.
    let mut proxy = subscribe(&server, hello("web-1", "web")).await.unwrap();
    assert_eq!(proxy.next().await.version, 1);
    let refused = api(&server, Some(PROXY_TOKEN))
        .push_file("hello", HELLO_P1)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.error().contains("proxy token"),
        "{}",
        refused.error()
    );

    // The two roles never share one secret.
    within(server.shutdown()).await;
    let mut opts = options(&dir);
    opts.token = Some(TOKEN.into());
    opts.proxy_token = Some(TOKEN.into());
    let err = within(weft_config_server::start(opts)).await.unwrap_err();
    assert!(err.to_string().contains("the same"), "{err}");
}

#[tokio::test]
async fn a_node_id_stays_with_the_proxy_that_holds_it() {
    let dir = DataDir::new();
    let limits = Limits {
        node_hold: Duration::from_millis(300),
        ..Limits::default()
    };
    let (server, a) = serving(&dir, limits).await;
    let mut owner = subscribe(&server, hello("web-1", "web")).await.unwrap();
    assert_eq!(owner.next().await.version, 1);

    // Another process with the proxy token cannot take the node id over...
    let intruder = Hello {
        instance: "another-process-secret".into(),
        ..hello("web-1", "web")
    };
    for _ in 0..5 {
        let refused = subscribe(&server, intruder.clone()).await;
        assert_eq!(code(&refused), Some(tonic::Code::AlreadyExists));
    }
    // ...and the owner's stream lives on: it still gets the next version.
    assert_eq!(a.push_file("hello", HELLO_P1).await.json["version"], 2);
    assert_eq!(owner.next().await.version, 2);

    // Once the owner is gone for the hold, a restarted proxy (a new process) may
    // take the node id; right after, not yet.
    drop(owner);
    a.proxy_until("web-1", |p| p["connected"] == false).await;
    let early = subscribe(&server, intruder.clone()).await;
    assert_eq!(code(&early), Some(tonic::Code::AlreadyExists));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut restarted = subscribe(&server, intruder).await.unwrap();
    assert_eq!(restarted.next().await.version, 2);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn what_a_proxy_says_about_itself_is_bounded() {
    let dir = DataDir::new();
    let limits = Limits {
        max_proxies: 3,
        node_hold: Duration::ZERO,
        forget_after: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start_with(&dir, Some(TOKEN), limits).await;
    let a = api(&server, Some(TOKEN));

    // A message over 64 KiB is refused before it is read.
    let mut huge = hello("big", "web");
    huge.labels.insert("blob".into(), "x".repeat(256 << 10));
    let refused = subscribe(&server, huge).await;
    assert_eq!(
        code(&refused),
        Some(tonic::Code::OutOfRange),
        "{:?}",
        refused.err()
    );
    // Within it, labels are still bounded in number and size.
    let mut many = hello("many", "web");
    many.labels = (0..100).map(|i| (format!("k{i}"), "v".into())).collect();
    let refused = subscribe(&server, many).await;
    assert_eq!(code(&refused), Some(tonic::Code::InvalidArgument));
    let mut long = hello("long", "web");
    long.labels.insert("zone".into(), "z".repeat(1000));
    let refused = subscribe(&server, long).await;
    assert_eq!(code(&refused), Some(tonic::Code::InvalidArgument));
    let no_secret = Hello {
        instance: String::new(),
        ..hello("web-9", "web")
    };
    assert_eq!(
        code(&subscribe(&server, no_secret).await),
        Some(tonic::Code::InvalidArgument)
    );

    // The registry holds at most three nodes while they are connected...
    let mut live = Vec::new();
    for n in 0..3 {
        live.push(
            subscribe(&server, hello(&format!("web-{n}"), "web"))
                .await
                .unwrap(),
        );
    }
    a.proxy_until("web-2", |p| p["connected"] == true).await;
    let full = subscribe(&server, hello("web-3", "web")).await;
    assert_eq!(code(&full), Some(tonic::Code::ResourceExhausted));
    let listed = a.get("/v1/proxies").await.json;
    assert_eq!(listed["proxies"].as_array().unwrap().len(), 3);

    // ...and forgets the ones gone for long: they make room.
    drop(live);
    a.proxy_until("web-0", |p| p["connected"] == false).await;
    eventually_async("no proxy listed", async || {
        let listed = a.get("/v1/proxies").await.json;
        match listed["proxies"].as_array().unwrap().is_empty() {
            true => Ok(()),
            false => Err(format!("{listed:#}")),
        }
    })
    .await;
    let _room = subscribe(&server, hello("web-3", "web")).await.unwrap();
    a.proxy_until("web-3", |p| p["connected"] == true).await;
    within(server.shutdown()).await;
}

#[tokio::test]
async fn a_push_after_a_rollback_makes_its_module_live() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;
    let (old, new) = (sha256(HELLO), sha256(HELLO_P1));
    assert_eq!(a.push_file("hello", HELLO_P1).await.json["version"], 2);
    let r = a.call(Method::POST, "/v1/rollback/1", Bytes::new()).await;
    assert_eq!(r.json["version"], 3);
    assert_eq!(
        a.get("/v1/snapshot").await.json["filters"]["hello"],
        old.as_str()
    );

    // Applying a mesh config does not undo the rollback behind the operator's back.
    assert_eq!(
        a.apply(&MESH.replace("greeting: hi", "greeting: hey"))
            .await
            .json["version"],
        4
    );
    assert_eq!(
        a.get("/v1/snapshot").await.json["filters"]["hello"],
        old.as_str()
    );

    // Pushing the newer module again makes it live, and says so.
    let pushed = a.push_file("hello", HELLO_P1).await;
    assert_eq!(pushed.json["version"], 5, "{}", pushed.json);
    assert_eq!(pushed.json["changed"], true);
    assert_eq!(
        a.get("/v1/snapshot").await.json["filters"]["hello"],
        new.as_str()
    );
    // Pushing it once more changes nothing, and says that too.
    let again = a.push_file("hello", HELLO_P1).await;
    assert_eq!(again.json["version"], 5);
    assert_eq!(again.json["changed"], false);

    // A pushed module no proxy will run comes with the reason.
    let unused = a.push_file("unused", STAMP).await;
    assert!(
        unused.json["note"].as_str().unwrap().contains("no group"),
        "{}",
        unused.json
    );
    within(server.shutdown()).await;
}

#[tokio::test]
async fn configs_are_read_with_the_token_only_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;

    let anonymous = api(&server, None);
    let refused = anonymous.get("/v1/snapshot").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Status stays open on this machine, without any config in it.
    let versions = anonymous.get("/v1/versions").await;
    assert_eq!(versions.status, StatusCode::OK);
    assert!(versions.json["versions"][0].get("mesh").is_none());
    let proxies = anonymous.get("/v1/proxies").await;
    assert_eq!(proxies.status, StatusCode::OK);
    assert_eq!(a.get("/v1/snapshot").await.json["mesh"], MESH);

    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path.join("state.json")), 0o600);
    within(server.shutdown()).await;

    // Tokens made on first start: two, different, each in its own 0600 file.
    let fresh = DataDir::new();
    let server = within(weft_config_server::start(options(&fresh)))
        .await
        .unwrap();
    let (token, proxy_token) = (
        server.created_token().unwrap().to_owned(),
        server.created_proxy_token().unwrap().to_owned(),
    );
    assert_ne!(token, proxy_token);
    assert_eq!(server.proxy_token_file(), fresh.path.join("proxy-token"));
    assert_eq!(mode(fresh.path.join("token")), 0o600);
    assert_eq!(mode(fresh.path.join("proxy-token")), 0o600);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn every_connection_is_bounded_in_time_and_number() {
    use tokio::io::AsyncWriteExt;
    use weft_testkit::{closed_within, raw_exchange};
    let dir = DataDir::new();
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        max_connections: 2,
        ..Limits::default()
    };
    let server = start_with(&dir, Some(TOKEN), limits).await;
    let addr = server.addr();

    // A connection that never says a word is closed.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a silent connection is still open after 10 s"
    );
    // So is one that trickles its request head.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v1/proxies HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(10)).await);
    // And a keep-alive connection once it has been idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/proxies HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);

    // Two connections fill the server: a third waits until one goes, then is served.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    let answer = within(raw_exchange(
        addr,
        b"GET /v1/proxies HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // It was served only once a held connection timed out.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    within(server.shutdown()).await;
}

#[tokio::test]
async fn values_the_request_path_cannot_use_are_refused_at_apply() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));
    a.push_file("stamp", STAMP).await;
    a.push_file("hello", HELLO).await;

    // An endpoint that is not host:port would have panicked at request time.
    let r = a
        .apply(&MESH.replace("\"127.0.0.1:9\"", "\"exa mple:80\""))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert!(
        r.error()
            .starts_with("mesh.yaml:3:17: clusters[0].endpoints[0]: "),
        "{}",
        r.error()
    );
    // A header value that would smuggle a header in.
    for bad in ["a\\r\\nX-Injected: 1", "a\\nb", "a\\u0000b", "a b"] {
        let mesh = MESH.replace(
            "          - name: fault\n",
            &format!(
                "          - name: router\n            module: builtin:router\n            \
                 config: {{ routes: [{{ match: {{ path: {{ prefix: / }} }}, cluster: web, \
                 rewrite: {{ host: \"{bad}\" }} }}] }}\n          - name: fault\n"
            ),
        );
        let r = a.apply(&mesh).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.json
        );
        assert!(
            r.error().contains("config.routes[0].rewrite.host")
                && !r.error().contains("X-Injected: 1\n"),
            "{bad}: {}",
            r.error()
        );
    }
    // Nothing was stored.
    assert_eq!(
        a.get("/v1/versions").await.json["versions"],
        Value::Array(vec![])
    );
    within(server.shutdown()).await;
}

#[tokio::test]
async fn traffic_reports_are_checked_and_summed_per_service_and_route() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));

    // The server tells each proxy how often to report.
    let mut client = within(ControlClient::connect(format!("http://{}", server.addr())))
        .await
        .unwrap();
    let (to_server, rx) = mpsc::channel(8);
    to_server
        .send(ProxyMessage {
            kind: Some(Kind::Hello(hello("bank-1", "banking"))),
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    (request.metadata_mut()).insert("authorization", weft_api::bearer(PROXY_TOKEN).unwrap());
    let response = within(client.subscribe(request)).await.unwrap();
    let interval = response.metadata().get(weft_api::REPORT_INTERVAL_HEADER);
    assert_eq!(interval.and_then(|v| v.to_str().ok()), Some("5000"));
    let mut snapshots = response.into_inner();

    let row = |route: &str, requests, errors, buckets: Vec<u64>| Traffic {
        reporter: "destination".into(),
        service: "banking".into(),
        route: route.into(),
        requests,
        errors,
        bounds_ms: vec![10.0, 100.0],
        buckets,
        sum_ms: 0.0,
    };
    let report = |rows| ProxyMessage {
        kind: Some(Kind::Report(Report { rows })),
    };
    to_server
        .send(report(vec![
            row("buy", 4, 1, vec![2, 2, 0]),
            row("quote", 1, 0, vec![0, 0, 1]),
        ]))
        .await
        .unwrap();
    to_server
        .send(report(vec![row("buy", 6, 0, vec![6, 0, 0])]))
        .await
        .unwrap();
    let view = a
        .stats_until("window=10s", |v| v["services"][0]["requests"] == 11)
        .await;
    let bank = &view["services"][0];
    assert_eq!(bank["service"], "banking", "{view:#}");
    assert_eq!(bank["errors"], 1);
    assert_eq!(bank["proxies"], 1);
    let buy = &bank["routes"][0];
    assert_eq!(
        (&buy["route"], &buy["requests"]),
        (&"buy".into(), &10.into())
    );
    // The server keeps Istio's buckets: the 8 of 10 under 10 ms count in its (5, 10],
    // so the median is at 5 + 5 * 5/8 ms.
    assert_eq!(buy["latency_ms"]["p50"], 8.125);
    // One of one past 100 ms: in the server's bucket above it, (100, 250].
    let p99 = bank["routes"][1]["latency_ms"]["p99"].as_f64().unwrap();
    assert!((p99 - (100.0 + 150.0 * 0.99)).abs() < 1e-9, "{p99}");

    // Bad questions are refused with what is wrong.
    let bad = a.get("/v1/stats?window=1h").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json["error"].as_str().unwrap().contains("1s to 120s"));
    let bad = a.get("/v1/stats?reporter=me").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // A row that makes no sense counts nothing, and is counted as dropped; the
    // proxy's stream stays.
    let mut hostile = row("buy\x1b[2J", 1000, 1, vec![1000, 0, 0]);
    hostile.bounds_ms = vec![f64::NAN, 1.0];
    to_server.send(report(vec![hostile])).await.unwrap();
    let view = a
        .stats_until("window=10s", |v| v["dropped_rows"] == 1)
        .await;
    assert_eq!(view["services"][0]["requests"], 11, "{view:#}");
    within(server.shutdown()).await;
    let end = within(snapshots.message()).await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
}

/// A report of `rows`, as a proxy sends it.
fn report(rows: Vec<Traffic>) -> Kind {
    Kind::Report(Report { rows })
}

/// One report row of `requests` requests, `errors` of them failed, all under 10 ms.
fn traffic(reporter: &str, service: &str, route: &str, requests: u64, errors: u64) -> Traffic {
    Traffic {
        reporter: reporter.into(),
        service: service.into(),
        route: route.into(),
        requests,
        errors,
        bounds_ms: vec![10.0, 100.0],
        buckets: vec![requests, 0, 0],
        sum_ms: 0.0,
    }
}

impl Api {
    /// Poll `/v1/stats?{query}` until it satisfies `ok`.
    async fn stats_until(&self, query: &str, ok: impl Fn(&Value) -> bool) -> Value {
        eventually_async(&format!("/v1/stats?{query} as wanted"), async || {
            let view = self.get(&format!("/v1/stats?{query}")).await.json;
            if ok(&view) {
                Ok(view)
            } else {
                Err(format!("{view:#}"))
            }
        })
        .await
    }
}

/// The service line of `service` in a `/v1/stats` answer.
fn service_line<'a>(view: &'a Value, service: &str) -> Option<&'a Value> {
    view["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == service)
}

#[tokio::test]
async fn a_report_row_the_server_cannot_use_is_dropped_not_the_stream() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;
    let mut proxy = subscribe(&server, hello("web-1", "web")).await.unwrap();
    assert_eq!(proxy.next().await.version, 1);

    // A request with `Host: []` gives a row without a service; with it come rows that
    // make no sense. Each is dropped on its own; the good rows count.
    let mut no_bounds = traffic("destination", "web", "home", 1, 0);
    no_bounds.bounds_ms = vec![f64::NAN, 1.0];
    proxy
        .send(report(vec![
            traffic("destination", "web", "home", 5, 1),
            traffic("source", "", "home", 3, 0),
            traffic("destination", "web", "home\x1b[2J", 3, 0),
            traffic("destination", "web", "home", 2, 7),
            traffic("inbound", "web", "home", 2, 0),
            no_bounds,
        ]))
        .await;
    proxy
        .send(report(vec![traffic("destination", "web", "home", 4, 0)]))
        .await;
    let view = a
        .stats_until("window=10s", |v| {
            service_line(v, "web").is_some_and(|s| s["requests"] == 9)
        })
        .await;
    let web = service_line(&view, "web").unwrap();
    assert_eq!(web["errors"], 1, "{view:#}");
    assert_eq!(view["dropped"]["invalid"], 5, "{view:#}");
    assert_eq!(view["dropped_rows"], 5, "{view:#}");

    // A report over the row cap is dropped whole, and the stream still stays.
    let long = (0..=weft_api::MAX_REPORT_ROWS)
        .map(|i| traffic("destination", "web", &format!("r{i}"), 1, 0))
        .collect();
    proxy.send(report(long)).await;
    a.stats_until("window=10s", |v| v["dropped"]["report_too_long"] == 101)
        .await;

    // The stream is up: the next version still reaches the proxy.
    assert_eq!(a.push_file("hello", HELLO_P1).await.json["version"], 2);
    assert_eq!(proxy.next().await.version, 2);
    let p = a.proxy_until("web-1", |p| p["connected"] == true).await;
    assert_eq!(p["service"], "web");
    within(server.shutdown()).await;
}

#[tokio::test]
async fn a_proxy_reports_only_for_its_own_service_and_sums_saturate() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));
    let payments = subscribe(&server, hello("payments-1", "payments"))
        .await
        .unwrap();
    let web = subscribe(&server, hello("web-1", "web")).await.unwrap();
    a.proxy_until("web-1", |p| p["connected"] == true).await;

    payments
        .send(report(vec![traffic(
            "destination",
            "payments",
            "pay",
            10,
            0,
        )]))
        .await;
    // A proxy of `web` that claims a million failed requests beside `payments`, and
    // counts that would wrap.
    web.send(report(vec![
        traffic("destination", "payments", "pay", 1_000_000, 1_000_000),
        traffic("source", "payments", "pay", 1_000_000, 1_000_000),
        traffic("destination", "web", "home", u64::MAX, 0),
        traffic("destination", "web", "home", 2, 0),
    ]))
    .await;
    let view = a
        .stats_until("window=10s", |v| {
            service_line(v, "web").is_some_and(|s| s["requests"] == u64::MAX)
        })
        .await;
    // `payments` shows what the proxy beside it served, nothing more.
    let pay = service_line(&view, "payments").expect("payments is shown");
    assert_eq!(pay["reporter"], "destination", "{view:#}");
    assert_eq!(pay["requests"], 10, "{view:#}");
    assert_eq!(pay["success_rate"], 1.0, "{view:#}");
    // The destination rows of web's proxy count under web, whatever they name.
    let web_line = service_line(&view, "web").unwrap();
    assert_eq!(web_line["errors"], 1_000_000, "{view:#}");
    let rate = web_line["success_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate), "{view:#}");
    assert_eq!(view["relabelled_rows"], 1, "{view:#}");
    // What a caller says about a callee stays the caller's side of the story.
    let source = a.get("/v1/stats?window=10s&reporter=source").await.json;
    let pay = service_line(&source, "payments").expect("the source side is kept");
    assert_eq!(pay["requests"], 1_000_000, "{source:#}");
    within(server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reports_leaves_the_api_answering() {
    const REPORTS: usize = 1000;
    const ROWS: usize = 100;
    const BOUNDS: usize = 64;
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));
    let web = subscribe(&server, hello("web-1", "web")).await.unwrap();
    a.proxy_until("web-1", |p| p["connected"] == true).await;
    let rss_before = rss_kib();

    // Every row brings 64 bounds of its own: a server that keeps what it is told keeps
    // them all.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut flood_report = move || {
        let rows = (0..ROWS)
            .map(|r| {
                let mut bound = random() * 10.0;
                let bounds_ms = (0..BOUNDS)
                    .map(|_| {
                        bound += 0.001 + random() * 1000.0;
                        bound
                    })
                    .collect();
                Traffic {
                    reporter: "destination".into(),
                    service: "web".into(),
                    route: format!("r{r}"),
                    requests: BOUNDS as u64 + 1,
                    errors: 0,
                    bounds_ms,
                    buckets: vec![1; BOUNDS + 1],
                    sum_ms: 1.0,
                }
            })
            .collect();
        ProxyMessage {
            kind: Some(report(rows)),
        }
    };
    // Meanwhile an operator looks, from a task of its own: every answer must come,
    // and soon.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let (a, done) = (api(&server, Some(TOKEN)), done.clone());
        async move {
            const PATHS: [&str; 2] = ["/v1/proxies", "/v1/stats?window=2m"];
            let (mut slowest, mut probes) = ([Duration::ZERO; 2], 0);
            while !done.load(Ordering::Relaxed) {
                for (i, path) in PATHS.into_iter().enumerate() {
                    let t = tokio::time::Instant::now();
                    let answer = tokio::time::timeout(LIMIT / 2, a.get(path)).await;
                    slowest[i] = slowest[i].max(t.elapsed());
                    if !answer.is_ok_and(|a| a.status == StatusCode::OK) {
                        return (slowest, probes, Some(path));
                    }
                }
                probes += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (slowest, probes, None)
        }
    });
    let started = tokio::time::Instant::now();
    let deadline = started + LIMIT;
    let mut sent = 0;
    while sent < REPORTS {
        let send = web.to_server.send(flood_report());
        match tokio::time::timeout_at(deadline, send).await {
            Ok(sent_ok) => sent_ok.expect("the stream stays up"),
            Err(_) => break,
        }
        sent += 1;
    }
    let flooded = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let ([proxies, stats], probes, unanswered) = within(probe).await.unwrap();
    eprintln!(
        "{sent} reports of {ROWS} rows x {BOUNDS} bounds in {flooded:?}; slowest of {probes} \
         answers meanwhile: GET /v1/proxies {proxies:?}, GET /v1/stats {stats:?}; \
         RSS {rss_before} KiB before, {} KiB after",
        rss_kib()
    );
    assert_eq!(unanswered, None, "not answered within {:?}", LIMIT / 2);
    assert_eq!(sent, REPORTS, "the server took {sent} reports in {LIMIT:?}");
    assert!(
        proxies < Duration::from_secs(2),
        "GET /v1/proxies took {proxies:?}"
    );
    assert!(
        stats < Duration::from_secs(2),
        "GET /v1/stats took {stats:?}"
    );
    // Every row was kept, its bounds folded into the server's.
    let total = (REPORTS * ROWS * (BOUNDS + 1)) as u64;
    let view = a
        .stats_until("window=2m", |v| {
            service_line(v, "web").is_some_and(|s| s["requests"] == total)
        })
        .await;
    let web_line = service_line(&view, "web").unwrap();
    assert_eq!(web_line["routes"].as_array().unwrap().len(), ROWS);
    let p99 = web_line["latency_ms"]["p99"].as_f64().unwrap();
    assert!((1.0..=3.6e6).contains(&p99), "{p99}");
    within(server.shutdown()).await;
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_server_on_loopback_answers_only_to_its_own_names() {
    use weft_testkit::raw_exchange;
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let addr = server.addr();
    let get = |host: String| {
        format!("GET /v1/proxies HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
    };

    // A page of another site whose name was made to resolve to this machine.
    let answer = within(raw_exchange(
        addr,
        get(format!("evil.example:{}", addr.port())).as_bytes(),
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("--allow-host"), "{answer}");
    let answer = within(raw_exchange(addr, get("evil.example".into()).as_bytes())).await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // The names of this machine, with or without the port.
    for host in [
        format!("127.0.0.1:{}", addr.port()),
        "127.0.0.1".into(),
        format!("localhost:{}", addr.port()),
        "LOCALHOST".into(),
        format!("[::1]:{}", addr.port()),
        format!("10.1.2.3:{}", addr.port()),
    ] {
        let answer = within(raw_exchange(addr, get(host.clone()).as_bytes())).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    within(server.shutdown()).await;

    // Names the operator allows are answered too, and only those.
    let mut opts = options(&dir);
    opts.token = Some(TOKEN.into());
    opts.proxy_token = Some(PROXY_TOKEN.into());
    opts.allowed_hosts = vec!["weft.internal".into()];
    let server = within(weft_config_server::start(opts)).await.unwrap();
    let addr = server.addr();
    let answer = within(raw_exchange(
        addr,
        get(format!("Weft.Internal:{}", addr.port())).as_bytes(),
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = within(raw_exchange(addr, get("evil.example".into()).as_bytes())).await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    within(server.shutdown()).await;

    let mut opts = options(&dir);
    opts.allowed_hosts = vec!["not a name".into()];
    let err = within(weft_config_server::start(opts)).await.unwrap_err();
    assert!(err.to_string().contains("not a host name"), "{err}");
}

#[tokio::test]
async fn a_route_to_a_cluster_the_mesh_lacks_is_refused_at_apply_where_it_is_written() {
    let dir = DataDir::new();
    let server = start(&dir, Some(TOKEN)).await;
    let a = api(&server, Some(TOKEN));
    a.push_file("stamp", STAMP).await;
    a.push_file("hello", HELLO).await;
    // `webb` for `web` in a route, and a split entry at weight 0: each would answer 502
    // at request time on every proxy that ACKed it.
    for (target, key) in [
        ("cluster: webb", "config.routes[0].cluster"),
        (
            "split: [{ cluster: web, weight: 1 }, { cluster: web-v2, weight: 0 }]",
            "config.routes[0].split[1].cluster",
        ),
    ] {
        let mesh = MESH.replace(
            "          - name: fault\n",
            &format!(
                "          - name: router\n            module: builtin:router\n            \
                 config:\n              routes:\n                - match: {{ path: {{ prefix: / }} }}\n                  \
                 {target}\n          - name: fault\n"
            ),
        );
        let r = a.apply(&mesh).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
        let e = r.error();
        assert!(
            e.starts_with("mesh.yaml:16:")
                && e.contains(&format!("proxies[0].listeners[0].filters[0].{key}"))
                && e.contains("(clusters: web)"),
            "{e}"
        );
    }
    assert_eq!(
        a.get("/v1/versions").await.json["versions"],
        Value::Array(vec![])
    );
    within(server.shutdown()).await;
}

#[tokio::test]
async fn an_apply_warns_of_what_it_selects_and_a_dry_run_or_strict_apply_stores_nothing() {
    let dir = DataDir::new();
    let (server, a) = serving(&dir, Limits::default()).await;
    let mut proxy = subscribe(&server, hello("web-1", "web")).await.unwrap();
    let first = proxy.next().await;
    proxy
        .send(Kind::Ack(Ack {
            version: 1,
            listeners: vec![BoundListener {
                name: "inbound".into(),
                address: "127.0.0.1:15006".into(),
            }],
            modules: first.modules.iter().map(|m| m.sha256.clone()).collect(),
            filters: first.filters.clone(),
        }))
        .await;
    let p = a.proxy_until("web-1", |p| p["applied"] == 1).await;
    assert_eq!(p["state"], "current");
    let all = a.get("/v1/proxies").await.json;
    assert_eq!(all["warnings"], serde_json::json!([]), "{all:#}");

    // A typo of the service: the group selects no one, and web-1 has no group.
    let typo = MESH.replace("service: web", "service: wbe");
    let operator = &a;
    let put = |query: &str| {
        let (path, body) = (format!("/v1/mesh?file=typo.yaml{query}"), typo.clone());
        async move { operator.call(Method::PUT, &path, body).await }
    };
    let dry = put("&dry_run=true").await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.json);
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["next_version"], 2);
    let kinds: Vec<&str> = (dry.json["warnings"].as_array().unwrap().iter())
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["group_selects_no_proxy", "proxy_without_group"]);
    assert_eq!(dry.json["warnings"][0]["selector"], "{ service: wbe }");
    assert!(
        dry.json["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("(did you mean service \"web\"?); connected: web-1 (service web, no labels)"),
        "{}",
        dry.json
    );
    // A misspelt dry run must not apply for real.
    let misspelt = put("&dryrun=true").await;
    assert_eq!(
        misspelt.status,
        StatusCode::BAD_REQUEST,
        "{}",
        misspelt.json
    );
    let strict = put("&strict=true").await;
    assert_eq!(strict.status, StatusCode::CONFLICT, "{}", strict.json);
    assert!(
        strict.error().starts_with("not applied (strict): group 0"),
        "{}",
        strict.error()
    );
    assert_eq!(strict.json["warnings"], dry.json["warnings"]);
    let versions = a.get("/v1/versions").await.json;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "nothing stored"
    );
    assert!(
        versions["versions"][0]["by"]
            .as_str()
            .unwrap()
            .ends_with("127.0.0.1"),
        "{versions:#}"
    );

    // Applied anyway: the answer and the proxies' view carry the warnings, and the
    // proxy no group selects stands `unselected`.
    let applied = put("").await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.json);
    assert_eq!(applied.json["version"], 2);
    assert_eq!(applied.json["warnings"], dry.json["warnings"]);
    let p = a.proxy_until("web-1", |p| p["state"] == "unselected").await;
    assert_eq!(p["applied"], 1);
    assert_eq!(
        a.get("/v1/proxies").await.json["warnings"],
        dry.json["warnings"]
    );

    // One version's text needs the token, as the snapshot does.
    let anonymous = api(&server, None);
    assert_eq!(
        anonymous.get("/v1/versions/1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let one = a.get("/v1/versions/1").await;
    assert_eq!(
        (one.status, one.json["mesh"].as_str()),
        (StatusCode::OK, Some(MESH))
    );
    assert_eq!(a.get("/v1/versions/7").await.status, StatusCode::NOT_FOUND);

    // Back to a mesh that selects web-1: its config is what it is sent, open to
    // this machine with secrets redacted, in full only with the API token.
    assert_eq!(a.apply(MESH).await.json["version"], 3);
    let config = anonymous.get("/v1/proxies/web-1/config").await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.json);
    let c = &config.json;
    assert_eq!(
        (c["version"].as_u64(), c["group"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(c["state"], "pending");
    assert_eq!(c["secrets_shown"], false);
    let inbound = &c["listeners"][0];
    assert_eq!(inbound["bound"], "127.0.0.1:15006");
    assert_eq!(inbound["default_cluster"], "web");
    let names: Vec<&str> = (inbound["filters"].as_array().unwrap().iter())
        .map(|f| f["module"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["builtin:fault", "filter:stamp", "filter:hello"]);
    assert_eq!(inbound["filters"][1]["sha256"], sha256(STAMP));
    assert_eq!(inbound["filters"][2]["config"]["greeting"], "hi");
    assert_eq!(c["clusters"][0]["endpoints"][0]["weight"], 1);
    let secrets = anonymous
        .get("/v1/proxies/web-1/config?show_secrets=true")
        .await;
    assert_eq!(secrets.status, StatusCode::UNAUTHORIZED);
    assert!(secrets.error().contains("show_secrets needs the API token"));
    let secrets = a.get("/v1/proxies/web-1/config?show_secrets=true").await;
    assert_eq!(secrets.json["secrets_shown"], true, "{}", secrets.json);
    let nobody = a.get("/v1/proxies/nobody/config").await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert!(
        nobody.error().contains("known: web-1"),
        "{}",
        nobody.error()
    );
    within(server.shutdown()).await;
}
