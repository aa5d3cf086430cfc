//! Weft's configuration: a YAML file read into typed, checked structures.
//!
//! 1. [`Config::from_file`] (or [`Config::parse`]) reads the YAML with serde;
//!    unknown keys, bad durations and sizes (written in the units [`units`] lists) are
//!    errors.
//! 2. [`Config::validate`] checks what types cannot: names are unique, every cluster a
//!    listener names exists, addresses parse.
//! 3. Every [`ConfigError`] names the file, the line and column, and the key at fault.
//!
//! ```no_run
//! let config = weft_config::Config::from_file("weft.yaml".as_ref())?;
//! for listener in &config.listeners {
//!     println!("{} on {}", listener.name.value, listener.address.value);
//! }
//! # Ok::<(), weft_config::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod capture;
mod mesh;
mod model;
mod settings;
/// SPIFFE IDs and patterns: the rule filters use, shared with the SDK.
#[path = "../../sdk/src/spiffe.rs"]
pub mod spiffe;
mod tls;
pub mod units;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use mesh::{IdentityError, MeshConfig, MeshIdentity, ProxyGroup, Selector};
pub use model::*;
pub use serde_saphyr::{Location, Spanned};
pub use settings::FilterSettings;
pub use tls::{ClientTlsConfig, IdentityConfig, ServerTlsConfig, SniCertificate, TlsMode};
pub use units::{Duration, Size};

