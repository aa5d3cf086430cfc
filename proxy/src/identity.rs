//! The workload identity: the certificate (with its SPIFFE ID), key and trust bundle
//! that mesh listeners and mesh clusters present and verify peers with.
//!
//! One [`Identity`] per proxy, shared by every listener and cluster and kept across
//! reloads. What is installed is swapped whole: rustls asks for it at each handshake
//! (through the resolvers and verifiers here), so new handshakes use a rotated
//! certificate or bundle at once while open connections keep the one they agreed on.
//! It comes from files (`identity:` in the proxy's file, checked for changes every
//! `poll_interval`) or from the config server's CA (the agent installs what it is
//! issued).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use weft_config::spiffe;

use crate::tls::{TlsError, provider};

/// The workload's certificate, key and trust bundle, swapped whole. Cheap to clone.
#[derive(Clone, Default)]
pub struct Identity {
    current: Arc<ArcSwapOption<Material>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id())
            .finish()
    }
}

/// What one installation holds, checked and ready for handshakes.
struct Material {
    key: Arc<CertifiedKey>,
    id: Arc<str>,
    not_after: SystemTime,
    roots: Arc<RootCertStore>,
    /// Verifies clients against `roots`; a client without a certificate is let
    /// through (a filter decides whether it must prove one).
    clients: Arc<dyn ClientCertVerifier>,
}

impl Identity {
    /// Install a PEM certificate chain (leaf first, its SPIFFE ID in the URI SAN),
    /// its PEM private key and the PEM trust bundle. The leaf must chain to the
    /// bundle and match the key. New handshakes use them; open connections keep
    /// theirs. On error nothing changes.
    pub fn install_pem(&self, chain: &[u8], key: &[u8], bundle: &[u8]) -> Result<(), TlsError> {
        self.set(Material::from_pem(chain, key, bundle)?);
        Ok(())
    }

    fn set(&self, material: Material) {
        tracing::info!(
            identity = &*material.id,
            expires_in_s = material
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            "workload certificate installed"
        );
        self.current.store(Some(Arc::new(material)));
    }

    /// The SPIFFE ID of the installed certificate.
    pub fn spiffe_id(&self) -> Option<Arc<str>> {
        self.current.load().as_ref().map(|m| m.id.clone())
    }

    /// When the installed certificate expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current.load().as_ref().map(|m| m.not_after)
    }

    /// Whether a certificate is installed.
    pub fn is_set(&self) -> bool {
        self.current.load().is_some()
    }
}

impl Material {
    fn from_pem(chain: &[u8], key: &[u8], bundle: &[u8]) -> Result<Self, TlsError> {
        let chain = pem_certs(chain, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError::new("private key", format!("cannot read: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in pem_certs(bundle, "trust bundle")? {
            roots.add(cert).map_err(|e| {
                TlsError::new("trust bundle", format!("unusable CA certificate: {e}"))
            })?;
        }
        let provider = provider();
        let key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| TlsError::new("certificate", format!("does not fit the key: {e}")))?;
        let leaf = &key.cert[0];
        let (id, not_after) = leaf_facts(leaf)?;
        let parsed = ParsedCertificate::try_from(leaf)
            .map_err(|e| TlsError::new("certificate", e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &key.cert[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            TlsError::new(
                "certificate",
                format!("not vouched for by the trust bundle: {e}"),
            )
        })?;
        let roots = Arc::new(roots);
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::new("trust bundle", e.to_string()))?;
        Ok(Self {
            key: Arc::new(key),
            id: Arc::from(id),
            not_after,
            roots,
            clients,
        })
    }
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(what, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(what, "no certificate in it"));
    }
    Ok(certs)
}

/// The SPIFFE ID (the URI SAN) and expiry of a workload certificate.
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(String, SystemTime), TlsError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| TlsError::new("certificate", format!("cannot parse: {e}")))?;
    let id = spiffe_id_in(&cert).ok_or_else(|| {
        TlsError::new("certificate", "no SPIFFE ID (spiffe://...) in its URI SAN")
    })?;
    let secs = cert.validity().not_after.timestamp().max(0) as u64;
    Ok((id, SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
}

fn spiffe_id_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if spiffe::check_id(uri).is_ok() => Some((*uri).to_owned()),
        _ => None,
    })
}

/// The SPIFFE ID a peer proved with its certificate chain (verified by rustls
/// before this is asked).
pub(crate) fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(certs?.first()?).ok()?;
    spiffe_id_in(&cert)
}

/// A mesh listener's server config: the workload certificate, clients asked for
/// theirs (optional: see `identity::Clients`).
pub(crate) fn mesh_server_config(
    identity: &Identity,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("tls", e))?
        .with_client_cert_verifier(Arc::new(Clients(identity.clone())))
        .with_cert_resolver(Arc::new(ServerCert(identity.clone())));
    crate::tls::offer_h2_and_http1(&mut config);
    Ok(Arc::new(config))
}

