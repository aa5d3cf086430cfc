//! Restarts as operators do them, with a real `weft config-server` and real `weft
//! proxy` processes: a proxy stopped (SIGTERM) or killed (`kill -9`) and started
//! again on its state folder, another proxy taking the node id of one that stopped,
//! a config server restarted on its data folder, and a proxy pointed at the wrong
//! address.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testkit::{
    ANY_PORT, LIMIT, Log, Process, TempDir, count, eventually, eventually_within, listener, refused,
};
use weft_tests::guests;

mod support;

use support::plane::{ProxyProc, Server, config_server, last_number, proxy};
use support::weft;

/// A proxy that gets its node id back at once is connected well within this after
/// the old process ended; one that waited for the config server's hold (15 s by
/// default) could not be.
const AT_ONCE: Duration = Duration::from_secs(12);

/// Push the `tag` filter to `server` and apply a mesh that gives every `web` proxy an
/// `inbound` listener running it; the version that makes live.
fn tag_mesh(server: &Server, dir: &Path) -> u64 {
    server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]);
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        r#"clusters:
  - name: web
    endpoints: ["127.0.0.1:9"]
proxies:
  - select: { service: web }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: tag
            module: filter:tag
"#,
    )
    .unwrap();
    last_number(&server.cli_ok(&["apply", "-f", mesh.to_str().unwrap()]))
}

/// Wait until `node` is connected to `server` and serves `version` on its listener,
/// with its ACK known; its entry. `within` bounds the wait.
fn serving(server: &Server, node: &str, version: u64, within: Duration) -> Value {
    let what = format!("{node} serving version {version}");
    eventually_within(within, &what, || {
        let status = server.proxies();
        let entry = status["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == node)
            .cloned();
        match entry {
            Some(p)
                if p["connected"] == true
                    && p["applied"] == version
                    && p["last"]["result"] == "ack"
                    && p["listeners"]["inbound"].is_string() =>
            {
                Ok(p)
            }
            _ => Err(format!("{status:#}")),
        }
    })
}

/// `weft proxy` as node `node` of service `web`, fed by `server`, with its state in
/// `state`, on one worker thread.
fn web_proxy(server: &Server, node: &str, state: &Path) -> ProxyProc {
    proxy(&server.url, &server.proxy_token, node, state, 1)
}

/// What the server logs when it refuses a stream, and when it accepts one.
const REFUSED: &str = "refused a proxy stream";
const CONNECTED: &str = "proxy connected";

#[test]
fn a_proxy_restarted_on_its_state_folder_takes_its_node_back_at_once() {
    let dir = TempDir::new();
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let version = tag_mesh(&server, &dir.0);
    let state = dir.0.join("web-1");
    let first = web_proxy(&server, "web-1", &state);
    serving(&server, "web-1", version, LIMIT);

    // A clean stop, and a start on the same folder: connected again at once, never
    // refused.
    let (status, mut logs) = first.stop();
    assert!(status.success(), "{status}: {logs:#?}");
    let stopped = Instant::now();
    let second = web_proxy(&server, "web-1", &state);
    let seen = server.log.wait_count(&[CONNECTED, "web-1"], 2);
    assert_eq!(count(&seen, &[REFUSED]), 0, "{seen:#?}");
    serving(
        &server,
        "web-1",
        version,
        AT_ONCE.saturating_sub(stopped.elapsed()),
    );

    // A crash, and a start on the same folder: the same.
    logs.extend(second.kill());
    let killed = Instant::now();
    let third = web_proxy(&server, "web-1", &state);
    let seen = server.log.wait_count(&[CONNECTED, "web-1"], 3);
    assert_eq!(count(&seen, &[REFUSED]), 0, "{seen:#?}");
    serving(
        &server,
        "web-1",
        version,
        AT_ONCE.saturating_sub(killed.elapsed()),
    );

    let (status, third) = third.stop();
    assert!(status.success(), "{status}: {third:#?}");
    logs.extend(third);
    assert_eq!(count(&logs, &["refused the stream"]), 0, "{logs:#?}");

    // The instance secret is kept in the state folder, readable by its owner only,
    // and never logged, by either side.
    use std::os::unix::fs::PermissionsExt;
    let kept = state.join("instance");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&kept).unwrap();
    assert_eq!(secret.trim().len(), 32, "{secret:?}");
    let server_log = server.log.so_far();
    for line in logs.iter().chain(&server_log) {
        assert!(
            !line.contains(secret.trim()),
            "the secret is logged: {line}"
        );
    }
}

