//! DNS discovery: a cluster's `dns:` names are resolved when the cluster starts and
//! again when their answers' TTL runs out (within `min_refresh` and `max_refresh`);
//! every address is an endpoint. A failed lookup keeps the last answer and is tried
//! again sooner; a name that no longer exists (NXDOMAIN, no records) has no
//! endpoints. An answer is checked as a written endpoint is: no unspecified,
//! broadcast or multicast address, no link-local one unless the cluster allows it,
//! and at most `dns.max_addresses` of them; what is left out is logged once per name.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::Notify;
use weft_config::DnsConfig;

use super::Cluster;

/// A cluster's resolver and its refresh bounds.
pub(super) struct Dns {
    resolver: TokioResolver,
    min: Duration,
    max: Duration,
    /// The most addresses a name becomes endpoints for.
    max_addresses: usize,
    /// The cluster takes link-local addresses.
    allow_link_local: bool,
    /// Resolve now: the names changed, or the cluster is gone.
    pub(super) wake: Notify,
    /// Every name has had its first lookup.
    answered: AtomicBool,
    answers: Notify,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver asking `config.servers`, or the system's name servers when none
    /// are given.
    pub(super) fn new(config: &DnsConfig, allow_link_local: bool) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|s| {
                    let addr: SocketAddr = s
                        .value
                        .parse()
                        .map_err(|_| format!("{:?} is not ip:port", s.value))?;
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    Ok(NameServerConfig::new(addr.ip(), true, connections))
                })
                .collect::<Result<Vec<_>, String>>()?;
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                provider,
            )
        };
        // Each refresh asks the servers; the resolver's own cache only shares an
        // answer between names within its TTL.
        builder.options_mut().cache_size = 64;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"))?;
        Ok(Self {
            resolver,
            min: config.min_refresh.value.0,
            max: config.max_refresh.value.0,
            max_addresses: config.max_addresses.value,
            allow_link_local,
            wake: Notify::new(),
            answered: AtomicBool::new(false),
            answers: Notify::new(),
        })
    }

    /// Wait (at most `limit`) until every name has had its first lookup.
    pub(super) async fn first_answer(&self, limit: Duration) {
        let answered = self.answers.notified();
        if self.answered.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(limit, answered).await;
    }

    /// Look `name` up: its addresses (sorted, checked, capped) and how long they
    /// hold, `Ok(None)` when the name has no addresses, or why the lookup failed.
    async fn lookup(&self, name: &str) -> Result<Option<Answer>, String> {
        match self.resolver.lookup_ip(name).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = found.iter().collect();
                ips.sort_unstable();
                ips.dedup();
                let mut refused = Vec::new();
                ips.retain(|ip| {
                    let why = weft_config::endpoint_ip_refused(*ip, self.allow_link_local);
                    if let Some(why) = why
                        && refused.len() < 4
                    {
                        refused.push(format!("{ip}: {why}"));
                    }
                    why.is_none()
                });
                let dropped = ips.len().saturating_sub(self.max_addresses);
                ips.truncate(self.max_addresses);
                let ttl = found
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                Ok(Some(Answer {
                    ips,
                    ttl,
                    refused,
                    dropped,
                }))
            }
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a lookup found.
struct Answer {
    /// The addresses that become endpoints.
    ips: Vec<IpAddr>,
    /// How long they hold.
    ttl: Duration,
    /// Addresses refused, with why (the first few).
    refused: Vec<String>,
    /// Addresses past `max_addresses`, left out.
    dropped: usize,
}

/// Follow a cluster's names until the cluster is gone.
pub(super) async fn run(cluster: Weak<Cluster>, dns: Arc<Dns>) {
    let mut failures = 0u32;
    // Names whose answers were cut or refused in part, logged once each.
    let mut told: HashSet<String> = HashSet::new();
    loop {
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let names = c.lock_sources().names();
        drop(c);
        let mut next = dns.max;
        let mut answers = Vec::with_capacity(names.len());
        let mut failed = false;
        for name in names {
            match dns.lookup(name.host()).await {
                Ok(Some(answer)) => {
                    next = next.min(answer.ttl);
                    if (!answer.refused.is_empty() || answer.dropped > 0)
                        && told.len() < 1024
                        && told.insert(name.to_string())
                    {
                        tracing::warn!(
                            %name,
                            refused = ?answer.refused,
                            left_out = answer.dropped,
                            max_addresses = dns.max_addresses,
                            "DNS answer not taken whole (logged once per name)"
                        );
                    }
                    answers.push((name, answer.ips));
                }
                Ok(None) => {
                    tracing::warn!(%name, "DNS name has no addresses");
                    answers.push((name, Vec::new()));
                }
                Err(e) => {
                    tracing::warn!(%name, "cannot resolve: {e}; its last addresses stay");
                    failed = true;
                }
            }
        }
        let Some(c) = cluster.upgrade() else {
            return;
        };
        {
            let mut sources = c.lock_sources();
            let names = sources.names();
            sources.resolved.retain(|name, _| names.contains(name));
            for (name, ips) in answers {
                if names.contains(&name) {
                    sources.resolved.insert(name, ips);
                }
            }
        }
        c.rebuild();
        drop(c);
        if !dns.answered.swap(true, Ordering::AcqRel) {
            dns.answers.notify_waiters();
        }
        // A failed lookup is tried again sooner, backing off while it keeps failing.
        if failed {
            failures = failures.saturating_add(1);
            next = next.min(dns.min.saturating_mul(1 << failures.min(5)));
        } else {
            failures = 0;
        }
        let wait = next.clamp(dns.min, dns.max);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = dns.wake.notified() => {}
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Ends the discovery task now rather than after its sleep.
        if let Some(dns) = &self.dns {
            dns.wake.notify_one();
        }
    }
}
