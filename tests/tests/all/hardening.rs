//! What an attacker or a careless operator tries: endpoints and header values that
//! load but cannot serve, Host confusion, unnormalised paths, connections that never
//! end, stream-reset floods, error pages that leak, request smuggling.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use weft_tests::*;

use crate::routing::routed;

#[test]
fn an_endpoint_that_loads_is_one_that_serves() {
    for bad in ["exa mple:80", "a\\r\\nb:80", "web", "web:0", "[::1:80"] {
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
             clusters:\n  - name: web\n    endpoints: [\"{bad}\"]\n"
        );
        let e = config_error(&yaml);
        assert!(
            e.starts_with("test.yaml:7:") && e.contains("clusters[0].endpoints[0]"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_rewritten_host_must_be_a_host() {
    for bad in [
        "a\\r\\nX-Injected: 1",
        "a\\nb",
        "a\\u0000b",
        "a b",
        "a/b",
        "user@host",
    ] {
        let yaml = format!(
            r#"listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
            - match: {{ path: {{ prefix: / }} }}
              cluster: web
              rewrite: {{ host: "{bad}" }}
clusters:
  - name: web
    endpoints: ["127.0.0.1:1"]
"#
        );
        let e = config_error(&yaml);
        assert!(
            e.contains("routes[0].rewrite.host") && e.starts_with("test.yaml:11:"),
            "{bad}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_the_upstream_see_one_authority() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = r#"
            - match: { headers: [{ name: host, exact: admin.internal }] }
              cluster: b
            - match: { path: { prefix: / } }
              cluster: a
"#;
    let p = proxy(&routed(&a, &b, routes, "")).start().await;

    // Absolute form: the target's authority wins over Host, for the router and the
    // backend alike.
    let r = raw_exchange(
        p.addr,
        b"GET http://admin.internal/x HTTP/1.1\r\nhost: public.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains("x-backend: b\r\n"),
        "the router saw the target: {r}"
    );
    assert!(r.contains("x-host: admin.internal\r\n"), "{r}");
    assert!(r.contains("x-path: /x\r\n"), "origin form upstream: {r}");

    // Two hosts, or none in HTTP/1.1: refused, and nothing reaches a backend.
    for req in [
        &b"GET / HTTP/1.1\r\nhost: a\r\nhost: admin.internal\r\nconnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
    ] {
        let r = raw_exchange(p.addr, req).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(r.contains("x-weft-error: downstream"), "{r}");
    }
    assert_eq!(a.requests() + b.requests(), 1);

    // `Connection: host` cannot take the target away.
    let r = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: admin.internal\r\nconnection: host, close\r\n\r\n",
    )
    .await;
    assert!(r.contains("x-backend: b\r\n"), "{r}");
    assert!(r.contains("x-host: admin.internal\r\n"), "{r}");

    // HTTP/1.0 may omit Host.
    let r = raw_exchange(p.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = r#"
            - match: { path: { prefix: /public } }
              cluster: a
            - match: { path: { prefix: /admin } }
              cluster: b
"#;
    let p = proxy(&routed(&a, &b, routes, "")).start().await;
    let c = client();
    for (sent, seen, backend) in [
        ("/public/../admin", "/admin", "b"),
        ("/public/%2e%2e/admin", "/admin", "b"),
        ("/public/%2E%2E/admin?x=/../y", "/admin?x=/../y", "b"),
        ("/public/./a//b", "/public/a/b", "a"),
        ("/%70ublic/x", "/public/x", "a"),
        ("/public/a%2fb", "/public/a%2Fb", "a"),
    ] {
        let r = c.get(p.addr, sent).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some(backend), "{sent}");
        assert_eq!(r.header("x-path"), Some(seen), "{sent}");
    }

    // Off for a listener that asks: the path goes as sent.
    let p = proxy(&routed(&a, &b, routes, "    normalize_path: false"))
        .start()
        .await;
    let r = c.get(p.addr, "/public/../admin").await;
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(r.header("x-path"), Some("/public/../admin"));
}

fn limited(web: &Backend, limits: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n    \
         limits: {{ {limits} }}\nclusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
        web.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "header_read_timeout: 300ms"))
        .start()
        .await;
    let mut silent = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a connection that never sent a byte is still open after 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "idle_timeout: 400ms")).start().await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, then nothing: the connection must close on its own.
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "an idle keep-alive connection is still open after 10 s"
    );
    assert_eq!(web.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_silent_connections() {
    let web = backend("web").start().await;
    let yaml = format!("admin:\n  address: 127.0.0.1:0\n{}", limited(&web, ""));
    let p = proxy(&yaml).start().await;
    let admin = p.running().admin_addr().unwrap();
    let mut silent = tokio::net::TcpStream::connect(admin).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(25)).await,
        "a silent admin connection is still open after 25 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "max_connections: 2")).start().await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-delay-ms: 3000\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // Wait until both are requests in flight, so both connections are counted.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while web.requests() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a third connection was served with max_connections: 2"
    );
    assert_eq!(web.requests(), 2);
    drop(held);
    // Room again once they are gone.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let r = raw_exchange(
            p.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_is_cut_off() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "max_premature_resets: 50"))
        .start()
        .await;
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // Each reset must leave at once, not wait for the next response's ACK.
    tcp.set_nodelay(true).unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let closed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after {sent} resets"
        );
        if sent == 1000 {
            break false;
        }
        let ready = tokio::time::timeout(Duration::from_secs(5), h2.clone().ready()).await;
        let Ok(Ok(mut ready)) = ready else {
            break true;
        };
        let req = http::Request::get(format!("http://{}/r{sent}", p.addr))
            .header("x-delay-ms", "20")
            .body(())
            .unwrap();
        let Ok((_resp, mut stream)) = ready.send_request(req, true) else {
            break true;
        };
        // Reset once the request has reached the backend: the proxy took it.
        let seen = web.requests();
        let wait = tokio::time::Instant::now() + Duration::from_secs(2);
        while web.requests() == seen && tokio::time::Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        h2 = ready;
    };
    assert!(closed, "1000 resets and the connection is still open");
    assert!(
        sent <= 60,
        "the connection took {sent} resets with max_premature_resets: 50"
    );
    // Cancelled exchanges finish in the background and give their connection back,
    // instead of costing one upstream connection each.
    let (requests, connections) = (web.requests(), web.connections());
    assert!(
        connections * 2 <= requests,
        "{connections} upstream connections for {requests} cancelled requests"
    );
    driver.abort();

    // A client that cancels now and then is not abuse.
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    for i in 0..120 {
        let mut ready = h2.clone().ready().await.expect("connection open");
        let req = http::Request::get(format!("http://{}/ok{i}", p.addr))
            .body(())
            .unwrap();
        let (resp, mut stream) = ready.send_request(req, true).unwrap();
        if i % 3 == 0 {
            stream.send_reset(h2::Reason::CANCEL);
        } else {
            let resp = tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_leaves_its_upstream_connection_pooled() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "")).start().await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-delay-ms: 100\r\n\r\n")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while web.requests() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client gives up while the backend is still working on it.
    drop(s);
    // Once the backend has answered (100 ms) the connection is back in the pool.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = client().get(p.addr, "/next").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        web.connections(),
        1,
        "the next request reused the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_give_an_id_and_keep_internals_in_the_log() {
    let logs = logs();
    let refused = refused();
    let gone = refused.addr;
    let yaml = format!(
        "listeners:\n  - name: leaky\n    address: 127.0.0.1:0\n    default_cluster: secret-cluster\n\
         clusters:\n  - name: secret-cluster\n    endpoints: [\"{gone}\"]\n"
    );
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-weft-error"), Some("upstream"));
    let id = r.header("x-weft-error-id").expect("an error id").to_owned();
    let body = r.text();
    assert_eq!(body, format!("upstream unavailable (error id {id})\n"));
    let port = gone.port().to_string();
    assert!(
        !body.contains("secret-cluster") && !body.contains(&port),
        "{body}"
    );
    let log = logs.text();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("secret-cluster") && l.contains(&port)),
        "the log has the detail under the same id:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_framing_error_is_the_clients() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "")).start().await;
    // A chunked upload whose second chunk size is not hex: the body breaks off while
    // it streams to the backend.
    let r = raw_exchange(
        p.addr,
        b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    )
    .await;
    assert!(
        r.is_empty() || r.starts_with("HTTP/1.1 400"),
        "not the upstream's fault: {r}"
    );
    assert!(!r.contains("502"), "{r}");
}

