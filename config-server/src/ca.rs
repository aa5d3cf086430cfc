//! The mesh's certificate authority: it signs each proxy's workload certificate
//! (its SPIFFE ID in the URI SAN) and hands out the trust bundle proxies verify
//! each other with. `weft certs` makes development certificates with it, and it
//! can issue a serving certificate (DNS and IP names) for the control plane.
//!
//! 1. [`Ca::load_or_create`] reads `ca.pem` and `ca-key.pem` (0600) from a
//!    folder, making an ECDSA P-256 CA there on first use; [`Ca::load`] reads a CA
//!    the operator made (its key PKCS#8 PEM, its certificate first in its file,
//!    then any intermediates up to the root).
//! 2. [`Ca::add_trust_anchors`] adds CA certificates to the bundle: during a
//!    trust-anchor rotation the bundle holds the old CA and the new one, so
//!    proxies accept certificates from either.
//! 3. [`Ca::sign_csr`] issues a workload certificate for a PKCS#10 request whose
//!    signature checks, with the SPIFFE ID the caller decides (the names the
//!    request asks for are ignored); [`Ca::issue_workload`] and
//!    [`Ca::issue_server`] make the key too.
//!
//! Every certificate is valid from a minute before it is made (clocks differ)
//! until its lifetime is over, and never past the CA's own expiry; each has a
//! random 128-bit serial.
//!
//! ```no_run
//! # fn run(csr_der: &[u8]) -> Result<(), weft_config_server::ca::CaError> {
//! use std::time::Duration;
//! let (ca, _created) = weft_config_server::ca::Ca::load_or_create(
//!     "/var/lib/weft".as_ref(),
//!     "Weft mesh CA",
//! )?;
//! let issued = ca.sign_csr(csr_der, "spiffe://bank.example/ns/default/sa/web", Duration::from_secs(3600))?;
//! println!("{}{}", issued.chain_pem, ca.bundle_pem());
//! # Ok(()) }
//! ```

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::store::write_atomic;

/// The CA's certificate in its folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key in its folder (0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How long a CA this module makes is valid: ten years, since replacing it means
/// a trust-anchor rotation across the mesh.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Largest CSR read, in bytes: an RSA-8192 request is about 2.3 KiB.
pub const MAX_CSR_SIZE: usize = 8 << 10;

/// Largest certificate or key file read, in bytes: a CA with a long chain, or a
/// bundle of a few anchors, is a few KiB.
pub const MAX_PEM_FILE_SIZE: u64 = 1 << 20;

/// How long before its making a certificate is valid, for peers whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(60);

/// Smallest and largest RSA key a CSR may carry, in bits: below 2048 is weak,
/// above 8192 rustls will not verify.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Why a CA could not be loaded or made, or a certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A certificate signing request is refused: it does not parse, its signature
    /// does not check, its key is not one Weft accepts, or it is too large.
    #[error("certificate signing request refused: {0}")]
    Csr(String),
    /// A name to put in a certificate is not one.
    #[error("{0}")]
    Name(String),
    /// The CA can issue nothing: it has expired.
    #[error("the CA certificate expired; make or give a new one (see docs/identity.md)")]
    Expired,
    /// Making a key or signing failed.
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM chain, leaf first, then the CA's intermediates (none for a root CA).
    pub chain_pem: String,
    /// When the leaf expires (whole seconds, as written in it).
    pub not_after: SystemTime,
    /// The leaf's serial number, hex.
    pub serial: String,
}

