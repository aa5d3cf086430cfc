//! The control plane over TLS as operators run it: `weft config-server --tls
//! --require-proxy-identity`, the `weft` commands with `--ca`, and a `weft proxy`
//! that gets its workload certificate, presents it, and serves.

use std::path::Path;
use std::process::Stdio;

use weft_testkit::{ANY_PORT, Log, Process, TempDir, eventually, output};
use weft_tests::backend;

mod support;

use support::{addr_after, admin_get, weft};

/// A running `weft config-server` over TLS, ended when dropped.
struct TlsServer {
    _process: Process,
    url: String,
    data: std::path::PathBuf,
    token: String,
}

impl TlsServer {
    fn start(data: &Path, args: &[&str]) -> Self {
        let mut process = Process::start(
            weft()
                .args(["config-server", "--listen", ANY_PORT, "--data-dir"])
                .arg(data)
                .args(["--tls"])
                .args(args)
                .env("WEFT_CACHE_DIR", data.join("cache"))
                .env("RUST_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let out = process.stdout();
        let line = out.wait_for("weft config server on https://");
        let addr = addr_after(&line, "https://");
        let token = std::fs::read_to_string(data.join("token")).unwrap();
        Self {
            _process: process,
            url: format!("https://{addr}"),
            data: data.to_owned(),
            token: token.trim().to_owned(),
        }
    }

    fn ca(&self) -> String {
        self.data.join("ca.pem").display().to_string()
    }

    /// `weft ARGS --server URL --token TOKEN --ca CA.PEM`.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let ca = self.ca();
        output(
            weft()
                .args(args)
                .args(["--server", &self.url, "--token", &self.token, "--ca", &ca]),
        )
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "weft {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `weft proxy` fed by `server` as node `node` of `service`.
fn proxy(server: &TlsServer, node: &str, service: &str, state: &Path) -> (Process, Log) {
    let ca = server.ca();
    let mut process = Process::start(
        weft()
            .args(["proxy", "--proxy-token-file"])
            .arg(server.data.join("proxy-token"))
            .args(["--config-server", &server.url, "--ca", &ca])
            .args(["--node", node, "--service", service, "--admin", ANY_PORT])
            .arg("--state-dir")
            .arg(state)
            .env("WEFT_CACHE_DIR", state.join("compiled"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = process.stderr();
    (process, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_proves_its_identity_to_a_server_over_tls_and_serves() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let server = TlsServer::start(&dir.0.join("server"), &["--require-proxy-identity"]);
    let mesh = format!(
        "identity:
  trust_domain: bank.example
clusters:
  - name: web
    endpoints: [\"{}\"]
proxies:
  - select: {{ service: web }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
",
        web.addr
    );
    let mesh_file = dir.0.join("mesh.yaml");
    std::fs::write(&mesh_file, mesh).unwrap();
    let out = server.cli_ok(&["apply", "-f", mesh_file.to_str().unwrap()]);
    assert!(out.contains("version 1"), "{out}");

    // Without the CA, a client does not know whom it talks to, and says so.
    let out = output(weft().args(["status", "--server", &server.url, "--token", &server.token]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca"), "{err}");

    let (_web_proxy, log) = proxy(&server, "web-1", "web", &dir.0.join("web-1"));
    let admin = addr_after(&log.wait_for("admin listening"), "addr=");
    // Refused at first (no certificate yet), it gets one and comes back with it.
    log.wait_for("PermissionDenied");
    log.wait_for("workload certificate installed");
    eventually("web-1 serves its group's listener", || {
        let (status, body) = admin_get(admin, "/listeners");
        (status == 200 && body.contains("inbound")).then_some(())
    });
    eventually("weft status shows web-1 current", || {
        let out = server.cli(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .any(|l| l.starts_with("web-1") && l.contains("current"))
            .then_some(())
            .ok_or(text)
    });
}