/// What is wrong with a configuration, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse, or does not fit the schema.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file, or `<inline>`.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What the parser said.
        message: String,
    },
    /// The YAML parses but says something impossible.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        /// The file, or `<inline>`.
        file: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// The key at fault, e.g. `listeners[0].default_cluster`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.base_dir = path.parent().map(Path::to_owned);
        config.anchor_cluster_cas();
        config.validate()?;
        Ok(config)
    }

    /// Parse YAML text; `file` names it in errors. Call [`Config::validate`] next.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut config: Self = parse_yaml(text, file)?;
        config.file = file.to_owned();
        Ok(config)
    }

    /// Parse and validate YAML text; `file` names it in errors, relative module paths
    /// resolve against `base_dir`.
    pub fn from_str(text: &str, file: &str, base_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = Self::parse(text, file)?;
        config.base_dir = base_dir.map(Path::to_owned);
        config.anchor_cluster_cas();
        config.validate()?;
        Ok(config)
    }

    /// A cluster's CA file, like every other path the file names, is relative to the
    /// file's folder. Clusters are built without the configuration beside them, so the
    /// path is made whole here, once.
    fn anchor_cluster_cas(&mut self) {
        let Some(base) = &self.base_dir else { return };
        let cas = self
            .clusters
            .iter_mut()
            .filter_map(|c| c.tls.as_mut()?.ca.as_mut());
        for ca in cas.filter(|ca| ca.value.is_relative()) {
            ca.value = base.join(&ca.value);
        }
    }

    /// The key of listener `i` (plus `rest`) as it is written in the file.
    pub fn listener_key(&self, i: usize, rest: &str) -> String {
        match self.mesh_group {
            Some(g) => format!("proxies[{g}].listeners[{i}]{rest}"),
            None => format!("listeners[{i}]{rest}"),
        }
    }

    /// An error at `at` (from this file), naming `key` as written in the file.
    pub fn invalid<T>(
        &self,
        at: &Location,
        key: String,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            file: self.file.clone(),
            line: at.line(),
            column: at.column(),
            key,
            message: message.into(),
        })
    }

    /// The `dns` section: name servers, the address cap and the refresh bounds.
    fn validate_dns(&self) -> Result<(), ConfigError> {
        for (i, server) in self.dns.servers.iter().enumerate() {
            if server.value.parse::<std::net::SocketAddr>().is_err() {
                return self.invalid(
                    &server.referenced,
                    format!("dns.servers[{i}]"),
                    format!("{:?} is not ip:port", server.value),
                );
            }
        }
        let max_addresses = &self.dns.max_addresses;
        if !(1..=10_000).contains(&max_addresses.value) {
            return self.invalid(
                &max_addresses.referenced,
                "dns.max_addresses".into(),
                "must be within 1 to 10000",
            );
        }
        let (min, max) = (&self.dns.min_refresh, &self.dns.max_refresh);
        if min.value.0.is_zero() || min.value.0 > max.value.0 {
            // One of the two was written, or the defaults would hold: point at
            // `min_refresh` when the file gives it, else at `max_refresh`.
            let at = if min.referenced == Location::UNKNOWN {
                &max.referenced
            } else {
                &min.referenced
            };
            return self.invalid(
                at,
                "dns".into(),
                "min_refresh must be above 0 and at most max_refresh",
            );
        }
        Ok(())
    }

    /// Check what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_dns()?;
        self.validate_identity()?;
        self.validate_tracing()?;
        self.validate_access_log()?;
        let clusters = self.validate_clusters()?;
        self.validate_listeners(&clusters)?;
        self.validate_admin()
    }

    /// The `tracing` section: where spans go and how they are batched.
    fn validate_tracing(&self) -> Result<(), ConfigError> {
        let Some(t) = &self.tracing else {
            return Ok(());
        };
        let port_ok = (t.collector.value.rsplit_once(':')).is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        let why = if !port_ok {
            Some(format!(
                "collector {:?} is not host:port",
                t.collector.value
            ))
        } else if !(1..=10_000).contains(&t.batch) {
            Some("batch must be within 1 to 10000".to_owned())
        } else if t.flush_interval.0.is_zero() || t.timeout.0.is_zero() {
            Some("flush_interval and timeout must be above 0".to_owned())
        } else {
            None
        };
        match why {
            Some(why) => self.invalid(&t.collector.referenced, "tracing".into(), why),
            None => Ok(()),
        }
    }

    /// The `access_log` section: the sample share and the field names.
    fn validate_access_log(&self) -> Result<(), ConfigError> {
        let Some(a) = &self.access_log else {
            return Ok(());
        };
        if !(0.0..=1.0).contains(&a.sample.value) {
            return self.invalid(
                &a.sample.referenced,
                "access_log.sample".into(),
                format!("{} is not within 0 to 1", a.sample.value),
            );
        }
        if let Some(fields) = &a.fields {
            for (i, f) in fields.value.iter().enumerate() {
                if !ACCESS_LOG_FIELDS.contains(&f.as_str()) {
                    return self.invalid(
                        &fields.referenced,
                        format!("access_log.fields[{i}]"),
                        format!("no field {f:?} (fields: {})", ACCESS_LOG_FIELDS.join(", ")),
                    );
                }
            }
        }
        Ok(())
    }

    /// The `clusters` section; gives the cluster names, which listeners may name.
    fn validate_clusters(&self) -> Result<HashSet<&str>, ConfigError> {
        let mut clusters = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !clusters.insert(c.name.value.as_str()) {
                return self.invalid(
                    &c.name.referenced,
                    format!("clusters[{i}].name"),
                    format!("duplicate cluster name {:?}", c.name.value),
                );
            }
            self.validate_endpoints(i, c)?;
            let key = |k: &str| format!("clusters[{i}].{k}");
            if c.outlier.max_ejection_percent > 100 {
                return self.invalid(
                    &c.name.referenced,
                    key("outlier.max_ejection_percent"),
                    "give a share from 0 to 100",
                );
            }
            let l = &c.limits;
            if l.max_requests == 0 || l.max_pending == 0 || l.max_connections == 0 {
                return self.invalid(&c.name.referenced, key("limits"), "limits must be above 0");
            }
            if let Some(h) = &c.health_check {
                self.validate_health_check(i, c, h)?;
            }
            if let Some(t) = &c.tls {
                self.validate_client_tls(i, t, &c.name.referenced)?;
            }
        }
        Ok(clusters)
    }

    /// Cluster `i`'s endpoints: at least one, each an address it may reach, weighted
    /// 1 to 1000.
    fn validate_endpoints(&self, i: usize, c: &ClusterConfig) -> Result<(), ConfigError> {
        if c.endpoints.is_empty() {
            return self.invalid(
                &c.name.referenced,
                format!("clusters[{i}].endpoints"),
                "a cluster needs at least one endpoint",
            );
        }
        for (j, e) in c.endpoints.iter().enumerate() {
            let parsed = parse_endpoint(e.value.address());
            let checked = parsed.and_then(|a| {
                dns_name(&a, e.value.is_dns())?;
                literal_allowed(&a, c.allow_link_local)
            });
            if let Err(why) = checked {
                return self.invalid(&e.referenced, format!("clusters[{i}].endpoints[{j}]"), why);
            }
            if !(1..=1000).contains(&e.value.weight()) {
                return self.invalid(
                    &e.referenced,
                    format!("clusters[{i}].endpoints[{j}].weight"),
                    format!("{} is not within 1 to 1000", e.value.weight()),
                );
            }
        }
        Ok(())
    }

    /// Cluster `i`'s health check: a request path, non-zero times and thresholds.
    fn validate_health_check(
        &self,
        i: usize,
        c: &ClusterConfig,
        h: &HealthCheckConfig,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("clusters[{i}].{k}");
        if !h.path.starts_with('/') || h.path.bytes().any(|b| !b.is_ascii_graphic()) {
            return self.invalid(
                &c.name.referenced,
                key("health_check.path"),
                format!("{:?} is not a path starting with /", h.path),
            );
        }
        if h.interval.0.is_zero() || h.timeout.0.is_zero() {
            return self.invalid(
                &c.name.referenced,
                key("health_check"),
                "interval and timeout must be above 0",
            );
        }
        if h.unhealthy_threshold == 0 || h.healthy_threshold == 0 {
            return self.invalid(
                &c.name.referenced,
                key("health_check"),
                "thresholds must be at least 1",
            );
        }
        Ok(())
    }

    /// The listeners: unique names and addresses, known protocols and clusters, and
    /// each one's filter chain.
    fn validate_listeners(&self, clusters: &HashSet<&str>) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if !names.insert(l.name.value.as_str()) {
                return self.invalid(
                    &l.name.referenced,
                    self.listener_key(i, ".name"),
                    format!("duplicate listener name {:?}", l.name.value),
                );
            }
            if l.address.value.parse::<std::net::SocketAddr>().is_err() {
                return self.invalid(
                    &l.address.referenced,
                    self.listener_key(i, ".address"),
                    format!("{:?} is not ip:port", l.address.value),
                );
            }
            if !l.address.value.ends_with(":0") && !addrs.insert(l.address.value.as_str()) {
                return self.invalid(
                    &l.address.referenced,
                    self.listener_key(i, ".address"),
                    format!("{} is used by another listener", l.address.value),
                );
            }
            if let Some(list) = &l.upgrades
                && let Some(why) = list.value.iter().find_map(|p| bad_upgrade(p))
            {
                return self.invalid(&list.referenced, self.listener_key(i, ".upgrades"), why);
            }
            if let Some(d) = &l.default_cluster
                && !clusters.contains(d.value.as_str())
            {
                return self.invalid(
                    &d.referenced,
                    self.listener_key(i, ".default_cluster"),
                    format!("no cluster named {:?}", d.value),
                );
            }
            if let Some(t) = &l.tls {
                self.validate_server_tls(i, t, &l.name.referenced)?;
            }
            self.validate_filters(i, l)?;
            if let Some(c) = &l.capture {
                self.validate_capture(i, c, clusters)?;
            }
        }
        Ok(())
    }

    /// Listener `i`'s filter chain: unique names, and each filter's module, metrics
    /// and checksum.
    fn validate_filters(&self, i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        let mut filter_names = HashSet::new();
        for (j, f) in l.filters.iter().enumerate() {
            if !filter_names.insert(f.name.value.as_str()) {
                return self.invalid(
                    &f.name.referenced,
                    self.listener_key(i, &format!(".filters[{j}].name")),
                    format!("duplicate filter name {:?} in this chain", f.name.value),
                );
            }
            self.validate_module(i, j, f)?;
            if let Some(why) = bad_filter_metrics(&f.metrics) {
                return self.invalid(
                    &f.name.referenced,
                    self.listener_key(i, &format!(".filters[{j}].metrics")),
                    why,
                );
            }
            if let Some(sha) = &f.sha256
                && (sha.value.len() != 64 || !sha.value.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return self.invalid(
                    &sha.referenced,
                    self.listener_key(i, &format!(".filters[{j}].sha256")),
                    "expected 64 hex digits",
                );
            }
        }
        Ok(())
    }

    /// Filter `j` of listener `i` names a module this kind of file may name: a mesh
    /// config only pushed filters (that were pushed), a proxy's own file only paths and
    /// built-ins.
    fn validate_module(&self, i: usize, j: usize, f: &FilterConfig) -> Result<(), ConfigError> {
        let module_key = || self.listener_key(i, &format!(".filters[{j}].module"));
        match (ModuleRef::parse(&f.module.value), self.mesh_group.is_some()) {
            (Err(msg), _) => self.invalid(&f.module.referenced, module_key(), msg),
            (Ok(ModuleRef::File(_)), true) => self.invalid(
                &f.module.referenced,
                module_key(),
                "a mesh config cannot name files: push the module with \
                 `weft push FILE --name NAME` and use filter:NAME",
            ),
            (Ok(ModuleRef::Pushed(_)), false) => self.invalid(
                &f.module.referenced,
                module_key(),
                "filter:NAME names a filter pushed to a config server; \
                 a proxy's own file uses a path or builtin:NAME",
            ),
            (Ok(ModuleRef::Pushed(name)), true) if f.sha256.is_none() => self.invalid(
                &f.module.referenced,
                module_key(),
                format!("no filter was pushed under the name {name:?}"),
            ),
            _ => Ok(()),
        }
    }

    /// The `admin` section's address.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin
            && admin.address.value.parse::<std::net::SocketAddr>().is_err()
        {
            return self.invalid(
                &admin.address.referenced,
                "admin.address".into(),
                format!("{:?} is not ip:port", admin.address.value),
            );
        }
        Ok(())
    }

    /// Where a filter's module comes from, with relative paths resolved against the
    /// configuration file's folder.
    pub fn module_source(&self, filter: &FilterConfig) -> ModuleRef {
        match ModuleRef::parse(&filter.module.value) {
            Ok(ModuleRef::File(p)) if p.is_relative() => match &self.base_dir {
                Some(base) => ModuleRef::File(base.join(p)),
                None => ModuleRef::File(p),
            },
            Ok(m) => m,
            // validate() has ruled this out; keep the text so the loader's error names it.
            Err(_) => ModuleRef::File(PathBuf::from(&filter.module.value)),
        }
    }

    /// The sha256 (lower-case hex) of every pushed module (`filter:NAME`) the
    /// listeners load, each once.
    pub fn pushed_modules(&self) -> std::collections::BTreeSet<String> {
        self.listeners
            .iter()
            .flat_map(|l| &l.filters)
            .filter(|f| matches!(ModuleRef::parse(&f.module.value), Ok(ModuleRef::Pushed(_))))
            .filter_map(|f| f.sha256.as_ref().map(|s| s.value.to_ascii_lowercase()))
            .collect()
    }

    /// Every pushed filter (`filter:NAME`) the listeners load, by name, with the
    /// sha256 (lower-case hex) of the module that runs for it; a name whose listeners
    /// pin several versions lists them all, sorted and separated by commas.
    pub fn pushed_filters(&self) -> std::collections::BTreeMap<String, String> {
        let mut by_name: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            std::collections::BTreeMap::new();
        for f in self.listeners.iter().flat_map(|l| &l.filters) {
            if let (Ok(ModuleRef::Pushed(name)), Some(sha)) =
                (ModuleRef::parse(&f.module.value), &f.sha256)
            {
                by_name
                    .entry(name)
                    .or_default()
                    .insert(sha.value.to_ascii_lowercase());
            }
        }
        by_name
            .into_iter()
            .map(|(name, shas)| (name, shas.into_iter().collect::<Vec<_>>().join(",")))
            .collect()
    }

    /// Describe where a key of this file is, for errors found after validation (for
    /// example when a filter rejects its configuration).
    pub fn locate(&self, at: &Location) -> String {
        format!("{}:{}:{}", self.file, at.line(), at.column())
    }
}

