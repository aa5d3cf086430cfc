//! The control plane over TLS, and the identity a proxy's stream must prove.
//!
//! 1. With [`crate::Options::tls`], the one port serves the HTTP API and the
//!    proxies' gRPC stream over TLS (h2 and http/1.1 by ALPN). The serving
//!    certificate is the operator's ([`ServingCert::Files`]), or one the server's
//!    own CA issues at each start ([`ServingCert::Issued`]) for `localhost`,
//!    `127.0.0.1`, `::1`, the address it listens on and the names given; clients
//!    verify it with the CA's certificate, `ca.pem` in the data folder.
//! 2. A client may present a certificate. One that does not chain to the mesh
//!    trust bundle fails the handshake; one that does has its SPIFFE ID (URI SAN)
//!    go with every request of the connection, as [`Proven`].
//! 3. With [`crate::Options::require_proxy_identity`], a Subscribe stream must have
//!    proven the identity the live mesh config gives the proxy its Hello describes
//!    (`MeshConfig::identity`, from its service and labels), else it gets
//!    PERMISSION_DENIED and nothing else. Its node stays registered for
//!    [`CERTIFY_WINDOW`] all the same: a proxy without a certificate yet, or with
//!    one for another group, gets one with `Certify` (the proxy token, and the node
//!    and instance secret of that stream), then subscribes again presenting it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use weft_api::Hello;
use weft_config::spiffe;

use crate::ca::Ca;
use crate::registry::Registered;
use crate::{Options, ServerError, Shared};

