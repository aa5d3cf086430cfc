//! One request to an `https://` config server: a TLS connection whose certificate
//! is verified against the CA given with `--ca` (the server's data folder keeps its
//! CA's as `ca.pem`), then HTTP/1.1 on it. Each command makes a request or a few, so
//! nothing is pooled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// The CA file for an https server: the one given, else `ca.pem` of a config
/// server's data folder on this machine (`WEFT_DATA_DIR`, then the default one).
pub(crate) fn ca_file(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(given) = given {
        return Ok(given.to_owned());
    }
    match crate::paths::token_files("ca.pem")
        .into_iter()
        .find(|f| f.is_file())
    {
        Some(found) => Ok(found),
        None => bail!(
            "an https:// config server needs the CA certificate that signed its certificate: \
             give it with --ca FILE or WEFT_CA (the server keeps its CA's as ca.pem in its \
             data folder)"
        ),
    }
}

/// Send `req` (with an absolute `https://` URI) on a new TLS connection verified
/// with the certificates in `ca`.
pub(crate) async fn send(
    mut req: Request<Full<Bytes>>,
    ca: &Path,
) -> anyhow::Result<Response<Incoming>> {
    let uri = req.uri().clone();
    let host = uri.host().context("the URL names no host")?;
    let port = uri.port_u16().unwrap_or(443);
    let connector = TlsConnector::from(Arc::new(client_config(ca)?));
    // A bracketed IPv6 literal is an address, not a name, to TLS.
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .with_context(|| format!("{host:?} is not a name TLS can verify"))?
        .to_owned();
    let tcp = tokio::net::TcpStream::connect((name.to_str().as_ref(), port))
        .await
        .context("cannot connect")?;
    let tls = connector.connect(name, tcp).await.with_context(|| {
        format!(
            "TLS with the server failed; is {} the CA that signed its certificate?",
            ca.display()
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection to the config server: {e}");
        }
    });
    // On a connection of its own, a request names its target by path, and the
    // server by the Host header.
    let authority = uri.authority().context("the URL names no host")?.clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = Uri::try_from(path)?;
    let host_value = header::HeaderValue::from_str(authority.as_str())?;
    req.headers_mut().insert(header::HOST, host_value);
    Ok(sender.send_request(req).await?)
}

/// Verify servers against the certificates in `ca`, and speak HTTP/1.1.
fn client_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<_> = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", ca.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", ca.display());
    }
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `weft config-server`'s TLS options.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Serve the API and the proxies' stream over TLS, with a certificate the
    /// server's CA issues at each start for localhost, 127.0.0.1, ::1, the --listen
    /// address and every --tls-name; clients verify it with the CA's certificate
    /// (ca.pem in the data folder, or --ca-cert) given as --ca.
    #[arg(long, conflicts_with = "tls_cert")]
    tls: bool,
    /// Another name clients reach the server by, for the certificate --tls issues:
    /// a DNS name or an IP address; repeatable.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    tls_names: Vec<String>,
    /// Serve TLS with this certificate chain (PEM, leaf first) instead, and --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Every proxy's stream must present a client certificate of the mesh CA that
    /// names the identity the mesh config gives that proxy, else it is refused
    /// (PERMISSION_DENIED); a proxy without one gets one with Certify, as `weft
    /// proxy` does by itself. Needs TLS.
    #[arg(long)]
    require_proxy_identity: bool,
}

impl ServeArgs {
    /// These options set in the server's.
    pub(crate) fn apply(self, options: &mut weft_config_server::Options) {
        use weft_config_server::ServingCert;
        options.tls = match (self.tls, self.tls_cert, self.tls_key) {
            (_, Some(cert), Some(key)) => Some(ServingCert::Files { cert, key }),
            (true, ..) => Some(ServingCert::Issued {
                names: self.tls_names,
            }),
            _ => None,
        };
        options.require_proxy_identity = self.require_proxy_identity;
    }
}
