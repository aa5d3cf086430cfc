//! The checks a change must pass before it is stored: a version the server accepts
//! is one every selected proxy can load, because the server has loaded it itself.

use bytes::Bytes;
use weft_config::{Config, ConfigError, ModuleRef};
use weft_engine::Engine;
use weft_proxy::{FilterChain, ModuleStore};

use crate::store::{State, Store};

/// Filter names are file names, URL segments and YAML values: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "invalid filter name {name:?}: use 1 to 63 characters of a-z, 0-9, '.', '_', '-', \
             starting with a letter or digit"
        ))
    }
}

/// The stored modules, plus one that is being pushed and not stored yet.
pub(crate) struct Modules<'a> {
    pub store: &'a Store,
    pub pending: Option<(&'a str, &'a Bytes)>,
}

impl ModuleStore for Modules<'_> {
    fn module(&self, sha256: &str) -> Option<Bytes> {
        if let Some((sha, bytes)) = self.pending
            && sha.eq_ignore_ascii_case(sha256)
        {
            return Some(bytes.clone());
        }
        match self.store.read_module(sha256) {
            Ok(found) => found.map(Bytes::from),
            Err(e) => {
                tracing::error!(sha256, "cannot read a stored module: {e}");
                None
            }
        }
    }
}

/// Every `sha256:` of the groups' configurations (those the mesh pins, and those
/// resolved from the latest versions) must be a pushed version of that filter.
pub(crate) fn check_pins(configs: &[Config], state: &State) -> Result<(), ConfigError> {
    for config in configs {
        for (l, listener) in config.listeners.iter().enumerate() {
            for (j, f) in listener.filters.iter().enumerate() {
                let (Ok(ModuleRef::Pushed(name)), Some(sha)) =
                    (ModuleRef::parse(&f.module.value), &f.sha256)
                else {
                    continue;
                };
                if state.has_version(&name, &sha.value) {
                    continue;
                }
                let known: Vec<&str> = state
                    .filters
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .map(|v| v.sha256.as_str())
                    .collect();
                let known = if known.is_empty() {
                    format!("no filter was pushed under the name {name:?}")
                } else {
                    format!("its versions are {}", known.join(", "))
                };
                return config.invalid(
                    &sha.referenced,
                    config.listener_key(l, &format!(".filters[{j}].sha256")),
                    format!(
                        "{} is not a pushed version of filter {name:?}: {known}",
                        sha.value
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Load every listener's filter chain of every group's configuration, as the
/// proxies will: each module is compiled and each filter's `init` sees its config.
/// The chains stay loaded until the end, so a module several listeners use is
/// compiled once.
pub(crate) fn load_chains(
    engine: &Engine,
    configs: &[Config],
    modules: &Modules<'_>,
) -> Result<(), String> {
    let mut loaded = Vec::new();
    for config in configs {
        for (l, listener) in config.listeners.iter().enumerate() {
            loaded.push(
                FilterChain::load(engine, config, l, listener, modules)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    drop(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use weft_config::MeshConfig;

    use super::*;

    #[test]
    fn filter_names() {
        for ok in ["a", "auth", "rate-limit.v2", "0day", "a_b", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "A", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_must_name_pushed_versions() {
        let sha = "ab".repeat(32);
        let mesh = MeshConfig::parse(
            &format!(
                "proxies:\n  - select: {{}}\n    listeners:\n      - name: in\n        \
                 address: 127.0.0.1:0\n        filters:\n          - name: a\n            \
                 module: filter:a\n            sha256: {sha}\n"
            ),
            "mesh.yaml",
        )
        .unwrap();
        let configs = mesh.validate(&Default::default()).unwrap();
        let mut state = State::default();
        let err = check_pins(&configs, &state).unwrap_err().to_string();
        assert!(
            err.starts_with("mesh.yaml:9:21: proxies[0].listeners[0].filters[0].sha256: "),
            "{err}"
        );
        assert!(err.contains("no filter was pushed"), "{err}");
        state.filters.insert(
            "a".into(),
            vec![crate::store::FilterVersion {
                sha256: sha,
                size: 1,
                pushed: String::new(),
            }],
        );
        check_pins(&configs, &state).unwrap();
    }
}