/// A certificate the CA issued with a key it made.
#[derive(Clone)]
pub struct IssuedKey {
    /// The certificate.
    pub issued: Issued,
    /// Its private key, PKCS#8 PEM: keep it 0600.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every log and panic message.
        f.debug_struct("IssuedKey")
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// A certificate authority: its key, its certificate and the bundle it hands out.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    cert_pem: String,
    /// What follows a leaf in a chain: the CA's certificate and those above it,
    /// when the CA is not itself a root; empty when it is.
    intermediates_pem: String,
    /// The CA's certificate and the other trust anchors, PEM.
    bundle_pem: String,
    /// The DER of every certificate in the bundle, to leave out duplicates.
    bundle_der: Vec<Vec<u8>>,
    not_after: SystemTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("anchors", &self.bundle_der.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed ECDSA P-256 CA named `name` (with its key's id appended,
    /// so that the old and new CA of a rotation have different names).
    pub fn generate(name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let key_id = hex::encode(&Sha256::digest(key.der_bytes())[..8]);
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Weft");
        (params.distinguished_name).push(DnType::CommonName, format!("{name} {key_id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem(), Path::new(CA_CERT_FILE))
    }

    /// A CA from its PEM certificate file (the CA's certificate first, then any
    /// intermediates up to the root) and its PEM private key (PKCS#8); `origin`
    /// names the certificate file in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: &Path) -> Result<Self, CaError> {
        let bad = |message: String| CaError::File {
            path: origin.to_owned(),
            message,
        };
        let certs = pem_certificates(cert_pem).map_err(bad)?;
        let ca_der = certs[0].clone();
        let (_, ca) = X509Certificate::from_der(&ca_der)
            .map_err(|e| bad(format!("cannot parse the CA certificate: {e}")))?;
        if !ca.is_ca() {
            return Err(bad(
                "the first certificate is not a CA's (basicConstraints CA:TRUE)".into(),
            ));
        }
        let not_after = unix(ca.validity().not_after.timestamp());
        let root = ca.subject() == ca.issuer() && ca.verify_signature(None).is_ok();
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            bad(format!(
                "the CA key is not a PKCS#8 PEM private key rcgen can use: {e}"
            ))
        })?;
        if key.subject_public_key_info() != ca.public_key().raw {
            return Err(bad("the CA key is not the key of the CA certificate".into()));
        }
        let cert_pem = to_pem(&certs[..1]);
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| bad(format!("cannot use the CA certificate: {e}")))?;
        let intermediates_pem = if root { String::new() } else { to_pem(&certs) };
        let mut this = Self {
            issuer,
            key_pem: key_pem.to_owned(),
            cert_pem,
            intermediates_pem,
            bundle_pem: String::new(),
            bundle_der: Vec::new(),
            not_after,
        };
        this.push_anchor(ca_der);
        Ok(this)
    }

