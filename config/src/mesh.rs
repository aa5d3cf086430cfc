//! The mesh config: what the config server stores and pushes to every proxy.
//!
//! One YAML file describes the whole mesh: the clusters, and per group of proxies
//! (selected by service name and labels) the listeners with their filter chains.
//! Modules are `builtin:NAME` or `filter:NAME`, a filter pushed to the config server;
//! each snapshot resolves every `filter:NAME` to the sha256 of one pushed version.
//!
//! ```yaml
//! clusters:
//!   - name: web
//!     endpoints: ["127.0.0.1:8081"]
//! proxies:
//!   - select: { service: web, labels: { zone: a } }
//!     listeners:
//!       - name: inbound
//!         address: 127.0.0.1:15006
//!         default_cluster: web
//!         filters:
//!           - name: hello
//!             module: filter:hello
//! ```
//!
//! An optional `identity` section names the SPIFFE trust domain and how long the
//! config server's workload certificates last; a group may give its proxies an
//! `identity` of its own (see [`MeshConfig::identity`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

mod identity;
#[cfg(test)]
mod tests;

pub use identity::{IdentityError, MeshIdentity};

use crate::{
    AccessLogConfig, ClusterConfig, Config, ConfigError, DnsConfig, ListenerConfig, ModuleRef,
    ShutdownConfig, TracingConfig,
};

/// A whole mesh config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Clusters every proxy knows.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// How the proxies resolve `dns:` endpoints.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where every proxy exports spans; none: spans are not exported.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Every proxy's access log (a group may set its own); none: no access log.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Every proxy's shutdown (a group may set its own): drain delay and timeout.
    #[serde(default)]
    pub shutdown: Option<ShutdownConfig>,
    /// The proxies' workload identities (trust domain, certificate lifetime); none:
    /// `weft.local` and 24h, and proxies ask for a certificate only when told to.
    #[serde(default)]
    pub identity: Option<MeshIdentity>,
    /// Groups of proxies and what they serve; a proxy takes the first group that
    /// selects it.
    pub proxies: Vec<ProxyGroup>,
    /// The file this came from, for errors.
    #[serde(skip)]
    pub file: String,
}

/// The proxies a group applies to, and their listeners.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyGroup {
    /// Which proxies; `{}` selects all.
    pub select: Selector,
    /// Their listeners and filter chains.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Their access log, in place of the mesh's.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Their shutdown, in place of the mesh's.
    #[serde(default)]
    pub shutdown: Option<ShutdownConfig>,
    /// Their SPIFFE ID, in place of the one made from their service and namespace
    /// (in the mesh's trust domain).
    #[serde(default)]
    pub identity: Option<Spanned<String>>,
}

/// Selects proxies by the service they sit beside and their labels.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// The service name; any when omitted.
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    /// Labels a proxy must all carry, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether a proxy of `service` with `labels` is selected.
    pub fn matches(&self, service: &str, labels: &BTreeMap<String, String>) -> bool {
        self.service.as_ref().is_none_or(|s| s.value == service)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl MeshConfig {
    /// Parse mesh YAML; `file` names it in errors. [`MeshConfig::validate`] next.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut mesh: Self = crate::parse_yaml(text, file)?;
        mesh.file = file.to_owned();
        Ok(mesh)
    }

    /// The index of the first group that selects a proxy.
    pub fn select(&self, service: &str, labels: &BTreeMap<String, String>) -> Option<usize> {
        self.proxies
            .iter()
            .position(|g| g.select.matches(service, labels))
    }

    /// The configuration of the proxies of group `index`, with each `filter:NAME`
    /// resolved through `filters` (pushed name to sha256) unless the mesh pins a
    /// `sha256` itself. Validated; errors name the mesh file and its keys.
    pub fn proxy_config(
        &self,
        index: usize,
        filters: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let group = &self.proxies[index];
        let mut listeners = group.listeners.clone();
        for listener in &mut listeners {
            for f in &mut listener.filters {
                if let (Ok(ModuleRef::Pushed(name)), None) =
                    (ModuleRef::parse(&f.module.value), &f.sha256)
                    && let Some(sha) = filters.get(&name)
                {
                    f.sha256 = Some(Spanned::new(
                        sha.clone(),
                        f.module.referenced,
                        f.module.defined,
                    ));
                }
            }
        }
        let config = Config {
            admin: None,
            listeners,
            clusters: self.clusters.clone(),
            // A mesh's proxies get their identity from the config server's CA.
            identity: None,
            shutdown: (group.shutdown.as_ref().or(self.shutdown.as_ref()))
                .cloned()
                .unwrap_or_default(),
            dns: self.dns.clone(),
            tracing: self.tracing.clone(),
            access_log: group
                .access_log
                .as_ref()
                .or(self.access_log.as_ref())
                .cloned(),
            file: self.file.clone(),
            base_dir: None,
            mesh_group: Some(index),
        };
        config.validate()?;
        Ok(config)
    }

    /// Check the `identity` section and every group (see
    /// [`MeshConfig::proxy_config`]); returns their configurations, in group order.
    pub fn validate(&self, filters: &BTreeMap<String, String>) -> Result<Vec<Config>, ConfigError> {
        self.validate_identity()?;
        (0..self.proxies.len())
            .map(|i| self.proxy_config(i, filters))
            .collect()
    }
}
