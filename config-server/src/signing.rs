//! Signed pushes on the server.
//!
//! 1. A push or an apply may carry an ed25519 signature of what it uploads, in the
//!    `x-weft-signature: KEYID:SIG` header (`weft push --sign`, `weft apply
//!    --sign`; the rule is `signature`, the proxy's own file).
//! 2. With `--trusted-keys` ([`crate::Options::trusted_keys`]), one without a
//!    signature, or whose signature no trusted key made over these bytes, is
//!    refused with 403 before anything is checked or stored. So is a change that
//!    would make live what no trusted key signed: a push while the live mesh config
//!    is unsigned, an apply or a rollback that uses a module pushed unsigned.
//! 3. Every signature given is kept (`signatures.json`, by the sha256 of what it
//!    signs) before the change is made, and sent in every snapshot that uses what
//!    it signs: a proxy with trusted keys checks them again, so a server that was
//!    taken over still cannot make it run what no operator signed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use weft_config::MeshConfig;

use crate::ServerError;
use crate::error::ApiError;
use crate::store::{Signatures, Store};

// The proxy's own file of the rule (messages, key ids, the text of a signature,
// trusted-key files), so the server refuses exactly what proxies refuse. Its
// signing half is the `weft` command's.
#[allow(dead_code)]
#[path = "../../agent/src/signature.rs"]
mod signature;

pub(crate) use signature::Signed;
use signature::{HEADER, Refusal, Signature, TrustedKeys};

/// The trusted keys, if signatures are required, and the signatures kept.
#[derive(Debug)]
pub(crate) struct Signing {
    keys: Option<TrustedKeys>,
    /// What `signatures.json` holds: changed and saved under the lock, read by
    /// every snapshot built.
    book: Mutex<Signatures>,
    store: Store,
}

impl Signing {
    /// The signatures kept in the data folder, and the trusted keys in the file
    /// `trusted_keys` names (none: signatures are kept and sent, not required).
    /// Blocking: it reads files.
    pub fn open(store: &Store, trusted_keys: Option<&Path>) -> Result<Self, ServerError> {
        let keys = trusted_keys
            .map(TrustedKeys::load)
            .transpose()
            .map_err(|e| ServerError::TrustedKeys(e.to_string()))?;
        if let Some(keys) = &keys {
            let ids: Vec<String> = keys.keys().iter().map(|k| k.id().to_string()).collect();
            tracing::info!(keys = ids.join(","), "pushes and applies must be signed");
        }
        Ok(Self {
            keys,
            book: Mutex::new(store.load_signatures()?),
            store: store.clone(),
        })
    }

    /// Nothing required, nothing kept: for tests of other parts.
    #[cfg(test)]
    pub fn none(store: &Store) -> Self {
        Self {
            keys: None,
            book: Mutex::default(),
            store: store.clone(),
        }
    }

