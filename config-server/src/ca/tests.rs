//! The CA: what it puts in a certificate, which requests it refuses, where it keeps
//! its key, and a bundle of two anchors during a rotation.
//!
//! The RSA and other-curve requests in `fixtures/` were made with OpenSSL 3:
//! `openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -subj /CN=rsa1024`
//! (likewise `rsa:2048`, `ec -pkeyopt ec_paramgen_curve:P-384` and `secp256k1`),
//! and `rsa2048-asks-for-more.csr` with `-addext "subjectAltName=DNS:evil.example,
//! URI:spiffe://bank.example/ns/x/sa/admin" -addext "basicConstraints=critical,CA:TRUE"`.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;

const ID: &str = "spiffe://bank.example/ns/default/sa/trading";
const HOUR: Duration = Duration::from_secs(3600);

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-ca-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A CSR for `key`, asking for `names` (DNS names or IP addresses).
fn csr(key: &KeyPair, names: &[&str]) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    params.serialize_request(key).unwrap().der().to_vec()
}

fn fixture(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

fn ders(pem_text: &str) -> Vec<CertificateDer<'static>> {
    pem_certificates(pem_text)
        .unwrap()
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

fn roots(bundle_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for der in ders(bundle_pem) {
        roots.add(der).unwrap();
    }
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a peer holding `bundle_pem` accepts `chain_pem` as a client's chain,
/// as a mesh listener verifies it.
fn accepts_client(bundle_pem: &str, chain_pem: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(bundle_pem), provider())
        .build()
        .unwrap();
    let chain = ders(chain_pem);
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
}

/// Whether a peer holding `bundle_pem` accepts `chain_pem` as a server's chain,
/// as a mesh cluster verifies it (by its trust anchor; the name plays no part).
fn accepts_server(bundle_pem: &str, chain_pem: &str) -> Result<(), rustls::Error> {
    let chain = ders(chain_pem);
    let leaf = rustls::server::ParsedCertificate::try_from(&chain[0])?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &leaf,
        &roots(bundle_pem),
        &chain[1..],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
}

/// What a leaf says, read back.
struct Leaf {
    uris: Vec<String>,
    dns: Vec<String>,
    ips: usize,
    ca: bool,
    server_auth: bool,
    client_auth: bool,
    digital_signature: bool,
    key_encipherment: bool,
    not_before: i64,
    not_after: i64,
    serial: String,
    subject_empty: bool,
}

fn leaf(chain_pem: &str) -> Leaf {
    let chain = ders(chain_pem);
    let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
    let mut leaf = Leaf {
        uris: Vec::new(),
        dns: Vec::new(),
        ips: 0,
        ca: cert.is_ca(),
        server_auth: false,
        client_auth: false,
        digital_signature: false,
        key_encipherment: false,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        subject_empty: cert.subject().iter().next().is_none(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => leaf.uris.push((*u).to_owned()),
                        GeneralName::DNSName(d) => leaf.dns.push((*d).to_owned()),
                        GeneralName::IPAddress(_) => leaf.ips += 1,
                        _ => {}
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                leaf.server_auth = eku.server_auth;
                leaf.client_auth = eku.client_auth;
            }
            ParsedExtension::KeyUsage(ku) => {
                leaf.digital_signature = ku.digital_signature();
                leaf.key_encipherment = ku.key_encipherment();
            }
            _ => {}
        }
    }
    leaf
}

fn now() -> i64 {
    whole_secs(SystemTime::now())
}

#[test]
fn a_workload_certificate_names_the_given_identity_and_nothing_the_request_asked_for() {
    let ca = Ca::generate("Test CA").unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let before = now();
    let issued = ca
        .sign_csr(&csr(&key, &["evil.example", "10.0.0.1"]), ID, HOUR)
        .unwrap();
    let after = now();
    let l = leaf(&issued.chain_pem);
    assert_eq!(l.uris, [ID]);
    assert!(l.dns.is_empty() && l.ips == 0, "no host names");
    assert!(!l.ca && l.subject_empty);
    assert!(l.server_auth && l.client_auth);
    assert!(l.digital_signature && !l.key_encipherment);
    assert!((before - 60..=after - 60).contains(&l.not_before));
    assert!((before + 3600..=after + 3600).contains(&l.not_after));
    assert_eq!(whole_secs(issued.not_after), l.not_after);
    assert_eq!(issued.serial, l.serial);
    assert_eq!(issued.serial.len(), 32, "128 random bits");
    // A leaf of a root CA is sent alone; the bundle carries the root.
    assert_eq!(ders(&issued.chain_pem).len(), 1);
    accepts_client(ca.bundle_pem(), &issued.chain_pem).unwrap();
    accepts_server(ca.bundle_pem(), &issued.chain_pem).unwrap();
    let again = ca.sign_csr(&csr(&key, &[]), ID, HOUR).unwrap();
    assert_ne!(again.serial, issued.serial);
}