/// A mesh cluster's client config: the workload certificate, servers verified
/// against the trust bundle and their SPIFFE ID against `expected`.
pub(crate) fn mesh_client_config(
    identity: &Identity,
    expected: Option<&str>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let servers = Servers {
        identity: identity.clone(),
        expected: expected.map(Box::from),
        provider: provider.clone(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("tls", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(servers))
        .with_client_cert_resolver(Arc::new(ClientCert(identity.clone()))))
}

/// Presents the installed certificate on a mesh listener.
#[derive(Debug)]
pub(crate) struct ServerCert(pub(crate) Identity);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().as_ref().map(|m| m.key.clone())
    }
}

/// Presents the installed certificate to a mesh cluster's servers.
#[derive(Debug)]
pub(crate) struct ClientCert(pub(crate) Identity);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().as_ref().map(|m| m.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.is_set()
    }
}

/// Verifies a mesh listener's clients against the installed trust bundle. A client
/// may send no certificate; one that sends a certificate the bundle does not vouch
/// for is refused.
#[derive(Debug)]
pub(crate) struct Clients(pub(crate) Identity);

impl Clients {
    fn with<T>(
        &self,
        f: impl FnOnce(&dyn ClientCertVerifier) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        match self.0.current.load().as_ref() {
            Some(m) => f(&*m.clients),
            None => Err(rustls::Error::General(
                "no workload identity installed".into(),
            )),
        }
    }
}

impl ClientCertVerifier for Clients {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would tie this verifier to one bundle; clients have one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.with(|v| v.verify_client_cert(end_entity, intermediates, now))?;
        match peer_id(Some(std::slice::from_ref(end_entity))) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(rustls::Error::General(
                "the client certificate has no SPIFFE ID".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies a mesh cluster's servers: a chain the installed bundle vouches for,
/// whose leaf carries a SPIFFE ID matching `expected` (any when `None`). The name
/// the proxy dialled plays no part: a workload certificate names a workload, not a
/// host.
#[derive(Debug)]
pub(crate) struct Servers {
    pub(crate) identity: Identity,
    pub(crate) expected: Option<Box<str>>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Servers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let guard = self.identity.current.load();
        let Some(m) = guard.as_ref() else {
            return Err(rustls::Error::General(
                "no workload identity installed".into(),
            ));
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &m.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let Some(id) = peer_id(Some(std::slice::from_ref(end_entity))) else {
            return Err(rustls::Error::General(
                "the server certificate has no SPIFFE ID".into(),
            ));
        };
        match &self.expected {
            Some(p) if !spiffe::matches(p, &id) => Err(rustls::Error::General(format!(
                "the server proved {id}, not {p}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where the identity's files are, and how often to look at them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Files {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) bundle: PathBuf,
    pub(crate) poll: Duration,
}

impl Files {
    /// What the files are now (modification time and length of each), to tell a
    /// change; `None` if one cannot be read.
    fn stamp(&self) -> Option<Stamp> {
        let one = |p: &PathBuf| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Some([one(&self.cert)?, one(&self.key)?, one(&self.bundle)?])
    }

    /// Read the three files and check what they hold.
    pub(crate) fn load(self) -> Result<Loaded, TlsError> {
        let stamp = self.stamp();
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| TlsError::new(&p.display().to_string(), format!("cannot read: {e}")))
        };
        let (chain, key, bundle) = (read(&self.cert)?, read(&self.key)?, read(&self.bundle)?);
        let material = Material::from_pem(&chain, &key, &bundle).map_err(|e| {
            // Name the file at fault rather than its part.
            let file = match e.path.as_str() {
                "private key" => &self.key,
                "trust bundle" => &self.bundle,
                _ => &self.cert,
            };
            TlsError::new(&file.display().to_string(), e.message)
        })?;
        Ok(Loaded {
            files: self,
            material,
            stamp,
        })
    }

    /// Install the files again whenever they change, until the task is aborted. A
    /// change that does not load (a half-written rotation) is said once and retried
    /// at the next change; the last good certificate keeps serving.
    fn watch(self, mut seen: Option<Stamp>, identity: Identity) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = self.stamp();
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                match self.clone().load() {
                    Ok(loaded) => identity.set(loaded.material),
                    Err(e) => {
                        tracing::warn!(
                            "workload identity not reloaded, the last one serves on: {e}"
                        );
                    }
                }
            }
        })
    }
}

/// The modification time and length of each of the three files.
type Stamp = [(SystemTime, u64); 3];

/// Identity files read and checked, not installed yet.
pub(crate) struct Loaded {
    files: Files,
    material: Material,
    stamp: Option<Stamp>,
}

/// The task that watches the identity files.
pub(crate) struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Install what a configuration loaded, and watch its files (stop watching
    /// when it names none: the identity then stays until something installs
    /// another, such as the agent with the config server's certificate).
    pub(crate) fn apply(
        watch: &std::sync::Mutex<Option<Watch>>,
        loaded: Option<Loaded>,
        identity: &Identity,
    ) {
        let mut watch = watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = watch.take() {
            old.task.abort();
        }
        let Some(Loaded {
            files,
            material,
            stamp,
        }) = loaded
        else {
            return;
        };
        identity.set(material);
        let task = files.watch(stamp, identity.clone());
        *watch = Some(Watch { task });
    }
}
