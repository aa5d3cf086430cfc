//! DNS discovery against a name server the test controls: Debian's dnsmasq
//! (`dnsmasq-base`, which `./dev test` installs), serving names from a hosts file
//! that the test rewrites.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_tests::*;

/// dnsmasq answering from a hosts file with a one-second TTL; killed when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    _dir: TempDir,
}

impl Dnsmasq {
    async fn start(hosts: &str) -> Self {
        let dir = TempDir::new();
        let file = dir.0.join("hosts");
        std::fs::write(&file, hosts).unwrap();
        // dnsmasq binds its own port: the OS picks a free one, which is handed over.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let mut child = Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--log-facility=-",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local-ttl=1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .arg(format!("--pid-file={}", dir.0.join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("dnsmasq runs (Debian's dnsmasq-base; ./dev test installs it)");
        // Ready once it says it started (it logs to stderr).
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let started = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("started") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(started, Ok(true), "dnsmasq did not start");
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            port,
            hosts: file,
            _dir: dir,
        }
    }

    /// New records: rewrite the hosts file and tell dnsmasq to read it again.
    async fn set(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
}

/// Which backends answered `n` requests.
async fn spread(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = client().get(addr, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.push(r.header("x-backend").unwrap_or_default().to_owned());
    }
    seen
}

