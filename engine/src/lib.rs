//! Weft's filter engine: loads `weft:filter` components with wasmtime and runs their
//! hooks on the request path.
//!
//! 1. Make one [`Engine`] per process; it owns the compiler, a cache of compiled
//!    components keyed by sha256, and the clock that enforces hook deadlines.
//! 2. [`Engine::load`] a [`FilterSpec`]: the module is checked (a component, of the
//!    right world, matching its expected sha256), instantiated once, and handed its
//!    configuration; a rejected configuration is an error here, before any request.
//! 3. Call [`Filter::on_request`] / [`Filter::on_response`] / [`Filter::on_done`] with
//!    the request's [`Exchange`]. Instances are reused from a pool: a hook on a warm instance costs
//!    well under a microsecond, a fresh instance tens of microseconds.
//! 4. A failing hook (trap, panic, deadline, memory limit) discards its instance and
//!    returns an [`Outcome`] shaped by the filter's [`FailurePolicy`].
//!
//! ```no_run
//! use weft_engine::{Engine, FilterSpec};
//! let engine = Engine::new()?;
//! let bytes = std::fs::read("hello.wasm")?;
//! let filter = engine.load(FilterSpec::new("hello", "hello.wasm", &bytes))?;
//! println!("{} wants responses: {}", filter.name(), filter.interest().response);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod bindings;
mod deadline;
mod error;
mod exchange;
mod filter;
// Which headers a filter may set; the SDK's native host and filters' config checks
// read this same file. The engine parses names with `http`, so takes only the list.
#[path = "../../sdk/src/header_rules.rs"]
#[allow(dead_code)]
mod header_rules;
mod host;
// The rules live with the SDK, whose native host (a filter's `cargo test`) applies
// them too and is packaged on its own; one file, so both refuse the same things.
#[path = "../../sdk/src/limits.rs"]
mod limits;
mod metrics;
mod resources;
mod runtime;
mod shared;
mod spans;
mod state;
mod stats;
mod stderr;
mod wasi_io;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};

use crate::runtime::{Compiled, Runtime};

pub use bindings::types::{
    Action, BodyMode, Header, HeaderError, Interest, LocalResponse, Responder, ResponseAction,
    Summary,
};
pub use deadline::EPOCH_TICK;
pub use error::LoadError;
pub use exchange::{
    ConnectionInfo, Exchange, ExchangeError, RequestContext, RequestHead, ResponseHead, TlsInfo,
};
pub use filter::{Filter, FilterFailure, FilterSpec, Outcome};
pub use host::HostState;
pub use metrics::{DefinedSeries, MetricsHub, MetricsSpec, SeriesValue};
pub use shared::ClusterRef;
pub use spans::{SPAN_QUEUE, Span, SpanKind, SpanQueue};
pub use state::SharedState;
pub use stats::{HookReport, StatsReport};
pub use weft_config::FailurePolicy;

struct EngineInner {
    /// What loaded filters share of the engine.
    runtime: Arc<Runtime>,
    /// Where compiled components are kept across restarts; none disables it.
    cache_dir: Option<PathBuf>,
    /// Identifies the engine's settings in cache file names.
    engine_hash: u64,
    linker: Linker<HostState>,
    /// Compiled components by sha256, held weakly: code no loaded filter uses is
    /// freed, so swapping filter versions does not grow the proxy.
    compiled: Mutex<HashMap<[u8; 32], Weak<Compiled>>>,
}