    /// The CA in `cert` and `key`, files the operator made.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let cert_pem = read_pem_file(cert)?;
        let key_pem = read_pem_file(key)?;
        Self::from_pem(&cert_pem, &key_pem, cert)
    }

    /// The CA kept in `dir` ([`CA_CERT_FILE`], [`CA_KEY_FILE`]), else a new one
    /// named `name`, written there first; says whether it was made now. A folder
    /// with one of the two files and not the other is an error: a lone key or
    /// certificate is never replaced.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<(Self, bool), CaError> {
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        match (cert.try_exists(), key.try_exists()) {
            (Ok(true), Ok(true)) => return Ok((Self::load(&cert, &key)?, false)),
            (Ok(false), Ok(false)) => {}
            (Err(source), _) => return Err(CaError::Io { path: cert, source }),
            (_, Err(source)) => return Err(CaError::Io { path: key, source }),
            (Ok(has_cert), Ok(_)) => {
                let (there, missing) = if has_cert {
                    (&cert, &key)
                } else {
                    (&key, &cert)
                };
                return Err(CaError::File {
                    path: there.clone(),
                    message: format!(
                        "{} is missing: restore it, or move this file away to make a new CA",
                        missing.display()
                    ),
                });
            }
        }
        let ca = Self::generate(name)?;
        // The key first: a certificate without its key would be useless.
        write_pem(dir, CA_KEY_FILE, &ca.key_pem, true)?;
        write_pem(dir, CA_CERT_FILE, &ca.cert_pem, false)?;
        Ok((ca, true))
    }

    /// Add the CA certificates in `pem` (from `origin`) to the trust bundle; one
    /// already there is not added twice. Returns how many were added.
    pub fn add_trust_anchors(&mut self, pem: &str, origin: &Path) -> Result<usize, CaError> {
        let bad = |message: String| CaError::File {
            path: origin.to_owned(),
            message,
        };
        let certs = pem_certificates(pem).map_err(bad)?;
        let mut added = 0;
        for (i, der) in certs.into_iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|e| bad(format!("certificate {}: cannot parse: {e}", i + 1)))?;
            if !cert.is_ca() {
                return Err(bad(format!(
                    "certificate {} ({}) is not a CA's: a trust bundle holds CA certificates only",
                    i + 1,
                    cert.subject()
                )));
            }
            added += usize::from(self.push_anchor(der));
        }
        Ok(added)
    }

    /// Add the anchors in the file `path` (see [`Ca::add_trust_anchors`]).
    pub fn add_trust_anchors_file(&mut self, path: &Path) -> Result<usize, CaError> {
        let pem = read_pem_file(path)?;
        self.add_trust_anchors(&pem, path)
    }

    fn push_anchor(&mut self, der: Vec<u8>) -> bool {
        if self.bundle_der.contains(&der) {
            return false;
        }
        self.bundle_pem
            .push_str(&to_pem(std::slice::from_ref(&der)));
        self.bundle_der.push(der);
        true
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The trust bundle: the CA's certificate, then the other anchors, PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// When the CA's certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A workload certificate for the key of the PKCS#10 request `csr_der`, naming
    /// `spiffe_id` alone (no DNS name; the names the request asks for are
    /// ignored), for `ttl`. The request must be at most [`MAX_CSR_SIZE`] bytes,
    /// signed by its own key, and that key ECDSA P-256, Ed25519 or RSA of 2048 to
    /// 8192 bits.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        spiffe_id: &str,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let key = csr_public_key(csr_der)?;
        let mut params = workload_params(spiffe_id)?;
        if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            // An RSA key may be used to encrypt a TLS 1.2 premaster secret.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        self.sign(params, &key, ttl)
    }

    /// A workload certificate and a new ECDSA P-256 key for `spiffe_id`, with
    /// `dns_names` and `ips` too (so that ordinary TLS clients can verify it as a
    /// server by name), for `ttl`.
    pub fn issue_workload(
        &self,
        spiffe_id: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedKey, CaError> {
        let mut params = workload_params(spiffe_id)?;
        params.subject_alt_names.extend(host_names(dns_names, ips)?);
        self.issue_with_key(params, ttl)
    }

    /// A serving certificate and a new ECDSA P-256 key for `dns_names` and `ips`
    /// (at least one), for `ttl`: for a server TLS clients verify by name, such as
    /// the config server.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedKey, CaError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(CaError::Name(
                "a serving certificate needs at least one DNS name or IP address".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let cn = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(IpAddr::to_string));
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = host_names(dns_names, ips)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_with_key(params, ttl)
    }

    fn issue_with_key(
        &self,
        params: CertificateParams,
        ttl: Duration,
    ) -> Result<IssuedKey, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let issued = self.sign(params, &key, ttl)?;
        Ok(IssuedKey {
            issued,
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign `params` for `key`: valid from a minute ago for `ttl`, but never past
    /// the CA's own expiry; a random serial.
    fn sign(
        &self,
        mut params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let now = SystemTime::now();
        if self.not_after <= now {
            return Err(CaError::Expired);
        }
        // Whole seconds: that is what the certificate can say, and what is told.
        let not_after = unix(whole_secs(now + ttl).min(whole_secs(self.not_after)));
        let serial = serial()?;
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.intermediates_pem),
            not_after,
            serial: hex::encode(serial.to_bytes()),
        })
    }
}

