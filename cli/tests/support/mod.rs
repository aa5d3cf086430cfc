//! What the `weft` binary's tests share on top of `weft-testkit` (the time limit,
//! processes, ports, waits): the binary itself, blocking HTTP to what it serves, the
//! addresses it logs, and the control plane as operators run it.

// Each test binary uses a part of what is here.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use weft_testkit::{LIMIT, Log};

/// The `weft` binary, without the environment a developer's shell may set for it.
pub fn weft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.env_remove("WEFT_TOKEN")
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_PROXY_TOKEN")
        .env_remove("WEFT_DRAIN_DELAY")
        .env_remove("WEFT_DATA_DIR");
    cmd
}

/// A blocking HTTP/1.1 GET with `connection: close`, as `localhost` (a host the admin
/// listener answers too); returns the whole response.
pub fn get(addr: SocketAddr, path: &str) -> String {
    get_with(addr, path, "")
}

/// [`get`] with more header lines (each ending in CRLF).
pub fn get_with(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\n{headers}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// [`get`] on an admin listener: the status and the body.
pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let out = get(addr, path);
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// The address a log line gives after `key` (`addr=`, `http://`, ...).
pub fn addr_after(line: &str, key: &str) -> SocketAddr {
    line.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {key:?} in {line:?}"))
}

/// The admin listener's and the one data listener's addresses, as a proxy started
/// with `RUST_LOG=info` logs them.
pub fn admin_and_listener(log: &Log) -> (SocketAddr, SocketAddr) {
    let admin = log.wait_for("admin listening");
    let data = log.wait_line("a data listener listening", |l| {
        l.contains("listening") && !l.contains("admin listening")
    });
    (addr_after(&admin, "addr="), addr_after(&data, "addr="))
}

/// The control plane as operators run it: a real `weft config-server`, real `weft
/// proxy --config-server` processes, and the `weft` commands against them.
pub mod plane {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{ExitStatus, Output, Stdio};

    use serde_json::Value;
    use weft_testkit::{ANY_PORT, Log, Process, eventually, output};

    use super::{addr_after, admin_get, weft};

    /// A running `weft config-server`, ended when dropped.
    pub struct Server {
        pub process: Process,
        pub addr: SocketAddr,
        pub url: String,
        pub token: String,
        /// Its data folder, where it keeps its tokens.
        pub data: PathBuf,
        /// The file proxies read their token from.
        pub proxy_token: PathBuf,
        /// What it printed on stdout at start.
        pub banner: Vec<String>,
        /// Its logs (standard error, at `info`).
        pub log: Log,
    }

    /// `weft config-server` on `listen` with its data in `dir`.
    pub fn config_server(dir: &Path, listen: &str) -> Server {
        config_server_with(dir, listen, &[])
    }

    /// `weft config-server` with more arguments.
    pub fn config_server_with(dir: &Path, listen: &str, args: &[&str]) -> Server {
        let mut process = Process::start(
            weft()
                .args(["config-server", "--listen", listen, "--data-dir"])
                .arg(dir)
                .args(args)
                .env("WEFT_CACHE_DIR", dir.join("cache"))
                .env("RUST_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let (out, log) = (process.stdout(), process.stderr());
        let addr = addr_after(&out.wait_for("weft config server on http://"), "http://");
        let token = std::fs::read_to_string(dir.join("token"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            process,
            addr,
            url: format!("http://{addr}"),
            token,
            data: dir.to_owned(),
            proxy_token: dir.join("proxy-token"),
            banner: out.so_far(),
            log,
        }
    }

    impl Server {
        /// Run a client command against this server, with its token.
        pub fn cli(&self, args: &[&str]) -> Output {
            output(
                weft()
                    .args(args)
                    .args(["--server", &self.url, "--token", &self.token]),
            )
        }

        /// `weft ...`, which must succeed; returns its stdout.
        pub fn cli_ok(&self, args: &[&str]) -> String {
            let out = self.cli(args);
            assert!(
                out.status.success(),
                "weft {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// `weft ...` expected to fail; returns its stderr.
        pub fn cli_err(&self, args: &[&str]) -> String {
            let out = self.cli(args);
            assert!(!out.status.success(), "weft {args:?} should have failed");
            String::from_utf8_lossy(&out.stderr).into_owned()
        }

        /// Push a module under a name; returns the version it made live.
        pub fn push(&self, file: &str, name: &str) -> u64 {
            let out = self.cli_ok(&["push", file, "--name", name]);
            out.split("live as version ")
                .nth(1)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no version in {out:?}"))
        }

        /// `weft rollback VERSION`; returns the new version.
        pub fn rollback(&self, version: u64) -> u64 {
            last_number(&self.cli_ok(&["rollback", &version.to_string()]))
        }

        /// `weft apply -f FILE`; returns the new version.
        pub fn apply(&self, file: &str) -> u64 {
            let out = self.cli_ok(&["apply", "-f", file]);
            let line = out
                .lines()
                .find(|l| l.starts_with("applied "))
                .unwrap_or(&out);
            last_number(line)
        }

        /// `weft status --json`: `GET /v1/proxies`.
        pub fn proxies(&self) -> Value {
            let out = self.cli_ok(&["status", "--json"]);
            serde_json::from_str(&out).unwrap()
        }

        /// Wait until every named proxy has applied `version`.
        pub fn converged(&self, nodes: &[&str], version: u64) -> Value {
            let what = format!("proxies {nodes:?} apply version {version}");
            eventually(&what, || {
                let status = self.proxies();
                let done = nodes.iter().all(|n| {
                    status["proxies"].as_array().unwrap().iter().any(|p| {
                        p["node"] == *n && p["applied"] == version && p["connected"] == true
                    })
                });
                if done {
                    Ok(status)
                } else {
                    Err(format!("{status:#}"))
                }
            })
        }

        /// Stop it with SIGTERM; how it exited.
        pub fn stop(mut self) -> ExitStatus {
            self.process.signal("-TERM");
            self.process.wait_exit()
        }
    }

    /// A running `weft proxy --config-server`, ended when dropped.
    pub struct ProxyProc {
        pub process: Process,
        pub admin: SocketAddr,
        /// Its logs (standard error, at `info`).
        pub log: Log,
    }

    impl ProxyProc {
        pub fn pid(&self) -> u32 {
            self.process.pid()
        }

        /// The address its `inbound` listener got, once it is ready.
        pub fn inbound(&self) -> SocketAddr {
            eventually("the proxy ready with its inbound listener", || {
                if admin_get(self.admin, "/ready").0 != 200 {
                    return None;
                }
                let (_, body) = admin_get(self.admin, "/listeners");
                let v: Value = serde_json::from_str(&body).unwrap();
                v["inbound"].as_str().map(|a| a.parse().unwrap())
            })
        }

        /// A sample of its `/metrics` without labels.
        pub fn metric(&self, name: &str) -> f64 {
            let (_, body) = admin_get(self.admin, "/metrics");
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        }

        /// Its resident memory.
        pub fn rss_kib(&self) -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }

        /// Stop it with SIGTERM; how it exited, and everything it logged.
        pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
            self.process.signal("-TERM");
            let status = self.process.wait_exit();
            (status, self.log.all())
        }

        /// `kill -9` it; everything it logged.
        pub fn kill(mut self) -> Vec<String> {
            self.process.kill();
            self.log.all()
        }
    }

    /// `weft proxy --config-server URL` as node `node` of service `web`, caching in
    /// `state`, serving on `workers` threads (one runs the single-threaded scheduler).
    pub fn proxy(url: &str, token: &Path, node: &str, state: &Path, workers: usize) -> ProxyProc {
        proxy_of(url, token, node, "web", state, workers)
    }

    /// The number a CLI line ends with (`applied FILE: version 3` gives 3).
    pub fn last_number(out: &str) -> u64 {
        out.rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no version at the end of {out:?}"))
    }

    /// `weft proxy --config-server URL` as node `node` of `service`, labelled
    /// `zone=a`, caching in `state`, serving on `workers` threads; returned once its
    /// admin listener is up.
    pub fn proxy_of(
        url: &str,
        token: &Path,
        node: &str,
        service: &str,
        state: &Path,
        workers: usize,
    ) -> ProxyProc {
        let mut process = Process::start(
            weft()
                .args(["proxy", "--proxy-token-file"])
                .arg(token)
                .args([
                    "--config-server",
                    url,
                    "--node",
                    node,
                    "--service",
                    service,
                    "--label",
                    "zone=a",
                    "--admin",
                    ANY_PORT,
                    "--state-dir",
                ])
                .arg(state)
                .env("WEFT_WORKERS", workers.to_string())
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

    /// Write `text` to `dir/name`; the path, as text.
    pub fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}
