//! The `weft` binary as a user runs it: bad configuration, the demo, and a graceful
//! stop on SIGTERM that lets in-flight requests finish.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use weft_testkit::{ANY_PORT, LIMIT, Process, TempDir, eventually, listener, output};

mod support;

use support::{addr_after, admin_and_listener, get, get_with, weft};

/// `weft proxy --check -c PATH`, which must fail; returns what it printed on stderr.
fn check_fails(path: &std::path::Path) -> String {
    let out = output(weft().args(["proxy", "--check", "-c"]).arg(path));
    assert!(!out.status.success(), "--check accepted {}", path.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_config_exits_non_zero_naming_file_and_line() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: main\n    adress: 127.0.0.1:0\n",
    )
    .unwrap();
    let out = output(weft().args(["proxy", "-c"]).arg(&path));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:3:") && stderr.contains("adress"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    filters:\n      - name: f\n        module: missing.wasm\n",
    )
    .unwrap();
    let stderr = check_fails(&path);
    assert!(
        stderr.contains("bad.yaml:6:17") && stderr.contains("missing.wasm"),
        "{stderr}"
    );
}

#[test]
fn a_filter_config_error_points_at_its_key_and_is_said_once() {
    let dir = TempDir::new();
    let path = dir.0.join("router.yaml");
    std::fs::write(
        &path,
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
            - match: { path: { prefix: / } }
              cluster: web
              rewrite: { host: "a\r\nX-Injected: 1" }
clusters:
  - name: web
    endpoints: ["127.0.0.1:1"]
"#,
    )
    .unwrap();
    let stderr = check_fails(&path);
    assert!(
        stderr
            .contains("router.yaml:11:32: listeners[0].filters[0].config.routes[0].rewrite.host: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("is not a host name").count(), 1, "{stderr}");
}

/// Start `weft demo` on free ports and return it with the proxy's address, read from
/// what it prints.
fn demo() -> (Process, SocketAddr) {
    let mut demo = Process::start(
        weft()
            .args(["demo", "--listen", ANY_PORT, "--admin", ANY_PORT])
            // Every port is picked by the OS, so a demo already running does not matter.
            .args(["--server-listen", ANY_PORT])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let line = demo.stdout().wait_for("a proxy on ");
    (demo, addr_after(&line, "a proxy on "))
}

#[test]
fn demo_serves_and_stops_gracefully_on_sigterm() {
    let (mut demo, addr) = demo();
    let resp = get(addr, "/hello");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("backend answered GET /hello"), "{resp}");
    assert!(resp.contains("x-backend: blue"), "{resp}");
    let resp = get(addr, "/nowhere");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    // Every other answer on a flaky path fails upstream; the retry filter hides it.
    let flaky: Vec<String> = (0..6).map(|_| get(addr, "/api/flaky")).collect();
    for resp in &flaky {
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    assert!(
        flaky.iter().any(|r| r.contains("attempt 2")),
        "some were retried: {flaky:?}"
    );

    // A request held by the fault filter's 500 ms delay is in flight when SIGTERM
    // arrives; it must still complete.
    let in_flight = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            s,
            "GET /hello HTTP/1.1\r\nhost: t\r\nx-weft-fault: delay\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    std::thread::sleep(Duration::from_millis(150));
    demo.signal("-TERM");
    let resp = in_flight.join().unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request drained: {resp}"
    );
    let status = demo.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `)`.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_listeners_wait_instead_of_spinning() {
    let dir = TempDir::new();
    let path = dir.0.join("fds.yaml");
    std::fs::write(
        &path,
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n",
    )
    .unwrap();
    // A proxy allowed 64 open files, so a few dozen connections exhaust them.
    let mut proxy = Process::start(
        Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 64 && exec "$0" proxy -c "$1""#)
            .arg(env!("CARGO_BIN_EXE_weft"))
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("WEFT_WORKERS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let pid = proxy.pid();
    let (admin, main) = admin_and_listener(&proxy.stderr());

    // Connections the kernel completes but the proxy cannot accept: no descriptors.
    let mut held = Vec::new();
    for addr in [admin, main] {
        for _ in 0..80 {
            held.push(TcpStream::connect(addr).unwrap());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    assert!(
        fds >= 60,
        "the proxy was not out of descriptors: {fds} open"
    );
    // Spinning on accept would burn about 200 ticks (a whole core) in 2 s.
    assert!(
        used < 60,
        "{used} clock ticks of CPU in 2 s while out of descriptors"
    );

    // Once descriptors are free again, both listeners serve.
    drop(held);
    for addr in [admin, main] {
        eventually(&format!("{addr} serves again"), || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = write!(
                s,
                "GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 ")
        });
    }
}

#[test]
fn the_access_log_is_one_json_line_per_request_on_stdout() {
    let dir = TempDir::new();
    let path = dir.0.join("access.yaml");
    std::fs::write(
        &path,
        r#"
access_log:
  fields: [trace_id, method, path, status, responder, decisions, attempts, duration_ms, complete]
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {}
      - name: fault
        module: builtin:fault
        config: { abort: { status: 418, header: { name: x-teapot, value: "1" } } }
"#,
    )
    .unwrap();
    let mut proxy = Process::start(
        weft()
            .args(["proxy", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (stdout, stderr) = (proxy.stdout(), proxy.stderr());
    let addr = addr_after(&stderr.wait_for("addr="), "addr=");
    let out = get_with(addr, "/tea?secret=1", "x-teapot: 1\r\n");
    assert!(out.starts_with("HTTP/1.1 418"), "{out}");
    // No cluster: the proxy answers itself, and says so in the log.
    let reply = get(addr, "/nowhere");
    assert!(reply.starts_with("HTTP/1.1 "), "{reply}");

    let lines = stdout.wait_until("two access log lines", |lines| lines.len() >= 2);
    drop(proxy);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("valid JSON");
    let asked = [
        "trace_id",
        "method",
        "path",
        "status",
        "responder",
        "decisions",
        "attempts",
        "duration_ms",
        "complete",
    ];
    assert_eq!(first.as_object().unwrap().len(), asked.len(), "{first}");
    let at: Vec<usize> = asked
        .iter()
        .map(|k| lines[0].find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "the fields asked for, in order: {}",
        lines[0]
    );
    assert_eq!(first["path"], "/tea", "the query is never logged");
    assert_eq!(first["status"], 418);
    assert_eq!(first["responder"], "filter:fault");
    assert_eq!(first["decisions"], serde_json::json!(["fault:respond"]));
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["complete"], true);
    assert_eq!(
        first["trace_id"].as_str().map(str::len),
        Some(32),
        "{first}"
    );
    assert!(first["duration_ms"].as_f64().is_some());
    let second: serde_json::Value = serde_json::from_str(&lines[1]).expect("valid JSON");
    assert_eq!(second["path"], "/nowhere");
    assert_eq!(second["responder"], "proxy");
}

#[test]
fn sigterm_keeps_serving_through_the_drain_delay_and_says_it_is_going() {
    let dir = TempDir::new();
    let backend = listener();
    let backend_addr = backend.local_addr().unwrap();
    // A backend of one line per connection, enough for requests with connection: close.
    std::thread::spawn(move || {
        for stream in backend.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    let path = dir.0.join("drain.yaml");
    std::fs::write(
        &path,
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nshutdown: {{ drain_delay: 2s }}\n\
             listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
             clusters:\n  - name: web\n    endpoints: [\"{backend_addr}\"]\n"
        ),
    )
    .unwrap();
    let mut proxy = Process::start(
        weft()
            .args(["proxy", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (admin, listener) = admin_and_listener(&proxy.stderr());
    let ready = || get(admin, "/ready");
    // Ready once the listeners are bound, a moment after they say so.
    eventually("ready", || {
        let ready = ready();
        if ready.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(ready)
        }
    });
    // A client that keeps its connection open, as a pooled one would.
    let mut kept = TcpStream::connect(listener).unwrap();
    kept.set_read_timeout(Some(LIMIT)).unwrap();

    proxy.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    // During the delay: new connections are still served, each told to go.
    let resp = get(listener, "/during");
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "served while draining: {resp}"
    );
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    write!(kept, "GET /kept HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    kept.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(
        ready().starts_with("HTTP/1.1 503"),
        "not ready while draining"
    );

    let status = proxy.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(listener).is_err(), "no longer accepting");
}