impl ClusterConfig {
    /// A cluster named `name` of the one endpoint `endpoint`, every other key at its
    /// default: what an inbound capture listener makes for a port no cluster names.
    pub fn of_endpoint(name: &str, endpoint: std::net::SocketAddr) -> Result<Self, ConfigError> {
        parse_yaml(
            &format!("name: {name:?}\nendpoints: [\"{endpoint}\"]\n"),
            "<capture>",
        )
    }
}

/// Deserialize YAML, with errors that say where.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ConfigError::Syntax {
            file: file.to_owned(),
            line,
            column,
            message: tidy_yaml_error(&e.to_string(), file),
        }
    })
}

/// Parse an endpoint, `host:port`, into the authority the proxy connects to. The one
/// parser of endpoints: what validation accepts is exactly what the proxy serves.
///
/// The host is an IPv4 address, a bracketed IPv6 address or a DNS name (letters,
/// digits, `-`, `_` and `.`); the port is 1 to 65535.
pub fn parse_endpoint(s: &str) -> Result<http::uri::Authority, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{s:?}: the port must be 1 to 65535")),
        Ok(_) => {}
    }
    if host.starts_with('[') {
        if !is_bracketed_ipv6(host) {
            return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
        }
    } else {
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !host.starts_with(['.', '-'])
            && !host.contains("..");
        if !name_ok {
            return Err(format!(
                "{s:?}: {host:?} is not an IP address or a DNS name"
            ));
        }
    }
    s.parse::<http::uri::Authority>()
        .map_err(|e| format!("{s:?} is not host:port: {e}"))
}

