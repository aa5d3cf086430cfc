//! A listener's filter chain: the loaded filters in order, and what the chain as a
//! whole needs (buffered bodies, response hooks) so the request path does no work
//! that no filter asked for.

use std::collections::HashMap;
use std::sync::Arc;

use weft_config::{Config, FilterConfig, ListenerConfig, ModuleRef, StatePolicy};
use weft_engine::{BodyMode, Engine, Filter, FilterSpec, LoadError, SharedState};

/// Where the modules of pushed filters (`filter:NAME` with a sha256) come from.
pub trait ModuleStore: Send + Sync {
    /// The module with this sha256 (hex), if the store has it.
    fn module(&self, sha256: &str) -> Option<bytes::Bytes>;
}

/// A store with no modules: a proxy's own file names only files and built-ins.
#[derive(Debug, Default)]
pub struct NoModules;

impl ModuleStore for NoModules {
    fn module(&self, _: &str) -> Option<bytes::Bytes> {
        None
    }
}

impl ModuleStore for HashMap<String, bytes::Bytes> {
    fn module(&self, sha256: &str) -> Option<bytes::Bytes> {
        self.get(sha256).cloned()
    }
}

/// Why a filter of the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {key}: {message}")]
pub struct ChainError {
    /// `file:line:column` of the filter entry.
    pub location: String,
    /// The key at fault, e.g. `listeners[0].filters[1].module`.
    pub key: String,
    /// What went wrong.
    pub message: String,
    /// The engine's error, when it came from there.
    #[source]
    pub source: Option<Box<LoadError>>,
}

/// The shared state of the filters running before a reload, by listener name and
/// filter name: what the reload hands to the filters that replace them, unless their
/// entry says `state: reset`. A filter keeps its state across changes of its config,
/// its module and its place in the chain, as long as its listener and its name stay.
///
/// It is made when a reload begins and dropped when it ends: the state of a filter
/// that left the configuration goes with the last request on its old chain.
#[derive(Debug, Default)]
pub struct KeptState {
    by_filter: HashMap<(String, String), SharedState>,
}

impl KeptState {
    /// Remember the state of every filter of a running listener's chain.
    pub fn add(&mut self, listener: &str, chain: &FilterChain) {
        for f in chain.filters() {
            let key = (listener.to_owned(), f.name().to_owned());
            self.by_filter.insert(key, f.state());
        }
    }

    /// The state a filter of this listener's chain goes on with, if any.
    fn of(&self, listener: &ListenerConfig, f: &FilterConfig) -> Option<SharedState> {
        match f.state {
            StatePolicy::Reset => None,
            StatePolicy::Keep => {
                let key = (listener.name.value.clone(), f.name.value.clone());
                self.by_filter.get(&key).cloned()
            }
        }
    }
}

/// The filters of one listener, in order.
#[derive(Clone, Debug, Default)]
pub struct FilterChain {
    filters: Arc<[Filter]>,
    /// Indices of the filters with a request hook.
    on_request: Arc<[usize]>,
    /// Whether any filter wants the request body buffered.
    pub request_body: bool,
    /// Whether any filter has a response hook.
    pub response: bool,
    /// Whether any filter wants the response body buffered.
    pub response_body: bool,
    /// Whether any filter wants trailers shown to response hooks.
    pub response_trailers: bool,
    /// Whether any filter has an `on-done` hook.
    pub done: bool,
    /// The largest request body a filter wants kept for retries.
    pub keep_request_body: usize,
}

impl FilterChain {
    /// Load every filter of a listener, each with a state of its own. Fails on the
    /// first filter that cannot load, naming it and where it is configured.
    pub fn load(
        engine: &Engine,
        config: &Config,
        index: usize,
        listener: &ListenerConfig,
        modules: &dyn ModuleStore,
    ) -> Result<Self, ChainError> {
        Self::load_keeping(
            engine,
            config,
            index,
            listener,
            modules,
            &KeptState::default(),
        )
    }

