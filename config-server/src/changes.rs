//! The three changes: push a filter, apply a mesh config, roll back. Each is checked
//! in full before anything is stored, stored before it is published, and run one at
//! a time so versions never interleave. An apply can also be only checked (a dry run)
//! or refused when it selects badly (strict); both check exactly what an apply does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use weft_config::{MeshConfig, ModuleRef};
use weft_engine::LoadError;

use crate::error::{ApiError, blocking};
use crate::store::{FilterVersion, State, Version, now};
use crate::validate::{self, Member, Modules, Warning};
use crate::{Current, Published, Shared};

/// How an apply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Store it, whatever it selects; the warnings go back with the version.
    Apply,
    /// Store it only when it has no warning: every group selects a connected proxy and
    /// every connected proxy has a group.
    Strict,
    /// Check it exactly as an apply would, and store nothing.
    DryRun,
}

/// What an apply did, or (a dry run, or strict with warnings) would have done.
#[derive(Debug)]
pub(crate) struct Applied {
    /// Whether it was stored and is live.
    pub stored: bool,
    /// The number of the version it made, or would have made.
    pub version: u64,
    /// What it selects that is likely a mistake, against the proxies connected now.
    pub warnings: Vec<Warning>,
}

/// What a push did.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Pushed {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// The live version, which has this module as the filter `name`: the one the
    /// push made, or (when nothing changed) the one that already had it. None when no
    /// mesh config is applied yet.
    pub version: Option<u64>,
    /// False when the live version already had this exact module as `name` (or, with
    /// no mesh config applied, it already was the latest push): nothing changed.
    pub changed: bool,
    /// Why no proxy runs the module although it is in the live version, if none does:
    /// no group of the live mesh config uses the filter, or every use pins another
    /// version.
    pub note: Option<String>,
}

impl Shared {
    /// Store a new version of filter `name`, and make it live when a mesh config is;
    /// `by` says who did it.
    pub async fn push(
        self: &Arc<Self>,
        name: String,
        bytes: Bytes,
        by: Option<String>,
    ) -> Result<Pushed, ApiError> {
        validate::check_name(&name).map_err(ApiError::bad_request)?;
        if bytes.len() > self.max_filter_size {
            return Err(too_large(bytes.len(), self.max_filter_size));
        }
        let size = bytes.len() as u64;
        // Kept until the end: the live mesh's chains load the module compiled here.
        let checked = {
            let (engine, name, bytes) = (self.engine.clone(), name.clone(), bytes.clone());
            blocking(move || engine.check(&name, &bytes))
                .await?
                .map_err(refused_module)?
        };
        let sha256 = checked.sha256.clone();

        let _write = self.write.lock().await;
        let published = self.snapshot();
        let live = published.current.as_ref().map(|c| c.version.version);
        if already_live(&published, &name, &sha256) {
            let note = published
                .current
                .as_ref()
                .and_then(|c| not_running(&c.mesh, &name, &sha256));
            return Ok(Pushed {
                name,
                sha256,
                size,
                version: live,
                changed: false,
                note,
            });
        }

        let mut state = published.state.clone();
        let next = match &published.current {
            Some(current) => {
                let module = (sha256.as_str(), &bytes);
                Some(self.live_with(&state, current, &name, module, by).await?)
            }
            None => None,
        };
        record_push(&published.state, &mut state, &name, &sha256, size);
        let note = next
            .as_ref()
            .and_then(|c| not_running(&c.mesh, &name, &sha256));
        let version = next.as_ref().map(|c| c.version.version);
        if let Some(c) = &next {
            state.versions.push(c.version.clone());
        }
        self.commit(state, Some((sha256.clone(), bytes)), next)
            .await?;
        tracing::info!(filter = %name, %sha256, size, ?version, "filter pushed");
        Ok(Pushed {
            name,
            sha256,
            size,
            version: version.or(live),
            changed: true,
            note,
        })
    }

