//! The proxy's workload certificate, from the config server's CA.
//!
//! 1. At start, the certificate kept in the state folder (`identity.pem`, its key
//!    `identity-key.pem`, the trust bundle `identity-bundle.pem`; all 0600) is
//!    installed if it has not expired, so a restarted proxy serves mutual TLS
//!    before the server answers, or while it cannot.
//! 2. Once a live mesh config has an `identity` section (or
//!    [`crate::Options::identity`] says so from the start), the agent makes a new
//!    ECDSA P-256 key, sends a certificate signing request with `Certify` (the
//!    proxy token, and the node and instance secret of its `Subscribe` stream),
//!    installs what it gets with [`weft_proxy::Identity::install_pem`], and keeps
//!    it in the state folder. A proxy restarted with a kept certificate renews at
//!    once.
//! 3. It renews at about half the certificate's remaining life (45% to 55%, drawn
//!    each time, so a fleet started together does not renew together), with a new
//!    key each time. While the server cannot be reached or refuses, it retries
//!    with backoff, and the proxy keeps serving with the certificate it has: new
//!    handshakes take a new one as soon as it is installed, open connections keep
//!    theirs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use weft_api::{CertifyRequest, ControlClient};
use weft_proxy::Identity;

use crate::cache;

/// The kept certificate chain, key and trust bundle in the state folder.
const CHAIN_FILE: &str = "identity.pem";
const KEY_FILE: &str = "identity-key.pem";
const BUNDLE_FILE: &str = "identity-bundle.pem";

/// Largest kept file read: a chain or a bundle of a few certificates.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// How long one `Certify` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Renew after this share of the remaining life, give or take [`JITTER`].
const RENEW_AT: f64 = 0.5;
const JITTER: f64 = 0.05;

/// A failure said once is said again after this long if it lasts.
const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// Where the renewer gets its certificates, and with what.
pub(crate) struct Settings<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) server: &'a str,
    pub(crate) authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    pub(crate) node: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) state_dir: Option<&'a Path>,
    pub(crate) wanted: bool,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// The running renewer: tell it when a certificate is wanted and when the stream
/// is up; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Renewal {
    state: watch::Sender<Wanted>,
    task: JoinHandle<()>,
    certificate: watch::Receiver<Option<Arc<Certificate>>>,
}

/// The workload certificate installed last (kept or issued), as PEM: the agent
/// presents it to an https:// config server, and connects again when it changes.
pub(crate) struct Certificate {
    pub(crate) chain: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every log.
        f.debug_struct("Certificate").finish_non_exhaustive()
    }
}

/// Whether a certificate is wanted, and whether a `Subscribe` stream is up (the
/// server certifies only a proxy it knows).
#[derive(Clone, Copy, Debug, Default)]
struct Wanted {
    wanted: bool,
    subscribed: bool,
}

impl Renewal {
    /// A mesh config the proxy applied asks for identities (`identity` section)
    /// or not. Once wanted, certificates are renewed for as long as the agent
    /// runs: listeners of an older configuration may still present one.
    pub(crate) fn want(&self, wanted: bool) {
        if wanted {
            (self.state).send_if_modified(|s| !std::mem::replace(&mut s.wanted, true));
        }
    }

    /// A `Subscribe` stream is up: the server knows this proxy now.
    pub(crate) fn subscribed(&self) {
        (self.state).send_if_modified(|s| !std::mem::replace(&mut s.subscribed, true));
    }

