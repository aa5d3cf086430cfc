//! Signed pushes: what an operator's signature covers, how it is written, and which
//! keys are trusted. The config server includes this same file, so the `weft`
//! command that signs, the server that checks and the proxy that checks again agree
//! byte for byte.
//!
//! 1. `weft keys new --out DIR` makes an ed25519 key pair: `signing.key` (PKCS#8,
//!    0600) and `signing.pub`, the 32-byte public key as 64 hex digits on one line.
//! 2. A filter module is signed over `weft-module-v1\0 || sha256(module)`, a mesh
//!    config over `weft-mesh-v1\0 || sha256(yaml)` ([`Signed::message`]): the
//!    prefix keeps a signature of one from passing for the other.
//! 3. A signature is written `KEYID:SIG` ([`Signature`]): KEYID the first 8 bytes
//!    of sha256(public key), SIG the 64-byte ed25519 signature, both hex. It goes
//!    to the server in the [`HEADER`] header, and to proxies in every snapshot.
//! 4. [`TrustedKeys`] reads a file with one public key per line (hex, optionally
//!    followed by a name), `#` starting a comment, and verifies a signature
//!    against the key its KEYID names.
//!
//! ```no_run
//! # fn run(module: &[u8], header: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
//! use weft_agent::signature::{Signed, TrustedKeys};
//! let keys = TrustedKeys::load("trusted-keys".as_ref())?;
//! let key = keys.verify(Signed::Module, module, header)?;
//! println!("signed by {key}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::signature::{ED25519, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The request header a signed push or apply carries its signature in.
pub const HEADER: &str = "x-weft-signature";

/// What a signature is of: each has its own message prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signed {
    /// A filter module (a `.wasm` component).
    Module,
    /// A mesh config (YAML text, as applied).
    Mesh,
}

impl Signed {
    fn domain(self) -> &'static [u8] {
        match self {
            Signed::Module => b"weft-module-v1\0",
            Signed::Mesh => b"weft-mesh-v1\0",
        }
    }

    /// What it is, in a sentence: `module`, `mesh config`.
    pub fn noun(self) -> &'static str {
        match self {
            Signed::Module => "module",
            Signed::Mesh => "mesh config",
        }
    }

    /// The message signed for `content`: the prefix, then sha256(content).
    pub fn message(self, content: &[u8]) -> Vec<u8> {
        self.message_of_digest(&Sha256::digest(content).into())
    }

    /// The message signed for content whose sha256 is `digest`.
    pub fn message_of_digest(self, digest: &[u8; 32]) -> Vec<u8> {
        [self.domain(), digest.as_slice()].concat()
    }
}

/// Which key made a signature: the first 8 bytes of sha256(public key), 16 hex
/// digits. Short enough to read in a refusal, long enough that no two keys of one
/// file share it by chance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    id: KeyId,
}

impl PublicKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        Self {
            bytes,
            id: KeyId(id),
        }
    }

    /// Its id, which signatures name.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is this key's over `message`.
    fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = String;

    /// 64 hex digits.
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = decode::<32>(s.trim())
            .map_err(|why| format!("not an ed25519 public key (64 hex digits): {why}"))?;
        Ok(Self::from_bytes(bytes))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.bytes))
    }
}

/// A signature and the key that made it, written `KEYID:SIG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    key: KeyId,
    bytes: [u8; 64],
}

impl Signature {
    /// The signature `bytes` made by the key `key`.
    pub fn new(key: KeyId, bytes: [u8; 64]) -> Self {
        Self { key, bytes }
    }

    /// The key that made it.
    pub fn key(&self) -> KeyId {
        self.key
    }
}

impl FromStr for Signature {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, sig) = s
            .trim()
            .split_once(':')
            .ok_or("no ':' between the key id and the signature")?;
        let key = decode::<8>(key).map_err(|why| format!("key id: {why}"))?;
        let bytes = decode::<64>(sig).map_err(|why| format!("signature: {why}"))?;
        Ok(Self {
            key: KeyId(key),
            bytes,
        })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key, hex::encode(self.bytes))
    }
}

