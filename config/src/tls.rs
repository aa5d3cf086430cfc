//! TLS in the configuration: a listener's (terminate with one certificate or several
//! chosen by SNI, or mesh: mutual TLS with the workload identity, clear text too on
//! the same port), a cluster's (verify a server by its name, or mesh: present the
//! workload certificate and verify the server's SPIFFE ID), and the workload identity
//! itself (certificate, key and trust bundle, from files reloaded when they change).

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::units::Duration;
use crate::{Config, ConfigError, spiffe};

/// How a listener or a cluster speaks TLS.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Ordinary TLS: the listener shows its own certificates, the cluster verifies
    /// the server's name against a CA file.
    #[default]
    Terminate,
    /// Mutual TLS between mesh proxies, with the workload identity (`identity:` in
    /// the proxy's file, or the certificate the config server issued).
    Mesh,
}

/// Server-side TLS: `cert` and `key`, or `certificates` chosen by SNI, or
/// `mode: mesh`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// `terminate` (default) or `mesh`. A mesh listener presents the workload
    /// certificate, asks clients for theirs (verified against the trust bundle, their
    /// SPIFFE ID given to filters as the peer identity) and also serves clear text on
    /// the same port, told apart by the first byte: whether a request without a
    /// proven identity is served is the `encryption-policy` filter's call (STRICT or
    /// PERMISSIVE).
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM certificate chain.
    #[serde(default)]
    pub cert: Option<Spanned<PathBuf>>,
    /// PEM private key.
    #[serde(default)]
    pub key: Option<Spanned<PathBuf>>,
    /// Several certificates, chosen by the server name a client asks for.
    #[serde(default)]
    pub certificates: Vec<SniCertificate>,
}

/// One certificate of a listener that serves several names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// The names it serves (`api.example.com`, `*.example.com`); the DNS names in
    /// the certificate when omitted. The first certificate also answers clients that
    /// name no server or one no certificate serves.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// PEM certificate chain.
    pub cert: Spanned<PathBuf>,
    /// PEM private key.
    pub key: Spanned<PathBuf>,
}

/// Client-side TLS to a cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// `terminate` (default: verify the server's name against `ca`) or `mesh`
    /// (present the workload certificate, verify the server against the trust
    /// bundle and its SPIFFE ID against `identity`).
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the certificate authorities to trust (`terminate` only).
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// Server name to send and verify; the endpoint's host when omitted
    /// (`terminate` only).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The SPIFFE ID (or pattern: `spiffe://td/ns/banking/*`, `*`) the servers must
    /// prove (`mesh` only); any identity the trust bundle vouches for when omitted.
    #[serde(default)]
    pub identity: Option<Spanned<String>>,
}

/// The workload's identity from files: what a mesh listener and a mesh cluster
/// present, and the trust bundle they verify peers with. The files are read again
/// when they change (a rotated certificate serves new handshakes; open connections
/// keep theirs). Under a config server the proxy gets its certificate from the
/// server's CA instead, and this section is not needed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// PEM certificate chain, leaf first; the leaf carries the SPIFFE ID in its URI
    /// SAN.
    pub cert: Spanned<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Spanned<PathBuf>,
    /// PEM trust bundle: the mesh's CA certificates (two during an anchor rotation).
    pub bundle: Spanned<PathBuf>,
    /// How often the files are checked for a change.
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
}

fn default_poll() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

impl Config {
    /// Listener `i`'s TLS: one way to get a certificate, and sensible names.
    pub(crate) fn validate_server_tls(
        &self,
        i: usize,
        t: &ServerTlsConfig,
        at: &serde_saphyr::Location,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| self.listener_key(i, &format!(".tls{k}"));
        let single = t.cert.is_some() || t.key.is_some();
        match t.mode {
            TlsMode::Mesh if single || !t.certificates.is_empty() => {
                return self.invalid(
                    at,
                    key(""),
                    "a mesh listener presents the workload identity: drop cert, key and certificates",
                );
            }
            TlsMode::Mesh => {}
            TlsMode::Terminate if single && !t.certificates.is_empty() => {
                return self.invalid(at, key(""), "give cert and key, or certificates, not both");
            }
            TlsMode::Terminate if single && (t.cert.is_none() || t.key.is_none()) => {
                return self.invalid(at, key(""), "give both cert and key");
            }
            TlsMode::Terminate if !single && t.certificates.is_empty() => {
                return self.invalid(
                    at,
                    key(""),
                    "give cert and key, certificates (chosen by SNI), or mode: mesh",
                );
            }
            TlsMode::Terminate => {}
        }
        for (j, c) in t.certificates.iter().enumerate() {
            if let Some(bad) = c.server_names.iter().find(|n| !server_name_ok(n)) {
                return self.invalid(
                    &c.cert.referenced,
                    key(&format!(".certificates[{j}].server_names")),
                    format!("{bad:?} is not a DNS name (or *.name)"),
                );
            }
        }
        Ok(())
    }

    /// Cluster `i`'s TLS: a CA for ordinary TLS, an identity pattern for mesh.
    pub(crate) fn validate_client_tls(
        &self,
        i: usize,
        t: &ClientTlsConfig,
        at: &serde_saphyr::Location,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("clusters[{i}].tls{k}");
        match t.mode {
            TlsMode::Terminate if t.identity.is_some() => self.invalid(
                at,
                key(".identity"),
                "an identity is proven by mutual TLS: set mode: mesh",
            ),
            TlsMode::Terminate if t.ca.is_none() => {
                self.invalid(at, key(".ca"), "ordinary TLS needs the CA file to trust")
            }
            TlsMode::Mesh if t.ca.is_some() || t.server_name.is_some() => self.invalid(
                at,
                key(""),
                "a mesh cluster verifies servers against the workload's trust bundle and their SPIFFE ID: drop ca and server_name",
            ),
            _ => match &t.identity {
                Some(id) => match spiffe::check_pattern(&id.value) {
                    Ok(()) => Ok(()),
                    Err(e) => self.invalid(&id.referenced, key(".identity"), format!("{:?}: {e}", id.value)),
                },
                None => Ok(()),
            },
        }
    }

    /// The `identity` section: a sane poll interval.
    pub(crate) fn validate_identity(&self) -> Result<(), ConfigError> {
        let Some(id) = &self.identity else {
            return Ok(());
        };
        let poll = id.poll_interval.0;
        if poll < std::time::Duration::from_millis(100)
            || poll > std::time::Duration::from_secs(3600)
        {
            return self.invalid(
                &id.cert.referenced,
                "identity.poll_interval".into(),
                "must be within 100ms to 1h",
            );
        }
        Ok(())
    }
}

/// A DNS name, or `*.` and one: what SNI can ask for.
fn server_name_ok(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