/// An address as the kernel reports a connection's: an IPv4 address written as
/// IPv4-mapped IPv6 (`[::ffff:10.0.0.1]:80`) is the IPv4 one. Capture listeners look
/// original destinations up by it.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// For a `dns:` endpoint, its name must be a name, not an IP address: there is
/// nothing to follow.
fn dns_name(authority: &http::uri::Authority, dns: bool) -> Result<(), String> {
    if dns
        && authority
            .host()
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
    {
        return Err(format!(
            "{authority:?}: a dns endpoint names a DNS name; give an IP address as `address`"
        ));
    }
    Ok(())
}

/// Why an address may not be an endpoint: the unspecified address (it reaches this
/// host's own listeners), broadcast and multicast; link-local ones (cloud metadata at
/// `169.254.169.254`) unless the cluster allows them. One rule for written endpoints
/// and for the addresses a `dns:` name resolves to.
pub fn endpoint_ip_refused(ip: std::net::IpAddr, allow_link_local: bool) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Some("the unspecified address is not an endpoint");
    }
    if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Some("a multicast or broadcast address is not an endpoint");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    (link_local && !allow_link_local).then_some(
        "link-local addresses (cloud metadata) are refused unless the cluster sets \
         allow_link_local: true",
    )
}

/// A written endpoint that is an IP address must be one [`endpoint_ip_refused`] allows.
fn literal_allowed(authority: &http::uri::Authority, allow_link_local: bool) -> Result<(), String> {
    let host = authority.host().trim_matches(['[', ']']);
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => match endpoint_ip_refused(ip, allow_link_local) {
            Some(why) => Err(format!("{authority:?}: {why}")),
            None => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// Whether `s` is an IPv6 address in brackets (`[::1]`), as URIs and `Host` write one.
pub fn is_bracketed_ipv6(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Whether a listener bound to `bound` answers a request for `host` (its `Host` or
/// `:authority`, port allowed). One bound to a loopback address answers only hosts a
/// web page cannot rebind to it: IP addresses, `localhost`, and the names in
/// `allowed`; one bound elsewhere answers any host. A request without a host (HTTP/1.0)
/// comes from no browser and is answered.
pub fn host_allowed(bound: std::net::IpAddr, host: Option<&str>, allowed: &[String]) -> bool {
    if !bound.is_loopback() {
        return true;
    }
    let Some(host) = host else {
        return true;
    };
    let name = match host.find(']') {
        Some(end) if host.starts_with('[') => return is_bracketed_ipv6(&host[..=end]),
        _ => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Why a filter's `metrics` settings cannot be used, if they cannot: its own prefix
/// must not pass for the proxy's names, and its series must be bounded and expire.
fn bad_filter_metrics(m: &FilterMetricsConfig) -> Option<String> {
    let prefix_ok = m.prefix.is_empty()
        || (m.prefix.len() <= 50
            && m.prefix.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit())
            })
            && (!m.prefix.starts_with("weft_") || m.prefix == "weft_filter_"));
    if !prefix_ok {
        Some(format!(
            "metrics.prefix {:?} must match [a-z_][a-z0-9_]* (at most 50 bytes) and \
             not start with weft_ (the proxy's own names), except weft_filter_",
            m.prefix
        ))
    } else if !(1..=100_000).contains(&m.max_series) {
        Some("metrics.max_series must be within 1 to 100000".to_owned())
    } else if m.expire_after.0.is_zero() {
        Some("metrics.expire_after must be above 0".to_owned())
    } else {
        None
    }
}

/// Why a listener may not pass upgrades to `protocol`, if it may not.
fn bad_upgrade(protocol: &str) -> Option<String> {
    let name = protocol.split('/').next().unwrap_or(protocol);
    if name.eq_ignore_ascii_case("h2c") {
        return Some(
            "h2c cannot be passed: the proxy serves HTTP/2 cleartext itself, and a tunnel \
             would carry requests past every filter"
                .to_owned(),
        );
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let ok = match protocol.split_once('/') {
        Some((n, v)) => token(n) && token(v),
        None => token(protocol),
    };
    (!ok).then(|| format!("{protocol:?} is not a protocol name (a token, optionally /version)"))
}

/// A module reference: a built-in filter, a pushed filter or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleRef {
    /// `builtin:NAME`, embedded in the binary.
    Builtin(String),
    /// `filter:NAME`, pushed to the config server; the filter's `sha256` says which
    /// version.
    Pushed(String),
    /// A path to a `.wasm` component.
    File(PathBuf),
}

impl ModuleRef {
    /// Parse `builtin:NAME`, `filter:NAME` or a path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("builtin:") {
            if name.is_empty() {
                return Err("`builtin:` needs a filter name, e.g. builtin:router".into());
            }
            return Ok(Self::Builtin(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix("filter:") {
            if name.is_empty() {
                return Err("`filter:` needs the name a filter was pushed under".into());
            }
            return Ok(Self::Pushed(name.to_owned()));
        }
        if s.is_empty() {
            return Err("empty module reference".into());
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

/// serde-saphyr's message may end with its own " at line X column Y"; ours already
/// says where.
/// The parser's message, said once: the location leads the error already, so the
/// parser's own `error: line 3 column 14:` goes, and its snippet names the file
/// rather than `<input>`.
fn tidy_yaml_error(msg: &str, file: &str) -> String {
    let msg = msg.trim();
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    let msg = match msg.strip_prefix("line ").and_then(|rest| {
        let (_, after) = rest.split_once(" column ")?;
        let (col, after) = after.split_once(": ")?;
        col.bytes().all(|b| b.is_ascii_digit()).then_some(after)
    }) {
        Some(rest) => rest,
        None => msg,
    };
    strip_location(&msg.replace("--> <input>:", &format!("--> {file}:")))
}

fn strip_location(msg: &str) -> String {
    let msg = msg.trim();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests;