    /// The signature an upload (`content`, a module or a mesh config) carries in
    /// its headers: with trusted keys, it must be one of theirs over `content`;
    /// without, it need only be well formed. None when there is none and none is
    /// needed.
    pub fn check(
        &self,
        what: Signed,
        content: &[u8],
        headers: &HeaderMap,
    ) -> Result<Option<String>, ApiError> {
        let given = match headers.get(HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) => Some(v.trim()),
            Some(Err(_)) => return Err(malformed(what, "not ASCII")),
        };
        if let Some(keys) = &self.keys {
            let key = keys
                .verify(what, content, given)
                .map_err(|r| forbidden(&r))?;
            tracing::info!(%key, "{} signed by a trusted key", what.noun());
        }
        given
            .map(|g| g.parse::<Signature>().map(|s| s.to_string()))
            .transpose()
            .map_err(|reason| malformed(what, &reason))
    }

    /// Keep `signature` of `content` (a module, a mesh config), to send with every
    /// snapshot that uses it. Blocking: it writes `signatures.json`.
    pub fn record(&self, what: Signed, content: &[u8], signature: String) -> std::io::Result<()> {
        let digest = hex::encode(Sha256::digest(content));
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let shelf = match what {
            Signed::Module => &mut book.modules,
            Signed::Mesh => &mut book.meshes,
        };
        if shelf.get(&digest) == Some(&signature) {
            return Ok(());
        }
        let before = shelf.insert(digest.clone(), signature);
        let saved = self.store.save_signatures(&book);
        if saved.is_err() {
            // What is in memory stays what is on disk.
            let shelf = match what {
                Signed::Module => &mut book.modules,
                Signed::Mesh => &mut book.meshes,
            };
            match before {
                Some(old) => shelf.insert(digest, old),
                None => shelf.remove(&digest),
            };
        }
        saved
    }

    /// The signatures a snapshot carries: its mesh config's (empty when it was
    /// applied unsigned), and those of the modules `modules` (sha256) that have one.
    pub fn for_snapshot(
        &self,
        mesh: &str,
        modules: &BTreeSet<String>,
    ) -> (String, BTreeMap<String, String>) {
        let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let mesh = hex::encode(Sha256::digest(mesh.as_bytes()));
        let modules = (modules.iter())
            .filter_map(|sha| Some((sha.clone(), book.modules.get(sha)?.clone())))
            .collect();
        (book.meshes.get(&mesh).cloned().unwrap_or_default(), modules)
    }

    /// With trusted keys: whether a version of `mesh` (its text, parsed, and the
    /// pushed filter name to sha256 it resolves to) holds only what a trusted key
    /// signed; 403 naming the first thing that is not, and how to sign it.
    /// `mesh_signature` is the one just given for `mesh`, if it is not kept yet.
    pub fn check_version(
        &self,
        (mesh, parsed): (&str, &MeshConfig),
        filters: &BTreeMap<String, String>,
        mesh_signature: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let modules = modules_of(parsed, filters);
        let (kept, signatures) = self.for_snapshot(mesh, &modules);
        let signature = mesh_signature.unwrap_or(&kept);
        keys.verify(Signed::Mesh, mesh.as_bytes(), Some(signature))
            .map_err(|r| {
                let what = format!("mesh config {:?}", parsed.file);
                forbidden_because(&r, &what, "apply it again with `weft apply --sign KEYFILE`")
            })?;
        for sha in modules {
            let mut digest = [0; 32];
            if hex::decode_to_slice(&sha, &mut digest).is_err() {
                continue;
            }
            let signature = signatures.get(&sha).map(String::as_str);
            keys.verify_digest(Signed::Module, &digest, signature)
                .map_err(|r| {
                    let what = format!("module {} ({})", &sha[..12], names_of(&sha, filters));
                    forbidden_because(&r, &what, "push it again with `weft push --sign KEYFILE`")
                })?;
        }
        Ok(())
    }
}

/// Every pushed module (sha256) some group of `mesh` uses with `filters`, pins
/// included; a group that does not resolve uses none (the change itself reports
/// it).
fn modules_of(mesh: &MeshConfig, filters: &BTreeMap<String, String>) -> BTreeSet<String> {
    (0..mesh.proxies.len())
        .filter_map(|g| mesh.proxy_config(g, filters).ok())
        .flat_map(|c| c.pushed_modules())
        .collect()
}

/// `filter auth`, or `a pinned version` when no name resolves to it.
fn names_of(sha: &str, filters: &BTreeMap<String, String>) -> String {
    let names: Vec<&str> = (filters.iter())
        .filter(|(_, s)| s.eq_ignore_ascii_case(sha))
        .map(|(n, _)| n.as_str())
        .collect();
    if names.is_empty() {
        "a pinned version".to_owned()
    } else {
        format!("filter {}", names.join(", "))
    }
}

fn malformed(what: Signed, reason: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{HEADER}: the {}'s signature is not KEYID:SIG in hex: {reason}",
        what.noun()
    ))
}

/// 403 for an upload whose own signature is refused.
fn forbidden(refusal: &Refusal) -> ApiError {
    let how = match refusal {
        Refusal::Unsigned {
            what: Signed::Module,
        } => "; this server takes only signed filters: `weft push --sign KEYFILE`",
        Refusal::Unsigned { what: Signed::Mesh } => {
            "; this server takes only signed mesh configs: `weft apply --sign KEYFILE`"
        }
        Refusal::Untrusted { .. } => "; sign with a key the server's --trusted-keys lists",
        _ => "",
    };
    ApiError::new(StatusCode::FORBIDDEN, format!("{refusal}{how}"))
}