fn count(seen: &[String], name: &str) -> usize {
    seen.iter().filter(|s| *s == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_is_followed_on_its_ttl_and_endpoints_that_stay_keep_their_connections() {
    let logs = logs();
    // Three backends on one port, each on its own loopback address, as the
    // addresses of one name would be; a fourth speaks TLS for another name.
    let b = backend("b").bind("127.0.0.3:0").start().await;
    let port = b.addr.port();
    let a = backend("a")
        .bind(&format!("127.0.0.2:{port}"))
        .start()
        .await;
    let c = backend("c")
        .bind(&format!("127.0.0.4:{port}"))
        .start()
        .await;
    let (cert, key) = {
        let cert = rcgen::generate_simple_self_signed(vec!["secure.weft.test".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    };
    let secure = backend("secure")
        .bind("127.0.0.5:0")
        .tls(server_tls(&cert, &key))
        .start()
        .await;
    let (_ca_dir, ca) = temp_file("ca.pem", cert.as_bytes());

    let dns = Dnsmasq::start(
        "127.0.0.2 api.weft.test\n127.0.0.3 api.weft.test\n127.0.0.5 secure.weft.test\n",
    )
    .await;
    let yaml = format!(
        "dns:\n  servers: [\"127.0.0.1:{dns_port}\"]\n\
         listeners:\n  - name: web\n    address: 127.0.0.1:0\n    default_cluster: api\n\
         \x20 - name: secure\n    address: 127.0.0.1:0\n    default_cluster: secure\n\
         clusters:\n  - name: api\n    balancer: round-robin\n    \
         endpoints: [{{ dns: \"api.weft.test:{port}\" }}]\n\
         \x20 - name: secure\n    endpoints: [{{ dns: \"secure.weft.test:{secure_port}\" }}]\n    \
         tls: {{ ca: \"{ca}\" }}\n",
        dns_port = dns.port,
        secure_port = secure.addr.port(),
    );
    let p = proxy(&yaml).start().await;
    let web = p.running().listener_addr("web").unwrap();

    // The first request waits for the name's first answer; round robin then
    // alternates between its two addresses.
    let seen = spread(web, 20).await;
    assert_eq!((count(&seen, "a"), count(&seen, "b")), (10, 10), "{seen:?}");
    let b_connections = b.connections();
    assert_eq!(b_connections, 1, "sequential requests share one connection");

    // TLS to an address found by name verifies that name (the certificate does not
    // name the address).
    let r = client()
        .get(p.running().listener_addr("secure").unwrap(), "/")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-backend"), Some("secure"));

    // The name moves from a and b to b and c: followed without a restart.
    dns.set("127.0.0.3 api.weft.test\n127.0.0.4 api.weft.test\n")
        .await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = client().get(web, "/").await;
        if r.header("x-backend") == Some("c") {
            break;
        }
        assert!(Instant::now() < deadline, "the new address was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = spread(web, 20).await;
    assert_eq!(count(&seen, "a"), 0, "a left the name: {seen:?}");
    assert_eq!((count(&seen, "b"), count(&seen, "c")), (10, 10), "{seen:?}");
    assert_eq!(
        b.connections(),
        b_connections,
        "b stayed, and so did its pooled connection"
    );
    let states = p.running().cluster_states("api").unwrap();
    let mut addresses: Vec<&str> = states.iter().map(|(a, ..)| a.as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(
        addresses,
        [format!("127.0.0.3:{port}"), format!("127.0.0.4:{port}")]
    );

    // The name server goes away: lookups fail, the last addresses stay.
    drop(dns);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = spread(web, 10).await;
    assert_eq!(count(&seen, "b") + count(&seen, "c"), 10, "{seen:?}");
    assert!(
        logs.text().contains("its last addresses stay"),
        "the failed lookup is logged"
    );
    drop(a);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_answer_becomes_only_endpoints_a_written_one_could_be_and_no_more_than_the_cap() {
    let logs = logs();
    let b = backend("b").bind("127.0.0.2:0").start().await;
    let port = b.addr.port();
    // This host's own listeners (0.0.0.0, ::), cloud metadata and other link-local
    // addresses, beside one real backend; and a name with 40 addresses.
    let mut hosts = String::from(
        "0.0.0.0 odd.weft.test\n:: odd.weft.test\n169.254.169.254 odd.weft.test\n\
         fe80::1 odd.weft.test\n224.0.0.1 odd.weft.test\n127.0.0.2 odd.weft.test\n",
    );
    for i in 1..=40 {
        hosts.push_str(&format!("127.0.9.{i} many.weft.test\n"));
    }
    let dns = Dnsmasq::start(&hosts).await;
    let yaml = format!(
        "dns:\n  servers: [\"127.0.0.1:{dns_port}\"]\n  max_addresses: 8\n\
         listeners:\n  - name: web\n    address: 127.0.0.1:0\n    default_cluster: odd\n\
         clusters:\n  - name: odd\n    endpoints: [{{ dns: \"odd.weft.test:{port}\" }}]\n\
         \x20 - name: many\n    endpoints: [{{ dns: \"many.weft.test:{port}\" }}]\n",
        dns_port = dns.port,
    );
    let p = proxy(&yaml).start().await;
    let web = p.running().listener_addr("web").unwrap();
    let seen = spread(web, 4).await;
    assert_eq!(count(&seen, "b"), 4, "{seen:?}");
    let addresses = |cluster: &str| -> Vec<String> {
        let mut a: Vec<String> = p
            .running()
            .cluster_states(cluster)
            .unwrap()
            .into_iter()
            .map(|(a, ..)| a)
            .collect();
        a.sort_unstable();
        a
    };
    assert_eq!(addresses("odd"), [format!("127.0.0.2:{port}")]);
    // The cap keeps the lowest addresses; the name is resolved once the cluster starts.
    let deadline = std::time::Instant::now() + LIMIT;
    while addresses("many").len() < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let many = addresses("many");
    assert_eq!(many.len(), 8, "{many:?}");
    assert!(many.contains(&format!("127.0.9.1:{port}")), "{many:?}");
    // Told once per name, however often it is resolved again (the TTL is a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let told = |name: &str| {
        logs.text()
            .lines()
            .filter(|l| l.contains("not taken whole") && l.contains(name))
            .count()
    };
    assert_eq!(told("many.weft.test"), 1, "{}", logs.text());
    assert_eq!(told("odd.weft.test"), 1);
    assert!(logs.text().contains("169.254.169.254: link-local"));
}
