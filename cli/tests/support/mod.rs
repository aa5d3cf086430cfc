//! What the `weft` binary's tests share: the binary, a guard that ends it, and what
//! it logs.

// Each test binary uses a part of what is here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest any wait of these tests may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Ends the child when the test ends, whatever happened.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

/// Send `sig` (`-TERM`, `-INT`, ...) to the child.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {}", child.id());
}

/// The child's exit status, within the limit.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "weft did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a child writes to a pipe, line by line, kept from a thread as it comes: a
/// test waits for a line and looks back at every line before it.
#[derive(Clone)]
pub struct Log(Arc<(Mutex<Lines>, Condvar)>);

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The pipe closed: the child exited.
    closed: bool,
}

impl Log {
    /// Read `pipe` until it closes.
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        let log = Self(Arc::default());
        let shared = log.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                shared.0.lock().unwrap().lines.push(line);
                shared.1.notify_all();
            }
            shared.0.lock().unwrap().closed = true;
            shared.1.notify_all();
        });
        log
    }

    /// Wait, within the limit, until `done` holds for the lines so far.
    fn wait(&self, what: &str, done: impl Fn(&Lines) -> bool) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut lines = self.0.0.lock().unwrap();
        while !done(&lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !lines.closed,
                "no {what}; saw:\n{}",
                lines.lines.join("\n")
            );
            lines = self.0.1.wait_timeout(lines, left).unwrap().0;
        }
        lines.lines.clone()
    }

    /// The first line that contains `marker`, waiting for it within the limit.
    pub fn wait_for(&self, marker: &str) -> String {
        let lines = self.wait(&format!("line with {marker:?}"), |l| {
            l.lines.iter().any(|line| line.contains(marker))
        });
        lines.into_iter().find(|l| l.contains(marker)).unwrap()
    }

    /// Every line so far, once `n` of them contain every one of `markers`.
    pub fn wait_count(&self, markers: &[&str], n: usize) -> Vec<String> {
        self.wait(&format!("{n} lines with {markers:?}"), |l| {
            count(&l.lines, markers) >= n
        })
    }

    /// Every line, once the pipe has closed (after the child exited).
    pub fn all(&self) -> Vec<String> {
        self.wait("end of output", |l| l.closed)
    }

    /// Every line so far.
    pub fn so_far(&self) -> Vec<String> {
        self.0.0.lock().unwrap().lines.clone()
    }
}

/// How many of `lines` contain every one of `markers`.
pub fn count(lines: &[String], markers: &[&str]) -> usize {
    lines
        .iter()
        .filter(|l| markers.iter().all(|m| l.contains(m)))
        .count()
}

/// The control plane as operators run it: a real `weft config-server`, real `weft
/// proxy --config-server` processes, and the `weft` commands against them. Each test
/// binary uses a part of it.
#[allow(dead_code)]
pub mod plane {
    use std::io::BufRead;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::{Guard, LIMIT, weft};

    /// Send the lines of a child's pipe to a channel, from a thread.
    pub fn lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The first line that contains `marker`, within the limit.
    pub fn wait_line(
        rx: &std::sync::mpsc::Receiver<String>,
        marker: &str,
        seen: &mut Vec<String>,
    ) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {marker:?}; saw:\n{}", seen.join("\n")));
            seen.push(line.clone());
            if line.contains(marker) {
                return line;
            }
        }
    }

    pub struct Server {
        _child: Guard,
        pub addr: SocketAddr,
        pub url: String,
        pub token: String,
        /// Its data folder, where it keeps its tokens.
        pub data: PathBuf,
        /// The file proxies read their token from.
        pub proxy_token: PathBuf,
        /// What it printed on stdout at start.
        pub banner: Vec<String>,
    }

    /// `weft config-server` on `listen` with its data in `dir`.
    pub fn config_server(dir: &Path, listen: &str) -> Server {
        config_server_with(dir, listen, &[])
    }

    /// `weft config-server` with more arguments.
    pub fn config_server_with(dir: &Path, listen: &str, args: &[&str]) -> Server {
        let mut child = weft()
            .args(["config-server", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(args)
            .env("WEFT_CACHE_DIR", dir.join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let guard = Guard(child);
        let mut banner = Vec::new();
        let line = wait_line(&out, "weft config server on http://", &mut banner);
        let addr: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        let token = std::fs::read_to_string(dir.join("token"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            _child: guard,
            addr,
            url: format!("http://{addr}"),
            token,
            data: dir.to_owned(),
            proxy_token: dir.join("proxy-token"),
            banner,
        }
    }

    impl Server {
        /// Run a client command against this server, with its token.
        pub fn cli(&self, args: &[&str]) -> Output {
            weft()
                .args(args)
                .args(["--server", &self.url, "--token", &self.token])
                .output()
                .unwrap()
        }

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

        pub fn proxies(&self) -> Value {
            let out = self.cli_ok(&["status", "--json"]);
            serde_json::from_str(&out).unwrap()
        }

        /// Wait until every named proxy has applied `version`.
        pub fn converged(&self, nodes: &[&str], version: u64) -> Value {
            let deadline = Instant::now() + LIMIT;
            loop {
                let status = self.proxies();
                let done = nodes.iter().all(|n| {
                    status["proxies"].as_array().unwrap().iter().any(|p| {
                        p["node"] == *n && p["applied"] == version && p["connected"] == true
                    })
                });
                if done {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "proxies {nodes:?} did not apply version {version}: {status:#}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub struct ProxyProc {
        pub child: Guard,
        pub admin: SocketAddr,
    }

    impl ProxyProc {
        pub fn pid(&self) -> u32 {
            self.child.0.id()
        }

        /// The address its `inbound` listener got, once it is ready.
        pub fn inbound(&self) -> SocketAddr {
            let deadline = Instant::now() + LIMIT;
            loop {
                if admin_get(self.admin, "/ready").0 == 200 {
                    let (_, body) = admin_get(self.admin, "/listeners");
                    let v: Value = serde_json::from_str(&body).unwrap();
                    if let Some(a) = v["inbound"].as_str() {
                        return a.parse().unwrap();
                    }
                }
                assert!(Instant::now() < deadline, "proxy never became ready");
                std::thread::sleep(Duration::from_millis(20));
            }
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
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
    }

    /// A blocking GET on an admin listener, as `localhost` (a host it answers).
    pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
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
    /// `zone=a`, caching in `state`, serving on `workers` threads.
    pub fn proxy_of(
        url: &str,
        token: &Path,
        node: &str,
        service: &str,
        state: &Path,
        workers: usize,
    ) -> ProxyProc {
        let mut child = weft()
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
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(state)
            .env("WEFT_WORKERS", workers.to_string())
            .env("WEFT_CACHE_DIR", state.join("compiled"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = lines(child.stderr.take().unwrap());
        let guard = Guard(child);
        let line = wait_line(&err, "admin listening", &mut Vec::new());
        let admin = line
            .split("addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        // Keep draining its logs so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err {});
        ProxyProc {
            child: guard,
            admin,
        }
    }

    pub fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}