/// 403 for a change that would make live `what`, which no trusted key signed.
fn forbidden_because(refusal: &Refusal, what: &str, fix: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "this change would make live {what}, which proxies with trusted keys refuse: \
             {refusal}; {fix}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::TestKey as Key;

    /// The headers of a push signed by `key`.
    fn headers(key: &Key, what: Signed, content: &[u8]) -> HeaderMap {
        let sig = key.sign(what, content);
        HeaderMap::from_iter([(HEADER.parse().unwrap(), sig.parse().unwrap())])
    }

    fn signing(dir: &Path, key: Option<&Key>) -> Signing {
        let store = Store::open(dir).unwrap();
        let file = dir.join("trusted");
        let keys = key.map(|k| {
            std::fs::write(&file, format!("# ops\n{} ops\n", k.1)).unwrap();
            file.as_path()
        });
        Signing::open(&store, keys).unwrap()
    }

    #[test]
    fn with_trusted_keys_an_upload_needs_a_signature_they_made() {
        let dir = weft_testkit::TempDir::new();
        let (ours, theirs) = (Key::new(), Key::new());
        let signing = signing(&dir.0, Some(&ours));
        let module = b"\0asm signed";
        let signed = headers(&ours, Signed::Module, module);
        assert!(
            signing
                .check(Signed::Module, module, &signed)
                .unwrap()
                .is_some()
        );

        let refused = |content: &[u8], headers: &HeaderMap| {
            let e = signing.check(Signed::Module, content, headers).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);
            e.message
        };
        let unsigned = refused(module, &HeaderMap::new());
        assert!(
            unsigned.starts_with("the module is not signed; "),
            "{unsigned}"
        );
        let changed = refused(b"\0asm changed", &signed);
        assert!(changed.contains("does not verify"), "{changed}");
        let other = refused(module, &headers(&theirs, Signed::Module, module));
        assert!(other.contains("not a trusted key"), "{other}");
        // A mesh config's signature is no module's.
        let mesh = headers(&ours, Signed::Mesh, module);
        assert!(refused(module, &mesh).contains("does not verify"));
    }

    #[test]
    fn signatures_are_kept_by_content_and_sent_with_what_they_sign() {
        let dir = weft_testkit::TempDir::new();
        let key = Key::new();
        let signing = signing(&dir.0, None);
        // Without trusted keys nothing is required, and what is given is kept.
        let bare = signing
            .check(Signed::Mesh, b"m", &HeaderMap::new())
            .unwrap();
        assert_eq!(bare, None);
        let mesh = headers(&key, Signed::Mesh, b"proxies: []\n");
        let sig = signing
            .check(Signed::Mesh, b"proxies: []\n", &mesh)
            .unwrap();
        signing
            .record(Signed::Mesh, b"proxies: []\n", sig.clone().unwrap())
            .unwrap();
        let bad = HeaderMap::from_iter([(HEADER.parse().unwrap(), "zz:zz".parse().unwrap())]);
        let e = signing.check(Signed::Mesh, b"m", &bad).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let module = b"\0asm";
        let module_sha = hex::encode(Sha256::digest(module));
        let module_sig = signing
            .check(
                Signed::Module,
                module,
                &headers(&key, Signed::Module, module),
            )
            .unwrap()
            .unwrap();
        signing
            .record(Signed::Module, module, module_sig.clone())
            .unwrap();
        let unsigned = "00".repeat(32);
        let wanted = BTreeSet::from([module_sha.clone(), unsigned]);
        let (mesh, modules) = signing.for_snapshot("proxies: []\n", &wanted);
        assert_eq!(Some(mesh), sig);
        assert_eq!(modules, BTreeMap::from([(module_sha, module_sig)]));
        // A restart reads them back.
        let again = Signing::open(&Store::open(&dir.0).unwrap(), None).unwrap();
        assert_eq!(again.for_snapshot("proxies: []\n", &wanted).1.len(), 1);
    }
}
