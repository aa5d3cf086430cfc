//! `weft demo`: two demo backends and a proxy with the built-in router and fault
//! filters, all on loopback, on embedded defaults.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use weft_config::Config;

const CONFIG: &str = include_str!("demo.yaml");

/// A backend that says who it is and what it got.
async fn backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let body = format!(
                        "{name} backend: {} {} (host {host})\n",
                        req.method(),
                        req.uri()
                    );
                    let resp = Response::builder()
                        .header("content-type", "text/plain")
                        .header("x-backend", name)
                        .body(Full::new(Bytes::from(body)))
                        .expect("static parts are valid");
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

pub(crate) async fn run(listen: &str, admin: &str, print_config: bool) -> anyhow::Result<()> {
    let blue = backend("blue").await?;
    let green = backend("green").await?;
    let yaml = CONFIG
        .replace("{listen}", listen)
        .replace("{admin}", admin)
        .replace("{blue}", &blue.to_string())
        .replace("{green}", &green.to_string());
    if print_config {
        print!("{yaml}");
        return Ok(());
    }
    let config = Config::from_str(&yaml, "<demo>", None)?;
    let proxy = weft_proxy::start(config)
        .await
        .context("starting the demo proxy (is the port taken? try --listen 127.0.0.1:8081 --admin 127.0.0.1:9902)")?;
    let addr = proxy.listener_addr("demo").context("demo listener")?;
    let admin = proxy.admin_addr().context("admin listener")?;
    println!(
        r#"
Weft demo is running: a proxy on {addr} with the fault and router filters, in front of
two backends, blue ({blue}) and green ({green}). Try:

  curl -i http://{addr}/hello                              # routed to blue
  curl -i http://{addr}/old/page                           # prefix rewritten to /new/page
  for i in $(seq 20); do curl -s http://{addr}/api/x; done # 80% blue, 20% green
  curl -i -H 'x-canary: 1' http://{addr}/api/x             # header match: green
  curl -i -H 'x-weft-fault: abort' http://{addr}/api/x     # fault filter: 503
  curl -i -H 'x-weft-fault: delay' http://{addr}/api/x     # fault filter: 500 ms late
  curl -i http://{addr}/nowhere                            # no route: 404 from the router
  curl -i --http2-prior-knowledge http://{addr}/hello      # HTTP/2 (h2c)
  curl http://{admin}/ready ; curl http://{admin}/metrics

Press Ctrl-C to stop.
"#
    );
    crate::serve_until_signal(proxy, None).await
}
