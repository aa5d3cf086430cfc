//! Workload identities in a mesh config: the SPIFFE trust domain, how long the
//! config server's certificates last, and which SPIFFE ID each proxy is given.
//!
//! ```yaml
//! identity:
//!   trust_domain: bank.example
//!   certificate_ttl: 24h
//! proxies:
//!   - select: { service: trading }
//!     identity: spiffe://bank.example/ns/markets/sa/trading
//! ```
//!
//! A proxy of service `S` with labels `L` placed in group `G` is
//! `G.identity` when the group sets one, else
//! `spiffe://TRUST-DOMAIN/ns/L[namespace] or default/sa/S`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::MeshConfig;
use crate::spiffe::{self, SpiffeError};
use crate::{ConfigError, Duration};

/// The mesh's `identity` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshIdentity {
    /// The SPIFFE trust domain every proxy's identity is in, e.g. `bank.example`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: Spanned<String>,
    /// How long each workload certificate lasts (proxies renew at about half).
    #[serde(default = "default_ttl")]
    pub certificate_ttl: Spanned<Duration>,
}

impl MeshIdentity {
    /// The trust domain when the mesh names none.
    pub const DEFAULT_TRUST_DOMAIN: &str = "weft.local";

    /// How long certificates last when the mesh does not say: a day, renewed at
    /// half.
    pub const DEFAULT_CERTIFICATE_TTL: std::time::Duration =
        std::time::Duration::from_secs(24 * 3600);

    /// Shortest certificate lifetime: short enough for a test or a demo to watch a
    /// renewal, long enough that a proxy renewing at half-life does not hammer the
    /// CA.
    pub const MIN_CERTIFICATE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

    /// Longest certificate lifetime: a stolen key is good for at most this long.
    pub const MAX_CERTIFICATE_TTL: std::time::Duration =
        std::time::Duration::from_secs(30 * 24 * 3600);

    /// The label whose value is a proxy's namespace in its derived SPIFFE ID.
    pub const NAMESPACE_LABEL: &str = "namespace";
}

impl Default for MeshIdentity {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            certificate_ttl: default_ttl(),
        }
    }
}

fn default_trust_domain() -> Spanned<String> {
    Spanned::new(
        MeshIdentity::DEFAULT_TRUST_DOMAIN.to_owned(),
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

fn default_ttl() -> Spanned<Duration> {
    Spanned::new(
        Duration(MeshIdentity::DEFAULT_CERTIFICATE_TTL),
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

/// Why a proxy has no SPIFFE ID: the one made from its service and namespace
/// label is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{id:?}, made from the proxy's service and `namespace` label, is not a SPIFFE ID ({reason}); \
     rename them or give the proxy's group an `identity`"
)]
pub struct IdentityError {
    /// The ID as it was made.
    pub id: String,
    /// What is wrong with it.
    pub reason: SpiffeError,
}

impl MeshConfig {
    /// The trust domain of every proxy's identity
    /// ([`MeshIdentity::DEFAULT_TRUST_DOMAIN`] when the mesh has no `identity`
    /// section).
    pub fn trust_domain(&self) -> &str {
        self.identity
            .as_ref()
            .map_or(MeshIdentity::DEFAULT_TRUST_DOMAIN, |i| {
                &i.trust_domain.value
            })
    }

    /// How long each workload certificate lasts.
    pub fn certificate_ttl(&self) -> std::time::Duration {
        self.identity
            .as_ref()
            .map_or(MeshIdentity::DEFAULT_CERTIFICATE_TTL, |i| {
                i.certificate_ttl.value.0
            })
    }

    /// The SPIFFE ID of a proxy of `service` with `labels`, placed in `group` (none
    /// when no group selects it): the group's `identity`, else
    /// `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE` with the `namespace` label
    /// (`default` without one).
    pub fn identity(
        &self,
        group: Option<usize>,
        service: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, IdentityError> {
        if let Some(id) = group
            .and_then(|g| self.proxies.get(g))
            .and_then(|g| g.identity.as_ref())
        {
            // Checked when the mesh was validated.
            return Ok(id.value.clone());
        }
        let namespace = labels
            .get(MeshIdentity::NAMESPACE_LABEL)
            .map_or("default", String::as_str);
        let id = format!(
            "spiffe://{}/ns/{namespace}/sa/{service}",
            self.trust_domain()
        );
        // A service or namespace holding `/` would make a path of more segments:
        // another workload's name.
        let single = !service.contains('/') && !namespace.contains('/');
        match spiffe::check_id(&id) {
            Ok(()) if single => Ok(id),
            Ok(()) => Err(IdentityError {
                id,
                reason: SpiffeError::Path,
            }),
            Err(reason) => Err(IdentityError { id, reason }),
        }
    }

    /// The `identity` section and every group's `identity`.
    pub(super) fn validate_identity(&self) -> Result<(), ConfigError> {
        let invalid = |at: &Location, key: String, message: String| ConfigError::Invalid {
            file: self.file.clone(),
            line: at.line(),
            column: at.column(),
            key,
            message,
        };
        if let Some(i) = &self.identity {
            let td = &i.trust_domain;
            // A trust domain is valid exactly when an ID in it is.
            if let Err(e) = spiffe::check_id(&format!("spiffe://{}/x", td.value)) {
                let why = format!("{:?} is not a trust domain: {e}", td.value);
                return Err(invalid(&td.referenced, "identity.trust_domain".into(), why));
            }
            let ttl = &i.certificate_ttl;
            if !(MeshIdentity::MIN_CERTIFICATE_TTL..=MeshIdentity::MAX_CERTIFICATE_TTL)
                .contains(&ttl.value.0)
            {
                let why = format!(
                    "{:?} is not within {:?} to {} days",
                    ttl.value.0,
                    MeshIdentity::MIN_CERTIFICATE_TTL,
                    MeshIdentity::MAX_CERTIFICATE_TTL.as_secs() / 86400
                );
                return Err(invalid(
                    &ttl.referenced,
                    "identity.certificate_ttl".into(),
                    why,
                ));
            }
        }
        let td = self.trust_domain();
        for (g, group) in self.proxies.iter().enumerate() {
            let Some(id) = &group.identity else { continue };
            let key = format!("proxies[{g}].identity");
            if let Err(e) = spiffe::check_id(&id.value) {
                let why = format!("{:?} is not a SPIFFE ID: {e}", id.value);
                return Err(invalid(&id.referenced, key, why));
            }
            if spiffe::trust_domain(&id.value) != Some(td) {
                let why = format!(
                    "{:?} is not in the mesh's trust domain {td:?} (identity.trust_domain)",
                    id.value
                );
                return Err(invalid(&id.referenced, key, why));
            }
        }
        Ok(())
    }
}
