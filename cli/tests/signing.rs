//! Signed pushes as operators run them: `weft keys new`, `weft push --sign`, `weft
//! apply --sign`, a config server with `--trusted-keys` that refuses what is not
//! signed, and proxies with `--trusted-keys` that check every snapshot again, so
//! that a config server that was tampered with cannot make them run a filter or a
//! config no operator signed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use weft_testkit::{ANY_PORT, Process, TempDir, eventually, output};
use weft_tests::{backend, guests};

mod support;

use support::plane::*;
use support::{addr_after, weft};

/// Every `web` proxy in zone a gets an `inbound` listener with the pushed `tag`
/// filter in front of the backend.
fn mesh(backend: SocketAddr) -> String {
    format!(
        "clusters:
  - name: web
    endpoints: [\"{backend}\"]
proxies:
  - select: {{ service: web, labels: {{ zone: a }} }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: tag
            module: filter:tag
"
    )
}

/// `weft keys new --out DIR`: the private key's path and the public key it printed.
fn keys_new(dir: &Path) -> (String, String) {
    let out = output(weft().args(["keys", "new", "--out"]).arg(dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let written = std::fs::read_to_string(dir.join("signing.pub")).unwrap();
    assert_eq!(written.trim(), public, "signing.pub holds what was printed");
    (dir.join("signing.key").display().to_string(), public)
}

/// `weft proxy --config-server` as node `node` of service `web` in zone a, loading
/// only what a key of `trusted` signed.
fn signed_proxy(server: &Server, node: &str, state: &Path, trusted: &str) -> ProxyProc {
    let mut process = Process::start(
        weft()
            .args(["proxy", "--proxy-token-file"])
            .arg(&server.proxy_token)
            .args(["--config-server", &server.url, "--node", node])
            .args(["--service", "web", "--label", "zone=a", "--admin", ANY_PORT])
            .args(["--trusted-keys", trusted, "--state-dir"])
            .arg(state)
            .env("WEFT_CACHE_DIR", state.join("compiled"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = process.stderr();
    let admin = addr_after(&log.wait_for("admin listening"), "addr=");
    ProxyProc {
        process,
        admin,
        log,
    }
}

/// Wait until `node` has refused `version`; its reason.
fn refused(server: &Server, node: &str, version: u64) -> String {
    eventually(&format!("{node} refuses version {version}"), || {
        let status = server.proxies();
        let p = (status["proxies"].as_array().unwrap().iter())
            .find(|p| p["node"] == node)
            .cloned()
            .unwrap_or(Value::Null);
        let last = &p["last"];
        if last["version"] == version && last["result"] == "nack" {
            Ok(last["error"].as_str().unwrap_or_default().to_owned())
        } else {
            Err(format!("{p:#}"))
        }
    })
}

fn sha256(path: &str) -> String {
    weft_engine::Engine::digest(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_go_live_and_a_module_changed_in_the_store_is_refused_by_the_proxy() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let (key, public) = keys_new(&dir.0.join("ops"));
    let (stranger, _) = keys_new(&dir.0.join("stranger"));
    let trusted = write(&dir.0, "trusted-keys", &format!("# ops\n{public} ops\n"));
    let data = dir.0.join("server");
    let server = config_server_with(&data, ANY_PORT, &["--trusted-keys", &trusted]);

    // What no trusted key signed is refused before anything is stored.
    let err = server.cli_err(&["push", guests::TAG_ONE, "--name", "tag"]);
    assert!(
        err.contains("403") && err.contains("the module is not signed"),
        "{err}"
    );
    let err = server.cli_err(&[
        "push",
        guests::TAG_ONE,
        "--name",
        "tag",
        "--sign",
        &stranger,
    ]);
    assert!(
        err.contains("403") && err.contains("which is not a trusted key"),
        "{err}"
    );
    let out = server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag", "--sign", &key]);
    assert!(out.contains("no mesh config applied yet"), "{out}");
    let mesh_file = write(&dir.0, "mesh.yaml", &mesh(web.addr));
    let err = server.cli_err(&["apply", "-f", &mesh_file]);
    assert!(
        err.contains("403") && err.contains("the mesh config is not signed"),
        "{err}"
    );
    let out = server.cli_ok(&["apply", "-f", &mesh_file, "--sign", &key]);
    let version = last_number(out.lines().next().unwrap());

    // A proxy with the same trusted key loads it.
    let a = signed_proxy(&server, "web-a", &dir.0.join("a"), &trusted);
    let inbound = a.inbound();
    server.converged(&["web-a"], version);
    let client = weft_tests::client();
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );

    // Someone with the server's disk puts other bytes where the next module will be
    // kept: the server checks and signs off the bytes it was sent, then sends what
    // its store holds.
    let two = sha256(guests::TAG_TWO);
    let kept = data.join("modules").join(format!("{two}.wasm"));
    std::fs::write(&kept, std::fs::read(guests::TAG_ONE).unwrap()).unwrap();
    let out = server.cli_ok(&["push", guests::TAG_TWO, "--name", "tag", "--sign", &key]);
    let tampered = last_number(out.trim());
    let why = refused(&server, "web-a", tampered);
    assert!(
        why.contains(&format!("refusing module {} (filter tag)", &two[..12]))
            && why.contains("does not verify"),
        "{why}"
    );
    // The proxy keeps serving its last good snapshot.
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );
    let status = server.proxies();
    let p = &status["proxies"][0];
    assert_eq!(
        (p["applied"].as_u64(), p["state"].as_str()),
        (Some(version), Some("refused"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_anything_cannot_make_a_proxy_load_what_is_not_signed() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let (key, public) = keys_new(&dir.0.join("ops"));
    let trusted = write(&dir.0, "trusted-keys", &format!("{public}\n"));
    // No --trusted-keys: the server takes unsigned changes, as one taken over would.
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag", "--sign", &key]);
    let mesh_file = write(&dir.0, "mesh.yaml", &mesh(web.addr));
    let out = server.cli_ok(&["apply", "-f", &mesh_file, "--sign", &key]);
    let version = last_number(out.lines().next().unwrap());
    let a = signed_proxy(&server, "web-a", &dir.0.join("a"), &trusted);
    let inbound = a.inbound();
    server.converged(&["web-a"], version);

    // An unsigned module.
    let unsigned = server.push(guests::TAG_TWO, "tag");
    let why = refused(&server, "web-a", unsigned);
    assert!(
        why.contains("(filter tag)") && why.contains("the module is not signed"),
        "{why}"
    );
    // An unsigned mesh config.
    let changed = write(
        &dir.0,
        "changed.yaml",
        &format!("{}# changed\n", mesh(web.addr)),
    );
    let unsigned = server.apply(&changed);
    let why = refused(&server, "web-a", unsigned);
    assert!(
        why.starts_with("refusing the mesh config: the mesh config is not signed"),
        "{why}"
    );
    let client = weft_tests::client();
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );

    // Signed, both go live: a signature given again for the same module is kept, and
    // sent with the next version that uses it.
    let out = server.cli_ok(&["push", guests::TAG_TWO, "--name", "tag", "--sign", &key]);
    assert!(out.contains("nothing changed"), "{out}");
    let out = server.cli_ok(&["apply", "-f", &changed, "--sign", &key]);
    let signed = last_number(out.lines().next().unwrap());
    server.converged(&["web-a"], signed);
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("two")
    );

    // A restart checks the cached snapshot with its signatures, and serves it
    // before the server answers.
    let (status, _) = a.stop();
    assert!(status.success());
    let nowhere = weft_testkit::refused();
    let cached = format!("http://{}", nowhere.addr);
    let mut process = Process::start(
        weft()
            .args(["proxy", "--proxy-token-file"])
            .arg(&server.proxy_token)
            .args(["--config-server", &cached, "--node", "web-a"])
            .args(["--service", "web", "--label", "zone=a", "--admin", ANY_PORT])
            .args(["--trusted-keys", &trusted, "--state-dir"])
            .arg(dir.0.join("a"))
            .env("WEFT_CACHE_DIR", dir.0.join("a").join("compiled"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = process.stderr();
    let line = log.wait_line("the cached snapshot applied or refused", |l| {
        l.contains("cached snapshot")
    });
    assert!(line.contains("serving the cached snapshot"), "{line}");
}