/// `N` bytes written as `2N` hex digits.
fn decode<const N: usize>(s: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!("{} hex digits, not {}", s.len(), 2 * N));
    }
    let mut out = [0; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Why a signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// None was given.
    #[error("the {} is not signed", what.noun())]
    Unsigned {
        /// What was not signed.
        what: Signed,
    },
    /// What was given is not `KEYID:SIG`.
    #[error("the {}'s signature is not KEYID:SIG in hex: {reason}", what.noun())]
    Malformed {
        /// What it was meant to sign.
        what: Signed,
        /// What is wrong with it.
        reason: String,
    },
    /// It names a key that is not trusted.
    #[error("the {} is signed by key {key}, which is not a trusted key", what.noun())]
    Untrusted {
        /// What it signs.
        what: Signed,
        /// The key it names.
        key: KeyId,
    },
    /// The trusted key it names did not make it over this content: the content
    /// changed after it was signed, or the signature was made for other content.
    #[error(
        "the {}'s signature by key {key} does not verify: it is not the {} that was \
         signed",
        what.noun(),
        what.noun()
    )]
    Invalid {
        /// What it signs.
        what: Signed,
        /// The key it names.
        key: KeyId,
    },
}

/// Why a trusted-keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a public key.
    #[error("{file}:{line}: {reason}")]
    Line {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// It lists no key: everything would be refused, which is never what was meant.
    #[error("{file}: lists no public key (one per line, 64 hex digits; `#` comments)")]
    Empty {
        /// The file.
        file: String,
    },
}

/// The public keys whose signatures are accepted.
#[derive(Clone, Debug)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// The keys of a trusted-keys file's text: one per line, hex, optionally
    /// followed by a name; blank lines and `#` comments are skipped. `file` names it
    /// in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, KeysError> {
        let mut keys: Vec<PublicKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some(word) = line.split_whitespace().next() else {
                continue;
            };
            let key: PublicKey = word.parse().map_err(|reason| KeysError::Line {
                file: file.to_owned(),
                line: n + 1,
                reason,
            })?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(KeysError::Empty {
                file: file.to_owned(),
            });
        }
        Ok(Self { keys })
    }

    /// The keys of the file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The keys, in the file's order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether `signature` (`KEYID:SIG`, none when unsigned) is a trusted key's over
    /// `content`; the key that made it when it is.
    pub fn verify(
        &self,
        what: Signed,
        content: &[u8],
        signature: Option<&str>,
    ) -> Result<KeyId, Refusal> {
        self.verify_digest(what, &Sha256::digest(content).into(), signature)
    }

    /// [`TrustedKeys::verify`] for content whose sha256 is `digest`.
    pub fn verify_digest(
        &self,
        what: Signed,
        digest: &[u8; 32],
        signature: Option<&str>,
    ) -> Result<KeyId, Refusal> {
        let signature = signature.filter(|s| !s.trim().is_empty());
        let signature: Signature = signature
            .ok_or(Refusal::Unsigned { what })?
            .parse()
            .map_err(|reason| Refusal::Malformed { what, reason })?;
        let key = signature.key;
        let trusted =
            (self.keys.iter().find(|k| k.id == key)).ok_or(Refusal::Untrusted { what, key })?;
        if trusted.verifies(&what.message_of_digest(digest), &signature.bytes) {
            Ok(key)
        } else {
            Err(Refusal::Invalid { what, key })
        }
    }
}

/// A signing key for tests: a fresh ed25519 pair and its public key.
#[cfg(test)]
pub(crate) struct TestKey(
    pub(crate) ring::signature::Ed25519KeyPair,
    pub(crate) PublicKey,
);

#[cfg(test)]
impl TestKey {
    pub(crate) fn new() -> Self {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = PublicKey::from_bytes(pair.public_key().as_ref().try_into().unwrap());
        Self(pair, public)
    }

