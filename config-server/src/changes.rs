//! The three changes: push a filter, apply a mesh config, roll back. Each is checked
//! in full before anything is stored, stored before it is published, and run one at
//! a time so versions never interleave.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use weft_config::{MeshConfig, ModuleRef};
use weft_engine::LoadError;

use crate::error::{ApiError, blocking};
use crate::store::{FilterVersion, State, Version, now};
use crate::validate::{self, Modules};
use crate::{Current, Published, Shared};

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
    /// Store a new version of filter `name`, and make it live when a mesh config is.
    pub async fn push(self: &Arc<Self>, name: String, bytes: Bytes) -> Result<Pushed, ApiError> {
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
        // What decides is the live version, not the filter's latest push: after a
        // rollback the live version runs an older module, and pushing the newer one
        // again must make it live again.
        let unchanged = match &published.current {
            Some(c) => c
                .version
                .filters
                .get(&name)
                .is_some_and(|s| s.eq_ignore_ascii_case(&sha256)),
            None => published
                .state
                .latest(&name)
                .is_some_and(|v| v.sha256 == sha256),
        };
        if unchanged {
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

        // The live mesh must still load with the new module in place of the old one;
        // a filter that rejects the config the mesh gives it is refused here rather
        // than by every proxy.
        let mut state = published.state.clone();
        let mut next = None;
        if let Some(current) = &published.current {
            let mut filters = current.version.filters.clone();
            filters.insert(name.clone(), sha256.clone());
            let this = self.clone();
            let (cur, sha, module) = (current.clone(), sha256.clone(), bytes.clone());
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
                &state,
                format!("push {name} {}", &sha256[..12]),
                &current.version.mesh_file,
                &current.version.mesh,
                filters,
            );
            next = Some(Arc::new(Current {
                version,
                mesh: current.mesh.clone(),
            }));
        }
        // The filter's history records pushes; the same module pushed again right
        // after itself (say, to undo a rollback) is one entry.
        if published
            .state
            .latest(&name)
            .is_none_or(|v| v.sha256 != sha256)
        {
            state
                .filters
                .entry(name.clone())
                .or_default()
                .push(FilterVersion {
                    sha256: sha256.clone(),
                    size,
                    pushed: now(),
                });
        }
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

    /// Make a mesh config live, with the filter versions the live version uses (the
    /// latest pushes, unless a rollback brought back earlier ones), and the latest
    /// version of every filter it does not have.
    pub async fn apply(self: &Arc<Self>, file: String, text: String) -> Result<u64, ApiError> {
        let mesh =
            MeshConfig::parse(&text, &file).map_err(|e| ApiError::bad_request(e.to_string()))?;

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

        let mut state = published.state.clone();
        let version = new_version(&state, format!("apply {file}"), &file, &text, filters);
        state.versions.push(version.clone());
        let number = version.version;
        self.commit(state, None, Some(Arc::new(Current { version, mesh })))
            .await?;
        tracing::info!(%file, version = number, "mesh config applied");
        Ok(number)
    }

    /// Make an earlier version's mesh config and filter versions live again, as a
    /// new version.
    pub async fn rollback(self: &Arc<Self>, to: u64) -> Result<u64, ApiError> {
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

fn new_version(
    state: &State,
    cause: String,
    mesh_file: &str,
    mesh: &str,
    filters: BTreeMap<String, String>,
) -> Arc<Version> {
    Arc::new(Version {
        version: state.next_version(),
        created: now(),
        cause,
        mesh_file: mesh_file.to_owned(),
        mesh: mesh.to_owned(),
        filters,
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