/// How long an issued serving certificate lasts (never past the CA's own
/// expiry); the server issues a new one at each start.
const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a stream refused for its identity keeps its node registered, for the
/// proxy to get a certificate with `Certify` (which needs the node's stream).
pub(crate) const CERTIFY_WINDOW: Duration = Duration::from_secs(30);

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingCert {
    /// Issued by the server's own CA at each start, for `localhost`, `127.0.0.1`,
    /// `::1`, the address the server listens on (unless it is 0.0.0.0 or ::), and
    /// these names: DNS names or IP addresses.
    Issued {
        /// More names clients reach the server by.
        names: Vec<String>,
    },
    /// The operator's certificate: a PEM chain (leaf first) and its PEM private key.
    Files {
        /// The chain.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
}

/// The SPIFFE ID a connection's client proved with a certificate the mesh trust
/// bundle vouches for; none when it sent none. Set on every request of a TLS
/// connection.
#[derive(Clone, Debug)]
pub(crate) struct Proven(pub Option<Arc<str>>);

/// The acceptor the options ask for: none for plain text. Blocking: it may read
/// files and sign.
pub(crate) fn serving(opts: &Options, ca: &Ca) -> Result<Option<TlsAcceptor>, ServerError> {
    match &opts.tls {
        Some(serving) => acceptor(serving, opts.listen, ca).map(Some),
        // Proxies would prove their identity to no one: a certificate is only
        // checked in a TLS handshake.
        None if opts.require_proxy_identity => Err(tls_error(
            "requiring proxy identities needs TLS: serve it (--tls, or --tls-cert and \
             --tls-key)"
                .to_owned(),
        )),
        None => Ok(None),
    }
}

/// The acceptor for `serving`, verifying client certificates against the CA's
/// trust bundle. Blocking: it may read files and sign.
fn acceptor(
    serving: &ServingCert,
    listen: SocketAddr,
    ca: &Ca,
) -> Result<TlsAcceptor, ServerError> {
    let (chain, key) = match serving {
        ServingCert::Files { cert, key } => (read_chain(cert)?, read_key(key)?),
        ServingCert::Issued { names } => {
            let (dns, ips) = serving_names(names, listen);
            let issued = ca
                .issue_server(&dns, &ips, SERVING_TTL)
                .map_err(|e| tls_error(format!("issuing the serving certificate: {e}")))?;
            let chain = certs(issued.issued.chain_pem.as_bytes())
                .map_err(|e| tls_error(format!("the issued certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                .map_err(|e| tls_error(format!("the issued key: {e}")))?;
            tracing::info!(dns = dns.join(","), ips = ?ips, "serving certificate issued by the mesh CA");
            (chain, key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let anchors = certs(ca.bundle_pem().as_bytes())
        .map_err(|e| tls_error(format!("the trust bundle: {e}")))?;
    for anchor in anchors {
        (roots.add(anchor)).map_err(|e| tls_error(format!("the trust bundle: {e}")))?;
    }
    // Operators (the API) and proxies asking for their first certificate come
    // without one; who must prove an identity is decided per call.
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error(format!("the trust bundle: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(format!("the serving certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The DNS names and IP addresses an issued serving certificate names.
fn serving_names(names: &[String], listen: SocketAddr) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec!["localhost".to_owned()];
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if !listen.ip().is_unspecified() {
        ips.push(listen.ip());
    }
    for name in names {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(name.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
    dns.dedup();
    ips.sort();
    ips.dedup();
    (dns, ips)
}

fn tls_error(message: String) -> ServerError {
    ServerError::Tls(message)
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = crate::ca::read_pem_file(path).map_err(|e| tls_error(e.to_string()))?;
    certs(pem.as_bytes()).map_err(|e| tls_error(format!("{}: {e}", path.display())))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerError> {
    let pem = crate::ca::read_pem_file(path).map_err(|e| tls_error(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| tls_error(format!("{}: not a PEM private key: {e}", path.display())))
}

/// The SPIFFE ID in the URI SAN of a verified client chain's leaf.
pub(crate) fn proven(certs: Option<&[CertificateDer<'_>]>) -> Proven {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let id = certs.and_then(|c| c.first()).and_then(|leaf| {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) if spiffe::check_id(uri).is_ok() => Some(Arc::from(*uri)),
            _ => None,
        })
    });
    Proven(id)
}

/// Let a registered stream through, or, when the server requires proxies to
/// prove their identity and this one does not, refuse it (PERMISSION_DENIED) and
/// keep its node registered for [`CERTIFY_WINDOW`] so it can get a certificate.
pub(crate) fn admit(
    shared: &Arc<Shared>,
    hello: &Hello,
    proven: Option<&Proven>,
    registered: Registered,
) -> Result<Registered, Status> {
    let Err(why) = check(shared, hello, proven) else {
        return Ok(registered);
    };
    tracing::warn!(node = hello.node, "refused a proxy stream: {why}");
    let (shared, node) = (shared.clone(), hello.node.clone());
    tokio::spawn(async move {
        let Registered { stream, replaced } = registered;
        let mut stop = shared.stop.clone();
        tokio::select! {
            // The proxy came back, presenting a certificate or not.
            _ = replaced => {}
            () = tokio::time::sleep(CERTIFY_WINDOW) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        shared.proxies.disconnect(&node, stream, false);
    });
    Err(Status::permission_denied(why))
}

/// Why a stream does not prove the identity its proxy must, if it does not.
fn check(shared: &Shared, hello: &Hello, proven: Option<&Proven>) -> Result<(), String> {
    if !shared.require_proxy_identity {
        return Ok(());
    }
    let how = "get one with Certify (weft proxy does, by itself) and present it";
    let Some(proved) = proven.and_then(|p| p.0.as_deref()) else {
        return Err(format!(
            "this server requires proxies to prove their identity with a client \
             certificate of the mesh CA, and this stream has none; {how}"
        ));
    };
    let published = shared.snapshot();
    let Some(current) = &published.current else {
        return Err(
            "no mesh config is applied yet: it gives each proxy the identity it must prove"
                .to_owned(),
        );
    };
    let mesh = &current.mesh;
    let group = mesh.select(&hello.service, &hello.labels);
    let wanted = mesh
        .identity(group, &hello.service, &hello.labels)
        .map_err(|e| e.to_string())?;
    if proved == wanted {
        return Ok(());
    }
    Err(format!(
        "the client certificate proves {proved}, but the live mesh config gives a proxy \
         of service {:?} with labels {:?} the identity {wanted}; {how}",
        hello.service, hello.labels
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_serving_certificate_names_this_machine_and_the_names_given() {
        let listen: SocketAddr = "10.0.0.5:7070".parse().unwrap();
        let (dns, ips) = serving_names(&["Config.Internal.".into(), "192.0.2.7".into()], listen);
        assert_eq!(dns, ["localhost", "config.internal"]);
        let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.0.5", "127.0.0.1", "192.0.2.7", "::1"]);
        let (_, ips) = serving_names(&[], "0.0.0.0:7070".parse().unwrap());
        assert_eq!(ips.len(), 2, "{ips:?}");
    }

    #[test]
    fn the_proven_identity_is_the_leafs_spiffe_id() {
        let ca = Ca::generate("Test CA").unwrap();
        let issued = ca
            .issue_workload(
                "spiffe://weft.local/ns/default/sa/web",
                &[],
                &[],
                Duration::from_secs(60),
            )
            .unwrap();
        let chain = certs(issued.issued.chain_pem.as_bytes()).unwrap();
        let id = proven(Some(&chain)).0;
        assert_eq!(id.as_deref(), Some("spiffe://weft.local/ns/default/sa/web"));
        assert!(proven(None).0.is_none());
        let server = ca
            .issue_server(&["localhost".into()], &[], Duration::from_secs(60))
            .unwrap();
        let chain = certs(server.issued.chain_pem.as_bytes()).unwrap();
        assert!(
            proven(Some(&chain)).0.is_none(),
            "no SPIFFE ID, no identity"
        );
    }
}