    /// A signature of `content` as `what`, as the `x-weft-signature` header says it.
    pub(crate) fn sign(&self, what: Signed, content: &[u8]) -> String {
        let sig = self.0.sign(&what.message(content));
        Signature::new(self.1.id(), sig.as_ref().try_into().unwrap()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::Ed25519KeyPair;

    use super::*;

    fn key_pair() -> (Ed25519KeyPair, PublicKey) {
        let key = TestKey::new();
        (key.0, key.1)
    }

    fn sign(pair: &Ed25519KeyPair, key: &PublicKey, what: Signed, content: &[u8]) -> String {
        let sig = pair.sign(&what.message(content));
        Signature::new(key.id(), sig.as_ref().try_into().unwrap()).to_string()
    }

    #[test]
    fn a_signature_verifies_for_its_content_and_kind_only() {
        let (pair, public) = key_pair();
        let (other_pair, other) = key_pair();
        let keys = TrustedKeys::parse(&format!("# ops\n{public} alice\n\n"), "keys").unwrap();
        let sig = sign(&pair, &public, Signed::Module, b"\0asm module");
        assert_eq!(
            keys.verify(Signed::Module, b"\0asm module", Some(&sig)),
            Ok(public.id())
        );
        // One byte changed after signing.
        assert_eq!(
            keys.verify(Signed::Module, b"\0asm modulE", Some(&sig)),
            Err(Refusal::Invalid {
                what: Signed::Module,
                key: public.id()
            })
        );
        // A module's signature does not pass for a mesh config of the same bytes.
        assert!(matches!(
            keys.verify(Signed::Mesh, b"\0asm module", Some(&sig)),
            Err(Refusal::Invalid { .. })
        ));
        let theirs = sign(&other_pair, &other, Signed::Module, b"\0asm module");
        let refused = keys.verify(Signed::Module, b"\0asm module", Some(&theirs));
        assert_eq!(
            refused.unwrap_err().to_string(),
            format!(
                "the module is signed by key {}, which is not a trusted key",
                other.id()
            )
        );
        assert_eq!(
            keys.verify(Signed::Mesh, b"x", None)
                .unwrap_err()
                .to_string(),
            "the mesh config is not signed"
        );
        assert_eq!(
            keys.verify(Signed::Mesh, b"x", Some(" ")),
            Err(Refusal::Unsigned { what: Signed::Mesh })
        );
        assert!(matches!(
            keys.verify(Signed::Mesh, b"x", Some("abcd:ef")),
            Err(Refusal::Malformed { .. })
        ));
    }

    #[test]
    fn signatures_and_keys_round_trip_as_text() {
        let (pair, public) = key_pair();
        let sig = sign(&pair, &public, Signed::Mesh, b"proxies: []\n");
        let (id, hex) = sig.split_once(':').unwrap();
        assert_eq!((id.len(), hex.len()), (16, 128));
        assert_eq!(sig.parse::<Signature>().unwrap().to_string(), sig);
        assert_eq!(sig.parse::<Signature>().unwrap().key(), public.id());
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
        assert_eq!(Signed::Module.message(b"")[..15], *b"weft-module-v1\0");
        assert_eq!(Signed::Mesh.message(b"").len(), 13 + 32);
    }

    #[test]
    fn a_keys_file_says_where_it_is_wrong() {
        let err = TrustedKeys::parse("# none yet\n\n", "trusted").unwrap_err();
        assert!(
            err.to_string().starts_with("trusted: lists no public key"),
            "{err}"
        );
        let err = TrustedKeys::parse("# a\nabcd\n", "trusted").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("trusted:2: not an ed25519 public key"),
            "{err}"
        );
        let (_, public) = key_pair();
        let twice = format!("{public}\n{public}  # the same key again\n");
        assert_eq!(TrustedKeys::parse(&twice, "t").unwrap().keys().len(), 1);
    }
}
