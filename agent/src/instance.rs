//! The instance secret the config server binds this proxy's node id to.
//!
//! It is drawn once and kept in the state folder (`instance`, 0600, written to a
//! temporary file, synced and renamed), so a proxy restarted on the same folder,
//! even after `kill -9`, is the same instance to the server and gets its node id
//! back at once instead of waiting for the server's hold. A proxy without a state
//! folder draws one per process.
//!
//! The folder is locked while the agent runs. A second process started on it (the
//! same `--node` twice on one host shares the default folder) draws a secret of its
//! own: with the first one's, each would replace the other's stream for ever; with
//! its own, the server refuses it and says why. The lock goes with the process,
//! however it ends.

use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::Path;

use crate::cache;

/// The file in the state folder that keeps the secret.
const FILE: &str = "instance";

/// Random bytes in a secret, written as hex.
const RANDOM_BYTES: usize = 16;

/// This process's instance secret, and the state folder's lock that keeps it this
/// process's alone.
pub(crate) struct Instance {
    pub(crate) secret: String,
    /// Held, never read: dropping it lets another process use the folder.
    _lock: Option<File>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of every log and panic message.
        f.write_str("Instance { .. }")
    }
}

/// The secret kept in `dir`, else a new one, kept there for the next start. Any
/// trouble with the folder costs only the quick restart, and is logged; only
/// failing to draw random bytes is an error.
pub(crate) fn load(dir: Option<&Path>) -> std::io::Result<Instance> {
    let Some(dir) = dir else {
        return Ok(Instance {
            secret: random()?,
            _lock: None,
        });
    };
    let lock = match lock(dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::warn!(
                state_dir = %dir.display(),
                "another proxy process runs on this state folder: this one uses an instance \
                 secret of its own, so the config server refuses it while the other holds \
                 the node id; give each proxy its own --node and --state-dir"
            );
            return Ok(Instance {
                secret: random()?,
                _lock: None,
            });
        }
        Err(e) => {
            tracing::warn!(
                state_dir = %dir.display(),
                "cannot use the state folder ({e}): a new instance secret for this process \
                 only, so a restart waits for the config server to release the node id"
            );
            return Ok(Instance {
                secret: random()?,
                _lock: None,
            });
        }
    };
    let path = dir.join(FILE);
    match read(&path) {
        Ok(secret) => {
            return Ok(Instance {
                secret,
                _lock: Some(lock),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "drew an instance secret and kept it");
        }
        Err(e) => tracing::warn!(
            file = %path.display(),
            "cannot read the instance secret ({e}): drawing a new one, so the config server \
             sees a new proxy process and keeps the node id for the previous one for a while"
        ),
    }
    let secret = random()?;
    if let Err(e) = cache::write_atomic(&path, secret.as_bytes()) {
        tracing::warn!(
            "cannot keep the instance secret ({e}): a restart will wait for the config \
             server to release the node id"
        );
    }
    Ok(Instance {
        secret,
        _lock: Some(lock),
    })
}

/// The folder (created 0700), locked for this process; none when another holds it.
fn lock(dir: &Path) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let handle = File::open(dir)?;
    match handle.try_lock() {
        Ok(()) => Ok(Some(handle)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The secret in `path`, if it holds one the server accepts.
fn read(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    // A secret is short: a large file is not one, and is not read whole.
    File::open(path)?.take(1024).read_to_string(&mut text)?;
    let secret = text.trim();
    let valid = (2 * RANDOM_BYTES..=128).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it does not hold an instance secret",
        ));
    }
    Ok(secret.to_owned())
}

/// Random bytes, hex.
fn random() -> std::io::Result<String> {
    let mut random = [0u8; RANDOM_BYTES];
    File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weft-agent-instance-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_secret_is_kept_in_the_state_folder_and_reused() {
        let dir = temp_dir("kept");
        let first = load(Some(&dir)).unwrap();
        assert_eq!(first.secret.len(), 2 * RANDOM_BYTES);
        let file = dir.join(FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first.secret);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let folder = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(folder & 0o777, 0o700);
        let secret = first.secret.clone();
        drop(first);
        // The next process on the folder is the same instance.
        assert_eq!(load(Some(&dir)).unwrap().secret, secret);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_second_process_on_the_folder_gets_a_secret_of_its_own() {
        let dir = temp_dir("locked");
        let first = load(Some(&dir)).unwrap();
        let second = load(Some(&dir)).unwrap();
        assert_ne!(second.secret, first.secret);
        // The kept one stays the first's.
        assert_eq!(
            std::fs::read_to_string(dir.join(FILE)).unwrap(),
            first.secret
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_secret_is_replaced_by_a_new_one() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        for bad in ["", "short", &"z".repeat(32), &"a".repeat(2000)] {
            std::fs::write(dir.join(FILE), bad).unwrap();
            let instance = load(Some(&dir)).unwrap();
            assert_ne!(instance.secret, bad);
            assert_eq!(instance.secret.len(), 2 * RANDOM_BYTES);
            assert_eq!(
                std::fs::read_to_string(dir.join(FILE)).unwrap(),
                instance.secret
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn without_a_state_folder_every_process_draws_its_own() {
        let (a, b) = (load(None).unwrap(), load(None).unwrap());
        assert_ne!(a.secret, b.secret);
        assert_eq!(format!("{a:?}"), "Instance { .. }");
    }
}
