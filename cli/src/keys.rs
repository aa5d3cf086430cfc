//! `weft keys new`: an ed25519 key pair to sign pushes and applies with, and the
//! signing that `weft push --sign` and `weft apply --sign` do. What a signature
//! covers and how it is written is `weft_agent::signature`, which the config server
//! and every proxy check against.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use weft_agent::signature::{KeyId, PublicKey, Signature, Signed};

/// The private key's file in the folder `weft keys new` writes.
pub(crate) const PRIVATE_FILE: &str = "signing.key";
/// The public key's file beside it.
pub(crate) const PUBLIC_FILE: &str = "signing.pub";

/// `weft keys`.
#[derive(clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Make an ed25519 key pair in a folder: signing.key (PKCS#8 DER, 0600), to sign
    /// with (`weft push --sign`, `weft apply --sign`), and signing.pub (the public
    /// key, 64 hex digits on one line), to list in the --trusted-keys file of the
    /// config server and of the proxies. Never overwrites a key.
    New {
        /// The folder (made 0700 if it does not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub(crate) fn run(args: &KeysArgs) -> anyhow::Result<()> {
    match &args.command {
        KeysCommand::New { out } => {
            let public = new(out)?;
            println!("{public}");
            eprintln!(
                "wrote {} (keep it private) and {} (key id {}): list the public key in \
                 the --trusted-keys file of the config server and of each proxy",
                out.join(PRIVATE_FILE).display(),
                out.join(PUBLIC_FILE).display(),
                public.id()
            );
            Ok(())
        }
    }
}

/// Make a key pair in `dir`; its public key.
pub(crate) fn new(dir: &Path) -> anyhow::Result<PublicKey> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let (private, public) = (dir.join(PRIVATE_FILE), dir.join(PUBLIC_FILE));
    for file in [&private, &public] {
        if file.exists() {
            bail!(
                "{} exists; a key is never overwritten: move it away or choose another --out",
                file.display()
            );
        }
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot draw a random key"))?;
    let key = public_key(
        &Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("the new key does not load: {e}"))?,
    );
    write_new(&private, pkcs8.as_ref(), 0o600)?;
    write_new(&public, format!("{key}\n").as_bytes(), 0o644)?;
    Ok(key)
}

/// Write a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn public_key(pair: &Ed25519KeyPair) -> PublicKey {
    let mut bytes = [0; 32];
    bytes.copy_from_slice(pair.public_key().as_ref());
    PublicKey::from_bytes(bytes)
}

/// A private key to sign with.
pub(crate) struct Signer {
    pair: Ed25519KeyPair,
    id: KeyId,
}

impl Signer {
    /// The key in `path` (a `signing.key` that `weft keys new` wrote).
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading the key {}", path.display()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an ed25519 private key in PKCS#8 ({e}); make one with `weft keys new`",
                path.display()
            )
        })?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} can be read by other users; chmod 600 it",
                path.display()
            );
        }
        let id = public_key(&pair).id();
        Ok(Self { pair, id })
    }

    /// The signature of `content` (a module, a mesh config), as `KEYID:SIG`.
    pub(crate) fn sign(&self, what: Signed, content: &[u8]) -> String {
        let mut bytes = [0; 64];
        bytes.copy_from_slice(self.pair.sign(&what.message(content)).as_ref());
        Signature::new(self.id, bytes).to_string()
    }
}

#[cfg(test)]
mod tests {
    use weft_agent::signature::TrustedKeys;

    use super::*;

    #[test]
    fn a_new_key_signs_what_its_public_half_verifies() {
        let dir = std::env::temp_dir().join(format!("weft-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let public = new(&dir).unwrap();
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(PRIVATE_FILE), 0o600);
        assert_eq!(mode(""), 0o700);
        let text = std::fs::read_to_string(dir.join(PUBLIC_FILE)).unwrap();
        assert_eq!(text, format!("{public}\n"));
        assert!(
            new(&dir)
                .unwrap_err()
                .to_string()
                .contains("never overwritten")
        );

        let signer = Signer::load(&dir.join(PRIVATE_FILE)).unwrap();
        let keys = TrustedKeys::parse(&text, "signing.pub").unwrap();
        let sig = signer.sign(Signed::Module, b"\0asm");
        assert_eq!(
            keys.verify(Signed::Module, b"\0asm", Some(&sig)),
            Ok(public.id())
        );
        assert!(Signer::load(&dir.join(PUBLIC_FILE)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