#[test]
fn ed25519_and_rsa_keys_are_accepted_and_an_rsa_key_may_encipher() {
    let ca = Ca::generate("Test CA").unwrap();
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let issued = ca.sign_csr(&csr(&ed, &[]), ID, HOUR).unwrap();
    assert!(!leaf(&issued.chain_pem).key_encipherment);
    accepts_client(ca.bundle_pem(), &issued.chain_pem).unwrap();
    let rsa = fixture(include_str!("fixtures/rsa2048.csr"));
    let issued = ca.sign_csr(&rsa, ID, HOUR).unwrap();
    let l = leaf(&issued.chain_pem);
    assert!(l.digital_signature && l.key_encipherment);
    accepts_client(ca.bundle_pem(), &issued.chain_pem).unwrap();
    // It asked for a DNS name, another SPIFFE ID and to be a CA: it gets none.
    let greedy = fixture(include_str!("fixtures/rsa2048-asks-for-more.csr"));
    let l = leaf(&ca.sign_csr(&greedy, ID, HOUR).unwrap().chain_pem);
    assert_eq!(l.uris, [ID]);
    assert!(l.dns.is_empty() && !l.ca);
}

#[test]
fn requests_with_weak_keys_bad_signatures_or_too_many_bytes_are_refused() {
    let ca = Ca::generate("Test CA").unwrap();
    for (name, pem_text) in [
        ("rsa1024", include_str!("fixtures/rsa1024.csr")),
        ("p384", include_str!("fixtures/p384.csr")),
        ("secp256k1", include_str!("fixtures/k256.csr")),
    ] {
        let e = ca
            .sign_csr(&fixture(pem_text), ID, HOUR)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("must be ECDSA P-256, Ed25519, or RSA of 2048 to 8192 bits")
                || e.contains("signature does not check"),
            "{name}: {e}"
        );
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut forged = csr(&key, &[]);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let e = ca.sign_csr(&forged, ID, HOUR).unwrap_err().to_string();
    assert!(e.contains("signature does not check"), "{e}");
    let e = ca
        .sign_csr(&[0x30; 9000], ID, HOUR)
        .unwrap_err()
        .to_string();
    assert!(e.contains("9000 bytes; at most 8192"), "{e}");
    let e = ca
        .sign_csr(b"not a request", ID, HOUR)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a DER PKCS#10 request"), "{e}");
    let mut trailing = csr(&key, &[]);
    trailing.push(0);
    assert!(ca.sign_csr(&trailing, ID, HOUR).is_err());
    let e = ca
        .sign_csr(&csr(&key, &[]), "spiffe://bank.example", HOUR)
        .unwrap_err();
    assert!(e.to_string().contains("is not a SPIFFE ID"), "{e}");
}

