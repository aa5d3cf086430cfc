//! What a proxy with trusted keys checks of a snapshot before it loads anything: the
//! mesh config's signature against its text, and each pushed module's against the
//! bytes the proxy is about to load. A config server that was taken over can send
//! anything; what it cannot do is sign it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use weft_api::Snapshot;

use crate::signature::{Refusal, Signed, TrustedKeys};

/// The signatures a snapshot carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signatures {
    /// The mesh config's, empty when it was applied unsigned.
    pub(crate) mesh: String,
    /// sha256 (hex) of a module to its signature.
    pub(crate) modules: BTreeMap<String, String>,
}

impl Signatures {
    /// The snapshot's signatures, taken out of it.
    pub(crate) fn take(snapshot: &mut Snapshot) -> Self {
        Self {
            mesh: std::mem::take(&mut snapshot.mesh_signature),
            modules: std::mem::take(&mut snapshot.module_signatures),
        }
    }
}

/// Why a snapshot is refused, with what to do about it.
fn refused(what: &str, refusal: &Refusal) -> String {
    format!(
        "refusing {what}: {refusal}; this proxy loads only what a key of its \
         --trusted-keys signed"
    )
}

/// The mesh config's signature, against its text.
pub(crate) fn mesh(keys: &TrustedKeys, mesh: &str, signatures: &Signatures) -> Result<(), String> {
    keys.verify(Signed::Mesh, mesh.as_bytes(), Some(&signatures.mesh))
        .map(drop)
        .map_err(|r| refused("the mesh config", &r))
}

/// Each module's signature, against the sha256 of the bytes about to be loaded
/// (not the name they came under). Blocking: it hashes every module.
pub(crate) fn modules(
    keys: &TrustedKeys,
    modules: &HashMap<String, Bytes>,
    signatures: &Signatures,
    running: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (sha, bytes) in modules {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        check(keys, sha, &digest, signatures, running)?;
    }
    Ok(())
}

/// The signatures of modules the proxy already runs, whose bytes were checked
/// against their sha256 when they were loaded.
pub(crate) fn held(
    keys: &TrustedKeys,
    needed: &BTreeSet<String>,
    signatures: &Signatures,
    running: &BTreeMap<String, String>,
) -> Result<(), String> {
    for sha in needed {
        let mut digest = [0; 32];
        hex::decode_to_slice(sha, &mut digest)
            .map_err(|e| format!("module {sha:?} is not named by a sha256: {e}"))?;
        check(keys, sha, &digest, signatures, running)?;
    }
    Ok(())
}

fn check(
    keys: &TrustedKeys,
    sha: &str,
    digest: &[u8; 32],
    signatures: &Signatures,
    running: &BTreeMap<String, String>,
) -> Result<(), String> {
    let signature = signatures.modules.get(sha).map(String::as_str);
    keys.verify_digest(Signed::Module, digest, signature)
        .map(drop)
        .map_err(|r| refused(&module_name(sha, running), &r))
}

/// `module 1a2b3c4d5e6f (filter auth)`: the module as the operator knows it.
fn module_name(sha: &str, running: &BTreeMap<String, String>) -> String {
    let short = sha.get(..12).unwrap_or(sha);
    let names: Vec<&str> = (running.iter())
        .filter(|(_, shas)| shas.split(',').any(|s| s.eq_ignore_ascii_case(sha)))
        .map(|(name, _)| name.as_str())
        .collect();
    if names.is_empty() {
        format!("module {short}")
    } else {
        format!("module {short} (filter {})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::TestKey as Key;

    #[test]
    fn a_module_changed_after_signing_is_refused_by_its_bytes_not_its_name() {
        let key = Key::new();
        let keys = TrustedKeys::parse(&key.1.to_string(), "trusted").unwrap();
        let module = Bytes::from_static(b"\0asm the signed one");
        let sha = hex::encode(Sha256::digest(&module));
        let mut signatures = Signatures::default();
        signatures
            .modules
            .insert(sha.clone(), key.sign(Signed::Module, &module));
        let running = BTreeMap::from([("auth".to_owned(), sha.clone())]);
        let mut held = HashMap::from([(sha.clone(), module)]);
        assert_eq!(modules(&keys, &held, &signatures, &running), Ok(()));
        assert_eq!(
            super::held(&keys, &BTreeSet::from([sha.clone()]), &signatures, &running),
            Ok(())
        );

        // The same name, other bytes: what a server that was taken over would send.
        held.insert(sha.clone(), Bytes::from_static(b"\0asm another one"));
        let err = modules(&keys, &held, &signatures, &running).unwrap_err();
        assert!(
            err.starts_with(&format!("refusing module {} (filter auth): ", &sha[..12]))
                && err.contains("does not verify"),
            "{err}"
        );
        signatures.modules.clear();
        let err = super::held(&keys, &BTreeSet::from([sha]), &signatures, &running);
        assert!(err.unwrap_err().contains("the module is not signed"));
    }

    #[test]
    fn the_mesh_config_must_be_signed_as_it_is() {
        let key = Key::new();
        let keys = TrustedKeys::parse(&key.1.to_string(), "trusted").unwrap();
        let yaml = "proxies: []\n";
        let mut signatures = Signatures {
            mesh: key.sign(Signed::Mesh, yaml.as_bytes()),
            ..Default::default()
        };
        assert_eq!(mesh(&keys, yaml, &signatures), Ok(()));
        let err = mesh(&keys, "proxies: [] # changed\n", &signatures).unwrap_err();
        assert!(err.starts_with("refusing the mesh config: "), "{err}");
        signatures.mesh.clear();
        assert!(
            mesh(&keys, yaml, &signatures)
                .unwrap_err()
                .contains("not signed")
        );
    }
}