    /// The next live version: `current` with `module` (sha256, bytes) as filter
    /// `name`. The live mesh must still load with the new module in place of the old
    /// one; a filter that rejects the config the mesh gives it is refused here rather
    /// than by every proxy.
    async fn live_with(
        self: &Arc<Self>,
        state: &State,
        current: &Arc<Current>,
        name: &str,
        (sha256, bytes): (&str, &Bytes),
        by: Option<String>,
    ) -> Result<Arc<Current>, ApiError> {
        let mut filters = current.version.filters.clone();
        filters.insert(name.to_owned(), sha256.to_owned());
        let this = self.clone();
        let (cur, sha, module) = (current.clone(), sha256.to_owned(), bytes.clone());
        let filters = blocking(move || {
            let modules = Modules {
                store: &this.store,
                pending: Some((&sha, &module)),
            };
            let configs = cur.mesh.validate(&filters).map_err(|e| e.to_string())?;
            validate::load_chains(&this.engine, &configs, &modules).map(|()| filters)
        })
        .await?
        .map_err(ApiError::unprocessable)?;
        let version = new_version(
            state,
            format!("push {name} {}", &sha256[..12]),
            &current.version.mesh_file,
            &current.version.mesh,
            filters,
            by,
        );
        Ok(Arc::new(Current {
            version,
            mesh: current.mesh.clone(),
        }))
    }

    /// Make a mesh config live, with the filter versions the live version uses (the
    /// latest pushes, unless a rollback brought back earlier ones), and the latest
    /// version of every filter it does not have; `by` says who did it. A dry run, or
    /// a strict apply with warnings, stops after every check and stores nothing.
    pub async fn apply(
        self: &Arc<Self>,
        file: String,
        text: String,
        by: Option<String>,
        mode: Mode,
    ) -> Result<Applied, ApiError> {
        let mesh =
            MeshConfig::parse(&text, &file).map_err(|e| ApiError::bad_request(e.to_string()))?;

        // A dry run takes the lock too: it checks against the same state an apply
        // made at that moment would.
        let _write = self.write.lock().await;
        let published = self.snapshot();
        let mut filters = published.state.latest_filters();
        if let Some(current) = &published.current {
            // Applying a mesh config changes the mesh, not which filter versions run:
            // a rollback stays rolled back until a push says otherwise.
            filters.extend(current.version.filters.clone());
        }
        let configs = mesh
            .validate(&filters)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        validate::check_pins(&configs, &published.state)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let this = self.clone();
        let (mesh, filters) = blocking(move || {
            let modules = Modules {
                store: &this.store,
                pending: None,
            };
            validate::load_chains(&this.engine, &configs, &modules).map(|()| (mesh, filters))
        })
        .await?
        .map_err(ApiError::unprocessable)?;

        let warnings = validate::selection_warnings(&mesh, &self.members());
        let number = published.state.next_version();
        if mode == Mode::DryRun || (mode == Mode::Strict && !warnings.is_empty()) {
            return Ok(Applied {
                stored: false,
                version: number,
                warnings,
            });
        }
        let mut state = published.state.clone();
        let version = new_version(&state, format!("apply {file}"), &file, &text, filters, by);
        state.versions.push(version.clone());
        self.commit(state, None, Some(Arc::new(Current { version, mesh })))
            .await?;
        for w in &warnings {
            tracing::warn!(%file, version = number, "{}", w.message());
        }
        tracing::info!(%file, version = number, "mesh config applied");
        Ok(Applied {
            stored: true,
            version: number,
            warnings,
        })
    }

    /// The proxies the registry knows, as selection sees them.
    pub(crate) fn members(&self) -> Vec<Member> {
        // The registry's view is read through its JSON, the shape `GET /v1/proxies`
        // keeps for every client.
        (self.proxies.list().iter())
            .filter_map(|view| {
                let member = serde_json::to_value(view).and_then(serde_json::from_value);
                member
                    .inspect_err(|e| tracing::error!("a proxy's view has no service: {e}"))
                    .ok()
            })
            .collect()
    }