    /// The certificate installed last, and each one installed after it.
    pub(crate) fn certificate(&self) -> watch::Receiver<Option<Arc<Certificate>>> {
        self.certificate.clone()
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Install the kept certificate, if any is still good, and start renewing in the
/// background once a certificate is wanted.
pub(crate) async fn start(identity: Identity, settings: Settings<'_>) -> Renewal {
    let kept = settings.state_dir.map(|d| Kept { dir: d.to_owned() });
    let (certificate_tx, certificate) = watch::channel(None);
    if let Some(kept) = kept.clone() {
        let installed = identity.clone();
        // Reads files: off the workers serving requests.
        let restored = tokio::task::spawn_blocking(move || kept.restore(&installed)).await;
        if let Ok(Some((id, pem))) = restored {
            tracing::info!(
                identity = &*id,
                "serving with the kept workload certificate"
            );
            certificate_tx.send_replace(Some(Arc::new(pem)));
        }
    }
    let (state, state_rx) = watch::channel(Wanted {
        wanted: settings.wanted,
        subscribed: false,
    });
    let renewer = Renewer {
        identity,
        client: ControlClient::new(settings.endpoint.connect_lazy()),
        server: settings.server.to_owned(),
        authorization: settings.authorization,
        node: settings.node.to_owned(),
        instance: settings.instance.to_owned(),
        kept,
        min_backoff: settings.min_backoff,
        max_backoff: settings.max_backoff,
        warned: None,
        certificate: certificate_tx,
    };
    Renewal {
        state,
        task: tokio::spawn(renewer.run(state_rx)),
        certificate,
    }
}

/// The certificate kept in the state folder.
#[derive(Clone)]
struct Kept {
    dir: PathBuf,
}

impl Kept {
    /// Install the kept certificate; its SPIFFE ID and PEM if it was installed. One
    /// that expired, does not fit its key or chain to its bundle is left alone.
    fn restore(&self, identity: &Identity) -> Option<(Arc<str>, Certificate)> {
        let read = |name: &str| read_bounded(&self.dir.join(name));
        let files = (read(CHAIN_FILE), read(KEY_FILE), read(BUNDLE_FILE));
        let (chain, key, bundle) = match files {
            (Ok(c), Ok(k), Ok(b)) => (c, k, b),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.dir.display(), "cannot read the kept workload certificate: {e}");
                }
                return None;
            }
        };
        match identity.install_pem(&chain, &key, &bundle) {
            Ok(()) => identity
                .spiffe_id()
                .map(|id| (id, Certificate { chain, key })),
            Err(e) => {
                tracing::info!(
                    file = %self.dir.join(CHAIN_FILE).display(),
                    "not serving with the kept workload certificate: {e}"
                );
                None
            }
        }
    }

    /// Keep a certificate for the next start. The key first: a chain without its
    /// key is of no use; a key without its chain is just not restored.
    fn store(&self, chain: &str, key: &str, bundle: &str) -> Result<(), cache::CacheError> {
        // The certificate last: once it is there, so are its key and bundle.
        cache::write_atomic(&self.dir.join(KEY_FILE), key.as_bytes())?;
        cache::write_atomic(&self.dir.join(BUNDLE_FILE), bundle.as_bytes())?;
        cache::write_atomic(&self.dir.join(CHAIN_FILE), chain.as_bytes())
    }
}

/// A file no larger than any certificate file is.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than any certificate file",
        ));
    }
    Ok(bytes)
}

/// Gets and renews the workload certificate.
struct Renewer {
    identity: Identity,
    client: ControlClient<Channel>,
    server: String,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    node: String,
    instance: String,
    kept: Option<Kept>,
    min_backoff: Duration,
    max_backoff: Duration,
    /// The failure last said, and when.
    warned: Option<(String, tokio::time::Instant)>,
    /// Where each certificate installed is told.
    certificate: watch::Sender<Option<Arc<Certificate>>>,
}

/// A certificate the server issued, installed.
struct Installed {
    id: String,
    not_after: SystemTime,
}

