//! A mesh in network namespaces: two pods on a bridge, each an unchanged application
//! (`netns/app.py`, `netns/client.py`) beside a `weft proxy` fed by a `weft
//! config-server` in the root namespace, with `weft init` capturing each pod's TCP.
//!
//! 1. Pod A's application calls `http://b.mesh:8080/` (a name in A's
//!    `/etc/netns/NAME/hosts`) in plain HTTP; A's sidecar takes it from the kernel's
//!    redirection, B's sidecar takes it from B's, and B's application gets it from
//!    loopback with the caller's SPIFFE ID that B's encryption policy forwards.
//! 2. A raw socket on the bridge (`netns/sniff.py`) sees TLS records between the pods
//!    and no request in clear text; once `weft init --remove` takes A's capture away,
//!    it sees the very next call in clear text (so the check could fail), and B's
//!    sidecar refuses that call for lack of mutual TLS.
//! 3. Each sidecar's `/metrics` counts what it captured; a destination outside the
//!    mesh passes through, then is refused once the mesh says `passthrough: refuse`.
//!
//! **How it reports.** This target has its own harness (`harness = false`), which
//! prints what libtest prints. Network namespaces need root (CAP_SYS_ADMIN and
//! CAP_NET_ADMIN), iproute2, iptables (installed from Debian when missing) and
//! Python; without them the test is reported `ignored`, with the reason on its
//! line and in the summary's count, never as passed. Everything it makes has names
//! unique to its process (namespaces `weft-tPID-a`, links `wtbrPID`, `wtvaPID`) and
//! is removed when it ends, failed or not; what a killed run left behind is removed
//! by the next one.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use weft_testkit::{Log, Process, TempDir, eventually, output};

use support::admin_get;
use support::plane::{Server, config_server, write};

const NAME: &str = "a_mesh_in_network_namespaces_captures_and_encrypts";

const A_ID: &str = "spiffe://mesh.test/ns/default/sa/a";
const B_ID: &str = "spiffe://mesh.test/ns/default/sa/b";

fn main() -> ExitCode {
    harness::run(NAME, || match Lab::new() {
        Ok(lab) => {
            let mesh = Mesh::start(lab);
            mesh.calls_between_pods_are_mutual_tls();
            mesh.outsiders_meet_the_sidecar();
            mesh.passthrough();
            mesh.without_capture_calls_leave_in_clear_text();
            None
        }
        Err(why) => Some(why),
    })
}

/// Two pods with their sidecars, fed by a config server, captured by `weft init`.
struct Mesh {
    lab: Lab,
    a: Pod,
    b: Pod,
    server: Server,
    /// Where the sniffer keeps what crosses between the pods.
    sniffed: PathBuf,
}

impl Mesh {
    fn start(mut lab: Lab) -> Self {
        let (a, b) = (lab.pod("a", 2), lab.pod("b", 3));
        lab.hosts(&a, &[("b.mesh", b.ip)]);
        let app = lab.spawn(
            lab.in_pod(&b, lab.python())
                .arg(script("app.py"))
                .args(["8080", "b"]),
        );
        let sniffed = lab.dir.0.join("between-pods.bin");
        let sniffer = lab.spawn(
            Command::new(lab.python())
                .arg(script("sniff.py"))
                .args([a.ip.to_string(), b.ip.to_string()])
                .arg(&sniffed),
        );
        let server = config_server(&lab.dir.0.join("server"), &format!("{}:0", lab.ip(1)));
        let sidecars = [lab.sidecar(&a, &server), lab.sidecar(&b, &server)];
        app.wait_for("listening");
        sniffer.wait_for("sniffing");
        for pod in [&a, &b] {
            lab.capture(pod);
        }
        let rules = lab.nat_rules(&a);
        lab.capture(&a);
        assert_eq!(
            lab.nat_rules(&a),
            rules,
            "weft init twice is weft init once"
        );

        let version = server.apply(&write(&lab.dir.0, "mesh.yaml", &mesh(&a, &b, "allow")));
        server.converged(&["a", "b"], version);
        for log in &sidecars {
            log.wait_for("workload certificate installed");
        }
        Self {
            lab,
            a,
            b,
            server,
            sniffed,
        }
    }

    fn admin(pod: &Pod) -> SocketAddr {
        SocketAddr::new(pod.ip.into(), 15000)
    }