    /// Make an earlier version's mesh config and filter versions live again, as a
    /// new version; `by` says who did it.
    pub async fn rollback(self: &Arc<Self>, to: u64, by: Option<String>) -> Result<u64, ApiError> {
        let _write = self.write.lock().await;
        let published = self.snapshot();
        let Some(old) = published.state.versions.iter().find(|v| v.version == to) else {
            let known = match published.state.current() {
                Some(c) => format!("versions are 1 to {}", c.version),
                None => "no mesh config was applied yet".to_owned(),
            };
            return Err(ApiError::not_found(format!("no version {to}: {known}")));
        };
        let mut state = published.state.clone();
        let version = new_version(
            &state,
            format!("rollback to {to}"),
            &old.mesh_file,
            &old.mesh,
            old.filters.clone(),
            by,
        );
        let current = Current::parse(version.clone()).map_err(|e| {
            ApiError::internal(format!("stored version {to} no longer parses: {e}"))
        })?;
        state.versions.push(version.clone());
        self.commit(state, None, Some(Arc::new(current))).await?;
        tracing::info!(from = to, version = version.version, "rolled back");
        Ok(version.version)
    }

    /// Write the module (if any) and the state, then publish them. Nothing is
    /// published, and the state in memory stays as it was, if writing fails.
    async fn commit(
        &self,
        state: State,
        module: Option<(String, Bytes)>,
        current: Option<Arc<Current>>,
    ) -> Result<(), ApiError> {
        let store = self.store.clone();
        let state = blocking(move || {
            if let Some((sha, bytes)) = &module {
                store.write_module(sha, bytes)?;
            }
            store.save(&state).map(|()| state)
        })
        .await?
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot store the change in {}: {e}",
                self.store.dir().display()
            ))
        })?;
        let current = current.or_else(|| self.snapshot().current.clone());
        self.published
            .send_replace(Arc::new(Published { state, current }));
        Ok(())
    }
}

/// Whether the live version already runs `sha256` as `name` (with no mesh config
/// applied: whether it was the latest push). What decides is the live version, not
/// the filter's latest push: after a rollback the live version runs an older module,
/// and pushing the newer one again must make it live again.
fn already_live(published: &Published, name: &str, sha256: &str) -> bool {
    match &published.current {
        Some(c) => c
            .version
            .filters
            .get(name)
            .is_some_and(|s| s.eq_ignore_ascii_case(sha256)),
        None => published
            .state
            .latest(name)
            .is_some_and(|v| v.sha256 == sha256),
    }
}

/// Add the push to the filter's history in `state`. The history records pushes; the
/// same module pushed again right after itself (say, to undo a rollback) is one
/// entry, judged against the history as it was (`before`).
fn record_push(before: &State, state: &mut State, name: &str, sha256: &str, size: u64) {
    if before.latest(name).is_none_or(|v| v.sha256 != sha256) {
        state
            .filters
            .entry(name.to_owned())
            .or_default()
            .push(FilterVersion {
                sha256: sha256.to_owned(),
                size,
                pushed: now(),
            });
    }
}

fn new_version(
    state: &State,
    cause: String,
    mesh_file: &str,
    mesh: &str,
    filters: BTreeMap<String, String>,
    by: Option<String>,
) -> Arc<Version> {
    Arc::new(Version {
        version: state.next_version(),
        created: now(),
        cause,
        mesh_file: mesh_file.to_owned(),
        mesh: mesh.to_owned(),
        filters,
        by,
    })
}

