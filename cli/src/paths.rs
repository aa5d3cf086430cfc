//! Default places on disk, following the XDG base directories.

use std::path::PathBuf;

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("weft")
}

/// The config server's data folder, where it keeps its token files: `WEFT_DATA_DIR`,
/// else the default one.
pub(crate) fn server_data_dir() -> PathBuf {
    std::env::var_os("WEFT_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(default_server_data_dir, PathBuf::from)
}

/// The config server's data folder when none is given.
fn default_server_data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("config-server")
}

/// Where a config server on this machine may keep the token file `name`: in
/// `WEFT_DATA_DIR`, then in the default data folder.
pub(crate) fn token_files(name: &str) -> Vec<PathBuf> {
    let mut files = vec![server_data_dir().join(name)];
    let default = default_server_data_dir().join(name);
    if !files.contains(&default) {
        files.push(default);
    }
    files
}

/// A proxy's state folder (its cached snapshot).
pub(crate) fn state_dir(name: &str) -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join(name)
}

/// This machine's host name, for a proxy's default node id.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("proxy-{}", std::process::id()))
}
