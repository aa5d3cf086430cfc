//! Workload certificates for proxies: the server's CA, and the `Certify` call.
//!
//! 1. At start, [`load_ca`] takes the CA from the files the operator gave
//!    (`--ca-cert`, `--ca-key`), else from the data folder, where the first start
//!    makes one; the trust bundle is its certificate plus the anchors of
//!    `--trust-bundle` (the old CA during a rotation).
//! 2. [`certify`] answers a proxy that asks for a certificate: only a proxy with a
//!    live `Subscribe` stream, under the same instance secret, gets one, and it
//!    names the SPIFFE ID the live mesh config gives that proxy's service and
//!    labels (see `weft_config::MeshConfig::identity`), for the mesh's
//!    `certificate_ttl`. What the request asks for besides its key is ignored.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Status;
use weft_api::{CertifyRequest, CertifyResponse};

use crate::ca::{Ca, CaError};
use crate::{Options, ServerError, Shared};

/// The name of a CA the server makes (its key id is appended).
const CA_NAME: &str = "Weft mesh CA";

/// Longest node id a request may name (as a Hello's).
const MAX_NODE_LEN: usize = 253;

/// Longest instance secret a request may carry (as a Hello's).
const MAX_INSTANCE_LEN: usize = 128;

/// The server's CA. Blocking: it reads and may write files.
pub(crate) fn load_ca(data_dir: &Path, opts: &Options) -> Result<Ca, ServerError> {
    let (mut ca, created) = match (&opts.ca_cert, &opts.ca_key) {
        (Some(cert), Some(key)) => (Ca::load(cert, key)?, false),
        (None, None) => Ca::load_or_create(data_dir, CA_NAME)?,
        (Some(given), None) | (None, Some(given)) => {
            return Err(ServerError::Ca(CaError::File {
                path: given.clone(),
                message: "give the CA's certificate and its key together (--ca-cert and \
                          --ca-key), or neither to use the data folder's CA"
                    .into(),
            }));
        }
    };
    if let Some(bundle) = &opts.trust_bundle {
        let added = ca.add_trust_anchors_file(bundle)?;
        tracing::info!(file = %bundle.display(), added, "extra trust anchors in the bundle");
    }
    if created {
        tracing::info!(
            cert = %data_dir.join(crate::ca::CA_CERT_FILE).display(),
            "made the mesh CA (its key beside it, 0600)"
        );
    }
    if ca.not_after() <= SystemTime::now() {
        tracing::error!(
            "the mesh CA has expired: no proxy gets a certificate until it is replaced"
        );
    }
    Ok(ca)
}

/// A certificate for the proxy whose live stream `request` names, if it is that
/// proxy that asks.
pub(crate) async fn certify(
    shared: &Shared,
    request: CertifyRequest,
    peer: Option<SocketAddr>,
) -> Result<CertifyResponse, Status> {
    let CertifyRequest {
        csr,
        node,
        instance,
    } = request;
    if node.is_empty() || node.len() > MAX_NODE_LEN || instance.len() > MAX_INSTANCE_LEN {
        return Err(Status::invalid_argument(format!(
            "CertifyRequest: node must be 1 to {MAX_NODE_LEN} bytes and instance at most \
             {MAX_INSTANCE_LEN}"
        )));
    }
    let refused = |status: Status| {
        tracing::warn!(?peer, node, "refused a certificate: {}", status.message());
        status
    };
    let (service, labels) = shared.proxies.live(&node, &instance).map_err(refused)?;
    let current = shared.snapshot().current.clone().ok_or_else(|| {
        refused(Status::failed_precondition(
            "no mesh config is applied yet: it names the trust domain and the lifetime",
        ))
    })?;
    let mesh = &current.mesh;
    let group = mesh.select(&service, &labels);
    let identity = mesh
        .identity(group, &service, &labels)
        .map_err(|e| refused(Status::failed_precondition(e.to_string())))?;
    let ttl = mesh.certificate_ttl();
    let ca = shared.ca.clone();
    let id = identity.clone();
    // Checking an RSA signature takes a while: not on the workers serving streams.
    let issued = tokio::task::spawn_blocking(move || ca.sign_csr(&csr, &id, ttl))
        .await
        .map_err(|e| Status::internal(format!("signing task: {e}")))?
        .map_err(|e| {
            refused(match e {
                CaError::Csr(_) | CaError::Name(_) => Status::invalid_argument(e.to_string()),
                CaError::Expired => Status::failed_precondition(e.to_string()),
                _ => Status::internal(e.to_string()),
            })
        })?;
    let not_after = issued
        .not_after
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tracing::info!(
        node,
        identity,
        not_after = %humantime::format_rfc3339_seconds(issued.not_after),
        serial = issued.serial,
        "certificate issued"
    );
    Ok(CertifyResponse {
        chain: issued.chain_pem,
        bundle: shared.ca.bundle_pem().to_owned(),
        identity,
        not_after,
    })
}

/// A CA for tests of what handlers do, made once per test binary.
#[cfg(test)]
pub(crate) fn test_ca() -> std::sync::Arc<Ca> {
    static CA: std::sync::OnceLock<std::sync::Arc<Ca>> = std::sync::OnceLock::new();
    CA.get_or_init(|| std::sync::Arc::new(Ca::generate("Test CA").expect("a CA is made")))
        .clone()
}