impl Renewer {
    /// Once wanted and subscribed, get a certificate, then renew it for ever: at
    /// about half its remaining life, or after a backoff when getting one failed.
    async fn run(mut self, mut state: watch::Receiver<Wanted>) {
        if state.wait_for(|s| s.wanted && s.subscribed).await.is_err() {
            return;
        }
        let mut backoff = self.min_backoff;
        loop {
            let wait = match self.renew().await {
                Ok(installed) => {
                    backoff = self.min_backoff;
                    self.warned = None;
                    let wait = renew_in(installed.not_after, SystemTime::now());
                    tracing::info!(
                        identity = installed.id,
                        renew_in_s = wait.as_secs(),
                        "workload certificate installed"
                    );
                    wait
                }
                Err(why) => {
                    self.warn(why);
                    // Full jitter, as the stream's reconnects: a fleet that lost the
                    // server does not come back at once.
                    let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                    backoff = (backoff * 2).min(self.max_backoff);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A new key, a certificate for it from the server, installed and kept.
    async fn renew(&mut self) -> Result<Installed, String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot make a key: {e}"))?;
        let mut params = CertificateParams::default();
        // The server names the certificate; the request only proves the key.
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("cannot make a certificate request: {e}"))?;
        let mut request = tonic::Request::new(CertifyRequest {
            csr: csr.der().to_vec(),
            node: self.node.clone(),
            instance: self.instance.clone(),
        });
        request.set_timeout(CALL_TIMEOUT);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let answer = match tokio::time::timeout(CALL_TIMEOUT, self.client.certify(request)).await {
            Ok(Ok(answer)) => answer.into_inner(),
            Ok(Err(status)) => return Err(self.refusal(&status)),
            Err(_) => {
                return Err(format!(
                    "{} did not answer within {CALL_TIMEOUT:?}",
                    self.server
                ));
            }
        };
        let key_pem = key.serialize_pem();
        (self.identity)
            .install_pem(
                answer.chain.as_bytes(),
                key_pem.as_bytes(),
                answer.bundle.as_bytes(),
            )
            .map_err(|e| format!("the certificate the config server issued is unusable: {e}"))?;
        self.certificate.send_replace(Some(Arc::new(Certificate {
            chain: answer.chain.clone().into_bytes(),
            key: key_pem.clone().into_bytes(),
        })));
        if let Some(kept) = self.kept.clone() {
            let stored = tokio::task::spawn_blocking(move || {
                kept.store(&answer.chain, &key_pem, &answer.bundle)
            })
            .await;
            let stored = stored
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = stored {
                // Serving goes on; only a restart without the server would miss it.
                tracing::warn!("cannot keep the workload certificate on disk: {e}");
            }
        }
        Ok(Installed {
            id: answer.identity,
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(answer.not_after),
        })
    }

    /// What a failed call means, in words an operator can act on.
    fn refusal(&self, status: &tonic::Status) -> String {
        if std::error::Error::source(status).is_some() {
            // The transport's own words are "transport error"; the OS's are below.
            return format!(
                "cannot reach {} for a workload certificate: {}",
                self.server,
                crate::error::reason(status)
            );
        }
        format!(
            "the config server refused a workload certificate ({:?}): {}",
            status.code(),
            status.message()
        )
    }

    /// Say why no certificate came, once for as long as the same failure repeats,
    /// with how long the installed one still serves.
    fn warn(&mut self, why: String) {
        let now = tokio::time::Instant::now();
        let again = self
            .warned
            .as_ref()
            .is_some_and(|(w, at)| *w == why && now.duration_since(*at) < REPEAT_WARNING);
        if again {
            tracing::debug!("{why}");
            return;
        }
        match self.identity.not_after() {
            Some(t) => tracing::warn!(
                expires = %humantime::format_rfc3339_seconds(t),
                "{why}; retrying, and serving with the installed certificate meanwhile"
            ),
            None => tracing::warn!("{why}; retrying"),
        }
        self.warned = Some((why, now));
    }
}

/// How long to wait before renewing a certificate valid until `not_after`: about
/// half its remaining life from `now`.
fn renew_in(not_after: SystemTime, now: SystemTime) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    left.mul_f64(RENEW_AT - JITTER + 2.0 * JITTER * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_at_about_half_its_remaining_life() {
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        for _ in 0..100 {
            let wait = renew_in(now + day, now);
            assert!(
                wait >= day.mul_f64(0.45) && wait <= day.mul_f64(0.55),
                "{wait:?}"
            );
        }
        assert_eq!(renew_in(now - day, now), Duration::ZERO);
    }
}