#[test]
fn the_ca_is_made_once_in_its_folder_and_its_key_kept_private() {
    let dir = temp_dir("folder");
    let (made, created) = Ca::load_or_create(&dir, "Weft mesh CA").unwrap();
    assert!(created);
    let key_mode = std::fs::metadata(dir.join(CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let (loaded, created) = Ca::load_or_create(&dir, "Weft mesh CA").unwrap();
    assert!(!created);
    assert_eq!(loaded.cert_pem(), made.cert_pem());
    assert_eq!(loaded.bundle_pem(), made.cert_pem());
    // What the reloaded CA signs, the first one's bundle accepts.
    let issued = loaded.issue_workload(ID, &[], &[], HOUR).unwrap();
    accepts_client(made.bundle_pem(), &issued.issued.chain_pem).unwrap();
    // A lone key is never replaced by a new CA.
    std::fs::remove_file(dir.join(CA_CERT_FILE)).unwrap();
    let e = Ca::load_or_create(&dir, "Weft mesh CA")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ca-key.pem") && e.contains("ca.pem is missing"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_ca_from_files_must_be_a_ca_with_its_own_key() {
    let ca = Ca::generate("Test CA").unwrap();
    let other = Ca::generate("Other CA").unwrap();
    let origin = Path::new("given-ca.pem");
    let e = Ca::from_pem(ca.cert_pem(), other.key_pem(), origin)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("given-ca.pem: the CA key is not the key of the CA"),
        "{e}"
    );
    let leaf = ca.issue_workload(ID, &[], &[], HOUR).unwrap();
    let e = Ca::from_pem(&leaf.issued.chain_pem, &leaf.key_pem, origin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a CA's"), "{e}");
    let e = Ca::from_pem(ca.key_pem(), ca.key_pem(), origin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("only certificates belong"), "{e}");
    let e = Ca::from_pem("", ca.key_pem(), origin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}

#[test]
fn an_intermediate_ca_sends_its_chain_and_peers_trust_the_root() {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Offline root");
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root = Issuer::new(root_params, root_key);
    let mid_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut mid_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    mid_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    mid_params
        .distinguished_name
        .push(DnType::CommonName, "Mesh intermediate");
    let mid_cert = mid_params.signed_by(&mid_key, &root).unwrap();
    let file = format!("{}{}", mid_cert.pem(), root_cert.pem());
    let mut ca = Ca::from_pem(&file, &mid_key.serialize_pem(), Path::new("mid.pem")).unwrap();
    let issued = ca.issue_workload(ID, &[], &[], HOUR).unwrap().issued;
    assert_eq!(ders(&issued.chain_pem).len(), 3, "leaf, intermediate, root");
    accepts_client(&root_cert.pem(), &issued.chain_pem).unwrap();
    assert_eq!(
        ca.add_trust_anchors(&root_cert.pem(), Path::new("root.pem"))
            .unwrap(),
        1
    );
    assert_eq!(ders(ca.bundle_pem()).len(), 2);
}

#[test]
fn a_bundle_with_the_old_and_the_new_anchor_accepts_leaves_from_both() {
    // Rotation, step 1: the new CA signs; proxies get a bundle of both anchors.
    let old = Ca::generate("Weft mesh CA").unwrap();
    let mut new = Ca::generate("Weft mesh CA").unwrap();
    assert_ne!(old.cert_pem(), new.cert_pem());
    let added = new
        .add_trust_anchors(old.cert_pem(), Path::new("old-ca.pem"))
        .unwrap();
    assert_eq!(added, 1);
    // The new CA's own certificate is there already: not added twice.
    let bundle = format!("{}{}", old.cert_pem(), new.cert_pem());
    assert_eq!(
        new.add_trust_anchors(&bundle, Path::new("both.pem"))
            .unwrap(),
        0
    );
    assert_eq!(ders(new.bundle_pem()).len(), 2);
    assert!(new.bundle_pem().starts_with(new.cert_pem()));
    // A proxy still on an old certificate and one already on a new one accept each
    // other, whichever side connects.
    let from_old = old.issue_workload(ID, &[], &[], HOUR).unwrap().issued;
    let from_new = new.issue_workload(ID, &[], &[], HOUR).unwrap().issued;
    for chain in [&from_old.chain_pem, &from_new.chain_pem] {
        accepts_client(new.bundle_pem(), chain).unwrap();
        accepts_server(new.bundle_pem(), chain).unwrap();
    }
    // Step 3: once every proxy renewed, the old anchor goes; its leaves are refused.
    assert!(accepts_client(new.cert_pem(), &from_old.chain_pem).is_err());
    assert!(accepts_server(new.cert_pem(), &from_old.chain_pem).is_err());
    let e = new
        .add_trust_anchors(&from_old.chain_pem, Path::new("leaf.pem"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a CA's"), "{e}");
}

#[test]
fn a_serving_certificate_names_hosts_and_serves_only() {
    let ca = Ca::generate("Test CA").unwrap();
    let names = ["config.weft.internal".to_owned(), "localhost".to_owned()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let issued = ca.issue_server(&names, &ips, HOUR).unwrap();
    let l = leaf(&issued.issued.chain_pem);
    assert_eq!(l.dns, names);
    assert_eq!(l.ips, 1);
    assert!(l.uris.is_empty() && l.server_auth && !l.client_auth && !l.ca);
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(ca.bundle_pem()),
        provider(),
    )
    .build()
    .unwrap();
    let chain = ders(&issued.issued.chain_pem);
    for name in ["localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .unwrap();
    }
    let elsewhere = ServerName::try_from("evil.example").unwrap();
    assert!(
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &elsewhere, &[], UnixTime::now())
            .is_err()
    );
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{issued:?}").contains("PRIVATE"));
    assert!(ca.issue_server(&[], &[], HOUR).is_err());
    let e = ca.issue_server(&["a b".into()], &[], HOUR).unwrap_err();
    assert!(e.to_string().contains("is not a DNS name"), "{e}");
}

#[test]
fn no_certificate_outlives_its_ca() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = SystemTime::now();
    params.not_before = (now - HOUR).into();
    params.not_after = (now + HOUR).into();
    let cert = params.self_signed(&key).unwrap();
    let ca = Ca::from_pem(&cert.pem(), &key.serialize_pem(), Path::new("short.pem")).unwrap();
    let issued = ca.issue_workload(ID, &[], &[], 24 * HOUR).unwrap().issued;
    assert_eq!(issued.not_after, ca.not_after());
    params.not_before = (now - 2 * HOUR).into();
    params.not_after = (now - HOUR).into();
    let cert = params.self_signed(&key).unwrap();
    let gone = Ca::from_pem(&cert.pem(), &key.serialize_pem(), Path::new("old.pem")).unwrap();
    let e = gone.issue_workload(ID, &[], &[], HOUR).unwrap_err();
    assert!(matches!(e, CaError::Expired), "{e}");
}

#[test]
fn bit_lengths_ignore_leading_zeros() {
    assert_eq!(bit_length(&[0, 0x80, 0]), 16);
    assert_eq!(bit_length(&[0x7f, 0]), 15);
    assert_eq!(bit_length(&[0, 0]), 0);
    assert_eq!(bit_length(&[]), 0);
}