/// Request smuggling shapes hyper refuses: each gets 400 and the backend never sees
/// the request hidden behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "")).start().await;
    const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases: &[(&str, String)] = &[
        (
            "two different CL",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
        ),
        (
            "CL list",
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0, 5\r\n\r\n{HIDDEN}"),
        ),
        (
            "signed CL",
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +0\r\n\r\n{HIDDEN}"),
        ),
        (
            "TE not chunked last",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "obfuscated TE",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "space before colon",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "obs-fold",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\nx-a: b\r\n transfer-encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "bad chunk size",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n\r\n{HIDDEN}"
            ),
        ),
        (
            "chunk size overflow",
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n\r\n{HIDDEN}"
            ),
        ),
    ];
    // Both framings: hyper reads the body as chunked (Transfer-Encoding wins, RFC 9112
    // §6.3), drops Content-Length and closes the connection after the answer, so
    // nothing behind the body is read as a request.
    let both = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
    );
    let r = raw_exchange(p.addr, both.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200"), "CL and TE: {r}");
    assert!(r.contains("connection: close"), "CL and TE: {r}");
    assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "CL and TE: {r}");
    for (what, req) in cases {
        let r = raw_exchange(p.addr, req.as_bytes()).await;
        let first = r.lines().next().unwrap_or("");
        assert!(
            first.starts_with("HTTP/1.1 400")
                || (r.is_empty() && *what == "bad chunk size")
                || first.starts_with("HTTP/1.1 501"),
            "{what}: {r}"
        );
        assert!(!r.contains("x-path: /smuggled"), "{what}: {r}");
    }
    let paths = web.paths();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "the backend saw a hidden request: {paths:?}"
    );
    let r = client().get(p.addr, "/smuggled-check").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_a_clear_status() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web, "")).start().await;
    let r = raw_exchange(
        p.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 501"), "{r}");
    assert!(r.contains("CONNECT is not enabled (error id "), "{r}");
    assert_eq!(web.requests(), 0, "the backend never saw it");
}
