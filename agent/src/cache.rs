//! The last good snapshot on disk: `snapshot.json` and the modules it uses, each
//! written to a temporary file, synced and renamed, so a crash leaves the old copy or
//! the new one, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why the cached snapshot cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `snapshot.json` is not what this version writes.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u64,
    mesh: String,
    filters: BTreeMap<String, String>,
    /// Kept so that a restart with trusted keys checks the cached snapshot as it
    /// checked it when it came; absent from files written before signatures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mesh_signature: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    module_signatures: BTreeMap<String, String>,
}

pub(crate) struct Cached {
    pub(crate) snapshot: weft_api::Snapshot,
    pub(crate) modules: HashMap<String, Bytes>,
}

pub(crate) struct DiskCache {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DiskCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn snapshot_file(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }

    fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }

    /// The cached snapshot and every intact module beside it; none when nothing was
    /// cached yet. A module whose bytes no longer match its name is left out, so the
    /// snapshot that needs it fails to apply rather than running altered code.
    pub(crate) fn load(&self) -> Result<Option<Cached>, CacheError> {
        let path = self.snapshot_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let file: SnapshotFile = serde_json::from_str(&text).map_err(|e| CacheError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut modules = HashMap::new();
        let dir = self.modules_dir();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(sha) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".wasm"))
                else {
                    continue;
                };
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                if hex::encode(Sha256::digest(&bytes)) == sha {
                    modules.insert(sha.to_owned(), Bytes::from(bytes));
                } else {
                    tracing::warn!(file = %path.display(), "cached module does not match its sha256; ignoring it");
                }
            }
        }
        Ok(Some(Cached {
            snapshot: weft_api::Snapshot {
                version: file.version,
                mesh: file.mesh,
                filters: file.filters,
                modules: Vec::new(),
                mesh_signature: file.mesh_signature,
                module_signatures: file.module_signatures,
            },
            modules,
        }))
    }

    /// Keep this snapshot and exactly these modules.
    pub(crate) fn store(
        &self,
        version: u64,
        mesh: &str,
        filters: &BTreeMap<String, String>,
        signatures: &crate::verify::Signatures,
        modules: &HashMap<String, Bytes>,
    ) -> Result<(), CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.modules_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        for (sha, bytes) in modules {
            let path = dir.join(format!("{sha}.wasm"));
            if !path.exists() {
                write_atomic(&path, bytes)?;
            }
        }
        let file = SnapshotFile {
            version,
            mesh: mesh.to_owned(),
            filters: filters.clone(),
            mesh_signature: signatures.mesh.clone(),
            module_signatures: signatures.modules.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| CacheError::Corrupt {
            path: self.snapshot_file(),
            message: e.to_string(),
        })?;
        write_atomic(&self.snapshot_file(), &json)?;
        // Modules no longer used go only after the snapshot that dropped them is safe.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let keep = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".wasm"))
                    .is_some_and(|sha| modules.contains_key(sha));
                if !keep {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Write to a temporary file (0600), sync it, rename it over `path`, sync the folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // 0600: the snapshot holds every filter's config, secrets included.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // A file left by a crash keeps its old mode unless told.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
    }
    Ok(())
}