    /// A calls B by name in plain HTTP; B's application sees a call from its own
    /// sidecar, with the identity A's sidecar proved; between the pods crossed TLS,
    /// not one byte of the request.
    fn calls_between_pods_are_mutual_tls(&self) {
        let seen = self.lab.call_until(&self.a, "b.mesh", 8080, "/hello", 200);
        let body: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["app"], "b", "{seen}");
        assert_eq!(body["peer"], "127.0.0.1", "through B's sidecar: {body}");
        assert_eq!(
            body["headers"]["x-forwarded-client-cert"],
            format!("By={B_ID};URI={A_ID}").as_str(),
            "mutual TLS between the sidecars, A's identity proven: {body}"
        );
        assert!(captured(Self::admin(&self.a), "outbound", "cluster") >= 1.0);
        assert!(captured(Self::admin(&self.b), "inbound", "local") >= 1.0);

        let between = eventually("TLS between the pods on the bridge", || {
            let bytes = payloads(&self.sniffed);
            bytes.windows(2).any(|w| w == [0x16, 0x03]).then_some(bytes)
        });
        for clear in [&b"GET /"[..], b"HTTP/1.1", b"/hello", b"x-forwarded"] {
            assert!(
                !contains(&between, clear),
                "{:?} crossed the bridge in clear text",
                String::from_utf8_lossy(clear)
            );
        }
    }

    /// Callers from outside the mesh meet B's sidecar too: clear text is refused by
    /// B's strict policy, another protocol by inbound passthrough's default.
    fn outsiders_meet_the_sidecar(&self) {
        let app_b = SocketAddr::new(self.b.ip.into(), 8080);
        let outsider = support::get(app_b, "/hello");
        assert!(
            outsider.starts_with("HTTP/1.1 403") && outsider.contains("mutual TLS required"),
            "{outsider}"
        );
        assert_eq!(raw_exchange(app_b, b"HELLO\r\n"), b"", "closed unanswered");
        assert!(captured(Self::admin(&self.b), "inbound", "refused") >= 1.0);
    }

    /// Without A's capture the same call leaves in clear text, which the sniffer
    /// sees (so its silence above meant something), and B's sidecar refuses it: the
    /// mutual TLS was the capture's doing.
    fn without_capture_calls_leave_in_clear_text(&self) {
        let lab = &self.lab;
        lab.run(lab.in_pod(&self.a, weft_bin()).args(["init", "--remove"]));
        let rules = lab.nat_rules(&self.a);
        assert!(!rules.contains("WEFT"), "{rules}");
        let plain = lab.call(&self.a, "b.mesh", 8080, "/plain");
        assert_eq!(plain["status"], 403, "{plain}");
        eventually("the clear-text call seen on the bridge", || {
            contains(&payloads(&self.sniffed), b"GET /plain")
        });
    }

    /// A destination outside the mesh (a server in the root namespace) passes through;
    /// once the mesh says `passthrough: refuse`, A's application gets a 502 that says
    /// why, and the server sees nothing.
    fn passthrough(&self) {
        let (lab, server, a, b) = (&self.lab, &self.server, &self.a, &self.b);
        let a_admin = Self::admin(a);
        let outside = Outside::start(lab.ip(1));
        let port = outside.addr.port();
        let host = lab.ip(1).to_string();
        let r = lab.call(a, &host, port, "/out");
        assert_eq!(
            (r["status"].as_u64(), r["body"].as_str()),
            (Some(200), Some("outside\n")),
            "{r}"
        );
        assert_eq!(outside.connections(), 1);
        assert!(captured(a_admin, "outbound", "passthrough") >= 1.0);

        let version = server.apply(&write(&lab.dir.0, "mesh.yaml", &mesh(a, b, "refuse")));
        server.converged(&["a", "b"], version);
        let r = lab.call(a, &host, port, "/out");
        assert_eq!(r["status"], 502, "{r}");
        assert!(
            r["body"].as_str().unwrap().contains("passthrough refused"),
            "{r}"
        );
        assert_eq!(outside.connections(), 1, "nothing reached the outside");
        assert!(captured(a_admin, "outbound", "refused") >= 1.0);
    }
}