#[test]
fn another_proxy_with_the_same_node_waits_until_the_first_says_goodbye() {
    let dir = TempDir::new();
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let version = tag_mesh(&server, &dir.0);
    let first = web_proxy(&server, "web-1", &dir.0.join("a"));
    serving(&server, "web-1", version, LIMIT);

    // Another state folder is another proxy process: refused while the first is
    // connected, at every retry, and it says why once.
    let second = web_proxy(&server, "web-1", &dir.0.join("b"));
    let seen = server.log.wait_count(&[REFUSED, "web-1"], 3);
    assert_eq!(count(&seen, &[CONNECTED, "web-1"]), 1, "{seen:#?}");

    // The first stops cleanly: its goodbye frees the node id, and the second takes
    // it at its next retry, not after the hold.
    let (status, logs) = first.stop();
    assert!(status.success(), "{status}: {logs:#?}");
    let stopped = Instant::now();
    server.log.wait_for("said goodbye");
    serving(
        &server,
        "web-1",
        version,
        AT_ONCE.saturating_sub(stopped.elapsed()),
    );
    let seen = server.log.wait_count(&[CONNECTED, "web-1"], 2);
    assert!(
        count(&seen, &[REFUSED, "web-1"]) >= 3,
        "the second was refused before: {seen:#?}"
    );

    let (status, logs) = second.stop();
    assert!(status.success(), "{status}: {logs:#?}");
    let warned: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("refused the stream"))
        .collect();
    assert_eq!(warned.len(), 1, "said once: {logs:#?}");
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("AlreadyExists")
            && warned[0].contains("connected now")
            && warned[0].contains("give each proxy its own --node"),
        "{}",
        warned[0]
    );
}

#[test]
fn weft_status_shows_the_same_after_the_config_server_restarts() {
    let dir = TempDir::new();
    let data = dir.0.join("server");
    let server = config_server(&data, ANY_PORT);
    let version = tag_mesh(&server, &dir.0);
    let a = web_proxy(&server, "web-1", &dir.0.join("a"));
    let b = web_proxy(&server, "web-2", &dir.0.join("b"));
    for node in ["web-1", "web-2"] {
        serving(&server, node, version, LIMIT);
    }
    let table = server.cli_ok(&["status"]);
    let json = without_stream(server.proxies());
    assert!(table.contains("inbound=127.0.0.1:"), "{table}");

    // The server restarts on the same data and address; the proxies reconnect.
    let addr = server.addr.to_string();
    let status = server.stop();
    assert!(status.success(), "{status}");
    let server = config_server(&data, &addr);
    eventually(
        &format!("the same status as before the restart:\n{table}{json:#}"),
        || {
            let (now_table, now_json) =
                (server.cli_ok(&["status"]), without_stream(server.proxies()));
            if now_table == table && now_json == json {
                Ok(())
            } else {
                Err(format!("{now_table}{now_json:#}"))
            }
        },
    );
    for p in [a, b] {
        let (status, logs) = p.stop();
        assert!(status.success(), "{status}: {logs:#?}");
    }
}

/// `GET /v1/proxies` without what changes with every stream: when it opened and
/// the proxy's port.
fn without_stream(mut status: Value) -> Value {
    for p in status["proxies"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        p.remove("since");
        p.remove("peer");
    }
    status
}

#[test]
fn a_proxy_says_why_it_cannot_reach_its_server() {
    let dir = TempDir::new();
    let token = dir.0.join("proxy-token");
    std::fs::write(&token, "a-proxy-token").unwrap();

    // No scheme: it does not start, and says what to write.
    let mut unschemed = Process::start(
        weft()
            .args([
                "proxy",
                "--config-server",
                "127.0.0.1:7070",
                "--node",
                "web-1",
            ])
            .arg("--proxy-token-file")
            .arg(&token)
            .args(["--admin", ANY_PORT, "--state-dir"])
            .arg(dir.0.join("none"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr: Log = unschemed.stderr();
    let status = unschemed.wait_exit();
    let stderr = stderr.all();
    assert!(!status.success(), "{stderr:#?}");
    let said = r#"error: config server "127.0.0.1:7070" needs a scheme: http://127.0.0.1:7070"#;
    assert!(stderr.iter().any(|l| l == said), "{stderr:#?}");

    // A closed port: the OS's reason.
    let closed = refused();
    let closed_url = format!("http://{}", closed.addr);
    let refused = proxy(&closed_url, &token, "web-1", &dir.0.join("a"), 1);

    // A plain HTTP/1 server: not a Weft config server.
    let web = listener();
    let web_addr = web.local_addr().unwrap();
    std::thread::spawn(move || http1_server(web));
    let confused = proxy(
        &format!("http://{web_addr}"),
        &token,
        "web-2",
        &dir.0.join("b"),
        1,
    );

    refused.log.wait_for(&format!(
        "cannot connect to {closed_url}: connection refused"
    ));
    confused.log.wait_for(&format!(
        "this is not a Weft config server (it does not speak gRPC at {web_addr})"
    ));
    for p in [refused, confused] {
        let logs = p.kill();
        assert!(
            !logs.iter().any(|l| l.contains("transport error")),
            "{logs:#?}"
        );
    }
}

/// Answers every connection as an HTTP/1 server answers what it cannot parse, and
/// closes it, as Python's `http.server` does.
fn http1_server(listener: std::net::TcpListener) {
    use std::io::{Read, Write};
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { return };
        let mut buf = [0u8; 1024];
        if conn.read(&mut buf).is_ok() {
            let _ = conn.write_all(b"HTTP/1.0 400 Bad request\r\n\r\n");
        }
    }
}
