//! A control plane on loopback, as a mesh runs one: a real config server holding
//! known tokens, its HTTP API, and sidecars that know nothing but that server.
//!
//! ```no_run
//! # async fn t(yaml: &str) {
//! use weft_tests::control::{apply, config_server, sidecar};
//! let (data, state) = (weft_tests::TempDir::new(), weft_tests::TempDir::new());
//! let server = config_server(&data.0).start().await;
//! apply(server.addr(), yaml).await;
//! let (proxy, _agent) = sidecar(server.addr(), "web", &state.0).await;
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use weft_testkit::{ANY_PORT, within};

use crate::client;

/// The token of the server's HTTP API (`weft apply`, `weft push`, `weft stat`).
pub const TOKEN: &str = "admin-token";
/// The token proxies present to the server.
pub const PROXY_TOKEN: &str = "proxy-token";

/// A free port on 127.0.0.1 for a listener a mesh config names.
pub fn free_port() -> SocketAddr {
    weft_testkit::listener()
        .local_addr()
        .expect("a bound listener has an address")
}

/// Start describing a config server keeping its data in `data`.
pub fn config_server(data: &Path) -> ConfigServerBuilder {
    ConfigServerBuilder {
        data: data.to_owned(),
        report_interval: None,
    }
}

/// A config server to be started, with [`TOKEN`] and [`PROXY_TOKEN`].
pub struct ConfigServerBuilder {
    data: PathBuf,
    report_interval: Option<Duration>,
}

impl ConfigServerBuilder {
    /// How often its sidecars report traffic (the server's default unless set).
    pub fn report_interval(mut self, every: Duration) -> Self {
        self.report_interval = Some(every);
        self
    }

    /// Start it on an OS-picked port.
    pub async fn start(self) -> weft_config_server::RunningServer {
        let addr = ANY_PORT.parse().expect("ANY_PORT is an address");
        let mut options = weft_config_server::Options::new(addr, self.data);
        options.token = Some(TOKEN.to_owned());
        options.proxy_token = Some(PROXY_TOKEN.to_owned());
        if let Some(every) = self.report_interval {
            options.report_interval = every;
        }
        within(weft_config_server::start(options))
            .await
            .expect("the server starts")
    }
}

/// `method path` on the server's HTTP API with [`TOKEN`]; the answer's body, which
/// must come with a 2xx. Over the HTTP client, which waits as long as the test's time
/// limit: applying a mesh or pushing a module compiles every filter first, which may
/// take a while on a busy machine.
pub async fn api(server: SocketAddr, method: &str, path: &str, body: impl AsRef<[u8]>) -> String {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let body = Bytes::copy_from_slice(body.as_ref());
    let reply = client().send(server, method, path, &headers, body).await;
    assert!(reply.status.is_success(), "{method} {path}: {reply:?}");
    reply.text()
}

/// Apply `yaml` as the mesh (`weft apply -f mesh.yaml`); it must be accepted.
pub async fn apply(server: SocketAddr, yaml: &str) {
    api(server, "PUT", "/v1/mesh?file=mesh.yaml", yaml).await;
}

/// A sidecar of `service` that knows nothing but the server (and its own admin
/// listener), as `weft proxy --config-server` runs one, its agent keeping state in
/// `state` and retrying quickly.
pub async fn sidecar(
    server: SocketAddr,
    service: &str,
    state: &Path,
) -> (weft_proxy::RunningProxy, weft_agent::Agent) {
    let yaml = "admin:\n  address: 127.0.0.1:0\nlisteners: []\n";
    let config = weft_config::Config::from_str(yaml, "test", None).expect("a sidecar's own config");
    let proxy = within(weft_proxy::start(config))
        .await
        .expect("the proxy starts");
    let mut options = weft_agent::Options::new(
        &format!("http://{server}"),
        PROXY_TOKEN,
        &format!("{service}-1"),
        service,
    );
    options.state_dir = Some(state.to_owned());
    options.min_backoff = Duration::from_millis(50);
    options.max_backoff = Duration::from_millis(200);
    let agent = within(weft_agent::start(proxy.clone(), options))
        .await
        .expect("the agent starts");
    (proxy, agent)
}
