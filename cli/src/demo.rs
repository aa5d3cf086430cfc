//! `weft demo`: Weft's whole job on loopback, on embedded defaults: a config server,
//! two proxies it feeds with the built-in fault, retry and router filters, and demo
//! backends (one of them with a slow replica, and paths that fail every other time).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use weft_config::MeshConfig;

const CONFIG: &str = include_str!("demo.yaml");

/// A backend that says who it is and what it got, after `delay`. Paths with `flaky`
/// in them get 503 every other time, for the retry filter to hide.
async fn backend(name: &'static str, delay: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let flaky = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let flaky = flaky.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let (host, attempt) = (header("host"), header("x-weft-attempt"));
                    let trace = header("traceparent");
                    let failing = req.uri().path().contains("flaky")
                        && flaky.fetch_add(1, Ordering::Relaxed).is_multiple_of(2);
                    let (status, what) = if failing {
                        (503, "failed, on purpose,")
                    } else {
                        (200, "answered")
                    };
                    let body = format!(
                        "{name} backend {what} {} {} (host {host}, attempt {attempt})\n",
                        req.method(),
                        req.uri()
                    );
                    let resp = Response::builder()
                        .status(status)
                        .header("content-type", "text/plain")
                        .header("x-backend", name)
                        .header("x-seen-traceparent", trace)
                        .body(Full::new(Bytes::from(body)))
                        .expect("static parts are valid");
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The port after `listen`'s, or 0 when it is 0: the second proxy's listener.
fn next_port(listen: &str) -> anyhow::Result<String> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not ip:port"))?;
    let port = match addr.port() {
        0 => 0,
        p => p.checked_add(1).context("--listen port is the last one")?,
    };
    Ok(SocketAddr::new(addr.ip(), port).to_string())
}

/// The demo's backends, each on a port of its own.
struct Backends {
    blue: SocketAddr,
    /// Blue's second replica, ten times slower: the balancer sends it little.
    blue_slow: SocketAddr,
    green: SocketAddr,
}

impl Backends {
    async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            blue: backend("blue", Duration::ZERO).await?,
            blue_slow: backend("blue-slow", Duration::from_millis(20)).await?,
            green: backend("green", Duration::ZERO).await?,
        })
    }

    /// The embedded mesh config, with the proxies' listeners and these backends.
    fn mesh(&self, listen: &str) -> anyhow::Result<String> {
        Ok(CONFIG
            .replace("{listen}", listen)
            .replace("{listen_b}", &next_port(listen)?)
            .replace("{blue}", &self.blue.to_string())
            .replace("{blue_slow}", &self.blue_slow.to_string())
            .replace("{green}", &self.green.to_string()))
    }
}

/// The demo's config server, with its data in a fresh folder.
struct DemoServer {
    server: weft_config_server::RunningServer,
    data: PathBuf,
    url: String,
    token: String,
    proxy_token: String,
}

impl DemoServer {
    async fn start(listen: SocketAddr) -> anyhow::Result<Self> {
        let data = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            // 0700: it holds the tokens.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&data)
                .with_context(|| format!("creating {}", data.display()))?;
        }
        let mut options = weft_config_server::Options::new(listen, data.clone());
        // Quick enough for `weft stat` to follow someone trying the demo by hand.
        options.report_interval = Duration::from_secs(2);
        let server = weft_config_server::start(options).await.context(
            "starting the demo config server (is the port taken? try --server-listen 127.0.0.1:7071)",
        )?;
        let read = |file: &Path| {
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the demo server's token {}", file.display()))
                .map(|t| t.trim().to_owned())
        };
        Ok(Self {
            url: format!("http://{}", server.addr()),
            token: read(server.token_file())?,
            proxy_token: read(server.proxy_token_file())?,
            server,
            data,
        })
    }

    /// Write the mesh config into the data folder, for the operator to edit, and
    /// apply it.
    async fn apply(&self, yaml: &str) -> anyhow::Result<PathBuf> {
        let mesh_file = self.data.join("mesh.yaml");
        std::fs::write(&mesh_file, yaml)?;
        let api = crate::client::ServerArgs::new(&self.url, &self.token);
        // Its proxies start next: that no group selects one yet is no news here.
        let applied = crate::client::apply_file(&api, &mesh_file, false).await?;
        println!(
            "applied {}: version {}",
            mesh_file.display(),
            applied.version
        );
        Ok(mesh_file)
    }

    /// Two proxies that know nothing but the server's address, each once it has
    /// its configuration.
    async fn start_proxies(&self, admin: &str) -> anyhow::Result<Vec<Proxy>> {
        let mut proxies = Vec::new();
        for (replica, admin) in [("a", admin), ("b", "127.0.0.1:0")] {
            let labels = BTreeMap::from([("replica".to_owned(), replica.to_owned())]);
            let (proxy, agent) = crate::start_subscribed(
                &self.url,
                &self.proxy_token,
                &format!("demo-{replica}"),
                "demo",
                labels,
                admin,
                None,
            )
            .await
            .context(
                "starting a demo proxy (is the port taken? try --listen 127.0.0.1:8090 --admin 127.0.0.1:9902)",
            )?;
            let mut applied = agent.applied();
            tokio::time::timeout(Duration::from_secs(30), applied.wait_for(Option::is_some))
                .await
                .context("the demo proxy got no configuration from the server within 30 s")??;
            proxies.push((proxy, agent));
        }
        Ok(proxies)
    }

    /// Drain the proxies, then stop the server and remove its data.
    async fn stop(self, proxies: Vec<Proxy>) {
        tracing::info!("shutting down: draining in-flight requests");
        for (proxy, agent) in proxies {
            agent.stop();
            proxy.shutdown_within(Duration::from_secs(60)).await;
        }
        self.server.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.data);
        tracing::info!("stopped");
    }
}