/// A module that passed [`Engine::check`].
pub struct Checked {
    /// Its sha256 (hex).
    pub sha256: String,
    /// Keeps the compiled code in the engine's cache.
    _compiled: Arc<Compiled>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The filter engine: compiler, component cache, linker and deadline clock.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl Engine {
    /// An engine with Weft's settings, and its deadline clock running. Compiled
    /// components are cached on disk in `WEFT_CACHE_DIR` (`off` disables it), else
    /// `$XDG_CACHE_HOME/weft` or `~/.cache/weft`.
    pub fn new() -> Result<Self, LoadError> {
        Self::with_cache_dir(default_cache_dir())
    }

    /// Like [`Engine::new`], with compiled components cached in `cache_dir` (none:
    /// not on disk).
    pub fn with_cache_dir(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Hook deadlines: a tick thread bumps the epoch, each call gets a budget of
        // ticks, weighed against the CPU time it used when they run out.
        config.epoch_interruption(true);
        // Component-model async costs every call about double; no hook needs it yet.
        config.concurrency_support(false);
        let wasmtime =
            wasmtime::Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&wasmtime);
        // Std guests import WASI even when they do nothing with it; each HostState
        // builds a WASI context that grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| wasi_io::shadow(&mut linker))
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        bindings::FilterWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s: &mut HostState| s,
        )
        .map_err(|e| LoadError::Engine(e.to_string()))?;
        deadline::start_ticker(wasmtime.weak());
        let mut hasher = std::hash::DefaultHasher::new();
        wasmtime.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            inner: Arc::new(EngineInner {
                cache_dir,
                engine_hash: hasher.finish(),
                runtime: Arc::new(Runtime {
                    wasmtime,
                    metrics: Arc::default(),
                    spans: Arc::default(),
                    epoch_start: Instant::now(),
                }),
                linker,
                compiled: Mutex::default(),
            }),
        })
    }

    /// The metrics filters define; register it once with the process's registry.
    pub fn metrics(&self) -> Arc<MetricsHub> {
        self.inner.runtime.metrics.clone()
    }

    /// The queue of spans filters finish; the proxy's exporter drains it.
    pub fn spans(&self) -> Arc<SpanQueue> {
        self.inner.runtime.spans.clone()
    }

    /// The hex sha256 of some bytes, as used for module identity.
    pub fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Compile a component and check it against the filter world, or take it from
    /// the cache when these bytes were seen.
    fn compile(&self, spec: &FilterSpec<'_>) -> Result<(String, Arc<Compiled>), LoadError> {
        let source_name = spec.source.to_owned();
        let bytes = spec.bytes;
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm { source_name });
        }
        // Core modules have version 1; components have layer 1 in the upper half.
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(LoadError::CoreModule { source_name });
        }
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let hex_digest = hex::encode(digest);
        if let Some(expected) = &spec.expected_sha256
            && !expected.eq_ignore_ascii_case(&hex_digest)
        {
            return Err(LoadError::Integrity {
                source_name,
                expected: expected.clone(),
                actual: hex_digest,
            });
        }
        let cached = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .and_then(Weak::upgrade);
        if let Some(compiled) = cached {
            return Ok((hex_digest, compiled));
        }
        let cache_file = self.inner.cache_dir.as_ref().map(|dir| {
            dir.join(format!(
                "{hex_digest}-{:016x}.cwasm",
                self.inner.engine_hash
            ))
        });
        let component = match cache_file.as_deref().and_then(|f| self.load_compiled(f)) {
            Some(component) => component,
            None => {
                // Compiling takes milliseconds; never under the cache lock.
                let component =
                    Component::new(&self.inner.runtime.wasmtime, bytes).map_err(|e| {
                        LoadError::Compile {
                            source_name: source_name.clone(),
                            message: format!("{e:#}"),
                        }
                    })?;
                if let Some(file) = &cache_file {
                    store_compiled(file, &component);
                }
                component
            }
        };
        // Type-check against the world once per module; every filter and instance
        // of it reuses the result.
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            source_name: source_name.clone(),
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = bindings::FilterWorldPre::new(pre).map_err(wrong_world)?;
        let compiled = Arc::new(Compiled::new(pre, &self.inner.runtime.metrics));
        let mut cache = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, c| c.strong_count() > 0);
        cache.insert(digest, Arc::downgrade(&compiled));
        Ok((hex_digest, compiled))
    }

    /// Check that some bytes are a component of the Weft filter world, as
    /// [`Engine::load`] would, without starting it. While the result lives, loading
    /// filters from the same bytes reuses its compiled code.
    pub fn check(&self, source: &str, bytes: &[u8]) -> Result<Checked, LoadError> {
        self.compile(&FilterSpec::new("", source, bytes))
            .map(|(sha256, compiled)| Checked {
                sha256,
                _compiled: compiled,
            })
    }

    /// A component compiled earlier by an engine with the same settings, from the
    /// disk cache. Loading it skips the compiler entirely, which also keeps the
    /// compiler's code and memory out of the proxy's resident set.
    #[allow(unsafe_code)]
    fn load_compiled(&self, file: &std::path::Path) -> Option<Component> {
        if !file.exists() {
            return None;
        }
        // SAFETY: wasmtime runs deserialized code as it is. The file is one this
        // engine wrote into its own cache folder (created 0700), named by the sha256
        // of the source module and the hash of the engine's settings; wasmtime
        // checks its header and the engine compatibility before using it. Whoever
        // can write there can already replace the proxy binary's neighbours; set
        // WEFT_CACHE_DIR=off to never load compiled code from disk.
        match unsafe { Component::deserialize_file(&self.inner.runtime.wasmtime, file) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(file = %file.display(), "ignoring cached component: {e}");
                None
            }
        }
    }

    /// The file a module's compiled form is cached in, if the disk cache is on.
    pub fn cache_file(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        Some(dir.join(format!(
            "{}-{:016x}.cwasm",
            Self::digest(bytes),
            self.inner.engine_hash
        )))
    }

    /// Load a filter: check, compile (cached), instantiate, and hand it its config.
    pub fn load(&self, spec: FilterSpec<'_>) -> Result<Filter, LoadError> {
        let (digest, compiled) = self.compile(&spec)?;
        Filter::load(&self.inner.runtime, spec, digest, compiled)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// `WEFT_CACHE_DIR` (`off` disables the cache), else `$XDG_CACHE_HOME/weft`, else
/// `~/.cache/weft`.
fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("WEFT_CACHE_DIR") {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("weft")),
    }
}

/// Write a compiled component to the disk cache, atomically (write, then rename);
/// a failure only costs a compile on the next start.
fn store_compiled(file: &std::path::Path, component: &Component) {
    use std::os::unix::fs::DirBuilderExt;
    let result = (|| -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(file);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = result {
        tracing::debug!(file = %file.display(), "cannot cache the compiled component: {e}");
    }
}
