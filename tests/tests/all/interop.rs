//! Clients and servers Weft did not write, through Weft: Python's grpcio and
//! websockets (Debian's python3-grpcio and python3-websockets, which `./dev test`
//! installs).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_tests::*;

/// Debian's Python, where `apt-get install python3-grpcio` puts its packages (a
/// `python3` earlier on the PATH, such as pyenv's, would not see them).
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
}

/// A Python server: started, its port read from its first line; it ends when
/// dropped (its stdin closes and it is killed).
async fn python_server(name: &str) -> (Child, u16) {
    let mut child = Command::new(python())
        .arg(script(name))
        .arg("server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(LIMIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the server starts in time")
        .expect("its port");
    let port = line.trim().parse().expect("a port number");
    (child, port)
}

/// Run a Python client to its end; its output must end with `ok`.
async fn python_client(name: &str, target: &str) {
    let child = Command::new(python())
        .arg(script(name))
        .arg("client")
        .arg(target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let out = tokio::time::timeout(LIMIT * 2, child.wait_with_output())
        .await
        .expect("the client ends in time")
        .expect("client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{name} client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_passes_through_with_metadata_trailers_deadlines_and_retries() {
    let (_server, port) = python_server("grpc_echo.py").await;
    let yaml = format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: grpc
    filters:
      - name: retry
        module: builtin:retry
        config: {{ grpc: [unavailable], backoff: {{ base: 1ms, max: 5ms }} }}
clusters:
  - name: grpc
    protocol: http2
    endpoints: ["127.0.0.1:{port}"]
"#
    );
    let p = proxy(&yaml).start().await;
    python_client("grpc_echo.py", &p.addr.to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_works_through_weft() {
    let (_server, port) = python_server("ws_echo.py").await;
    let stamp = format!(
        "    filters:\n      - name: stamp\n        module: {}\n        config: {{ name: s }}\n",
        weft_tests::guests::STAMP
    );
    // Without filters (the plain path) and with one that sees the upgrade request.
    for filters in [String::new(), stamp] {
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: ws\n\
             {filters}clusters:\n  - name: ws\n    endpoints: [\"127.0.0.1:{port}\"]\n"
        );
        let p = proxy(&yaml).start().await;
        python_client("ws_echo.py", &format!("ws://{}/chat", p.addr)).await;
    }
}