    /// [`FilterChain::load`], where each filter goes on with the state `kept` has for
    /// it (see [`KeptState`]).
    pub fn load_keeping(
        engine: &Engine,
        config: &Config,
        index: usize,
        listener: &ListenerConfig,
        modules: &dyn ModuleStore,
        kept: &KeptState,
    ) -> Result<Self, ChainError> {
        let mut filters = Vec::with_capacity(listener.filters.len());
        for (j, f) in listener.filters.iter().enumerate() {
            let state = kept.of(listener, f);
            filters.push(load_filter(engine, config, modules, (index, j), f, state)?);
        }
        Ok(Self::new(filters))
    }

    /// A chain of already loaded filters.
    pub fn new(filters: Vec<Filter>) -> Self {
        let on_request: Vec<usize> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| f.interest().request)
            .map(|(i, _)| i)
            .collect();
        let request_body = filters
            .iter()
            .any(|f| f.interest().request && f.interest().request_body == BodyMode::Buffered);
        let response = filters.iter().any(|f| f.interest().response);
        let response_body = filters
            .iter()
            .any(|f| f.interest().response && f.interest().response_body == BodyMode::Buffered);
        let response_trailers = filters
            .iter()
            .any(|f| f.interest().response && f.interest().response_trailers);
        let done = filters.iter().any(|f| f.interest().done);
        // Only a response hook can ask for a retry, so only then is a body worth keeping.
        let keep_request_body = filters
            .iter()
            .filter(|f| f.interest().response)
            .map(|f| usize::try_from(f.interest().keep_request_body).unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        Self {
            filters: filters.into(),
            on_request: on_request.into(),
            request_body,
            response,
            response_body,
            response_trailers,
            done,
            keep_request_body,
        }
    }

    /// Whether any filter has any hook: without, requests take the plain path.
    pub fn has_hooks(&self) -> bool {
        !self.on_request.is_empty() || self.response || self.done
    }

    /// The filters, in order.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The positions of the filters with a request hook, in order.
    pub fn request_filters(&self) -> &[usize] {
        &self.on_request
    }
}

/// Load one filter of a listener's chain (at `(listener, index)`): its module, its
/// spec, then the engine's checks, with errors that point at the key at fault.
fn load_filter(
    engine: &Engine,
    config: &Config,
    modules: &dyn ModuleStore,
    (listener, index): (usize, usize),
    f: &FilterConfig,
    state: Option<SharedState>,
) -> Result<Filter, ChainError> {
    let key = |k: &str| config.listener_key(listener, &format!(".filters[{index}].{k}"));
    let module_at = config.locate(&f.module.referenced);
    let (bytes, source) = module_bytes(config, modules, f).map_err(|message| ChainError {
        location: module_at.clone(),
        key: key("module"),
        message,
        source: None,
    })?;
    let mut spec = spec_of(f, &source, &bytes);
    spec.state = state;
    let filter = engine
        .load(spec)
        .map_err(|e| load_error(config, f, &module_at, &key, e))?;
    check_clusters(config, f, &filter, &key)?;
    Ok(filter)
}

/// The module a filter names, and how to call it in messages: a built-in, a pushed
/// module by sha256, or a file.
fn module_bytes(
    config: &Config,
    modules: &dyn ModuleStore,
    f: &FilterConfig,
) -> Result<(bytes::Bytes, String), String> {
    match config.module_source(f) {
        ModuleRef::Builtin(name) => match weft_builtin::get(&name) {
            Some(b) => Ok((bytes::Bytes::from_static(b), format!("builtin:{name}"))),
            None => {
                let known: Vec<_> = weft_builtin::names().collect();
                Err(format!(
                    "no built-in filter named {name:?} (built-ins: {})",
                    known.join(", ")
                ))
            }
        },
        ModuleRef::Pushed(name) => {
            let sha = f.sha256.as_ref().map_or("", |s| s.value.as_str());
            match modules.module(sha) {
                Some(b) => Ok((b, format!("filter:{name}"))),
                None => Err(format!(
                    "filter:{name} (sha256 {sha}) is not among the pushed modules"
                )),
            }
        }
        ModuleRef::File(path) => match std::fs::read(&path) {
            Ok(b) => Ok((bytes::Bytes::from(b), path.display().to_string())),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        },
    }
}

