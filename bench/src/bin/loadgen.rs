//! A fixed-rate (open-loop) HTTP/1.1 load generator for latency: requests are sent on
//! a schedule, and each latency counts from when the request *should* have been sent,
//! so a stalled proxy cannot hide its stall (no coordinated omission). Only the
//! timer's own lateness (under 2 ms) is not counted.
//!
//! A connection the server closes (nginx closes one after 1,000 requests by default)
//! is opened again before the next request; the new connection's handshake counts in
//! that request's latency.
//!
//! Usage: `loadgen URL RATE SECONDS [CONNECTIONS]`; prints one line:
//! `requests=N errors=E p50_us=X p90_us=Y p99_us=Z max_us=M reconnects=R`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// How late a timer may fire before the delay is counted as queueing.
const SLOP: Duration = Duration::from_millis(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loadgen URL RATE SECONDS [CONNECTIONS]");
        std::process::exit(2);
    }
    let uri: hyper::Uri = args[1].parse().expect("URL");
    let rate: f64 = args[2].parse().expect("RATE");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let conns: usize = args.get(4).map_or(16, |c| c.parse().expect("CONNECTIONS"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (latencies, errors, reconnects) = rt.block_on(run(uri, rate, seconds, conns));
    let mut l = latencies;
    l.sort_unstable();
    let pct = |p: f64| -> u64 {
        if l.is_empty() {
            return 0;
        }
        l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
    };
    println!(
        "requests={} errors={errors} p50_us={} p90_us={} p99_us={} max_us={} reconnects={reconnects}",
        l.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        l.last().copied().unwrap_or(0)
    );
}

/// A new HTTP/1.1 connection, its driver spawned; `None` when it cannot be made.
async fn connect(authority: &str) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(send)
}

async fn run(uri: hyper::Uri, rate: f64, seconds: f64, conns: usize) -> (Vec<u64>, usize, usize) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let per_conn = conns.max(1);
    let mut tasks = Vec::new();
    for c in 0..per_conn {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let authority = uri.authority().expect("URL with host:port").clone();
            let mut send = Some(connect(authority.as_str()).await.expect("connect"));
            let mut lat = Vec::with_capacity(total / per_conn + 1);
            let (mut errors, mut reconnects) = (0, 0);
            // Connection c sends requests c, c + conns, c + 2 conns, ...
            let mut i = c;
            while i < total {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                // tokio's timer fires up to a millisecond late; that lateness is the
                // load generator's, not the proxy's. Lateness beyond it means this
                // connection was still busy with an earlier request: that counts.
                let sent = Instant::now();
                let from = if sent.duration_since(due) < SLOP {
                    sent
                } else {
                    due
                };
                // The server may have closed the connection since the last answer.
                let open = match send.as_mut() {
                    Some(s) => s.ready().await.is_ok(),
                    None => false,
                };
                if !open {
                    reconnects += 1;
                    send = connect(authority.as_str()).await;
                }
                let Some(s) = send.as_mut() else {
                    errors += 1;
                    i += per_conn;
                    continue;
                };
                let req = hyper::Request::get(uri.path())
                    .header("host", authority.as_str())
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                match s.send_request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        lat.push(from.elapsed().as_micros() as u64);
                    }
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        errors += 1;
                    }
                    Err(_) => {
                        errors += 1;
                        send = None;
                    }
                }
                i += per_conn;
            }
            (lat, errors, reconnects)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let (mut errors, mut reconnects) = (0, 0);
    for t in tasks {
        let (l, e, r) = t.await.expect("task");
        all.extend(l);
        errors += e;
        reconnects += r;
    }
    (all, errors, reconnects)
}