/// Why no proxy runs module `sha256` as filter `name` under `mesh`, if none does.
fn not_running(mesh: &MeshConfig, name: &str, sha256: &str) -> Option<String> {
    let wanted = ModuleRef::Pushed(name.to_owned());
    let mut pins = Vec::new();
    for (g, group) in mesh.proxies.iter().enumerate() {
        for (l, listener) in group.listeners.iter().enumerate() {
            for (j, f) in listener.filters.iter().enumerate() {
                if ModuleRef::parse(&f.module.value).as_ref() != Ok(&wanted) {
                    continue;
                }
                match &f.sha256 {
                    Some(pin) if !pin.value.eq_ignore_ascii_case(sha256) => pins.push(format!(
                        "{}:{}:{}: proxies[{g}].listeners[{l}].filters[{j}]",
                        mesh.file,
                        pin.referenced.line(),
                        pin.referenced.column()
                    )),
                    _ => return None,
                }
            }
        }
    }
    Some(if pins.is_empty() {
        format!(
            "no proxy runs it: no group of the live mesh config uses filter:{name}; \
             apply one that does"
        )
    } else {
        format!(
            "no proxy runs it: the live mesh config pins another version of filter:{name} \
             at {}; change the pin and apply",
            pins.join(", ")
        )
    })
}

pub(crate) fn too_large(size: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the module is {size} bytes; this server accepts filters up to {max} bytes"),
    )
}

/// Bytes that are not a component are a bad request; a component of another world
/// is well-formed but not a filter.
fn refused_module(e: LoadError) -> ApiError {
    match e {
        LoadError::NotWasm { .. } | LoadError::CoreModule { .. } | LoadError::Compile { .. } => {
            ApiError::bad_request(e.to_string())
        }
        LoadError::WrongWorld { .. } => ApiError::unprocessable(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "\
clusters:
  - name: web
    endpoints: [\"127.0.0.1:9\"]
proxies:
  - select: { service: carts }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
";

    fn data_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-changes-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_dry_run_checks_as_an_apply_does_and_stores_nothing() {
        let dir = data_dir("dry");
        let shared = Shared::for_tests(&dir);
        let apply = |text: &str, mode| shared.apply("mesh.yaml".into(), text.into(), None, mode);

        let dry = apply(MESH, Mode::DryRun).await.unwrap();
        assert!(!dry.stored);
        assert_eq!(dry.version, 1, "the number it would get");
        // No proxy is connected: the group selects none.
        assert_eq!(dry.warnings.len(), 1, "{:?}", dry.warnings);
        assert!(shared.snapshot().state.versions.is_empty());
        assert!(shared.snapshot().current.is_none());
        assert!(!shared.store.state_file().exists(), "nothing written");

        // The same refusal, word for word, whether dry or not.
        let broken = MESH.replace("default_cluster: web", "default_cluster: nowhere");
        let dry = apply(&broken, Mode::DryRun).await.unwrap_err();
        let real = apply(&broken, Mode::Apply).await.unwrap_err();
        assert_eq!((dry.status, &dry.message), (real.status, &real.message));
        assert!(dry.message.contains("nowhere"), "{}", dry.message);

        // A real apply stores what the dry run said, warnings and all.
        let applied = apply(MESH, Mode::Apply).await.unwrap();
        assert!(applied.stored);
        assert_eq!(applied.version, 1);
        assert_eq!(applied.warnings.len(), 1);
        assert_eq!(shared.snapshot().state.versions.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn strict_refuses_an_apply_with_warnings_and_records_who_applied() {
        let dir = data_dir("strict");
        let shared = Shared::for_tests(&dir);
        let strict = shared
            .apply("mesh.yaml".into(), MESH.into(), None, Mode::Strict)
            .await
            .unwrap();
        assert!(!strict.stored && !strict.warnings.is_empty());
        assert!(shared.snapshot().state.versions.is_empty());

        // A mesh that selects nothing and has no proxy to leave out warns of nothing.
        let by = Some("ops from 127.0.0.1".to_owned());
        let empty = shared
            .apply(
                "empty.yaml".into(),
                "proxies: []\n".into(),
                by,
                Mode::Strict,
            )
            .await
            .unwrap();
        assert!(empty.stored && empty.warnings.is_empty());
        let state = shared.store.load().unwrap();
        assert_eq!(state.versions[0].by.as_deref(), Some("ops from 127.0.0.1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