/// What the engine is told of a filter: its module and every setting of its entry.
fn spec_of<'a>(f: &'a FilterConfig, source: &'a str, bytes: &'a [u8]) -> FilterSpec<'a> {
    let mut spec = FilterSpec::new(&f.name.value, source, bytes);
    spec.expected_sha256 = f.sha256.as_ref().map(|s| s.value.clone());
    spec.config_json = match &f.config {
        Some(c) => c.value.json().to_string(),
        None => "null".to_owned(),
    };
    spec.policy = f.failure;
    spec.timeout = f.timeout.0;
    spec.memory = f.memory.bytes();
    spec.metrics = weft_engine::MetricsSpec {
        prefix: f.metrics.prefix.clone(),
        max_series: f.metrics.max_series,
        expire_after: f.metrics.expire_after.0,
    };
    spec
}

/// The engine's refusal, pointed at the key at fault: the config key a filter named
/// in its message, the `sha256`, or the module.
fn load_error(
    config: &Config,
    f: &FilterConfig,
    module_at: &str,
    key: &dyn Fn(&str) -> String,
    e: LoadError,
) -> ChainError {
    let (location, k) = match &e {
        LoadError::ConfigRejected { filter, message } => {
            // Filters name the key at fault first (`routes[0].rewrite.host: ...`,
            // as the SDK does): point at it where the file has it.
            let at_key = f.config.as_ref().and_then(|c| {
                let (path, rest) = message.split_once(": ")?;
                let at = c.value.locate(path)?;
                Some((at, path, rest))
            });
            if let Some((at, path, rest)) = at_key {
                return ChainError {
                    location: config.locate(&at),
                    key: key(&format!("config.{path}")),
                    message: format!("filter {filter:?} rejected its config: {rest}"),
                    // The message says all the engine's error does, located.
                    source: None,
                };
            }
            (
                f.config.as_ref().map_or_else(
                    || config.locate(&f.name.referenced),
                    |c| config.locate(&c.referenced),
                ),
                key("config"),
            )
        }
        LoadError::Integrity { .. } => (
            f.sha256
                .as_ref()
                .map_or(module_at.to_owned(), |s| config.locate(&s.referenced)),
            key("sha256"),
        ),
        _ => (module_at.to_owned(), key("module")),
    };
    ChainError {
        location,
        key: k,
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// Every cluster a filter declared must be one the configuration has: what loads,
/// serves. The error points at the key in the filter's `config` that names it.
fn check_clusters(
    config: &Config,
    f: &FilterConfig,
    filter: &Filter,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ChainError> {
    let Some(missing) = (filter.clusters().iter())
        .find(|c| !config.clusters.iter().any(|k| k.name.value == c.name))
    else {
        return Ok(());
    };
    let known: Vec<&str> = (config.clusters.iter())
        .map(|c| c.name.value.as_str())
        .collect();
    let at = f.config.as_ref().and_then(|c| c.value.locate(&missing.key));
    let location = match (at, &f.config) {
        (Some(at), _) => config.locate(&at),
        (None, Some(c)) => config.locate(&c.referenced),
        (None, None) => config.locate(&f.name.referenced),
    };
    Err(ChainError {
        location,
        key: key(&format!("config.{}", missing.key)),
        message: format!(
            "filter {:?} routes to cluster {:?}, which the configuration does not have \
             (clusters: {})",
            filter.name(),
            missing.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ),
        source: None,
    })
}
