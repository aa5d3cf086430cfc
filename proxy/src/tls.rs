//! TLS settings, with ALPN so HTTP/2 is negotiated where both sides speak it:
//! listeners that show their own certificates (one, or several chosen by SNI) and
//! clusters that verify a server by its name. Mutual TLS with the workload identity
//! builds on these in `identity`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// TLS material that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file (or part) at fault.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(path: &str, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

fn err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::new(&path.display().to_string(), message)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "no certificate in this file"));
    }
    Ok(certs)
}

/// The crypto provider every TLS config uses: made once, as it is asked for at
/// each handshake's signature check.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// What a listener's server config offers: h2 first, then http/1.1.
pub(crate) fn offer_h2_and_http1(config: &mut rustls::ServerConfig) {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
}

/// One certificate a listener shows, and the names it serves (none: the names in
/// the certificate).
pub struct Shown<'a> {
    /// The names it serves.
    pub names: &'a [String],
    /// PEM certificate chain.
    pub cert: &'a Path,
    /// PEM private key.
    pub key: &'a Path,
}

/// A server config showing `shown`: the certificate whose names match the server
/// name a client asks for, else the first.
pub fn server_config(shown: &[Shown<'_>]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let mut resolver = Sni::default();
    for s in shown {
        let chain = certs(s.cert)?;
        let key = PrivateKeyDer::from_pem_file(s.key)
            .map_err(|e| err(s.key, format!("cannot read private key: {e}")))?;
        let names = match s.names.is_empty() {
            true => dns_names(&chain[0]).map_err(|e| err(s.cert, e))?,
            false => s.names.to_vec(),
        };
        let key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| err(s.cert, format!("certificate and key do not fit: {e}")))?;
        resolver.add(names, Arc::new(key));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("tls", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    offer_h2_and_http1(&mut config);
    Ok(Arc::new(config))
}

/// A client config trusting the CAs in `ca`.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| err(ca, format!("unusable CA certificate: {e}")))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(ca, e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The DNS names in a certificate's SAN.
fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("cannot parse: {e}"))?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect())
}

/// Picks a certificate by the server name a client asks for: exact names first,
/// then `*.suffix` (one label), else the first certificate.
#[derive(Debug, Default)]
struct Sni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    first: Option<Arc<CertifiedKey>>,
}

impl Sni {
    fn add(&mut self, names: Vec<String>, key: Arc<CertifiedKey>) {
        for name in names {
            let name = name.to_ascii_lowercase();
            let map = match name.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_owned()),
                None => self.exact.entry(name),
            };
            // The first certificate to name a server serves it.
            map.or_insert_with(|| key.clone());
        }
        self.first.get_or_insert(key);
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let chosen = name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, suffix) = name.split_once('.')?;
                self.wildcard.get(suffix)
            })
        });
        chosen.or(self.first.as_ref()).cloned()
    }
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
