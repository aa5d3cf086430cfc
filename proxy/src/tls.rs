//! TLS settings from PEM files, with ALPN so HTTP/2 is negotiated where both sides
//! speak it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS material that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
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

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config offering h2 and http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("cannot read private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err(cert, format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
