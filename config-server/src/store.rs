//! What the server keeps in its data folder, and how it writes it.
//!
//! - `modules/<sha256>.wasm`: filter modules, content-addressed, written before any
//!   state that references them.
//! - `state.json`: every pushed filter version and every mesh version.
//! - `token`: the API token; `proxy-token`: the proxies' token.
//! - `signatures.json`: the signatures pushes and applies came with, by the sha256
//!   of what they sign (a module, a mesh config's text): a signature covers content,
//!   not a version, so every version that holds the same module or mesh text
//!   carries it, a rollback's included.
//!
//! The folder is 0700 and every file 0600: the state holds every mesh config, with
//! the filters' configs and whatever secrets they carry.
//!
//! Every file is written to a temporary file, synced, renamed over the old one, and
//! the folder synced: a crash leaves the old file or the new one, never a torn one.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ServerError;

const STATE_FILE: &str = "state.json";
const SIGNATURES_FILE: &str = "signatures.json";
const MODULES_DIR: &str = "modules";

/// Everything pushed and applied, as stored in `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    /// Versions of every pushed filter, oldest first.
    pub filters: BTreeMap<String, Vec<FilterVersion>>,
    /// Every mesh version, oldest first; the last one is live.
    pub versions: Vec<Arc<Version>>,
}

/// One pushed version of a filter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterVersion {
    pub sha256: String,
    pub size: u64,
    /// RFC 3339.
    pub pushed: String,
}

/// One version of the mesh: a mesh config and the filter versions it resolves to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Version {
    pub version: u64,
    /// RFC 3339.
    pub created: String,
    /// What made it, e.g. `apply mesh.yaml`, `push auth 1a2b3c4d5e6f`.
    pub cause: String,
    pub mesh_file: String,
    pub mesh: String,
    /// Pushed filter name to sha256.
    pub filters: BTreeMap<String, String>,
    /// Who made it: the user the client named, if it named one, and the address the
    /// change came from. Absent from versions stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl State {
    /// The live version, if any mesh was applied.
    pub fn current(&self) -> Option<&Arc<Version>> {
        self.versions.last()
    }

    /// The number the next version gets.
    pub fn next_version(&self) -> u64 {
        self.current().map_or(1, |v| v.version + 1)
    }

    /// The latest version of a filter.
    pub fn latest(&self, name: &str) -> Option<&FilterVersion> {
        self.filters.get(name).and_then(|v| v.last())
    }

    /// Every pushed filter's latest sha256: what a newly applied mesh resolves to.
    pub fn latest_filters(&self) -> BTreeMap<String, String> {
        self.filters
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.last()?.sha256.clone())))
            .collect()
    }

    /// Whether `sha256` is one of the pushed versions of `name`.
    pub fn has_version(&self, name: &str, sha256: &str) -> bool {
        self.filters
            .get(name)
            .is_some_and(|v| v.iter().any(|f| f.sha256.eq_ignore_ascii_case(sha256)))
    }
}

/// Signatures (`KEYID:SIG`, see `signing`), as stored in `signatures.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signatures {
    /// A module's sha256 to its signature.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
    /// The sha256 of a mesh config's text to its signature.
    #[serde(default)]
    pub meshes: BTreeMap<String, String>,
}