/// What every workload certificate says: `spiffe_id` as its only URI SAN and an
/// empty subject (the SAN is then critical), usable by a TLS client and server,
/// not a CA.
fn workload_params(spiffe_id: &str) -> Result<CertificateParams, CaError> {
    weft_config::spiffe::check_id(spiffe_id)
        .map_err(|e| CaError::Name(format!("{spiffe_id:?} is not a SPIFFE ID: {e}")))?;
    let uri = spiffe_id
        .to_owned()
        .try_into()
        .map_err(|e| CaError::Name(format!("{spiffe_id:?}: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// DNS and IP SANs.
fn host_names(dns_names: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, CaError> {
    let mut names = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').enumerate().all(|(i, label)| {
                // A wildcard only as the whole first label.
                (i == 0 && label == "*")
                    || (!label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            });
        if !valid {
            return Err(CaError::Name(format!("{name:?} is not a DNS name")));
        }
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|e| CaError::Name(format!("{name:?}: {e}")))?;
        names.push(SanType::DnsName(ia5));
    }
    names.extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(names)
}

/// The public key of a CSR whose signature checks, if it is one Weft accepts.
fn csr_public_key(der: &[u8]) -> Result<SubjectPublicKeyInfo, CaError> {
    let refuse = |why: String| CaError::Csr(why);
    if der.len() > MAX_CSR_SIZE {
        return Err(refuse(format!(
            "{} bytes; at most {MAX_CSR_SIZE}",
            der.len()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| refuse(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(refuse("bytes after the request".into()));
    }
    // Proof that the requester holds the key the certificate will name.
    csr.verify_signature()
        .map_err(|e| refuse(format!("its signature does not check: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm;
    let parsed = spki
        .parsed()
        .map_err(|e| refuse(format!("cannot read its public key: {e}")))?;
    let accepted = match parsed {
        PublicKey::EC(_) if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY => alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256),
        PublicKey::RSA(rsa) if alg.algorithm == OID_PKCS1_RSAENCRYPTION => {
            RSA_BITS.contains(&bit_length(rsa.modulus))
        }
        _ => alg.algorithm == OID_SIG_ED25519,
    };
    if !accepted {
        return Err(refuse(
            "its key must be ECDSA P-256, Ed25519, or RSA of 2048 to 8192 bits".into(),
        ));
    }
    SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| refuse(format!("cannot use its public key: {e}")))
}

/// How many bits a big-endian unsigned integer needs.
fn bit_length(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    n.first()
        .map_or(0, |top| 8 * n.len() - top.leading_zeros() as usize)
}

/// Every certificate in PEM text; at least one, and nothing else.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    blocks
        .into_iter()
        .map(|b| match b.tag() {
            "CERTIFICATE" => Ok(b.into_contents()),
            other => Err(format!("holds a {other:?} where only certificates belong")),
        })
        .collect()
}

/// Certificates as PEM text.
fn to_pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|der| {
            let block = pem::Pem::new("CERTIFICATE", der.clone());
            pem::encode_config(
                &block,
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            )
        })
        .collect()
}

/// A PEM file, read whole unless it is larger than any certificate file is.
pub fn read_pem_file(path: &Path) -> Result<String, CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PEM_FILE_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_PEM_FILE_SIZE {
        return Err(CaError::File {
            path: path.to_owned(),
            message: format!(
                "larger than {MAX_PEM_FILE_SIZE} bytes: not a certificate or key file"
            ),
        });
    }
    Ok(text)
}

/// Write `text` as `dir/name` (creating `dir`, 0700), replacing it whole: 0600
/// when `private`, else 0644. Returns the file's path.
pub fn write_pem(dir: &Path, name: &str, text: &str, private: bool) -> Result<PathBuf, CaError> {
    use std::os::unix::fs::DirBuilderExt;
    let path = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CaError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let mode = if private { 0o600 } else { 0o644 };
    write_atomic(dir, name, text.as_bytes(), mode).map_err(io(&path))?;
    Ok(path)
}

/// A random positive 128-bit serial number.
fn serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| CaError::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
    // DER integers are signed: a clear top bit keeps it positive; a set next bit
    // keeps its length fixed.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn whole_secs(t: SystemTime) -> i64 {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