/// The mesh: both pods' sidecars capture both ways; each cluster names a pod's
/// address as its application listens there, and the identity it must prove.
fn mesh(a: &Pod, b: &Pod, passthrough: &str) -> String {
    format!(
        r#"identity:
  trust_domain: mesh.test
clusters:
  - name: a
    endpoints: ["{a}:8080"]
    tls: {{ mode: mesh, identity: "{A_ID}" }}
  - name: b
    endpoints: ["{b}:8080"]
    tls: {{ mode: mesh, identity: "{B_ID}" }}
  - name: app
    endpoints: ["127.0.0.1:8080"]
proxies:
  - select: {{}}
    listeners:
      - name: outbound
        address: 127.0.0.1:15001
        capture: {{ direction: outbound, passthrough: {passthrough} }}
      - name: inbound
        address: 0.0.0.0:15006
        tls: {{ mode: mesh }}
        capture: {{ direction: inbound }}
        filters:
          - name: policy
            module: builtin:encryption-policy
            config:
              mode: strict
              forward_identity: {{ header: x-forwarded-client-cert }}
"#,
        a = a.ip,
        b = b.ip,
    )
}

/// `weft_capture_connections_total` of a listener and route, from a sidecar's admin.
fn captured(admin: SocketAddr, listener: &str, route: &str) -> f64 {
    let series =
        format!("weft_capture_connections_total{{listener=\"{listener}\",route=\"{route}\"}} ");
    let (_, body) = admin_get(admin, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

/// Send `bytes`, then read until the peer closes (bounded); what came back.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(weft_testkit::LIMIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The payloads the sniffer kept so far, one after another.
fn payloads(file: &Path) -> Vec<u8> {
    let raw = std::fs::read(file).unwrap_or_default();
    let (mut out, mut at) = (Vec::new(), 0);
    while let Some(len) = raw.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(payload) = raw.get(at + 4..at + 4 + len) else {
            break;
        };
        out.extend_from_slice(payload);
        at += 4 + len;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/netns")
        .join(name)
}

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// A server outside the mesh, in the root namespace: answers `outside` to each
/// connection and counts them.
struct Outside {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Outside {
    fn start(ip: Ipv4Addr) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        // Ends with the test's process; the lab takes its address away before that.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                counted.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_read_timeout(Some(weft_testkit::LIMIT));
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\noutside\n",
                );
            }
        });
        Self { addr, count }
    }

    fn connections(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A pod: a network namespace with one address on the lab's bridge.
struct Pod {
    name: String,
    ns: String,
    ip: Ipv4Addr,
}

/// Everything the test makes outside its own process, removed on drop in the
/// order that works: processes first, then namespaces, links and host files.
struct Lab {
    id: String,
    subnet: [u8; 2],
    ip: PathBuf,
    processes: Vec<Process>,
    namespaces: Vec<String>,
    links: Vec<String>,
    etc: Vec<PathBuf>,
    dir: TempDir,
}

impl Lab {
    /// The bridge, in the root namespace at `.1`; `Err` says why the test cannot run
    /// here.
    fn new() -> Result<Self, String> {
        let tools = prerequisites::check()?;
        prerequisites::remove_leftovers(&tools.ip);
        let id = format!("{:x}", std::process::id());
        let subnet = prerequisites::free_subnet(&tools.ip);
        let mut lab = Self {
            subnet,
            ip: tools.ip,
            processes: Vec::new(),
            namespaces: Vec::new(),
            links: Vec::new(),
            etc: Vec::new(),
            dir: TempDir::new(),
            id,
        };
        let bridge = format!("wtbr{}", lab.id);
        lab.try_ip(&["link", "add", &bridge, "type", "bridge"])
            .map_err(|e| format!("cannot make a bridge: {e}"))?;
        lab.links.push(bridge.clone());
        let at = format!("{}/24", lab.ip(1));
        lab.try_ip(&["addr", "add", &at, "dev", &bridge])
            .and_then(|()| lab.try_ip(&["link", "set", &bridge, "up"]))
            .map_err(|e| format!("cannot set up the bridge: {e}"))?;
        // Probe: a namespace can be made here (a container may forbid it).
        let probe = format!("weft-t{}-probe", lab.id);
        lab.try_ip(&["netns", "add", &probe])
            .map_err(|e| format!("`ip netns add` fails here: {e}"))?;
        let _ = lab.try_ip(&["netns", "del", &probe]);
        Ok(lab)
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], host)
    }

    fn try_ip(&self, args: &[&str]) -> Result<(), String> {
        let out = output(Command::new(&self.ip).args(args));
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// A namespace `weft-tID-NAME` joined to the bridge by a veth, at `.host`.
    fn pod(&mut self, name: &str, host: u8) -> Pod {
        let ns = format!("weft-t{}-{name}", self.id);
        let (outer, inner) = (
            format!("wtv{name}{}", self.id),
            format!("wtp{name}{}", self.id),
        );
        self.run_ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        self.run_ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        self.links.push(outer.clone());
        let bridge = format!("wtbr{}", self.id);
        self.run_ip(&["link", "set", &outer, "master", &bridge, "up"]);
        self.run_ip(&["link", "set", &inner, "netns", &ns]);
        let at = format!("{}/24", self.ip(host));
        for step in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", &inner, "name", "eth0"],
            vec!["addr", "add", &at, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            self.run_ip(&[&["-n", &ns][..], &step].concat());
        }
        Pod {
            name: name.to_owned(),
            ns,
            ip: self.ip(host),
        }
    }

    fn run_ip(&self, args: &[&str]) {
        if let Err(e) = self.try_ip(args) {
            panic!("{e}");
        }
    }

    /// Names the pod resolves, in its own `/etc/hosts` (`ip netns exec` mounts
    /// `/etc/netns/NS/hosts` over it).
    fn hosts(&mut self, pod: &Pod, names: &[(&str, Ipv4Addr)]) {
        let dir = Path::new("/etc/netns").join(&pod.ns);
        std::fs::create_dir_all(&dir).unwrap();
        self.etc.push(dir.clone());
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// A command run in `pod`'s namespace.
    fn in_pod(&self, pod: &Pod, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &pod.ns]).arg(program);
        cmd
    }

    fn python(&self) -> PathBuf {
        prerequisites::python()
    }

    /// Start `cmd` (kept until the lab ends); its standard output, line by line.
    fn spawn(&mut self, cmd: &mut Command) -> Log {
        let mut p = Process::start(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()));
        let log = p.stdout();
        self.processes.push(p);
        log
    }

    /// Run `cmd` to its end, which must succeed; its standard output.
    fn run(&self, cmd: &mut Command) -> String {
        let out = output(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pod's sidecar, subscribed to `server` as node and service `pod.name`,
    /// its admin on port 15000 (left uncaptured); its log.
    fn sidecar(&mut self, pod: &Pod, server: &Server) -> Log {
        let state = self.dir.0.join(format!("sidecar-{}", pod.name));
        let mut cmd = self.in_pod(pod, weft_bin());
        cmd.args(["proxy", "--proxy-token-file"])
            .arg(&server.proxy_token)
            .args([
                "--config-server",
                &server.url,
                "--node",
                &pod.name,
                "--service",
                &pod.name,
            ])
            .args(["--admin", "0.0.0.0:15000", "--state-dir"])
            .arg(&state)
            .env("WEFT_CACHE_DIR", state.join("compiled"))
            .env("WEFT_WORKERS", "1")
            .env("RUST_LOG", "info")
            .env_remove("WEFT_PROXY_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut p = Process::start(&mut cmd);
        let log = p.stderr();
        self.processes.push(p);
        log.wait_for("admin listening");
        log
    }

    /// `weft init` in the pod: the sidecar runs as root here, the applications as
    /// nobody.
    fn capture(&self, pod: &Pod) {
        self.run(self.in_pod(pod, weft_bin()).args([
            "init",
            "--proxy-uid",
            "0",
            "--exclude-inbound-ports",
            "15000",
        ]));
    }

    fn nat_rules(&self, pod: &Pod) -> String {
        self.run(
            self.in_pod(pod, prerequisites::find("iptables").expect("iptables"))
                .args(["-w", "-t", "nat", "-S"]),
        )
    }

    /// `client.py` in the pod: one GET; its JSON line.
    fn call(&self, pod: &Pod, host: &str, port: u16, path: &str) -> Value {
        let out = self.run(
            self.in_pod(pod, self.python())
                .arg(script("client.py"))
                .args([host, &port.to_string(), path]),
        );
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// [`Lab::call`] until it answers `status` (the sidecars take their
    /// certificates and listeners from the config server meanwhile).
    fn call_until(&self, pod: &Pod, host: &str, port: u16, path: &str, status: u64) -> Value {
        eventually(&format!("{host}:{port}{path} answers {status}"), || {
            let r = self.call(pod, host, port, path);
            match r["status"].as_u64() == Some(status) {
                true => Ok(r),
                false => Err(r.to_string()),
            }
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first: a namespace goes only when nothing is left in it.
        self.processes.clear();
        for ns in &self.namespaces {
            let _ = output(Command::new(&self.ip).args(["netns", "del", ns]));
        }
        for link in &self.links {
            let _ = output(Command::new(&self.ip).args(["link", "del", link]));
        }
        for dir in &self.etc {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What the test needs of the machine, and what earlier runs left.
mod prerequisites {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use weft_testkit::output;

    pub(crate) struct Tools {
        pub(crate) ip: PathBuf,
    }

    /// The tools, or why the test cannot run here.
    pub(crate) fn check() -> Result<Tools, String> {
        if !cfg!(target_os = "linux") {
            return Err("network namespaces are Linux's".into());
        }
        const NET_ADMIN: u32 = 12;
        const SYS_ADMIN: u32 = 21;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if caps & (1 << NET_ADMIN) == 0 || caps & (1 << SYS_ADMIN) == 0 {
            return Err(
                "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN \
                        (run the tests as root to include it)"
                    .into(),
            );
        }
        let ip = find("ip").ok_or("iproute2's `ip` is not installed")?;
        if find("iptables").is_none() {
            install_iptables()?;
        }
        if !python().exists() && find("python3").is_none() {
            return Err("python3 is not installed (the pods' applications are Python)".into());
        }
        Ok(Tools { ip })
    }

    /// A tool on the PATH or in the system folders.
    pub(crate) fn find(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Debian's Python, which any user may run (the applications run as nobody).
    pub(crate) fn python() -> PathBuf {
        let debian = Path::new("/usr/bin/python3");
        match debian.exists() {
            true => debian.to_owned(),
            false => find("python3").unwrap_or_else(|| PathBuf::from("python3")),
        }
    }

    /// iptables from Debian, as `./dev test` installs it.
    fn install_iptables() -> Result<(), String> {
        if find("apt-get").is_none() {
            return Err("iptables is not installed and there is no apt-get to install it".into());
        }
        eprintln!("netns: installing Debian's iptables package (the test runs `weft init`)");
        let install = |cmd: &mut Command| {
            output(cmd.env("DEBIAN_FRONTEND", "noninteractive"))
                .status
                .success()
        };
        let ok = install(Command::new("apt-get").args(["install", "-y", "-qq", "iptables"]))
            || (install(Command::new("apt-get").args(["update", "-qq"]))
                && install(Command::new("apt-get").args(["install", "-y", "-qq", "iptables"])));
        match ok && find("iptables").is_some() {
            true => Ok(()),
            false => Err("iptables is not installed and `apt-get install iptables` failed".into()),
        }
    }

    /// Whether the process a name was made by has ended (or is this one, which has
    /// made nothing yet).
    fn stale(pid_hex: &str) -> bool {
        match u32::from_str_radix(pid_hex, 16) {
            Ok(pid) => pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        }
    }

    /// Namespaces, links and host files that runs killed before their cleanup left.
    pub(crate) fn remove_leftovers(ip: &Path) {
        let listed = |args: &[&str]| {
            String::from_utf8_lossy(&output(Command::new(ip).args(args)).stdout).into_owned()
        };
        for line in listed(&["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name
                .strip_prefix("weft-t")
                .and_then(|r| r.split('-').next())
                && stale(pid)
            {
                let _ = output(Command::new(ip).args(["netns", "del", name]));
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
            }
        }
        for line in listed(&["-o", "link", "show"]).lines() {
            // `7: wtbr1a2b3: <...>` or `8: wtva1a2b3@if7: <...>`
            let name = line
                .split(": ")
                .nth(1)
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap_or("");
            let pid = match (name.strip_prefix("wtbr"), name.strip_prefix("wtv")) {
                (Some(pid), _) => pid,
                (None, Some(rest)) if !rest.is_empty() => &rest[1..],
                _ => continue,
            };
            if stale(pid) {
                let _ = output(Command::new(ip).args(["link", "del", name]));
            }
        }
    }

    /// A /24 in 10.200.0.0–10.249.255.0 that no address of the root namespace is
    /// in, starting from one the process id picks, so runs side by side differ.
    pub(crate) fn free_subnet(ip: &Path) -> [u8; 2] {
        let used = String::from_utf8_lossy(
            &output(Command::new(ip).args(["-4", "-o", "addr", "show"])).stdout,
        )
        .into_owned();
        let pid = std::process::id();
        (0..12_800u32)
            .map(|i| {
                let n = (pid + i) % 12_800;
                [200 + (n / 256) as u8, (n % 256) as u8]
            })
            .find(|[x, y]| !used.contains(&format!(" 10.{x}.{y}.")))
            .unwrap_or([250, 0])
    }
}

/// A harness that prints what libtest prints, so that `cargo test` shows this test
/// as passed, failed or ignored (with the reason) beside the others.
mod harness {
    use std::process::ExitCode;
    use std::time::Instant;

    /// Run `test`, named `name`, as the arguments `cargo test` passes ask: a filter
    /// (`--exact`, `--skip`), `--list`, `--ignored`. `test` returns why it could not
    /// run here, if it could not.
    pub(crate) fn run(
        name: &str,
        test: impl FnOnce() -> Option<String> + std::panic::UnwindSafe,
    ) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let asked = Asked::parse(&args);
        let selected = asked.selects(name);
        if asked.list {
            if selected {
                println!("{name}: test");
            }
            return ExitCode::SUCCESS;
        }
        let started = Instant::now();
        let summary = |passed: u8, failed: u8, ignored: u8| {
            let filtered = u8::from(!selected);
            let result = if failed > 0 { "FAILED" } else { "ok" };
            println!(
                "\ntest result: {result}. {passed} passed; {failed} failed; {ignored} ignored; \
                 0 measured; {filtered} filtered out; finished in {:.2}s\n",
                started.elapsed().as_secs_f64()
            );
        };
        if !selected {
            println!("\nrunning 0 tests");
            summary(0, 0, 0);
            return ExitCode::SUCCESS;
        }
        println!("\nrunning 1 test");
        match std::panic::catch_unwind(test) {
            Ok(None) => {
                println!("test {name} ... ok");
                summary(1, 0, 0);
                ExitCode::SUCCESS
            }
            Ok(Some(why)) => {
                println!("test {name} ... ignored, {why}");
                eprintln!("SKIPPED {name}: {why}");
                summary(0, 0, 1);
                ExitCode::SUCCESS
            }
            Err(_) => {
                // The panic hook has printed the message and where.
                println!("test {name} ... FAILED");
                println!("\nfailures:\n    {name}");
                summary(0, 1, 0);
                ExitCode::from(101)
            }
        }
    }

    /// What the command line asks of the harness.
    struct Asked {
        filters: Vec<String>,
        skips: Vec<String>,
        exact: bool,
        list: bool,
        only_ignored: bool,
    }

    impl Asked {
        fn parse(args: &[String]) -> Self {
            let mut asked = Self {
                filters: Vec::new(),
                skips: Vec::new(),
                exact: false,
                list: false,
                only_ignored: false,
            };
            let mut args = args.iter();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--list" => asked.list = true,
                    "--exact" => asked.exact = true,
                    "--ignored" => asked.only_ignored = true,
                    "--skip" => asked.skips.extend(args.next().cloned()),
                    // Options of libtest's that take a value: not a filter.
                    "--test-threads" | "--color" | "--format" | "--logfile" | "-Z"
                    | "--shuffle-seed" => {
                        args.next();
                    }
                    flag if flag.starts_with('-') => {}
                    filter => asked.filters.push(filter.to_owned()),
                }
            }
            asked
        }

        /// Whether the test named `name` runs: it is not `#[ignore]`d, so `--ignored`
        /// leaves it out.
        fn selects(&self, name: &str) -> bool {
            let matches = |f: &String| {
                if self.exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            };
            !self.only_ignored
                && (self.filters.is_empty() || self.filters.iter().any(matches))
                && !self.skips.iter().any(matches)
        }
    }
}
