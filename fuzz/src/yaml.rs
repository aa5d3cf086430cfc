//! Proxy configs and mesh configs built from the keys of the real model
//! (`weft_config::Config`, `weft_config::MeshConfig`), with values drawn from lists
//! of ordinary, edge and wrong ones, in block or flow style, sometimes with an
//! unknown key, a value of the wrong shape or a damaged line.
//!
//! Most documents parse, so validation and its locations are what gets exercised; the
//! first value of every list is an ordinary one, so the fewer the bytes, the more
//! ordinary the document.

use crate::Choices;

/// A YAML document before it is written: keys and raw scalar text.
#[derive(Clone, Debug)]
pub enum Node {
    /// A mapping, in order (keys may repeat: a duplicate is an input too).
    Map(Vec<(String, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A scalar as written in YAML (quoted when it needs to be).
    Scalar(String),
}

const DURATIONS: &[&str] = &[
    "5s",
    "250ms",
    "1m",
    "0s",
    "0",
    "1h",
    "-1s",
    "1.5s",
    "18446744073709551616s",
    "99999999999h",
    "5 s",
    "\"\"",
    "1d",
    "soon",
    "5",
    "1e400",
    "~",
    "[1]",
];
const SIZES: &[&str] = &[
    "16KiB",
    "1MiB",
    "4096",
    "0",
    "1EiB",
    "99999999999TiB",
    "-1",
    "1.5KiB",
    "KiB",
    "1kb",
    "18446744073709551616",
    "{}",
];
const LISTEN: &[&str] = &[
    "127.0.0.1:0",
    "127.0.0.1:8080",
    "\"[::1]:0\"",
    "0.0.0.0:80",
    "localhost:80",
    "127.0.0.1",
    "127.0.0.1:99999",
    "\":80\"",
    "\"[::1]\"",
    "256.0.0.1:1",
    "\"\"",
];
const ENDPOINTS: &[&str] = &[
    "127.0.0.1:9001",
    "localhost:9002",
    "\"[::1]:80\"",
    "169.254.169.254:80",
    "0.0.0.0:80",
    "224.0.0.1:80",
    "255.255.255.255:1",
    "-a:80",
    "a..b:80",
    "x:0",
    "\"[zz]:80\"",
    "a_b:1",
    "é:80",
    "\"[fe80::1]:80\"",
    "\"[::ffff:169.254.1.1]:80\"",
    "\"[::]:80\"",
    "host",
    "\":80\"",
    "\"a:b:c\"",
    "a.:80",
    "\"user@host:80\"",
    "\"[::1]\"",
];
const NAMES: &[&str] = &["web", "api", "a", "\"\"", "web", "\"x y\"", "\"💥\""];
const MODULES: &[&str] = &[
    "builtin:router",
    "filter:hello",
    "builtin:fault",
    "builtin:",
    "filter:",
    "\"\"",
    "/x.wasm",
    "x.wasm",
    "builtin:nope",
    "filter:nope",
];
const SHA256: &[&str] = &[
    "\"0000000000000000000000000000000000000000000000000000000000000000\"",
    "\"ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789\"",
    "\"000000000000000000000000000000000000000000000000000000000000000\"",
    "\"zz00000000000000000000000000000000000000000000000000000000000000\"",
    "\"\"",
];
const BOOLS: &[&str] = &["true", "false", "yes", "1", "~", "\"true\""];
const COUNTS: &[&str] = &[
    "1",
    "0",
    "100",
    "1000",
    "100000",
    "-1",
    "18446744073709551616",
    "1.5",
    "x",
    "10000",
    "64",
    "65536",
];
const FAILURES: &[&str] = &["fail-closed", "fail-open", "reload", "explode", "\"\""];
const BALANCERS: &[&str] = &["peak-ewma", "round-robin", "least-request", "random"];
const PROTOCOLS: &[&str] = &["http1", "http2", "auto", "http3"];
const LOG_FIELDS: &[&str] = &["status", "time", "path", "trace_id", "nope", "\"\""];
const SAMPLES: &[&str] = &["1", "0", "0.5", "1.5", "-0.1", ".nan", ".inf", "x"];
const PREFIXES: &[&str] = &[
    "weft_filter_",
    "\"\"",
    "istio_",
    "weft_x_",
    "A_",
    "_a1",
    "1a",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];
const UPGRADES: &[&str] = &[
    "websocket",
    "h2c",
    "H2C/1",
    "a/b/c",
    "\"\"",
    "\"a b\"",
    "websocket/13",
];
const HEALTH_PATHS: &[&str] = &["/healthz", "/", "x", "\"/a b\"", "\"\"", "\"/é\""];
const COLLECTORS: &[&str] = &[
    "127.0.0.1:4317",
    "localhost:4317",
    "\":4317\"",
    "host:0",
    "host:x",
    "\"\"",
    "\"[::1]:4317\"",
];
const DNS_SERVERS: &[&str] = &["127.0.0.1:53", "\"[::1]:53\"", "8.8.8.8", "x:53"];
const FILES: &[&str] = &["cert.pem", "/nonexistent/key.pem", "\"\""];
const TLS_MODES: &[&str] = &["terminate", "mesh", "strict", "\"\""];
const SPIFFE: &[&str] = &[
    "spiffe://weft.local/ns/default/sa/web",
    "spiffe://weft.local/ns/*",
    "\"*\"",
    "spiffe://",
    "spiffe://UPPER/x",
    "spiffe://td/a//b",
    "spiffe://td/../x",
    "web",
    "\"\"",
];
const TRUST_DOMAINS: &[&str] = &[
    "weft.local",
    "bank.example",
    "\"\"",
    "UPPER",
    "a/b",
    "spiffe://x",
];
/// Scalars of a filter's free-form `config`, YAML's odd corners included.
const ANY_SCALARS: &[&str] = &[
    "1",
    "-1",
    "1.5",
    "true",
    "null",
    "~",
    "\"s\"",
    "x",
    ".nan",
    ".inf",
    "-.inf",
    "1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "0x1f",
    "0o17",
    "!!binary aGk=",
    "&a 1",
    "*a",
    "!custom x",
    "\"\\u0000\"",
];

fn raw(c: &mut Choices<'_>, list: &[&str]) -> Node {
    Node::Scalar((*c.pick(list)).to_owned())
}

/// A string of arbitrary characters, quoted so that YAML reads it as a string.
fn quoted(c: &mut Choices<'_>, max: usize) -> Node {
    let text = c.text(max);
    Node::Scalar(serde_json::to_string(&text).unwrap_or_else(|_| "\"\"".to_owned()))
}

/// A value from `list`: its first, ordinary one most of the time, so that documents
/// often get past their first error; now and then an arbitrary string or a wrong
/// shape instead.
fn value(c: &mut Choices<'_>, list: &[&str]) -> Node {
    match c.below(100) {
        0 => quoted(c, 12),
        1 => Node::Map(Vec::new()),
        2 => Node::Seq(vec![raw(c, list)]),
        3..=72 => Node::Scalar(list[0].to_owned()),
        _ => raw(c, list),
    }
}

/// Builds one mapping: each key is present with some chance, and now and then one
/// no model has.
struct MapBuilder<'c, 'a> {
    c: &'c mut Choices<'a>,
    entries: Vec<(String, Node)>,
}

impl<'c, 'a> MapBuilder<'c, 'a> {
    fn new(c: &'c mut Choices<'a>) -> Self {
        Self {
            c,
            entries: Vec::new(),
        }
    }

    /// `key` with a value from `list`, present `percent` times in a hundred.
    fn raw(self, key: &str, percent: u8, list: &[&str]) -> Self {
        self.with(key, percent, |c| value(c, list))
    }

    /// `key` with a generated value; a required key has `percent` 100.
    fn with(mut self, key: &str, percent: u8, make: impl FnOnce(&mut Choices<'a>) -> Node) -> Self {
        // A required key is left out only on purpose, rarely.
        let present = if percent >= 100 {
            !self.c.chance(2)
        } else {
            self.c.chance(percent)
        };
        if present {
            let v = make(self.c);
            self.entries.push((key.to_owned(), v));
        }
        self
    }

    fn build(self) -> Node {
        let mut entries = self.entries;
        if self.c.chance(2) {
            let key = self.c.text(8);
            let key = serde_json::to_string(&key).unwrap_or_default();
            entries.push((key, raw(self.c, ANY_SCALARS)));
        }
        if self.c.chance(1) && !entries.is_empty() {
            // The same key twice.
            let i = self.c.below(entries.len());
            let again = entries[i].clone();
            entries.push(again);
        }
        Node::Map(entries)
    }
}

/// Up to `max` items made by `make`; one, ordinarily.
fn list<'a>(c: &mut Choices<'a>, max: usize, make: impl Fn(&mut Choices<'a>) -> Node) -> Node {
    let n = if c.chance(15) { 0 } else { 1 + c.below(max) };
    Node::Seq((0..n).map(|_| make(c)).collect())
}

fn any_value(c: &mut Choices<'_>, depth: u32) -> Node {
    match c.below(if depth == 0 { 2 } else { 4 }) {
        0 => value(c, ANY_SCALARS),
        1 => quoted(c, 16),
        2 => list(c, 3, |c| any_value(c, depth - 1)),
        _ => {
            let mut entries = Vec::new();
            for key in ["routes", "cluster", "match", "abort", "x", "api_key"] {
                if c.chance(30) {
                    entries.push((key.to_owned(), any_value(c, depth - 1)));
                }
            }
            Node::Map(entries)
        }
    }
}

fn filter(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("name", 100, NAMES)
        .raw("module", 100, MODULES)
        .raw("sha256", 20, SHA256)
        .raw("failure", 20, FAILURES)
        .raw("timeout", 20, DURATIONS)
        .raw("memory", 20, SIZES)
        .with("config", 40, |c| any_value(c, 3))
        .with("metrics", 15, |c| {
            MapBuilder::new(c)
                .raw("prefix", 60, PREFIXES)
                .raw("max_series", 40, COUNTS)
                .raw("expire_after", 40, DURATIONS)
                .build()
        })
        .build()
}

fn limits(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("header_read_timeout", 30, DURATIONS)
        .raw("request_timeout", 30, DURATIONS)
        .raw("max_header_size", 30, SIZES)
        .raw("max_body_size", 30, SIZES)
        .raw("idle_timeout", 30, DURATIONS)
        .raw("max_connections", 30, COUNTS)
        .raw("max_premature_resets", 30, COUNTS)
        .build()
}

fn server_tls(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("mode", 50, TLS_MODES)
        .raw("cert", 50, FILES)
        .raw("key", 50, FILES)
        .with("certificates", 20, |c| {
            list(c, 2, |c| {
                MapBuilder::new(c)
                    .with("server_names", 50, |c| list(c, 2, |c| value(c, NAMES)))
                    .raw("cert", 100, FILES)
                    .raw("key", 100, FILES)
                    .build()
            })
        })
        .build()
}

fn listener(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("name", 100, NAMES)
        .raw("address", 100, LISTEN)
        .with("tls", 5, server_tls)
        .raw("default_cluster", 70, NAMES)
        .with("limits", 20, limits)
        .raw("normalize_path", 10, BOOLS)
        .raw("allow_connect", 10, BOOLS)
        .with("upgrades", 15, |c| list(c, 3, |c| value(c, UPGRADES)))
        .raw("mesh_internal", 10, BOOLS)
        .with("filters", 60, |c| list(c, 3, filter))
        .build()
}

fn endpoint(c: &mut Choices<'_>) -> Node {
    match c.below(6) {
        0..=2 => value(c, ENDPOINTS),
        3 if c.chance(20) => {
            // A DNS name as long as a name may be, and then some.
            let len = *c.pick(&[253usize, 254, 300]);
            Node::Scalar(format!("{}:80", "a".repeat(len)))
        }
        3 | 4 => MapBuilder::new(c)
            .raw("address", 100, ENDPOINTS)
            .raw("weight", 60, COUNTS)
            .build(),
        _ => MapBuilder::new(c)
            .raw("dns", 100, ENDPOINTS)
            .raw("weight", 60, COUNTS)
            .build(),
    }
}

fn cluster(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("name", 100, NAMES)
        .with("endpoints", 100, |c| list(c, 3, endpoint))
        .raw("balancer", 15, BALANCERS)
        .raw("allow_link_local", 10, BOOLS)
        .with("limits", 10, |c| {
            MapBuilder::new(c)
                .raw("max_requests", 50, COUNTS)
                .raw("max_pending", 50, COUNTS)
                .raw("max_connections", 50, COUNTS)
                .build()
        })
        .with("outlier", 10, |c| {
            MapBuilder::new(c)
                .raw("consecutive_failures", 50, COUNTS)
                .raw("base_ejection", 50, DURATIONS)
                .raw("max_ejection", 50, DURATIONS)
                .raw("max_ejection_percent", 50, COUNTS)
                .build()
        })
        .with("health_check", 10, |c| {
            MapBuilder::new(c)
                .raw("path", 100, HEALTH_PATHS)
                .raw("interval", 40, DURATIONS)
                .raw("timeout", 40, DURATIONS)
                .raw("unhealthy_threshold", 40, COUNTS)
                .raw("healthy_threshold", 40, COUNTS)
                .build()
        })
        .raw("protocol", 15, PROTOCOLS)
        .with("tls", 5, |c| {
            MapBuilder::new(c)
                .raw("mode", 50, TLS_MODES)
                .raw("ca", 50, FILES)
                .raw("server_name", 30, NAMES)
                .raw("identity", 30, SPIFFE)
                .build()
        })
        .raw("connect_timeout", 10, DURATIONS)
        .raw("idle_timeout", 10, DURATIONS)
        .raw("max_idle_per_endpoint", 10, COUNTS)
        .build()
}

/// The sections a proxy's file and a mesh config share.
fn shared_sections<'c, 'a>(m: MapBuilder<'c, 'a>) -> MapBuilder<'c, 'a> {
    m.with("clusters", 70, |c| list(c, 3, cluster))
        .with("shutdown", 10, shutdown)
        .with("dns", 10, |c| {
            MapBuilder::new(c)
                .with("servers", 50, |c| list(c, 2, |c| value(c, DNS_SERVERS)))
                .raw("min_refresh", 40, DURATIONS)
                .raw("max_refresh", 40, DURATIONS)
                .raw("max_addresses", 40, COUNTS)
                .build()
        })
        .with("tracing", 10, |c| {
            MapBuilder::new(c)
                .raw("collector", 100, COLLECTORS)
                .raw("service_name", 30, NAMES)
                .raw("batch", 30, COUNTS)
                .raw("flush_interval", 30, DURATIONS)
                .raw("timeout", 30, DURATIONS)
                .build()
        })
        .with("access_log", 10, access_log)
}

fn shutdown(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .raw("drain_delay", 50, DURATIONS)
        .raw("drain_timeout", 50, DURATIONS)
        .build()
}

fn access_log(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .with("fields", 50, |c| list(c, 3, |c| value(c, LOG_FIELDS)))
        .raw("sample", 50, SAMPLES)
        .build()
}

/// A proxy's own configuration file, as YAML text.
pub fn proxy_config(c: &mut Choices<'_>) -> String {
    let m = MapBuilder::new(c)
        .with("admin", 20, |c| {
            MapBuilder::new(c)
                .raw("address", 100, LISTEN)
                .with("allow_hosts", 20, |c| list(c, 2, |c| value(c, NAMES)))
                .build()
        })
        .with("listeners", 80, |c| list(c, 3, listener))
        .with("identity", 5, |c| {
            MapBuilder::new(c)
                .raw("cert", 100, FILES)
                .raw("key", 100, FILES)
                .raw("bundle", 100, FILES)
                .raw("poll_interval", 30, DURATIONS)
                .build()
        });
    let doc = shared_sections(m).build();
    finish(c, &doc)
}

fn group(c: &mut Choices<'_>) -> Node {
    MapBuilder::new(c)
        .with("select", 100, |c| {
            MapBuilder::new(c)
                .raw("service", 60, NAMES)
                .with("labels", 30, |c| {
                    let n = c.below(3);
                    let entries = (0..n)
                        .map(|_| ((*c.pick(&["zone", "env", "x"])).to_owned(), value(c, NAMES)))
                        .collect();
                    Node::Map(entries)
                })
                .build()
        })
        .with("listeners", 80, |c| list(c, 2, listener))
        .with("access_log", 10, access_log)
        .with("shutdown", 10, shutdown)
        .raw("identity", 10, SPIFFE)
        .build()
}

/// A mesh config (what the config server stores), as YAML text.
pub fn mesh_config(c: &mut Choices<'_>) -> String {
    let m = MapBuilder::new(c)
        .with("proxies", 100, |c| list(c, 3, group))
        .with("identity", 10, |c| {
            MapBuilder::new(c)
                .raw("trust_domain", 50, TRUST_DOMAINS)
                .raw("certificate_ttl", 50, DURATIONS)
                .build()
        });
    let doc = shared_sections(m).build();
    finish(c, &doc)
}

/// Write `doc`, then now and then damage the text.
fn finish(c: &mut Choices<'_>, doc: &Node) -> String {
    let mut text = String::new();
    write_block(c, doc, 0, &mut text);
    if c.chance(10) {
        damage(c, &mut text);
    }
    text
}

/// One damage of many kinds: a character put in or a line removed, indented or
/// cut short, somewhere in the text.
fn damage(c: &mut Choices<'_>, text: &mut String) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return;
    }
    let i = c.below(lines.len());
    match c.below(5) {
        0 => {
            lines.remove(i);
        }
        1 => lines[i].insert(0, ' '),
        2 => {
            let cut = lines[i].char_indices().nth(c.below(8)).map(|(at, _)| at);
            if let Some(at) = cut {
                lines[i].truncate(at);
            }
        }
        3 => {
            let odd = c.text(2);
            let at = lines[i]
                .char_indices()
                .nth(c.below(8))
                .map_or(0, |(at, _)| at);
            lines[i].insert_str(at, &odd);
        }
        _ => lines.truncate(i),
    }
    *text = lines.join("\n");
    text.push('\n');
}

/// `node` in block style at `indent`, its collections now and then in flow style.
fn write_block(c: &mut Choices<'_>, node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => {
            out.push_str(&pad);
            out.push_str(s);
            out.push('\n');
        }
        Node::Map(entries) if entries.is_empty() => out.push_str(&format!("{pad}{{}}\n")),
        Node::Seq(items) if items.is_empty() => out.push_str(&format!("{pad}[]\n")),
        Node::Map(entries) => {
            for (key, value) in entries {
                out.push_str(&format!("{pad}{key}:"));
                write_value(c, value, indent, out);
            }
        }
        Node::Seq(items) => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                write_value(c, item, indent, out);
            }
        }
    }
}

/// The value after `key:` or `-`: on the same line when a scalar or written in
/// flow style, else on the lines below, indented.
fn write_value(c: &mut Choices<'_>, value: &Node, indent: usize, out: &mut String) {
    if matches!(value, Node::Scalar(_)) || c.chance(15) {
        out.push(' ');
        write_flow(value, out);
        out.push('\n');
    } else {
        out.push('\n');
        write_block(c, value, indent + 2, out);
    }
}

/// `node` in flow style (`{a: 1, b: [x]}`).
fn write_flow(node: &Node, out: &mut String) {
    match node {
        // saphyr takes `a:b` in a flow collection for a key and its value: quoted,
        // the plain scalars of block style mean the same in flow style.
        Node::Scalar(s) if s.contains(':') && !s.starts_with(['"', '!', '&', '*']) => {
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
        }
        Node::Scalar(s) => out.push_str(s),
        Node::Map(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push_str(": ");
                write_flow(value, out);
            }
            out.push('}');
        }
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow(item, out);
            }
            out.push(']');
        }
    }
}