/// The data folder.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open the data folder, creating it (0700) and its `modules` folder if needed.
    /// A folder that already exists keeps its mode (it may be shared on purpose), but
    /// one others can read is reported.
    pub fn open(dir: &Path) -> Result<Self, ServerError> {
        use std::os::unix::fs::PermissionsExt;
        for d in [dir.to_owned(), dir.join(MODULES_DIR)] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|source| ServerError::Io { path: d, source })?;
        }
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "{} is open to other users (mode {:o}); it holds the tokens and every \
                 config: chmod 700 it",
                dir.display(),
                meta.permissions().mode() & 0o777
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Read `state.json` (empty when absent) and check that it holds together: a
    /// damaged state is an error to look at, never a reason to start afresh.
    pub fn load(&self) -> Result<State, ServerError> {
        let path = self.state_file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(ServerError::Io { path, source }),
        };
        let corrupt = |message: String| ServerError::CorruptState {
            path: path.clone(),
            message,
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        for pair in state.versions.windows(2) {
            if pair[1].version != pair[0].version + 1 {
                return Err(corrupt(format!(
                    "version {} follows version {}",
                    pair[1].version, pair[0].version
                )));
            }
        }
        for (name, versions) in &state.filters {
            for v in versions {
                let module = self.module_path(&v.sha256).ok_or_else(|| {
                    corrupt(format!("filter {name:?}: bad sha256 {:?}", v.sha256))
                })?;
                if !module.is_file() {
                    return Err(corrupt(format!(
                        "filter {name:?} version {} has no module: {} is missing",
                        v.sha256,
                        module.display()
                    )));
                }
            }
        }
        Ok(state)
    }

    /// Read `signatures.json` (empty when absent).
    pub fn load_signatures(&self) -> Result<Signatures, ServerError> {
        let path = self.dir.join(SIGNATURES_FILE);
        match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| ServerError::CorruptState {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Signatures::default()),
            Err(source) => Err(ServerError::Io { path, source }),
        }
    }

    /// Replace `signatures.json`.
    pub fn save_signatures(&self, signatures: &Signatures) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(signatures).map_err(io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.dir, SIGNATURES_FILE, &text, 0o600)
    }

    /// Replace `state.json`.
    pub fn save(&self, state: &State) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.dir, STATE_FILE, &text, 0o600)
    }

    /// Where the module with this sha256 lives; none when it is not 64 hex digits,
    /// so no name from a peer can reach outside the folder.
    pub fn module_path(&self, sha256: &str) -> Option<PathBuf> {
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| {
            self.dir
                .join(MODULES_DIR)
                .join(format!("{}.wasm", sha256.to_ascii_lowercase()))
        })
    }

    /// Store a module (nothing to do when it is already there: same name, same bytes).
    pub fn write_module(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self
            .module_path(sha256)
            .ok_or_else(|| io::Error::other(format!("bad sha256 {sha256:?}")))?;
        if path.is_file() {
            return Ok(());
        }
        let file = format!("{}.wasm", sha256.to_ascii_lowercase());
        write_atomic(&self.dir.join(MODULES_DIR), &file, bytes, 0o600)
    }

    /// A stored module, or none when it is not stored.
    pub fn read_module(&self, sha256: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(path) = self.module_path(sha256) else {
            return Ok(None);
        };
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Write `dir/name` so that a crash at any point leaves either the old file or the
/// new one: temp file, fsync, rename, fsync of the folder (the rename itself is only
/// durable once the folder is synced).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only to a file created now: a temporary file left by a crash
        // keeps its own, which must not become the state's.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Now, as RFC 3339 (UTC, seconds).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn state_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("round");
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(store.load().unwrap().versions.is_empty());

        let sha = "ab".repeat(32);
        store.write_module(&sha, b"\0asm").unwrap();
        let mut state = State::default();
        state.filters.insert(
            "auth".into(),
            vec![FilterVersion {
                sha256: sha.clone(),
                size: 4,
                pushed: now(),
            }],
        );
        state.versions.push(Arc::new(Version {
            version: 1,
            created: now(),
            cause: "apply mesh.yaml".into(),
            mesh_file: "mesh.yaml".into(),
            mesh: "proxies: []\n".into(),
            filters: state.latest_filters(),
            by: Some("ops from 127.0.0.1".into()),
        }));
        store.save(&state).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.latest("auth").unwrap().sha256, sha);
        assert_eq!(back.versions[0].by.as_deref(), Some("ops from 127.0.0.1"));
        assert_eq!(back.next_version(), 2);
        assert_eq!(store.read_module(&sha).unwrap().unwrap(), b"\0asm");
        let mode = std::fs::metadata(store.state_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_stored_before_versions_named_their_author_loads() {
        let dir = temp_dir("authorless");
        let store = Store::open(&dir).unwrap();
        let state = r#"{"filters": {}, "versions": [{"version": 1, "created": "x",
            "cause": "apply mesh.yaml", "mesh_file": "mesh.yaml", "mesh": "proxies: []",
            "filters": {}}]}"#;
        std::fs::write(store.state_file(), state).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.versions[0].by, None);
        // And it is written back without the key, as it was.
        store.save(&back).unwrap();
        let text = std::fs::read_to_string(store.state_file()).unwrap();
        assert!(!text.contains("\"by\""), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_does_not_lend_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("leftover");
        let store = Store::open(&dir).unwrap();
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, "half a state").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.save(&State::default()).unwrap();
        let mode = std::fs::metadata(store.state_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_state_is_an_error_naming_the_file() {
        let dir = temp_dir("damaged");
        let store = Store::open(&dir).unwrap();
        std::fs::write(store.state_file(), b"{\"filters\": {}, \"versions\": [").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");

        // A state naming a module that is not there is damaged too.
        let state = format!(
            r#"{{"filters": {{"a": [{{"sha256": "{}", "size": 1, "pushed": "x"}}]}}, "versions": []}}"#,
            "cd".repeat(32)
        );
        std::fs::write(store.state_file(), state).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signatures_round_trip_beside_the_state() {
        let dir = temp_dir("signatures");
        let store = Store::open(&dir).unwrap();
        assert!(store.load_signatures().unwrap().modules.is_empty());
        let mut signatures = Signatures::default();
        signatures.modules.insert("ab".repeat(32), "k:s".into());
        signatures.meshes.insert("cd".repeat(32), "k:m".into());
        store.save_signatures(&signatures).unwrap();
        let back = store.load_signatures().unwrap();
        assert_eq!(back.modules, signatures.modules);
        assert_eq!(back.meshes, signatures.meshes);
        std::fs::write(dir.join(SIGNATURES_FILE), "{\"modules\": 1}").unwrap();
        let err = store.load_signatures().unwrap_err().to_string();
        assert!(err.contains("signatures.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn module_names_cannot_escape_the_folder() {
        let store = Store {
            dir: PathBuf::from("/data"),
        };
        assert!(store.module_path("../../etc/passwd").is_none());
        assert!(store.module_path(&"g".repeat(64)).is_none());
        assert!(store.module_path(&"A".repeat(64)).is_some());
    }
}