/// A demo proxy and the agent that feeds it.
type Proxy = (weft_proxy::RunningProxy, weft_agent::Agent);

pub(crate) async fn run(
    listen: &str,
    admin: &str,
    server_listen: SocketAddr,
    print_config: bool,
) -> anyhow::Result<()> {
    let backends = Backends::start().await?;
    let yaml = backends.mesh(listen)?;
    if print_config {
        print!("{yaml}");
        return Ok(());
    }
    MeshConfig::parse(&yaml, "<demo>")?.validate(&BTreeMap::new())?;
    let server = DemoServer::start(server_listen).await?;
    let mesh_file = server.apply(&yaml).await?;
    let proxies = server.start_proxies(admin).await?;
    welcome(&server, &backends, &proxies, &mesh_file)?;
    crate::wait_for_stop().await?;
    server.stop(proxies).await;
    Ok(())
}

/// What runs where, and what to try.
fn welcome(
    server: &DemoServer,
    backends: &Backends,
    proxies: &[Proxy],
    mesh_file: &Path,
) -> anyhow::Result<()> {
    let addr = proxies[0]
        .0
        .listener_addr("demo")
        .context("demo listener")?;
    let addr_b = proxies[1]
        .0
        .listener_addr("demo")
        .context("demo listener")?;
    let admin = proxies[0].0.admin_addr().context("admin listener")?;
    let Backends {
        blue,
        blue_slow,
        green,
    } = backends;
    let (url, token) = (&server.url, &server.token);
    println!(
        r#"
Weft demo is running: a proxy on {addr} and a second one on {addr_b},
both fed by the config server on {url} with the telemetry, fault, retry
and router filters, in front of blue ({blue}, and a slow replica {blue_slow})
and green ({green}). Try:

  curl -i http://{addr}/hello                              # routed to blue
  for i in $(seq 20); do curl -s http://{addr}/hello; done # blue-slow gets few (peak-EWMA)
  for i in $(seq 6); do curl -s http://{addr}/api/flaky; done  # 503 every other time
                                  # upstream; the retry filter retries: attempt 2, all 200
  curl -i http://{addr}/old/page                           # prefix rewritten to /new/page
  for i in $(seq 20); do curl -s http://{addr}/api/x; done # 80% blue, 20% green
  curl -i -H 'x-canary: 1' http://{addr}/api/x             # header match: green
  curl -i -H 'x-weft-fault: abort' http://{addr}/api/x     # fault filter: 503
  curl -i -H 'x-weft-fault: delay' http://{addr}/api/x     # fault filter: 500 ms late
  curl -i http://{addr}/nowhere                            # no route: 404 from the router
  curl -i --http2-prior-knowledge http://{addr}/hello      # HTTP/2 (h2c)
  curl http://{admin}/ready ; curl http://{admin}/metrics
  curl -s http://{admin}/metrics | grep ^istio_requests_total  # RED metrics, Istio's names
  curl -si http://{addr}/hello | grep -i traceparent       # the trace context blue got
  curl http://{admin}/filters                              # each filter's calls, p50, p99
  curl http://{admin}/clusters                             # endpoints: health, EWMA, pools
  curl http://{admin}/config                               # what is in force, with sha256s
  ./target/release/weft stat --server {url}     # live: success rate, req/s, p50/p95/p99
                                  # per service and route across both proxies (Ctrl-C ends)

Change the mesh live: edit {mesh} (say, the split weights), then

  export WEFT_SERVER={url} WEFT_TOKEN={token}
  ./target/release/weft apply -f {mesh}
  ./target/release/weft status

Press Ctrl-C to stop.
"#,
        mesh = mesh_file.display()
    );
    Ok(())
}
